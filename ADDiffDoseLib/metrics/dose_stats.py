"""Small dose-array helpers shared by the metrics: validation, masked doses, order statistics.

Every dose here is a float array in Gy (total over all fractions); masks are bool arrays of the same shape.
"""

from __future__ import annotations

import numpy as np

from ..errors import DoseError, ErrorCode, GeometryError


def check_dose(dose_gy: np.ndarray, what: str = "dose", path=None) -> np.ndarray:
    """Return `dose_gy` as a float32 array; raise DoseError if it holds NaN/inf or negative values."""
    dose = np.asarray(dose_gy)
    if not np.issubdtype(dose.dtype, np.floating):
        dose = dose.astype(np.float32)
    if not np.all(np.isfinite(dose)):
        raise DoseError(f"{what} contains NaN or infinite values", path=path, code=ErrorCode.INVALID_VALUE)
    if dose.size and float(dose.min()) < 0:
        raise DoseError(f"{what} is negative (min {float(dose.min()):.4g} Gy)", path=path, code=ErrorCode.NEGATIVE_DOSE)
    return dose


def check_same_shape(a: np.ndarray, b: np.ndarray, what_a: str, what_b: str, path=None) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise GeometryError(f"{what_a} has shape {tuple(a.shape)} but {what_b} has {tuple(b.shape)}",
                            path=path, code=ErrorCode.GRID_MISMATCH)


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel of `mask`, grown by `pad` voxels (clipped); None if empty."""
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        out.append(slice(max(0, int(hit[0]) - pad), min(mask.shape[axis], int(hit[-1]) + 1 + pad)))
    return tuple(out)


def masked_doses(dose_gy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """1D float64 doses of the voxels inside `mask` (only the mask's bounding box is scanned)."""
    box = bounding_box(mask)
    if box is None:
        return np.zeros(0, dtype=np.float64)
    return np.asarray(dose_gy[box][mask[box]], dtype=np.float64)


def dose_at_hottest_count(sorted_desc_gy: np.ndarray, n_voxels: int) -> float:
    """Minimum dose of the hottest `n_voxels` voxels (doses sorted descending); NaN if there are none."""
    if sorted_desc_gy.size == 0:
        return float("nan")
    n = int(min(max(n_voxels, 1), sorted_desc_gy.size))
    return float(sorted_desc_gy[n - 1])


def hottest_count(volume: float, unit_volume: float) -> int:
    """Number of voxels (of `unit_volume` each) needed to cover `volume`: ceil, with float noise ignored."""
    return int(np.ceil(volume / unit_volume - 1e-9))
