"""The target-coverage prior on a real OpenKBP case: known answers, only target voxels move, the model's
config carries it into predict_case, and it can be switched off."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ADDiffDoseLib.errors import InputError
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.postprocess import apply_coverage_prior, coverage_parameters
from ADDiffDoseLib.model.predict import predict_case
from ADDiffDoseLib.model.unet import UNet3D, UNetConfig


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return read_openkbp_npz(openkbp_npz)


def test_known_answers_on_the_reference_dose(case):
    low = (case.dose_gy * 0.8).astype(np.float32)  # the clinical dose, 20 % too low everywhere
    rx = case.target_prescription_map()
    inside = rx > 0
    full = apply_coverage_prior(case, low, 1.0, 1.0)
    assert np.all(full[inside] >= rx[inside] - 1e-4)  # strength 1: every target voxel at least its Rx
    np.testing.assert_array_equal(full[~inside], low[~inside])  # nothing outside the targets moves
    half = apply_coverage_prior(case, low, 1.0, 0.5)
    expected = low + 0.5 * np.maximum(0, rx - low) * inside
    np.testing.assert_allclose(half, expected, atol=1e-4)
    ptv70 = case.structures["PTV70"].mask
    assert np.percentile(half[ptv70], 5) > np.percentile(low[ptv70], 5) + 5  # D95 of PTV70 rises
    np.testing.assert_array_equal(apply_coverage_prior(case, low, 1.0, 0.0), low)  # strength 0 = off


def test_overlaps_use_the_highest_prescription(case):
    zero = np.zeros(case.grid.shape, np.float32)
    out = apply_coverage_prior(case, zero, 1.0, 1.0)
    both = case.structures["PTV70"].mask & case.structures["PTV56"].mask
    if both.any():
        assert np.allclose(out[both], 70.0)
    only56 = case.structures["PTV56"].mask & ~case.structures["PTV70"].mask & ~case.structures["PTV63"].mask
    assert np.allclose(out[only56], 56.0)


def test_bad_parameters_and_grids_are_refused(case):
    with pytest.raises(InputError):
        apply_coverage_prior(case, case.dose_gy, 1.0, 1.5)
    with pytest.raises(InputError):
        apply_coverage_prior(case, case.dose_gy[:-1], 1.0, 0.5)


def test_the_model_config_carries_the_prior_into_predict_case(case):
    torch.manual_seed(0)
    model = UNet3D(UNetConfig(widths=(4, 8, 16), resolution_factor=2, coverage_level=1.0, coverage_strength=0.75)).eval()
    assert coverage_parameters(model) == (1.0, 0.75)
    on = predict_case(case, model, device="cpu")
    off = predict_case(case, model, device="cpu", coverage_prior=False)
    assert on.provenance["coverage_prior"] == {"level": 1.0, "strength": 0.75}
    assert off.provenance["coverage_prior"] is None
    rx = case.target_prescription_map()
    expected = off.dose_gy + 0.75 * np.maximum(0, rx - off.dose_gy) * (rx > 0)
    np.testing.assert_allclose(on.dose_gy, expected, atol=1e-3)
    plain = dataclasses.replace(model.config, coverage_strength=0.0)
    assert coverage_parameters(UNet3D(plain)) == (1.0, 0.0)
