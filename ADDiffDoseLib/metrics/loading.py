"""Reading reference cases and prediction files for `evaluate_folders` and the `dvh` / `evaluate` commands."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..case import Case
from ..errors import ErrorCode, GeometryError, InputError
from ..geometry import Grid, resample_to_grid
from ..io.detect import npz_kind, read_case


def read_any_case(path: str | Path, data_root: str | Path | None = None) -> Case:
    """Any supported input (OpenKBP/pyRadPlan/case npz, NRRD, DICOM) -> Case, via the io layer."""
    return read_case(Path(path), data_root=data_root)


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
    if path.suffix.lower() != ".npz":
        return False
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
