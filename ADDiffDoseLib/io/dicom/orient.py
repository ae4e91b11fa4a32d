"""Put a Case grid into DICOM axial order before writing (columns +x, rows +y, slices +z where possible)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry import Grid


@dataclass(frozen=True)
class Reorientation:
    """Array-axis permutation + flips mapping `source` arrays onto `grid` (same voxels, same LPS positions)."""

    source: Grid
    grid: Grid
    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.perm)
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis)
        return np.ascontiguousarray(out)


def axial_reorientation(grid: Grid) -> Reorientation:
    """Axis-aligned grids become (z, y, x) increasing; oblique ones keep their axes with slices along
    row x column (right-handed, as DICOM readers assume)."""
    d = grid.direction
    if grid.is_axis_aligned():
        lps_axis_of = [int(np.argmax(np.abs(d[:, a]))) for a in range(3)]  # array axis a runs along LPS axis
        perm = tuple(lps_axis_of.index(c) for c in (2, 1, 0))
        flips = tuple(bool(d[c, perm[b]] < 0) for b, c in enumerate((2, 1, 0)))
    else:
        perm = (0, 1, 2)
        flips = (bool(np.cross(d[:, 2], d[:, 1]) @ d[:, 0] < 0), False, False)
    first_old = np.array([(grid.shape[perm[b]] - 1) if flips[b] else 0 for b in range(3)], dtype=float)
    old_index = np.zeros(3)
    old_index[list(perm)] = first_old
    direction = np.column_stack([d[:, perm[b]] * (-1 if flips[b] else 1) for b in range(3)])
    new = Grid(tuple(grid.shape[p] for p in perm), grid.spacing_mm[list(perm)], grid.index_to_lps(old_index), direction)
    return Reorientation(grid, new, perm, flips)
