"""Qt-free logic behind the ADDiffDose module: nodes in, a SlicerRT-style dose node out.

``DoseLogic().predict_dose(scene, ct_node, seg_node, ...)`` validates the inputs (nothing is added
to the scene when they are refused), converts them to a Case, runs ``addiffdose predict`` out of
process on temporary NRRD files and loads the dose back on the CT's exact grid. The GUI uses the
same steps without blocking: :meth:`DoseLogic.start_prediction` returns a :class:`PredictionJob`
that it polls from a timer.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer  # 3D Slicer's module (or slicer-core's); never this package
import vtk

from ..case import Beam, Case, Plan, Role
from ..errors import ADDiffDoseError, ErrorCode, GeometryError, InputError
from ..io.nrrd import read_volume
from ..metrics.intervals import bands_file_for, read_bands
from . import bands as bands_mod
from . import dose_output, nodes, process
from . import roles as roles_mod

DICOM_OUTPUT_NAME = "ADDiffDose_RTDOSE.dcm"


# --- inputs ---------------------------------------------------------------------------------
def beams_from_spec(beams, energy_mv: float = 6.0, technique: str = "IMRT") -> tuple[Beam, ...]:
    """None -> (); "0,40,80" or [0, 40, 80] -> static beams; Beam objects pass through."""
    if beams is None:
        return ()
    if isinstance(beams, str):
        beams = [v for v in beams.replace(";", ",").split(",") if v.strip()]
    out = []
    for b in beams:
        if isinstance(b, Beam):
            out.append(b)
        else:
            try:
                out.append(Beam(float(b), energy_mv=energy_mv, technique=technique))
            except ValueError as exc:
                raise InputError(f"beam angle {b!r} is not a number", code=ErrorCode.INVALID_VALUE) from exc
    return tuple(out)


def _rows_from_arg(seg_node, roles) -> list[roles_mod.RoleRow]:
    """roles: None (name rules / segment tags), a list of RoleRow, or {segment name: Rx Gy} for targets."""
    if roles is None:
        return roles_mod.default_roles(seg_node)
    if isinstance(roles, dict):
        rows = roles_mod.default_roles(seg_node)
        by_name = {r.segment_name: r for r in rows}
        unknown = sorted(set(roles) - set(by_name))
        if unknown:
            raise InputError(f"no segment named {unknown} in '{seg_node.GetName()}'", code=ErrorCode.MISSING_FIELD)
        for name, rx in roles.items():
            rows = roles_mod.edit_row(rows, by_name[name].segment_id, role=Role.TARGET.value, prescription_gy=rx)
        return rows
    return list(roles)


def check_segmentation_grid(seg_node, grid, ids: list[str]) -> None:
    """Refuse segments whose labelmaps are not on the CT's voxel lattice (E202)."""
    world = nodes.world_transform(seg_node)
    ct_ijk_to_ras = grid.ijk_to_ras_matrix()
    for sid in ids:
        image = slicer.vtkOrientedImageData()
        slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(seg_node, sid, image)
        if image.GetPointData().GetScalars() is None or image.IsEmpty():
            continue
        m = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(m)
        seg_ijk_to_ras = world @ nodes.numpy_matrix(m)
        # segment voxel (0,0,0) and its axis steps, in CT index units: must be integer and identity
        to_ct = np.linalg.inv(ct_ijk_to_ras) @ seg_ijk_to_ras
        if not (np.allclose(to_ct[:3, :3], np.eye(3), atol=1e-3)
                and np.allclose(to_ct[:3, 3], np.round(to_ct[:3, 3]), atol=1e-3)):
            name = seg_node.GetSegmentation().GetSegment(sid).GetName()
            raise GeometryError(
                f"segment '{name}' of '{seg_node.GetName()}' is on a different voxel grid than the CT "
                "(spacing, orientation or voxel offset differ); set its geometry to the CT "
                "(Segment Editor > Specify geometry) or resample it", code=ErrorCode.GRID_MISMATCH)


@dataclass
class PreparedInputs:
    """Validated inputs: the Case sent to the worker and the settings used."""

    case: Case
    rows: list
    options: process.PredictOptions
    ct_node: object
    seg_node: object


