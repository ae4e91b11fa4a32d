"""Planar contours -> voxel masks on a grid.

Rule: per grid plane, the contours of one ROI are combined by XOR (even-odd), so a contour lying
inside another subtracts (a hole). A voxel whose centre lies ON a contour counts as inside that
contour (within 1e-3 voxel); hence a centre on an outer contour is in the ROI, a centre on a hole's
edge is in the hole (outside the ROI). Winding direction does not matter.
"""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as MplPath

from ...geometry import Grid

#: Distance (in voxels) within which a centre counts as on the contour.
ON_CONTOUR_VOXELS = 1e-3


def polygon_mask(points_ji: np.ndarray, shape_ji: tuple[int, int]) -> np.ndarray:
    """(n, 2) polygon in fractional (row j, column i) indices -> (rows, cols) bool, inclusive boundary."""
    out = np.zeros(shape_ji, dtype=bool)
    lo = np.maximum(np.floor(points_ji.min(axis=0) - 1).astype(int), 0)
    hi = np.minimum(np.ceil(points_ji.max(axis=0) + 1).astype(int) + 1, shape_ji)
    if np.any(hi <= lo):
        return out
    jj, ii = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
    centres = np.column_stack([jj.ravel(), ii.ravel()]).astype(np.float64)
    path = MplPath(points_ji, closed=False)
    # matplotlib's radius grows or shrinks the polygon depending on winding: OR both signs = inclusive
    inside = path.contains_points(centres, radius=ON_CONTOUR_VOXELS) | path.contains_points(centres, radius=-ON_CONTOUR_VOXELS)
    out[lo[0]:hi[0], lo[1]:hi[1]] = inside.reshape(jj.shape)
    return out


def rasterize_contours(contours_lps: list[np.ndarray], grid: Grid, plane_tol_mm: float = 0.01) -> tuple[np.ndarray, int]:
    """Closed planar contours ((n, 3) LPS mm each) -> (mask on grid, number of contours not on a grid plane).

    A contour belongs to the grid plane within `plane_tol_mm` along axis 0; if none is that close, to the
    nearest plane within half a slice, where several contour planes compete for one slice the closest wins.
    """
    mask = np.zeros(grid.shape, dtype=bool)
    by_slice: dict[int, dict[float, list[np.ndarray]]] = {}
    off = 0
    for pts in contours_lps:
        idx = grid.lps_to_index(pts)
        if np.ptp(idx[:, 0]) * grid.spacing_mm[0] > 0.5:  # not parallel to the grid's planes
            off += 1
            continue
        a0 = float(np.median(idx[:, 0]))
        k = int(np.rint(a0))
        dist_mm = abs(a0 - k) * grid.spacing_mm[0]
        if k < 0 or k >= grid.shape[0] or dist_mm > 0.5 * grid.spacing_mm[0]:
            off += 1
            continue
        if dist_mm > plane_tol_mm:
            off += 1
        key = round(a0 - k, 4)
        by_slice.setdefault(k, {}).setdefault(key, []).append(idx[:, 1:])
    for k, planes in by_slice.items():
        nearest = min(planes, key=abs)
        plane = np.zeros(grid.shape[1:], dtype=bool)
        for pts in planes[nearest]:
            if len(pts) >= 3:
                plane ^= polygon_mask(pts, grid.shape[1:])
            elif len(pts) >= 1:  # a point/segment contour marks its voxels
                j, i = np.rint(pts).astype(int).T
                ok = (j >= 0) & (j < grid.shape[1]) & (i >= 0) & (i < grid.shape[2])
                plane[j[ok], i[ok]] ^= True
        mask[k] = plane
    return mask, off
