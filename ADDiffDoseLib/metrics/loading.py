"""Reading reference cases and prediction files for `evaluate_folders` and the `dvh` / `evaluate` commands."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..case import Case, Plan
from ..errors import DoseError, ErrorCode, GeometryError, InputError
from ..geometry import Grid, resample_to_grid
from ..io.detect import is_dicom_file, npz_kind, read_case
from ..io.nrrd import is_segmentation_path, is_volume_path, read_addiffdose_fields


def read_any_case(path: str | Path, data_root: str | Path | None = None, fractions: int | None = None) -> Case:
    """Any supported input (OpenKBP/pyRadPlan/case npz, NRRD, DICOM) -> Case, via the io layer (`fractions`: see
    :func:`~ADDiffDoseLib.io.detect.read_case`)."""
    return read_case(Path(path), data_root=data_root, fractions=fractions)


def npz_members(path: str | Path) -> set[str]:
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            return {n[:-4] if n.endswith(".npy") else n for n in z.namelist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable npz: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc


def is_prediction_file(path: str | Path) -> bool:
    """True for a dose-only file: an npz with a `dose` array and no anatomy (bare, or our dose file with a grid)."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False  # a missing file is reported by the reader (E101)
    members = npz_members(path)
    return members == {"dose"} or npz_kind(path) == "dose"


def read_prediction_dose(path: str | Path, ref_grid: Grid) -> np.ndarray:
    """(n0, n1, n2) float32 Gy on `ref_grid` from a prediction npz.

    A bare npz (key `dose` only) must already be on the reference grid (shape checked); our dose files carry a
    grid and are resampled trilinearly onto the reference grid if it differs.
    """
    path = Path(path)
    if npz_kind(path) == "dose":
        from ..io.case_npz import read_dose_npz

        dose, grid, _, _ = read_dose_npz(path)
        return dose if grid.same_as(ref_grid) else resample_to_grid(dose, grid, ref_grid, order=1)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "dose" not in f.files:
                raise InputError("prediction npz has no 'dose' array", path=path, code=ErrorCode.MISSING_FIELD)
            dose = np.asarray(f["dose"], dtype=np.float32)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read prediction: {exc}", path=path, code=ErrorCode.CORRUPT_FILE) from exc
    if tuple(dose.shape) != tuple(ref_grid.shape):
        raise GeometryError(f"prediction dose has shape {tuple(dose.shape)} but the reference grid is "
                            f"{tuple(ref_grid.shape)}", path=path, code=ErrorCode.GRID_MISMATCH)
    return dose


def read_dose_input(path: str | Path, data_root: str | Path | None = None,
                    fractions: int | None = None) -> tuple[np.ndarray, Grid, Case | None]:
    """(dose Gy (n0, n1, n2) float32, its grid, the case read or None) from a dose input.

    A single NRRD/NIfTI volume file is the dose itself (Gy); anything else is read as a case that must carry a
    dose (OpenKBP / pyRadPlan / case npz, RTDOSE file, DICOM or NRRD folder).
    """
    path = Path(path)
    if path.is_file() and is_volume_path(path) and not is_segmentation_path(path):
        from ..io.nrrd import read_volume

        dose, grid, _ = read_volume(path)
        return np.asarray(dose, np.float32), grid, None
    case = read_any_case(path, data_root=data_root, fractions=fractions)
    if case.dose_gy is None:
        raise DoseError("input has no dose (give a case with a planned dose, an RTDOSE or a dose volume)",
                        path=path, code=ErrorCode.MISSING_FIELD)
    return case.dose_gy, case.grid, case


def _dicom_modality(path: Path) -> str:
    from ..io.dicom.scan import read_header

    ds = read_header(path, strict=True)
    return str(ds.get("Modality", "")).upper()


