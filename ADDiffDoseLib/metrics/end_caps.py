"""End-capping: how much of a structure's first and last contoured slice a DVH counts (issue 14).

A contour stands for the slab of one slice thickness around its plane. Slices are the planes of array axis 0 of
the grid the structure is on (the CT slices, i.e. the contour planes, for DICOM; the RT Dose planes for a lone
RTSTRUCT drawn on the dose grid).

* ``full`` (default): every contoured slice is a full slab, the end slices too, so the structure reaches half a
  slice beyond its first and last contours (midpoint rule). dicompyler-core 0.5.6's DVH counts every plane with
  the full thickness (``dvhcalc.calculate_contour_dvh``); SlicerRT's planar-contour-to-surface rule puts its end
  caps half a slice beyond the end contours ('straight': the contour itself there; the default 'smooth': the
  contour eroded to about half its area; SlicerRt/SlicerRT@695fb01,
  ``vtkPlanarContourToClosedSurfaceConversionRule``).
* ``half``: the structure ends at its first and last contour planes, so those slices count half their thickness
  (trapezoidal rule between the end planes); dicompyler-core 0.5.6's ``DicomParser.CalculateStructureVolume``
  halves them (its DVH does not).
  ``native``: end-slice voxels weigh 1/2 (their dose is sampled at the contour plane). ``slicerrt``: the
  sub-voxels whose centre lies beyond an end plane are dropped (the outer quarter-voxel layer, half the slice).

A structure on a single slice keeps its full slab under both (as dicompyler-core does).
"""

from __future__ import annotations

import numpy as np

from ..errors import ErrorCode, InputError
from ..geometry import Grid

END_CAPS = ("full", "half")
#: Sub-voxel centres closer than this (in slices) to an end plane count as on it (kept).
_ON_PLANE = 1e-6


def check_end_cap(end_cap: str) -> str:
    if end_cap not in END_CAPS:
        raise InputError(f"end_cap must be one of {END_CAPS}, got {end_cap!r}", code=ErrorCode.INVALID_VALUE)
    return end_cap


def end_planes(mask: np.ndarray) -> tuple[int, int] | None:
    """(first, last) slice index along axis 0 holding any voxel of `mask`; None if empty."""
    hit = np.flatnonzero(np.asarray(mask, bool).any(axis=(1, 2)))
    return (int(hit[0]), int(hit[-1])) if hit.size else None


def half_capped_doses(dose_box: np.ndarray, mask_box: np.ndarray) -> np.ndarray:
    """Native doses as half-voxel entries: interior voxels twice, first/last-slice voxels once.

    `dose_box` / `mask_box`: the structure's tight bounding box (axis 0 starts and ends on its end slices). The
    caller counts each entry as half a voxel, so every count-based metric (D_x%, D_xcc, V_x, mean, curve) weighs
    the end slices 1/2 without a weighted code path. One slice only: every voxel twice (a full slab).
    """
    if mask_box.shape[0] == 1:
        d = dose_box[mask_box]
        return np.concatenate([d, d])
    inner = dose_box[1:-1][mask_box[1:-1]]
    ends = [dose_box[0][mask_box[0]], dose_box[-1][mask_box[-1]]]
    return np.concatenate([inner, inner, *ends])


def drop_outer_subslices(fine_mask: np.ndarray, first: int, last: int, box_start: int) -> np.ndarray:
    """x2 sub-voxel mask of a structure on the dose grid itself: without the outer sub-slice of each end slice.

    `fine_mask` covers coarse slices from `box_start`; sub-slices 2k and 2k + 1 sit at k -+ 1/4 (SlicerRT's
    oversampling), so 2 * first and 2 * last + 1 lie beyond the end planes.
    """
    if first == last:
        return fine_mask
    out = fine_mask.copy()
    out[2 * (first - box_start)] = False
    out[2 * (last - box_start) + 1] = False
    return out


def between_end_planes(fine: Grid, box: tuple[slice, ...], grid: Grid, first: int, last: int) -> np.ndarray:
    """Bool array over `box` of `fine`: voxel centre between planes `first` and `last` of `grid`'s axis 0.

    For a structure on its own grid brought onto the (oversampled) dose grid `fine` by nearest neighbour.
    """
    shape = tuple(s.stop - s.start for s in box)
    if first == last:
        return np.ones(shape, bool)
    start = np.array([s.start for s in box], float)
    corners = np.vstack([start, start + np.eye(3)])  # affine: a0 = a0(start) + sum_i g_i * (index_i - start_i)
    a0 = grid.lps_to_index(fine.index_to_lps(corners))[:, 0]
    g = a0[1:] - a0[0]
    plane = (a0[0] + g[0] * np.arange(shape[0])[:, None, None] + g[1] * np.arange(shape[1])[None, :, None]
             + g[2] * np.arange(shape[2])[None, None, :])
    return (plane >= first - _ON_PLANE) & (plane <= last + _ON_PLANE)
