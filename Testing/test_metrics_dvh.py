"""DVH: closed-form answers on analytic dose fields, SlicerRT mode, grid mismatch, speed on real data."""

import time

import numpy as np
import pytest

from ADDiffDoseLib.errors import DoseError, ErrorCode
from ADDiffDoseLib.geometry import Grid
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.metrics.dvh import compute_dvh, dvh_table, oversampled_grid


def _grid(shape, spacing=(1.0, 1.0, 1.0)):
    return Grid(shape, spacing, (0, 0, 0), np.eye(3))


def test_uniform_dose():
    g = _grid((10, 10, 10), (2.0, 2.0, 2.0))
    mask = np.zeros(g.shape, bool)
    mask[2:7, 2:7, 2:7] = True
    d = compute_dvh(np.full(g.shape, 10.0, np.float32), mask, g)
    assert d.volume_cc == pytest.approx(125 * 0.008)
    assert (d.mean_gy, d.min_gy, d.max_gy) == pytest.approx((10, 10, 10))
    assert d.d_percent(95) == pytest.approx(10) and d.d_cc(0.1) == pytest.approx(10)
    assert d.v_gy(10) == 100 and d.v_gy(10.01) == 0
    assert d.v_gy(5, "cc") == pytest.approx(1.0)


def test_linear_ramp_closed_form():
    g = _grid((100, 1, 1))
    dose = np.arange(100, dtype=np.float32).reshape(100, 1, 1)  # 0..99 Gy, voxel 0.001 cc
    d = compute_dvh(dose, np.ones(g.shape, bool), g)
    assert d.mean_gy == pytest.approx(49.5)
    assert d.d_percent(10) == pytest.approx(90)  # hottest 10 voxels: 99..90
    assert d.d_percent(100) == 0 and d.d_percent(0) == 99
    assert d.d_cc(0.05) == pytest.approx(50)  # 50 voxels
    assert d.d_cc(0.0125) == pytest.approx(87)  # ceil(12.5) = 13 voxels: 99..87
    assert d.v_gy(50) == pytest.approx(50) and d.v_gy(49.5, "cc") == pytest.approx(0.05)
    # curve: % with dose >= bin
    i = np.searchsorted(d.dose_bins_gy, 25.0)
    assert d.dose_bins_gy[i] == pytest.approx(25.0) and d.volume_pct[i] == pytest.approx(75)


def test_sphere_volume_and_median():
    n, r = 41, 15.0
    g = _grid((n, n, n))
    idx = np.indices(g.shape) - 20
    dist = np.sqrt((idx**2).sum(0)).astype(np.float32)
    mask = dist <= r
    d = compute_dvh(dist, mask, g)  # dose = distance from the centre (Gy = mm)
    assert d.volume_cc == pytest.approx(4 / 3 * np.pi * r**3 / 1000, rel=0.02)
    # half the volume lies beyond r * 0.5^(1/3)
    assert d.d_percent(50) == pytest.approx(r * 0.5 ** (1 / 3), abs=0.3)


def test_negative_dose_rejected():
    g = _grid((4, 4, 4))
    dose = np.zeros(g.shape, np.float32)
    dose[0, 0, 0] = -0.5
    with pytest.raises(DoseError) as err:
        compute_dvh(dose, np.ones(g.shape, bool), g)
    assert err.value.code == ErrorCode.NEGATIVE_DOSE


def test_slicerrt_one_voxel_structure_known_answer():
    g = _grid((9, 9, 9), (2.0, 2.0, 2.0))
    dose = np.zeros(g.shape, np.float32)
    dose[5:, :, :] = 8.0  # hot slab next to the one-voxel structure at (4, 4, 4)
    mask = np.zeros(g.shape, bool)
    mask[4, 4, 4] = True
    native = compute_dvh(dose, mask, g, "native")
    srt = compute_dvh(dose, mask, g, "slicerrt")
    assert native.max_gy == 0 and native.mean_gy == 0
    # 4 of the 8 sub-voxels sit 1/4 voxel toward the slab: 0.25 * 8 = 2 Gy (trilinear; the others get 0)
    assert srt.max_gy == pytest.approx(2.0) and srt.mean_gy == pytest.approx(1.0)
    assert srt.volume_cc == pytest.approx(native.volume_cc) and srt.n_voxels == 8
    # rows: (0, 100 %), then 0.1 + 0.2 i up to the whole volume's max (8 Gy): ceil(7.9 / 0.2) + 1 = 41 bins
    assert srt.dose_bins_gy[0] == 0 and srt.volume_pct[0] == 100
    assert len(srt.dose_bins_gy) == 42
    assert srt.dose_bins_gy[1] == pytest.approx(0.1) and srt.dose_bins_gy[-1] == pytest.approx(8.1)
    assert srt.volume_pct[1] == pytest.approx(50)


def test_oversampled_grid_keeps_corners():
    g = Grid((4, 5, 6), (2.0, 3.0, 4.0), (10, 20, 30), np.eye(3))
    f = oversampled_grid(g)
    assert f.shape == (8, 10, 12)
    np.testing.assert_allclose(f.origin_lps, [10 - 0.5, 20 - 0.75, 30 - 1.0])
    # outer corner of the last voxel unchanged
    np.testing.assert_allclose(f.index_to_lps([7.5, 9.5, 11.5]), g.index_to_lps([3.5, 4.5, 5.5]))


def test_dose_on_other_grid_is_resampled():
    fine = _grid((20, 20, 20), (1.0, 1.0, 1.0))
    coarse = Grid((10, 10, 10), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5), np.eye(3))
    x = coarse.voxel_centres_lps()[..., 0]
    dose = (2.0 * x).astype(np.float32)  # linear in LPS x: trilinear resampling is exact inside
    mask = np.zeros(fine.shape, bool)
    mask[5:10, 8:12, 8:12] = True
    d = compute_dvh(dose, mask, fine, dose_grid=coarse)
    assert d.mean_gy == pytest.approx(2.0 * 7.0, abs=1e-4)  # mean x of slices 5..9 = 7 mm
    srt = compute_dvh(dose, mask, fine, "slicerrt", dose_grid=coarse)
    assert srt.mean_gy == pytest.approx(14.0, abs=0.6)


def test_real_case_modes_and_speed(openkbp_npz):
    case = read_openkbp_npz(openkbp_npz)
    t = time.perf_counter()
    rows = {r["normalized_name"]: r for r in dvh_table(case)}
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, elapsed
    ptv = case.structures["PTV70"].mask
    assert rows["PTV70"]["mean_gy"] == pytest.approx(float(case.dose_gy[ptv].mean()), rel=1e-6)
    assert rows["PTV70"]["max_gy"] == pytest.approx(float(case.dose_gy[ptv].max()))
    srt = {r["normalized_name"]: r for r in dvh_table(case, mode="slicerrt")}
    assert srt["PTV70"]["volume_cc"] == pytest.approx(rows["PTV70"]["volume_cc"])
    # oversampling visibly moves mean and max for a small organ at a steep gradient
    assert abs(srt["Brainstem"]["max_gy"] - rows["Brainstem"]["max_gy"]) > 0.5
    assert abs(srt["Brainstem"]["mean_gy"] - rows["Brainstem"]["mean_gy"]) > 0.05
