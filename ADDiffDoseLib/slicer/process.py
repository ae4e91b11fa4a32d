"""Run ``addiffdose predict`` out of process, as Slicer AI extensions do. No Qt.

The inputs go to a temporary folder (``ct.nrrd`` + ``structures.seg.nrrd`` written by
:mod:`ADDiffDoseLib.io.nrrd`), the worker is ``<python> -m ADDiffDoseLib.cli.main predict ...``
(``PythonSlicer`` inside Slicer, else the current interpreter), its stdout is read by a thread
into a queue that the caller drains (a QTimer in the GUI, a loop in :func:`run_blocking`), and
``PROGRESS <pct> <message>`` lines become progress events. Cancel kills the whole process tree.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..case import Case
from ..errors import ADDiffDoseError, ErrorCode, ModelError

PROGRESS_RE = re.compile(r"^PROGRESS\s+(?P<pct>[-+]?\d+(?:\.\d*)?)\s*(?P<msg>.*)$")
LIBRARY_ROOT = Path(__file__).resolve().parents[2]  # folder holding the ADDiffDoseLib package


@dataclass(frozen=True)
class PredictOptions:
    """Everything `addiffdose predict` needs besides the case. gantry/couch in IEC degrees."""

    model: str = "default"
    steps: int | None = None
    samples: int = 1
    seed: int = 0
    device: str = "auto"
    gantry_deg: tuple[float, ...] = ()
    couch_deg: tuple[float, ...] = ()
    energy_mv: float | None = None
    technique: str | None = None
    prescriptions_gy: tuple[tuple[str, float], ...] = ()


def python_executable() -> str:
    """PythonSlicer inside 3D Slicer (the launcher sets up its environment), else this interpreter."""
    in_slicer = Path(sys.executable).stem.lower().startswith(("slicer", "pythonslicer"))
    found = shutil.which("PythonSlicer") if in_slicer else None
    return found or sys.executable


def _csv(values) -> str:
    return ",".join(f"{float(v):g}" for v in values)


def build_predict_command(input_path: str | Path, output_path: str | Path, options: PredictOptions,
                          python: str | None = None) -> list[str]:
    """argv of the worker: ``python -m ADDiffDoseLib.cli.main predict INPUT -o OUTPUT ...``."""
    cmd = [python or python_executable(), "-m", "ADDiffDoseLib.cli.main", "predict", str(input_path),
           "-o", str(output_path), "--model", str(options.model), "--samples", str(int(options.samples)),
           "--seed", str(int(options.seed)), "--device", options.device, "--overwrite", "--progress-lines"]
    if options.steps is not None:
        cmd += ["--steps", str(int(options.steps))]
    if options.gantry_deg:
        cmd += ["--gantry", _csv(options.gantry_deg)]
    if options.couch_deg:
        cmd += ["--couch", _csv(options.couch_deg)]
    if options.energy_mv is not None:
        cmd += ["--energy", f"{float(options.energy_mv):g}"]
    if options.technique:
        cmd += ["--technique", options.technique]
    if options.prescriptions_gy:
        for name, gy in options.prescriptions_gy:  # argparse 'append': one flag per target
            cmd += ["--rx", f"{name}={float(gy):g}"]
    return cmd


def worker_environment(extra: dict | None = None) -> dict[str, str]:
    """This environment + ADDiffDoseLib importable + unbuffered output (progress arrives live)."""
    env = dict(os.environ)
    paths = [str(LIBRARY_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def write_inputs(case: Case, folder: str | Path) -> Path:
    """ct.nrrd + structures.seg.nrrd of `case` in `folder` (the CLI reads the folder as one case)."""
    from ..io.nrrd import write_segmentation_nrrd, write_volume_nrrd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_volume_nrrd(folder / "ct.nrrd", case.ct_hu, case.grid, overwrite=True)
    write_segmentation_nrrd(folder / "structures.seg.nrrd", case, overwrite=True)
    return folder


def parse_progress(line: str) -> tuple[float, str] | None:
    """``PROGRESS 42 denoising`` -> (42.0, 'denoising'); other lines -> None."""
    m = PROGRESS_RE.match(line.strip())
    if not m:
        return None
    return max(0.0, min(100.0, float(m.group("pct")))), m.group("msg").strip()


def kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill `proc` and every descendant (the launcher alone would leave the worker running)."""
    if proc.poll() is not None:
        return
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(proc.pid)
            family = parent.children(recursive=True) + [parent]
        except psutil.NoSuchProcess:
            return
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=5)
    elif os.name == "posix":  # started with start_new_session: its group is the tree
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    else:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, check=False)
    proc.wait(timeout=10)


