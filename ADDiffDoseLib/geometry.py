"""Voxel grids and the coordinate frames around them.

Conventions used everywhere in the library:

* numpy arrays are indexed in *array-axis order* ``(a0, a1, a2)``; for DICOM/ITK/NRRD volumes that
  is ``(k, j, i)`` (slice, row, column), i.e. axis 2 is ITK's fastest index ``i``.
* :class:`Grid` stores ``spacing_mm`` and the columns of ``direction`` **in array-axis order** too:
  ``direction[:, a]`` is the unit vector (in patient LPS) along which array axis ``a`` increases.
* Patient coordinates are DICOM **LPS** (+x patient left, +y posterior, +z superior).
  3D Slicer works in **RAS**: x and y negated.
* ``origin_lps`` is the centre of voxel ``(0, 0, 0)``.

``lps = origin + direction @ (index * spacing)`` with ``index`` in array-axis order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ErrorCode, GeometryError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _as_vec3(value, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name} must be 3 finite numbers, got {value!r}")
    return arr


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular voxel grid in patient LPS.

    shape: (n0, n1, n2) array shape; spacing_mm: voxel size along array axes 0, 1, 2 (mm);
    origin_lps: centre of voxel (0, 0, 0) in mm; direction: 3x3, column a = LPS unit vector of axis a.
    """

    shape: tuple[int, int, int]
    spacing_mm: np.ndarray
    origin_lps: np.ndarray
    direction: np.ndarray

    def __post_init__(self):
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise GeometryError(f"grid shape must be 3 positive sizes, got {self.shape!r}")
        spacing = _as_vec3(self.spacing_mm, "spacing_mm")
        if np.any(spacing <= 0):
            raise GeometryError(f"voxel spacing must be positive, got {spacing.tolist()}")
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise GeometryError(f"direction must be an orthonormal 3x3 matrix, got {direction.tolist()}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_lps", _as_vec3(self.origin_lps, "origin_lps"))
        object.__setattr__(self, "direction", direction)

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_ijk(cls, size_ijk, spacing_ijk, origin_lps, direction_ijk) -> "Grid":
        """From ITK/DICOM order: size, spacing and direction columns for (i, j, k)."""
        size_ijk = [int(s) for s in size_ijk]
        spacing_ijk = _as_vec3(spacing_ijk, "spacing")
        direction_ijk = np.asarray(direction_ijk, dtype=np.float64).reshape(3, 3)
        return cls(
            shape=tuple(size_ijk[::-1]),
            spacing_mm=spacing_ijk[::-1],
            origin_lps=origin_lps,
            direction=direction_ijk[:, ::-1],
        )

    # --- derived --------------------------------------------------------------------------
    @property
    def size_ijk(self) -> tuple[int, int, int]:
        return tuple(self.shape[::-1])

    @property
    def spacing_ijk(self) -> np.ndarray:
        return self.spacing_mm[::-1].copy()

    @property
    def direction_ijk(self) -> np.ndarray:
        """3x3, column c = LPS unit vector of ITK index i, j, k (c = 0, 1, 2)."""
        return self.direction[:, ::-1].copy()

    @property
    def voxel_volume_cc(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    def index_to_lps_matrix(self) -> np.ndarray:
        """4x4 affine: homogeneous array-axis index (a0, a1, a2, 1) -> LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction * self.spacing_mm[None, :]
        m[:3, 3] = self.origin_lps
        return m

    def ijk_to_lps_matrix(self) -> np.ndarray:
        """4x4 affine: homogeneous ITK index (i, j, k, 1) -> LPS mm (NRRD 'space directions')."""
        m = np.eye(4)
        m[:3, :3] = self.direction_ijk * self.spacing_ijk[None, :]
        m[:3, 3] = self.origin_lps
        return m

    def ijk_to_ras_matrix(self) -> np.ndarray:
        """4x4 affine: ITK index (i, j, k, 1) -> Slicer RAS mm (Slicer's IJKToRAS)."""
        m = self.ijk_to_lps_matrix()
        m[:3, :] = LPS_TO_RAS @ m[:3, :]
        return m

    @classmethod
    def from_ijk_to_ras(cls, shape, matrix) -> "Grid":
        """Inverse of :meth:`ijk_to_ras_matrix` for an array of the given (k, j, i) shape."""
        m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
        lps = LPS_TO_RAS @ m[:3, :]
        spacing_ijk = np.linalg.norm(lps[:3, :3], axis=0)
        return cls.from_ijk(tuple(shape)[::-1], spacing_ijk, lps[:3, 3], lps[:3, :3] / spacing_ijk)

    def index_to_lps(self, index) -> np.ndarray:
        """(..., 3) array-axis indices (may be fractional) -> (..., 3) LPS mm."""
        index = np.asarray(index, dtype=np.float64)
        return self.origin_lps + (index * self.spacing_mm) @ self.direction.T

    def lps_to_index(self, points) -> np.ndarray:
        """(..., 3) LPS mm -> (..., 3) fractional array-axis indices."""
        points = np.asarray(points, dtype=np.float64)
        return ((points - self.origin_lps) @ self.direction) / self.spacing_mm

    def axis_coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel centre positions along each array axis, in mm from the origin (index * spacing)."""
        return tuple(np.arange(n) * s for n, s in zip(self.shape, self.spacing_mm))

    def voxel_centres_lps(self) -> np.ndarray:
        """(n0, n1, n2, 3) LPS coordinates of every voxel centre (memory: 24 bytes a voxel)."""
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij"), axis=-1)
        return self.index_to_lps(idx)

    def is_axis_aligned(self, atol: float = 1e-4) -> bool:
        return bool(np.all(np.isclose(np.abs(self.direction), 0, atol=atol) | np.isclose(np.abs(self.direction), 1, atol=atol)))

    def same_as(self, other: "Grid", atol_mm: float = 1e-3) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=atol_mm)
            and np.allclose(self.origin_lps, other.origin_lps, atol=atol_mm)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def check_array(self, array: np.ndarray, what: str, path=None) -> None:
        if tuple(array.shape) != self.shape:
            raise GeometryError(
                f"{what} has shape {tuple(array.shape)} but the grid is {self.shape}",
                path=path,
                code=ErrorCode.GRID_MISMATCH,
            )

    def with_shape(self, shape, offset_index=(0, 0, 0)) -> "Grid":
        """A grid with the same spacing/direction whose voxel (0,0,0) sits at `offset_index` of this one."""
        return Grid(tuple(shape), self.spacing_mm, self.index_to_lps(np.asarray(offset_index, float)), self.direction)

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing_mm": self.spacing_mm.tolist(),
            "origin_lps": self.origin_lps.tolist(),
            "direction": self.direction.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(tuple(d["shape"]), d["spacing_mm"], d["origin_lps"], d["direction"])


def voxels_inside(mask: np.ndarray, grid: Grid, other: Grid) -> int:
    """How many voxels of `mask` (on `grid`) have their centre inside `other` (within half a voxel of its outer
    voxel centres), e.g. how much of a structure a dose grid covers."""
    idx = other.lps_to_index(grid.index_to_lps(np.argwhere(mask)))
    upper = np.asarray(other.shape) - 0.5
    return int(np.count_nonzero(np.all((idx >= -0.5) & (idx <= upper), axis=1)))


def resample_to_grid(array: np.ndarray, source: Grid, target: Grid, *, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Resample `array` (on `source`) onto `target` by physical position.

    order 1 = trilinear (dose), 0 = nearest (labels/masks). Points outside `source` get `fill`.
    """
    from scipy.ndimage import affine_transform, map_coordinates

    source.check_array(array, "array to resample")
    if source.same_as(target):
        return array.copy()
    # target index -> LPS -> source index is affine: src = A @ tgt + b
    a = (source.direction.T @ target.direction) * target.spacing_mm[None, :] / source.spacing_mm[:, None]
    b = source.lps_to_index(target.origin_lps)
    data = array.astype(np.float32) if array.dtype == bool else array
    if np.allclose(a, np.diag(np.diag(a)), atol=1e-9):
        out = affine_transform(data, np.diag(a), offset=b, output_shape=target.shape, order=order, mode="constant", cval=fill)
    else:
        idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in target.shape], indexing="ij"), axis=0)
        coords = np.tensordot(a, idx, axes=1) + b[:, None, None, None]
        out = map_coordinates(data, coords, order=order, mode="constant", cval=fill)
    if array.dtype == bool:
        return out > 0.5
    return out.astype(array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32, copy=False)
