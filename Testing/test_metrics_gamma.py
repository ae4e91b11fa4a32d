"""Gamma index: closed-form cases and agreement with pymedphys.gamma on real data."""

import time

import numpy as np
import pytest
import scipy.ndimage as ndi

from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.metrics.gamma import gamma_index


def test_identical_and_uniform_offset():
    ref = np.full((12, 12, 12), 50.0, np.float32)
    same = gamma_index(ref, ref, (2, 2, 2))
    assert same.pass_rate_pct == 100 and np.nanmax(same.gamma) == 0 and same.n_evaluated == ref.size
    # a uniform +2 % difference: no shift helps, gamma = 2/3 at 3 %, 2/1.5 = 1.33 at 1.5 %
    ev = ref * 1.02
    g3 = gamma_index(ref, ev, (2, 2, 2), 3, 3)
    assert np.nanmax(np.abs(g3.gamma - 2 / 3)) < 1e-5 and g3.pass_rate_pct == 100
    g15 = gamma_index(ref, ev, (2, 2, 2), 1.5, 3)
    assert g15.pass_rate_pct == 0 and np.nanmin(g15.gamma) == pytest.approx(4 / 3, abs=1e-5)


def test_shifted_ramp_distance_term():
    # ref = 1 Gy/mm along axis 0; eval shifted by 1.5 mm -> dose difference 1.5 Gy at every point.
    # Searching a distance s costs s/3mm but cuts the dose term: gamma = min_s sqrt((s/3)^2 + ((1.5 - s)/dD)^2)
    x = np.arange(40, dtype=np.float32) * 1.0
    ref = np.broadcast_to((x + 20).reshape(40, 1, 1), (40, 6, 6)).copy()
    ev = ref + 1.5
    res = gamma_index(ref, ev, (1, 1, 1), 3, 3, 0, normalisation_gy=100.0, interp_fraction=10)
    s = np.linspace(0, 1.5, 1501)
    expected = np.sqrt((s / 3) ** 2 + ((1.5 - s) / 3.0) ** 2).min()
    inner = res.gamma[5:-5]
    assert np.nanmax(np.abs(inner - expected)) < 0.01


def test_below_cutoff_not_evaluated():
    ref = np.zeros((10, 10, 10), np.float32)
    ref[3:7, 3:7, 3:7] = 10.0
    res = gamma_index(ref, ref, (1, 1, 1), 3, 3, 10)
    assert res.n_evaluated == 64 and np.isnan(res.gamma[0, 0, 0])


def test_agrees_with_pymedphys_on_real_dose(openkbp_npz):
    pymedphys = pytest.importorskip("pymedphys")
    case = read_openkbp_npz(openkbp_npz)
    ref = case.dose_gy
    ev = np.maximum(ndi.shift(ndi.gaussian_filter(ref, 0.7), (0.5, -0.3, 0.4), order=1, mode="nearest") * 1.01, 0)
    centre = np.argwhere(ref > 0.6 * ref.max()).mean(0).astype(int)
    box = tuple(slice(c - 10, c + 10) for c in centre)
    rc, ec = np.ascontiguousarray(ref[box]), np.ascontiguousarray(ev[box])
    sp = case.grid.spacing_mm
    axes = tuple(np.arange(n) * s for n, s in zip(rc.shape, sp))
    for crit in ((3, 3), (2, 2)):
        ours = gamma_index(rc, ec, sp, *crit, 10)
        theirs = pymedphys.gamma(axes, rc, axes, ec, crit[0], crit[1], lower_percent_dose_cutoff=10,
                                 interp_fraction=10, max_gamma=1.1, interp_algo="scipy")
        valid = ~np.isnan(theirs)
        assert valid.sum() == ours.n_evaluated
        pass_theirs = 100 * np.mean(theirs[valid] <= 1)
        assert 5 < pass_theirs < 99.5  # a discriminating case
        assert abs(ours.pass_rate_pct - pass_theirs) < 0.5, (crit, ours.pass_rate_pct, pass_theirs)


def test_full_grid_speed(openkbp_npz):
    case = read_openkbp_npz(openkbp_npz)
    ev = ndi.gaussian_filter(case.dose_gy, 1.0)
    t = time.perf_counter()
    res = gamma_index(case.dose_gy, ev, case.grid.spacing_mm, 3, 3, 10)
    assert time.perf_counter() - t < 20  # ~2 s on one core of the dev machine
    assert 50 < res.pass_rate_pct <= 100
