"""End-capping (metrics/end_caps.py) on tiny masks with known answers: native, slicerrt on the structure's grid and
on another dose grid, a single-slice structure, the rows and the error for an unknown convention."""

import numpy as np
import pytest

from ADDiffDoseLib.errors import ErrorCode, InputError
from ADDiffDoseLib.geometry import Grid
from ADDiffDoseLib.metrics.dvh import compute_dvh, dvh_row


def _three_slices():
    """3 slices x 2 x 2 voxels of 1 mm (0.012 cc as full slabs); dose 10 / 20 / 40 Gy on slices 0 / 1 / 2."""
    g = Grid((3, 2, 2), (1.0, 1.0, 1.0), (0, 0, 0), np.eye(3))
    dose = np.array([10.0, 20.0, 40.0], np.float32)[:, None, None] * np.ones(g.shape, np.float32)
    return g, dose, np.ones(g.shape, bool)


def test_native_half_end_caps_weigh_end_slices_half():
    g, dose, mask = _three_slices()
    full = compute_dvh(dose, mask, g, "native")
    half = compute_dvh(dose, mask, g, "native", end_cap="half")
    assert full.end_cap == "full" and half.end_cap == "half"
    assert full.volume_cc == pytest.approx(0.012) and half.volume_cc == pytest.approx(0.008)  # 2 + 4 + 2 voxels
    assert full.mean_gy == pytest.approx(70 / 3) and half.mean_gy == pytest.approx((2 * 10 + 4 * 20 + 2 * 40) / 8)
    assert (half.min_gy, half.max_gy) == (10, 40)
    assert full.v_gy(30) == pytest.approx(100 / 3) and half.v_gy(30) == pytest.approx(25)  # 2 of 8 voxels
    assert half.v_gy(30, "cc") == pytest.approx(0.002) and half.v_gy(15, "cc") == pytest.approx(0.006)
    # hottest 0.003 cc: 0.002 cc at 40 Gy, then 20 Gy (full: 3 of the 4 voxels at 40 Gy)
    assert full.d_cc(0.003) == 40 and half.d_cc(0.003) == 20 and half.d_cc(0.002) == 40
    assert half.d_percent(50) == 20 and half.d_percent(100) == 10
    i = int(np.searchsorted(half.dose_bins_gy, 30.0))
    assert half.volume_pct[i] == pytest.approx(25) and half.volume_cc_curve[i] == pytest.approx(0.002)


def test_slicerrt_half_drops_the_outer_subslices():
    g, dose, mask = _three_slices()
    full = compute_dvh(dose, mask, g, "slicerrt")
    half = compute_dvh(dose, mask, g, "slicerrt", end_cap="half")
    assert full.n_voxels == 96 and half.n_voxels == 64  # 6 x 4 x 4 sub-voxels, less 2 sub-slices of 16
    assert half.volume_cc == pytest.approx(0.008)
    # the dropped sub-slices sit 1/4 voxel outside the end planes, where the trilinear dose is clamped (10, 40 Gy)
    assert half.max_gy == pytest.approx(0.75 * 40 + 0.25 * 20) and half.min_gy == pytest.approx(0.75 * 10 + 0.25 * 20)
    assert full.max_gy == pytest.approx(40) and full.min_gy == pytest.approx(10)


def test_slicerrt_half_on_another_dose_grid_keeps_the_part_between_end_planes():
    g = Grid((5, 4, 4), (1.0, 1.0, 1.0), (-1, -1, -1), np.eye(3))  # the 3 x 2 x 2 block of _three_slices, padded
    mask = np.zeros(g.shape, bool)
    mask[1:4, 1:3, 1:3] = True
    dose_grid = Grid((6, 4, 4), (0.5, 0.5, 0.5), (-0.25, -0.25, -0.25), np.eye(3))  # covers the slabs exactly
    dose = np.full(dose_grid.shape, 5.0, np.float32)
    full = compute_dvh(dose, mask, g, "slicerrt", dose_grid=dose_grid)
    half = compute_dvh(dose, mask, g, "slicerrt", dose_grid=dose_grid, end_cap="half")
    # 0.25 mm sub-voxels: 12 sub-slices from -0.375 to 2.375 mm; 8 of them lie between the planes 0 and 2 mm
    assert full.volume_cc == pytest.approx(0.012) and half.volume_cc == pytest.approx(0.008)
    assert half.mean_gy == pytest.approx(5.0)


def test_single_slice_structure_keeps_its_full_slab():
    g = Grid((3, 2, 2), (2.0, 1.0, 1.0), (0, 0, 0), np.eye(3))
    mask = np.zeros(g.shape, bool)
    mask[1] = True
    dose = np.full(g.shape, 7.0, np.float32)
    for mode in ("native", "slicerrt"):
        full, half = (compute_dvh(dose, mask, g, mode, end_cap=e) for e in ("full", "half"))
        assert half.volume_cc == pytest.approx(full.volume_cc) == pytest.approx(0.008)


def test_rows_record_the_convention_and_both_maxima():
    g, dose, mask = _three_slices()
    row = dvh_row(compute_dvh(dose, mask, g, "native", end_cap="half", name="x"))
    assert row["mode"] == "native" and row["end_cap"] == "half"
    assert row["max_gy"] == 40 and row["d0.03cc_gy"] == 10  # the structure is 0.008 cc: all of it
    assert compute_dvh(dose, mask, g).to_dict()["end_cap"] == "full"


def test_unknown_end_cap_is_one_error_line():
    g, dose, mask = _three_slices()
    with pytest.raises(InputError) as err:
        compute_dvh(dose, mask, g, end_cap="quarter")
    assert err.value.code == ErrorCode.INVALID_VALUE and "end_cap" in str(err.value)