def prepare_inputs(ct_node, seg_node, *, beams=None, roles=None, model="default", steps=None, samples=1, seed=0,
                   device="auto", energy_mv=6.0, technique="IMRT") -> PreparedInputs:
    """Validate and convert; raises ADDiffDoseError with a message for the user. Adds no nodes."""
    if ct_node is None or not ct_node.IsA("vtkMRMLScalarVolumeNode") or ct_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError("select a CT volume (scalar volume node)", code=ErrorCode.MISSING_FIELD)
    if seg_node is None or not seg_node.IsA("vtkMRMLSegmentationNode") or not nodes.segment_ids(seg_node):
        raise InputError("select a segmentation with the target and organ segments", code=ErrorCode.MISSING_FIELD)
    grid = nodes.grid_from_volume_node(ct_node)
    rows = _rows_from_arg(seg_node, roles)
    roles_mod.check_roles(rows, f"segmentation '{seg_node.GetName()}'")
    spec = roles_mod.structures_spec(rows)
    nodes._ensure_labelmaps(seg_node)
    check_segmentation_grid(seg_node, grid, list(spec))
    beam_list = beams_from_spec(beams, energy_mv, technique)
    plan = Plan(beams=beam_list, source="user")
    case = nodes.case_from_nodes(ct_node, seg_node, spec, plan=plan, name=ct_node.GetName())
    empty = [s.original_name for s in case.structures.values() if s.is_empty]
    if empty:
        raise InputError(f"segment(s) {empty} are empty on the CT grid; fill them or set their role to 'ignore'",
                         code=ErrorCode.INVALID_VALUE)
    options = process.PredictOptions(
        model=str(model), steps=steps, samples=int(samples), seed=int(seed), device=device,
        gantry_deg=tuple(b.gantry_deg for b in beam_list), couch_deg=tuple(b.couch_deg for b in beam_list),
        energy_mv=energy_mv if beam_list else None, technique=technique if beam_list else None,
        prescriptions_gy=tuple((k, s.prescription_gy) for k, s in case.targets.items() if s.prescription_gy))
    return PreparedInputs(case, rows, options, ct_node, seg_node)


# --- outputs --------------------------------------------------------------------------------
def read_worker_output(path: Path) -> tuple[np.ndarray, object, dict]:
    """(dose (k, j, i) float32 Gy, Grid, provenance) of the worker's NRRD (``ADDiffDose_<key>`` header fields)."""
    dose_gy, grid, header = read_volume(path)
    prefix = "ADDiffDose_"
    provenance = {k[len(prefix):]: v for k, v in header.items() if isinstance(k, str) and k.startswith(prefix)}
    provenance.pop("notice", None)
    return dose_gy, grid, provenance


@dataclass
class PredictionJob:
    """A running prediction: poll() it, then finish() once `worker.finished` (or cancel())."""

    scene: object
    prepared: PreparedInputs
    worker: process.WorkerProcess
    folder: Path
    output_path: Path
    output_node: object = None
    progress_pct: float = 0.0
    messages: list = field(default_factory=list)

    def poll(self) -> list[tuple[float | None, str]]:
        """New (pct or None, text) events since the last call."""
        events = []
        for line in self.worker.poll():
            parsed = process.parse_progress(line)
            if parsed is not None:
                self.progress_pct = parsed[0]
            events.append(parsed if parsed is not None else (None, line))
        return events

    @property
    def finished(self) -> bool:
        return self.worker.finished

    def cancel(self) -> None:
        self.worker.cancel()
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def finish(self):
        """Load the worker's dose as a dose node (raises the worker's error if it failed)."""
        try:
            process.run_blocking(self.worker)  # already finished: only drains and checks the exit status
            return load_prediction(self.scene, self.prepared, self.output_path, self.output_node)
        finally:
            self.cleanup()


def _provenance(prepared: PreparedInputs, worker_provenance: dict) -> dict:
    o = prepared.options
    out = {"model": o.model, "seed": o.seed, "steps": o.steps, "samples": o.samples,
           "beams": [b.to_dict() for b in prepared.case.plan.beams] or "model default"}
    out.update({k: v for k, v in worker_provenance.items() if v is not None})
    out.setdefault("model_sha256", "unknown")
    return out


def load_prediction(scene, prepared: PreparedInputs, output_path: Path, output_node=None):
    """Dose node (and, with several samples, an uncertainty node) from the worker's output file."""
    dose_gy, grid, worker_provenance = read_worker_output(output_path)
    if not grid.same_as(prepared.case.grid):
        raise GeometryError("the worker wrote the dose on another grid than the CT", path=output_path,
                            code=ErrorCode.GRID_MISMATCH)
    provenance = _provenance(prepared, worker_provenance)
    rx = max((s.prescription_gy or 0 for s in prepared.case.targets.values()), default=None) or None
    name = f"{prepared.ct_node.GetName()}_ADDiffDose"
    node = dose_output.add_dose_node(scene, dose_gy, prepared.case.grid, name, reference_node=prepared.ct_node,
                                     provenance=provenance, prescription_gy=rx, node=output_node)
    std_path = output_path.with_name(output_path.name.replace(".nrrd", "_std.nrrd"))
    if std_path.is_file():
        std_gy, _, _ = read_worker_output(std_path)
        std_node = dose_output.add_uncertainty_node(scene, std_gy, prepared.case.grid, f"{name}_std",
                                                    reference_node=prepared.ct_node, provenance=provenance)
        node.SetAttribute("ADDiffDose.UncertaintyNodeID", std_node.GetID())
    _load_bands(scene, prepared, output_path, node)
    return node


