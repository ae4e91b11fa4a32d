"""DoseLogic on a real MRML scene: input validation leaves the scene unchanged; the end-to-end prediction
(out-of-process `addiffdose predict`, heuristic model) equals the in-process library prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from slicer_helpers import case, loaded, new_scene, openkbp_case  # noqa: E402,F401  (fixtures)

from ADDiffDoseLib.errors import ADDiffDoseError, ErrorCode, GeometryError, InputError  # noqa: E402
from ADDiffDoseLib.geometry import Grid  # noqa: E402
from ADDiffDoseLib.slicer import dose_output, nodes, process  # noqa: E402
from ADDiffDoseLib.slicer.logic import DoseLogic, beams_from_spec, prepare_inputs  # noqa: E402

OPENKBP_GANTRY = "0,40,80,120,160,200,240,280,320"


@pytest.fixture()
def heuristic_model(tmp_path):
    path = tmp_path / "heuristic.json"
    path.write_text(json.dumps({"family": "heuristic", "config": {}}))
    return str(path)


def _refused(scene, call, error, match):
    before = scene.GetNumberOfNodes()
    with pytest.raises(error, match=match) as info:
        call()
    assert scene.GetNumberOfNodes() == before  # nothing was added
    return info.value


def test_no_target_is_refused_and_scene_unchanged(loaded, case):
    scene, ct_node, _ = loaded
    oars = {k: s.mask for k, s in case.structures.items() if not k.startswith("PTV")}
    seg = nodes.add_segmentation_node(scene, oars, case.grid, "oars only", reference_node=ct_node)
    err = _refused(scene, lambda: DoseLogic().predict_dose(scene, ct_node, seg, beams=OPENKBP_GANTRY), InputError,
                   "no target")
    assert err.code == ErrorCode.NO_TARGET


def test_target_without_prescription_is_refused(loaded, case):
    scene, ct_node, _ = loaded
    seg = nodes.add_segmentation_node(scene, {"PTV_high": case.structures["PTV70"].mask}, case.grid, "s")
    _refused(scene, lambda: DoseLogic().predict_dose(scene, ct_node, seg), InputError, "prescription")
    # giving it on the call is enough to pass validation
    prepared = prepare_inputs(ct_node, seg, roles={"PTV_high": 66.0})
    assert prepared.case.targets["PTV_high"].prescription_gy == 66.0
    assert prepared.options.prescriptions_gy == (("PTV_high", 66.0),)


def test_segmentation_on_another_grid_is_refused(loaded, case):
    scene, ct_node, _ = loaded
    g = case.grid
    shifted = Grid(g.shape, g.spacing_mm, g.origin_lps + 0.5 * g.spacing_mm[0] * g.direction[:, 0], g.direction)
    seg = nodes.add_segmentation_node(scene, {"PTV70": case.structures["PTV70"].mask}, shifted, "half-voxel off")
    err = _refused(scene, lambda: DoseLogic().predict_dose(scene, ct_node, seg), GeometryError, "different voxel grid")
    assert err.code == ErrorCode.GRID_MISMATCH


def test_empty_segment_is_refused(loaded, case):
    scene, ct_node, _ = loaded
    masks = {"PTV70": case.structures["PTV70"].mask, "SpinalCord": np.zeros(case.grid.shape, bool)}
    seg = nodes.add_segmentation_node(scene, masks, case.grid, "with empty", reference_node=ct_node)
    _refused(scene, lambda: DoseLogic().predict_dose(scene, ct_node, seg), InputError, "empty")


def test_missing_inputs_are_refused(loaded):
    scene, ct_node, seg_node = loaded
    _refused(scene, lambda: DoseLogic().predict_dose(scene, None, seg_node), InputError, "CT")
    _refused(scene, lambda: DoseLogic().predict_dose(scene, ct_node, None), InputError, "segmentation")
    with pytest.raises(InputError, match="not a number"):
        beams_from_spec("0,forty")


def test_worker_command_and_progress_lines(tmp_path):
    options = process.PredictOptions(model="heuristic", steps=20, samples=2, seed=7, gantry_deg=(0.0, 180.0),
                                     couch_deg=(0.0, 0.0), energy_mv=6.0, technique="IMRT",
                                     prescriptions_gy=(("PTV70", 70.0), ("PTV56", 56.0)))
    cmd = process.build_predict_command(tmp_path / "in", tmp_path / "d.nrrd", options, python="py")
    assert cmd[:5] == ["py", "-m", "ADDiffDoseLib.cli.main", "predict", str(tmp_path / "in")]
    text = " ".join(cmd)
    for part in ("--model heuristic", "--steps 20", "--samples 2", "--seed 7", "--gantry 0,180", "--rx PTV70=70",
                 "--rx PTV56=56", "--progress-lines", "--overwrite"):
        assert part in text
    assert process.parse_progress("PROGRESS 42 denoising step 3") == (42.0, "denoising step 3")
    assert process.parse_progress("PROGRESS 130") == (100.0, "")
    assert process.parse_progress("warning: PROGRESS 1") is None


def test_cancel_kills_the_whole_process_tree():
    import subprocess
    import sys
    import time

    child = "import time; time.sleep(60)"
    parent = f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}]); print(p.pid, flush=True); time.sleep(60)"
    worker = process.WorkerProcess([sys.executable, "-c", parent]).start()
    deadline = time.time() + 20
    lines = []
    while not lines and time.time() < deadline:
        lines = worker.poll()
        time.sleep(0.05)
    grandchild = int(lines[0])
    worker.cancel()
    assert worker.returncode is not None
    time.sleep(0.3)
    alive = subprocess.run(["ps", "-o", "stat=", "-p", str(grandchild)], capture_output=True, text=True).stdout.strip()
    assert alive == "" or alive.startswith("Z"), f"grandchild {grandchild} still running ({alive})"
    with pytest.raises(ADDiffDoseError) as info:
        process.run_blocking(worker)
    assert info.value.code == ErrorCode.CANCELLED


def test_predicted_dose_node_equals_library_prediction(loaded, heuristic_model):
    from ADDiffDoseLib.model.predict import predict_case

    scene, ct_node, seg_node = loaded
    events = []
    dose_node = DoseLogic().predict_dose(scene, ct_node, seg_node, beams=OPENKBP_GANTRY, model=heuristic_model,
                                         seed=0, progress=lambda pct, msg: events.append(pct))
    assert events and max(events) == 100.0
    assert dose_output.is_dose_node(dose_node)
    prov = dose_output.provenance_of(dose_node)
    assert prov["Seed"] == "0" and "NotForClinicalUse" in prov and "320" in prov["Beams"]
    prepared = prepare_inputs(ct_node, seg_node, beams=OPENKBP_GANTRY)
    expected = predict_case(prepared.case, model=heuristic_model, seed=0).dose_gy
    got = nodes.array_from_volume_node(dose_node)
    assert nodes.grid_from_volume_node(dose_node).same_as(prepared.case.grid, atol_mm=1e-6)
    assert float(np.abs(got - expected).max()) <= 1e-3
    assert float(got.max()) > 10.0  # a real dose, not an empty volume


def test_worker_console_window_is_hidden_on_windows_only():
    """Issue 15.7: on Windows the worker gets STARTUPINFO(dwFlags=STARTF_USESHOWWINDOW, wShowWindow=SW_HIDE) like
    slicer.util.launchConsoleProcess (Slicer/Slicer Base/Python/slicer/util.py ~4275-4280: ``info.dwFlags = 1``,
    ``info.wShowWindow = 0``); POSIX keeps its own session and no startupinfo."""
    import types

    class FakeStartupInfo:  # subprocess.STARTUPINFO exists only on Windows
        def __init__(self):
            self.dwFlags, self.wShowWindow = 0, 5  # 5 = SW_SHOW, Windows' default

    windows = types.SimpleNamespace(STARTUPINFO=FakeStartupInfo, STARTF_USESHOWWINDOW=1, SW_HIDE=0,
                                    CREATE_NEW_PROCESS_GROUP=0x200)
    kwargs = process.popen_platform_kwargs("nt", windows)
    assert kwargs["creationflags"] == 0x200
    assert (kwargs["startupinfo"].dwFlags, kwargs["startupinfo"].wShowWindow) == (1, 0)
    assert process.popen_platform_kwargs("posix") == {"start_new_session": True}
    assert "startupinfo" not in process.popen_platform_kwargs("java", windows)


class _FakePyTorchUtils:
    """PyTorchUtils as fepegar/SlicerPyTorch PyTorchUtils/PyTorchUtils.py writes it: static torchInstalled() (package
    metadata, ~185-197) and installTorch(askConfirmation, ..., torchVersionRequirement) returning None when the user
    cancels the confirmation (~207-214), else the torch module."""

    def __init__(self, installed: bool, accept: bool):
        self.calls = []
        outer = self

        class PyTorchUtilsLogic:
            @staticmethod
            def torchInstalled():
                outer.calls.append("torchInstalled")
                return installed

            def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
                outer.calls.append(("installTorch", askConfirmation, torchVersionRequirement))
                return object() if accept else None  # None: "Installation of PyTorch aborted by user"

        self.PyTorchUtilsLogic = PyTorchUtilsLogic


def test_declining_the_pytorch_install_stops_the_prediction():
    """Issue 15.5: installTorch() returns None on Cancel; ensure_torch raises E501 so no worker starts."""
    from ADDiffDoseLib.errors import ModelError
    from ADDiffDoseLib.slicer.dependencies import ensure_torch

    declined = _FakePyTorchUtils(installed=False, accept=False)
    with pytest.raises(ModelError, match="declined") as info:
        ensure_torch(declined)
    assert info.value.code == ErrorCode.DEPENDENCY_MISSING
    assert declined.calls == ["torchInstalled", ("installTorch", True, ">=2.11")]
    accepted = _FakePyTorchUtils(installed=False, accept=True)
    assert ensure_torch(accepted) is True
    present = _FakePyTorchUtils(installed=True, accept=False)
    assert ensure_torch(present) is False and present.calls == ["torchInstalled"]  # static check only
    with pytest.raises(ModelError, match="PyTorch extension") as info:
        ensure_torch(None)
    assert info.value.code == ErrorCode.DEPENDENCY_MISSING


def test_module_checks_torch_through_pytorchutils_not_by_importing_it():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "ADDiffDose" / "ADDiffDose.py").read_text(encoding="utf-8")
    assert "import torch" not in text and "ensure_torch(PyTorchUtils)" in text
