"""RT Dose -> dose grid + dose in Gy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ...errors import ErrorCode, GeometryError, InputError
from ...geometry import Grid
from .orientation import POSITION_TOL_MM, even_spacing, orientation_axes
from .pixels import floats, pixel_array


@dataclass
class DoseData:
    """grid: the RTDOSE's own grid; dose: float32 in DoseUnits (Gy or relative), before summation-type scaling."""

    grid: Grid
    dose: np.ndarray
    units: str
    summation_type: str
    referenced_plan_uid: str | None
    scaling: float = 1.0  # DoseGridScaling applied


def frame_order(ds: pydicom.Dataset, frames: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(order, positions): the permutation that sorts the frames along the slice normal, and the sorted frame
    positions relative to ImagePositionPatient (mm). Both GridFrameOffsetVector forms are read (relative: from 0;
    absolute: from the first frame's position along the normal), in any order: increasing, decreasing
    (GammaPlan writes them so) or shuffled."""
    if frames == 1:
        return np.zeros(1, dtype=np.intp), np.zeros(1)
    _, _, normal = orientation_axes(floats(ds, "ImageOrientationPatient", 6, path), path)
    offsets = floats(ds, "GridFrameOffsetVector", frames, path)
    base = float(floats(ds, "ImagePositionPatient", 3, path) @ normal)
    if abs(offsets[0]) > POSITION_TOL_MM and abs(offsets[0] - base) <= POSITION_TOL_MM:
        offsets = offsets - base
    elif abs(offsets[0]) > POSITION_TOL_MM:
        raise GeometryError(f"GridFrameOffsetVector starts at {offsets[0]} (neither 0 nor the first frame's "
                            f"position {base:.3f})", path=path)
    order = np.argsort(offsets, kind="stable")
    return order, offsets[order]


def dose_grid(ds: pydicom.Dataset, frames: int, path: Path) -> Grid:
    """Grid of a (multi-frame) RTDOSE with its frames sorted by increasing position along the slice normal
    (:func:`frame_order`); the pixel array must be reordered with the same permutation."""
    row, col, normal = orientation_axes(floats(ds, "ImageOrientationPatient", 6, path), path)
    ipp = floats(ds, "ImagePositionPatient", 3, path)
    spacing_rc = floats(ds, "PixelSpacing", 2, path)
    if np.any(spacing_rc <= 0):
        raise GeometryError(f"PixelSpacing must be positive, got {spacing_rc.tolist()}", path=path)
    if frames > 1:
        _, positions = frame_order(ds, frames, path)
        dz = even_spacing(positions, "RT Dose frames", path)
        ipp = ipp + positions[0] * normal  # centre of the lowest frame
    else:
        dz = _float(ds.get("SliceThickness")) or 1.0
    rows, cols = int(ds.Rows), int(ds.Columns)
    return Grid.from_ijk((cols, rows, frames), (spacing_rc[1], spacing_rc[0], dz), ipp, np.column_stack([row, col, normal]))


def _float(v):
    try:
        v = float(v)
        return v if np.isfinite(v) and v > 0 else None
    except (TypeError, ValueError):
        return None


def read_rtdose(ds: pydicom.Dataset, path: Path) -> DoseData:
    """Stored values x DoseGridScaling on the RTDOSE's own grid (frames sorted by position)."""
    stored = pixel_array(ds, path)
    grid = dose_grid(ds, stored.shape[0], path)
    order, _ = frame_order(ds, stored.shape[0], path)
    if np.any(order != np.arange(order.size)):
        stored = stored[order]
    scaling = _float(ds.get("DoseGridScaling", 1.0))
    if scaling is None:
        raise InputError(f"DoseGridScaling {ds.get('DoseGridScaling')!r} is not a positive number", path=path,
                         code=ErrorCode.INVALID_VALUE)
    dose = stored.astype(np.float32) * np.float32(scaling)
    if not np.all(np.isfinite(dose)):
        raise InputError("dose is not finite", path=path, code=ErrorCode.INVALID_VALUE)
    ref = None
    for item in ds.get("ReferencedRTPlanSequence", []) or []:
        ref = str(item.get("ReferencedSOPInstanceUID", "")) or None
    units = str(ds.get("DoseUnits", "GY") or "GY").upper()
    if units not in ("GY", "RELATIVE"):
        raise InputError(f"DoseUnits {units!r} unknown (GY or RELATIVE)", path=path, code=ErrorCode.INVALID_VALUE)
    return DoseData(grid, dose, units, str(ds.get("DoseSummationType", "PLAN") or "PLAN").upper(), ref, scaling)