def _load_bands(scene, prepared: PreparedInputs, output_path: Path, node) -> None:
    """The worker's ``<output>_bands.json`` (predict --samples K > 1, issue 16) kept with the dose node, keyed back
    to the user's segment names; a re-prediction into the same node drops the previous bands first."""
    bands_mod.detach_bands(scene, node)
    path = bands_file_for(output_path)
    if path is None:
        return
    names = {r.structure: r.segment_name for r in prepared.rows if r.used}
    bands_mod.attach_bands(scene, node, read_bands(path), names)


# --- the logic ------------------------------------------------------------------------------
class DoseLogic:
    """Console-drivable prediction logic. python: worker interpreter (default: PythonSlicer / this one)."""

    def __init__(self, python: str | None = None, env_extra: dict | None = None):
        self.python = python
        self.env_extra = env_extra or {}

    def start_prediction(self, scene, ct_node, seg_node, *, output_node=None, **kwargs) -> PredictionJob:
        """Validate, write the temporary inputs and start the worker (returns at once)."""
        prepared = prepare_inputs(ct_node, seg_node, **kwargs)
        folder = Path(tempfile.mkdtemp(prefix="addiffdose-"))
        try:
            process.write_inputs(prepared.case, folder / "input")
            output = folder / "dose.nrrd"
            cmd = process.build_predict_command(folder / "input", output, prepared.options, self.python)
            worker = process.WorkerProcess(cmd, process.worker_environment(self.env_extra)).start()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return PredictionJob(scene, prepared, worker, folder, output, output_node)

    def predict_dose(self, scene, ct_node, seg_node, beams=None, roles=None, model="default", steps=None,
                     samples=1, seed=0, device="auto", output_node=None, progress=None, log=None,
                     energy_mv=6.0, technique="IMRT"):
        """Blocking prediction; returns the dose node (Gy, SlicerRT dose attributes, provenance).

        beams: gantry angles ("0,40,80" or a list) or Beam objects, None = the model's default;
        roles: None (segment names), {segment name: Rx Gy} or a list of RoleRow;
        progress(pct, message) and log(line) are called from this thread.
        """
        job = self.start_prediction(scene, ct_node, seg_node, output_node=output_node, beams=beams, roles=roles,
                                    model=model, steps=steps, samples=samples, seed=seed, device=device,
                                    energy_mv=energy_mv, technique=technique)
        try:
            process.run_blocking(job.worker, progress=progress, log=log)
        except BaseException:
            job.cancel()
            raise
        return job.finish()

    def predict_folder(self, input_dir, output_dir, *, model="default", steps=None, samples=1, seed=0,
                       device="auto", beams=None, prescriptions=None, overwrite=False, progress=None,
                       log=None) -> list[Path]:
        """Predict every DICOM study below `input_dir` (one sub-folder each, or the folder itself).

        Writes ``<output_dir>/<study folder>/ADDiffDose_RTDOSE.dcm`` and returns those paths; folders without
        DICOM files are skipped. prescriptions: {structure: Gy} for studies whose names do not give it.
        A failing study does not stop the others; the failures are raised together at the end.
        """
        input_dir, output_dir = Path(input_dir), Path(output_dir)
        if not input_dir.is_dir():
            raise InputError("not a folder", path=input_dir, code=ErrorCode.FILE_NOT_FOUND)
        folders = sorted(p for p in input_dir.iterdir() if p.is_dir()) or [input_dir]
        studies = [p for p in folders if next(p.rglob("*.dcm"), None) is not None]
        if not studies:
            raise InputError("no DICOM (.dcm) files found", path=input_dir, code=ErrorCode.FILE_NOT_FOUND)
        beam_list = beams_from_spec(beams)
        options = process.PredictOptions(model=str(model), steps=steps, samples=int(samples), seed=int(seed),
                                         device=device, gantry_deg=tuple(b.gantry_deg for b in beam_list),
                                         prescriptions_gy=tuple((prescriptions or {}).items()))
        outputs, failures = [], []
        for i, study in enumerate(studies):
            out = output_dir / study.name / DICOM_OUTPUT_NAME
            if out.exists() and not overwrite:
                failures.append(f"{study.name}: {out} exists (overwrite=True replaces it)")
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = process.build_predict_command(study, out, options, self.python)
            step = (lambda pct, msg, i=i, name=study.name: progress((100.0 * i + pct) / len(studies), f"{name}: {msg}")) \
                if progress else None
            try:
                process.run_blocking(process.WorkerProcess(cmd, process.worker_environment(self.env_extra)),
                                     progress=step, log=log)
                outputs.append(out)
            except ADDiffDoseError as exc:
                failures.append(f"{study.name}: {exc}")
        if failures:
            raise ADDiffDoseError(f"{len(failures)} of {len(studies)} studies failed: " + "; ".join(failures),
                                  path=input_dir, code=ErrorCode.INVALID_VALUE)
        return outputs
