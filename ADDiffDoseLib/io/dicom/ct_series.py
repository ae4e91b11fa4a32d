"""A CT image series -> grid + HU volume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ...errors import ErrorCode, GeometryError, InputError
from ...geometry import Grid
from .orientation import POSITION_TOL_MM, even_spacing, orientation_axes
from .pixels import floats, frame_shape, pixel_array, read_full
from .scan import read_header


@dataclass
class CtSeries:
    """grid: CT grid (array axes k, j, i); ct_hu: float32 HU; first: header of the first slice."""

    grid: Grid
    ct_hu: np.ndarray
    first: pydicom.Dataset
    sop_instance_uids: list[str]
    warnings: list[str]


def _check_same(headers, keyword, paths, tol=None):
    ref = headers[0].get(keyword)
    for h, p in zip(headers[1:], paths[1:]):
        v = h.get(keyword)
        same = (np.allclose(np.asarray(v, float), np.asarray(ref, float), atol=tol) if tol is not None and v is not None
                and ref is not None else v == ref)
        if not same:
            raise GeometryError(f"mixed series: {keyword} {v!r} differs from {ref!r} of {paths[0].name}", path=p)


def _slice_geometry(headers, paths):
    """Sort slices along the normal; returns (order, grid)."""
    for key in ("Rows", "Columns"):
        _check_same(headers, key, paths)
    _check_same(headers, "PixelSpacing", paths, tol=1e-4)
    _check_same(headers, "ImageOrientationPatient", paths, tol=1e-4)
    row, col, normal = orientation_axes(floats(headers[0], "ImageOrientationPatient", 6, paths[0]), paths[0])
    ipp = np.stack([floats(h, "ImagePositionPatient", 3, p) for h, p in zip(headers, paths)])
    spacing_rc = floats(headers[0], "PixelSpacing", 2, paths[0])  # (row spacing = between rows, column spacing)
    if np.any(spacing_rc <= 0):
        raise GeometryError(f"PixelSpacing must be positive, got {spacing_rc.tolist()}", path=paths[0])
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    ipp, along = ipp[order], along[order]
    if len(headers) > 1:
        dz = even_spacing(along, "CT series", paths[0])
        # gantry tilt / sheared stacks: successive origins must move along the normal only
        inplane = (ipp - ipp[0]) - np.outer(along - along[0], normal)
        if np.abs(inplane).max() > max(POSITION_TOL_MM, 1e-3 * dz):
            raise GeometryError("slice positions do not move along the slice normal (gantry tilt or sheared "
                                "series); tilted CT series are not supported", path=paths[0])
    else:
        dz = _single_slice_thickness(headers[0], paths[0])
    shape = frame_shape(headers[0], paths[0])
    if shape[0] != 1:
        raise InputError("multi-frame CT is not supported", path=paths[0], code=ErrorCode.UNSUPPORTED_FORMAT)
    grid = Grid.from_ijk((shape[2], shape[1], len(headers)), (spacing_rc[1], spacing_rc[0], dz), ipp[0],
                         np.column_stack([row, col, normal]))
    return order, grid


def _single_slice_thickness(ds, path) -> float:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            v = float(ds.get(key))
            if np.isfinite(v) and v > 0:
                return v
        except (TypeError, ValueError):
            pass
    return 1.0


def read_ct_series(paths: list[Path]) -> CtSeries:
    """Read and stack a CT series; GeometryError for mixed/tilted/uneven series."""
    headers = [read_header(p, strict=True) for p in paths]
    order, grid = _slice_geometry(headers, paths)
    paths = [paths[i] for i in order]
    ct = np.empty(grid.shape, dtype=np.float32)
    uids = []
    for k, p in enumerate(paths):
        ds = read_full(p)
        stored = pixel_array(ds, p)[0]
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        ct[k] = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        uids.append(str(ds.get("SOPInstanceUID", "")))
    warnings = []
    if len(paths) == 1:
        warnings.append(f"CT series has one slice; slice thickness {grid.spacing_mm[0]:g} mm taken from the header")
    return CtSeries(grid, ct, headers[order[0]], uids, warnings)
