"""Read our NRRD outputs with SimpleITK (as ITK / 3D Slicer do) and compare them with what was written.

pynrrd is lenient; ITK's NrrdImageIO is what Slicer uses, and it refuses malformed fields (e.g. a per-axis
``units`` line holding a dose unit). Each helper returns the ITK metadata so tests can check fields too.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def itk_geometry_matches(img, grid) -> None:
    assert img.GetSize() == tuple(grid.size_ijk)
    np.testing.assert_allclose(img.GetOrigin(), grid.origin_lps, atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), grid.spacing_mm[::-1], rtol=1e-6)
    direction_ijk = np.asarray(img.GetDirection()).reshape(3, 3)  # columns: LPS vectors of i, j, k
    np.testing.assert_allclose(direction_ijk, grid.direction[:, ::-1], atol=1e-6)


def assert_itk_volume(path, array_kji, grid, atol=0.0) -> dict:
    """SimpleITK reads `path` with `grid`'s geometry and `array_kji`'s values; returns its metadata."""
    img = sitk.ReadImage(str(path))
    itk_geometry_matches(img, grid)
    assert img.GetNumberOfComponentsPerPixel() == 1
    np.testing.assert_allclose(sitk.GetArrayFromImage(img), np.asarray(array_kji), atol=atol, rtol=0)
    return {k: img.GetMetaData(k) for k in img.GetMetaDataKeys()}


def itk_segments(path, grid) -> dict[str, np.ndarray]:
    """Segment name -> (k, j, i) bool mask of a .seg.nrrd read by SimpleITK (layers as vector components)."""
    img = sitk.ReadImage(str(path))
    itk_geometry_matches(img, grid)
    meta = {k: img.GetMetaData(k) for k in img.GetMetaDataKeys()}
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim == 3:
        arr = arr[..., None]
    out, n = {}, 0
    while f"Segment{n}_Name" in meta:
        layer, label = int(meta.get(f"Segment{n}_Layer", 0)), int(meta[f"Segment{n}_LabelValue"])
        out[meta[f"Segment{n}_Name"]] = arr[..., layer] == label
        n += 1
    return out