def popen_platform_kwargs(os_name: str | None = None, subprocess_module=subprocess) -> dict:
    """Popen keywords per platform: POSIX a new session (its group is the tree cancel kills); Windows a new
    process group and a hidden console window, as ``slicer.util.launchConsoleProcess`` does (Slicer/Slicer
    ``Base/Python/slicer/util.py`` ~4275-4280: STARTUPINFO with dwFlags STARTF_USESHOWWINDOW, wShowWindow
    SW_HIDE); without it every prediction flashes a console window in front of Slicer."""
    os_name = os.name if os_name is None else os_name
    if os_name == "posix":
        return {"start_new_session": True}
    kwargs = {"creationflags": getattr(subprocess_module, "CREATE_NEW_PROCESS_GROUP", 0)}
    if os_name == "nt":
        info = subprocess_module.STARTUPINFO()
        info.dwFlags |= getattr(subprocess_module, "STARTF_USESHOWWINDOW", 1)
        info.wShowWindow = getattr(subprocess_module, "SW_HIDE", 0)
        kwargs["startupinfo"] = info
    return kwargs


class WorkerProcess:
    """One worker: start(), then poll() for new output lines; cancel() kills the tree."""

    def __init__(self, command: list[str], env: dict | None = None, cwd: str | Path | None = None):
        self.command = list(command)
        self.env = env if env is not None else worker_environment()
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.cancelled = False
        self.log: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self) -> "WorkerProcess":
        try:
            self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         bufsize=1, env=self.env, cwd=self.cwd, **popen_platform_kwargs())
        except OSError as exc:
            raise ModelError(f"cannot start the prediction worker {self.command[0]!r}: {exc}",
                             code=ErrorCode.DEPENDENCY_MISSING) from exc
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self.proc.stdout.close()

    def poll(self) -> list[str]:
        """Lines printed since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._lines.get_nowait())
            except queue.Empty:
                break
        self.log.extend(out)
        return out

    @property
    def finished(self) -> bool:
        """True once the process has exited and all its output has been read."""
        return self.proc is not None and self.proc.poll() is not None and not (
            self._reader and self._reader.is_alive())

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def cancel(self) -> None:
        self.cancelled = True
        if self.proc is not None:
            kill_process_tree(self.proc)

    def error_message(self) -> str:
        """The worker's own last error line (the CLI prints one 'error E... ' line), else its exit code."""
        for line in reversed(self.log):
            if line.startswith("error"):
                return line
        tail = " | ".join(self.log[-5:])
        return f"prediction worker exited with code {self.returncode}" + (f": {tail}" if tail else "")


def run_blocking(worker: WorkerProcess, progress=None, log=None, poll_s: float = 0.05,
                 should_cancel=None) -> None:
    """Start (if needed) and wait for `worker`, forwarding progress(pct, msg) and log(line).

    should_cancel(): polled; True cancels. Raises ADDiffDoseError (E502) when cancelled and the
    worker's error line when it fails.
    """
    if worker.proc is None:
        worker.start()
    while True:
        done = worker.finished
        for line in worker.poll():
            event = parse_progress(line)
            if event is not None and progress is not None:
                progress(*event)
            elif event is None and log is not None:
                log(line)
        if done:
            break
        if should_cancel is not None and should_cancel():
            worker.cancel()
        time.sleep(poll_s)
    if worker.cancelled:
        raise ADDiffDoseError("prediction cancelled", code=ErrorCode.CANCELLED)
    if worker.returncode != 0:
        message = worker.error_message()
        m = re.match(r"^error (E\d{3})\b", message)
        code = ErrorCode(m.group(1)) if m and m.group(1) in {c.value for c in ErrorCode} else ErrorCode.INVALID_VALUE
        raise ADDiffDoseError(f"prediction failed: {message}", code=code)