def read_structures_for_dose(path: str | Path, dose_grid: Grid, dose_case: Case | None = None,
                             data_root: str | Path | None = None, fractions: int | None = None) -> Case:
    """The case holding the structures in `path` for a dose on `dose_grid`.

    A lone RT Structure Set file (no CT series beside it) is rasterized directly on the dose grid, as planning
    systems do; its contours must share the dose's frame of reference. Anything else is read with its own grid.
    """
    path = Path(path)
    if path.is_file() and is_dicom_file(path) and _dicom_modality(path) == "RTSTRUCT":
        from ..io.dicom import read_rtstruct_on_grid

        meta = dose_case.metadata if dose_case is not None else {}
        structures, warnings = read_rtstruct_on_grid(path, dose_grid, meta.get("FrameOfReferenceUID") or None,
                                                     meta.get("prescription_gy"))
        base = dose_case.name if dose_case is not None else path.stem
        plan = dose_case.plan if dose_case is not None else Plan(source="dicom")
        return Case(name=base, grid=dose_grid, ct_hu=None, structures=structures, plan=plan, dose_gy=None,
                    metadata={"source_path": str(path)}, warnings=tuple(warnings))
    return read_any_case(path, data_root=data_root, fractions=fractions)


#: Provenance fields shown in reports, in this order (as written by `predict`).
PROVENANCE_KEYS = ("model", "model_version", "model_sha256", "family", "seed", "steps", "samples", "beams",
                   "device", "software")


def _beams_text(beams) -> str:
    """'9 x IMRT 6 MV, gantry 0/40/.../320 deg, couch 0' from Beam dicts or Beam objects."""
    items = [b if isinstance(b, dict) else b.to_dict() for b in beams or []]
    if not items:
        return "unknown"
    gantry = "/".join(f"{float(b.get('gantry_deg', 0)):g}" for b in items)
    couch = sorted({f"{float(b.get('couch_deg', 0)):g}" for b in items})
    first = items[0]
    return (f"{len(items)} x {first.get('technique', '?')} {float(first.get('energy_mv', 0) or 0):g} MV, "
            f"gantry {gantry} deg, couch {'/'.join(couch)} deg")


def _prediction_metadata(path: Path) -> dict:
    """Metadata of our dose npz or the ``ADDiffDose_*`` fields of our dose NRRD ({} for anything else)."""
    try:
        if path.is_file() and path.suffix.lower() == ".npz" and npz_kind(path) == "dose":
            from ..io.case_npz import read_dose_npz

            return read_dose_npz(path)[3]
        if path.is_file() and is_volume_path(path) and path.name.lower().endswith((".nrrd", ".nhdr")):
            return read_addiffdose_fields(path)
    except (InputError, OSError, ValueError):
        pass  # provenance is informative only: an unreadable header leaves it empty
    return {}


def prediction_provenance(path: str | Path, case: Case | None = None) -> dict[str, str]:
    """Provenance of a prediction for reports: model, SHA-256, seed, steps, beams, software (what is known).

    Read from our dose npz metadata or dose NRRD header (`ADDiffDose_*` fields); for a case with a plan (e.g. a
    pyRadPlan or DICOM plan used as the prediction) the plan's beams and source.
    """
    found = _prediction_metadata(Path(path))
    out = {}
    for key in PROVENANCE_KEYS:
        value = found.get(key)
        if value in (None, "", []):
            continue
        out[key] = _beams_text(value) if key == "beams" and isinstance(value, list) else str(value)
    if case is not None and "beams" not in out and case.plan.beams:
        out["beams"] = _beams_text(case.plan.beams) + f" (plan source: {case.plan.source})"
    return out


def prediction_beams(path: str | Path, case: Case | None = None) -> tuple | None:
    """The beams a prediction was made for (Beam dicts from our dose npz, else the predicted case's plan), or None."""
    beams = _prediction_metadata(Path(path)).get("beams")
    if isinstance(beams, list) and beams and all(isinstance(b, dict) for b in beams):
        return tuple(beams)
    return case.plan.beams if case is not None and case.plan.beams else None
