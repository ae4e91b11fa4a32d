"""Image plane geometry: orientation cosines, slice normals, slice positions."""

from __future__ import annotations

import numpy as np

from ...errors import ErrorCode, GeometryError

#: Cosines closer than this to 0 or 1 are snapped (Eclipse writes -1.2e-16 for 0).
COSINE_SNAP = 1e-6
#: Positions/spacings agreeing within this many mm are equal.
POSITION_TOL_MM = 0.01


def orientation_axes(iop, path=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageOrientationPatient (6 numbers) -> unit row direction, column direction, normal (LPS)."""
    iop = np.asarray(iop, dtype=np.float64)
    iop = np.where(np.abs(iop) < COSINE_SNAP, 0.0, iop)
    row, col = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
            and abs(row @ col) < 1e-3):
        raise GeometryError(f"ImageOrientationPatient {iop.tolist()} is not two orthonormal directions", path=path)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    return row, col, np.cross(row, col)


def even_spacing(positions_mm: np.ndarray, what: str, path=None) -> float:
    """The common step of sorted `positions_mm`; GeometryError for uneven steps / missing slices / duplicates."""
    steps = np.diff(positions_mm)
    if steps.size == 0:
        raise GeometryError(f"{what}: need at least two positions for a spacing", path=path)
    step = float(np.median(steps))
    if step <= POSITION_TOL_MM:
        raise GeometryError(f"{what}: duplicate slice positions (step {step:.4f} mm)", path=path)
    bad = np.abs(steps - step) > max(POSITION_TOL_MM, 0.01 * step)
    if np.any(bad):
        first = int(np.argmax(bad))
        raise GeometryError(
            f"{what}: uneven slice spacing or missing slices (step {steps[first]:.3f} mm after position "
            f"{positions_mm[first]:.3f}, expected {step:.3f} mm)", path=path, code=ErrorCode.INVALID_GEOMETRY)
    return step
