"""The target-coverage and OAR-scale priors on a real OpenKBP case: known answers, only the voxels they own
move, the model's config carries them into predict_case, and they can be switched off; flip averaging."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ADDiffDoseLib.errors import InputError
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.postprocess import (apply_coverage_prior, apply_oar_prior, coverage_parameters,
                                             oar_scale_map, oar_scale_parameters)
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


# --- OAR-scale prior (issue 13) ---------------------------------------------------------------------
def test_oar_prior_scales_each_organ_outside_the_targets_only(case):
    dose = case.dose_gy.astype(np.float32)
    scales = {"SpinalCord": 0.8, "Parotid_L": 0.9}
    out = apply_oar_prior(case, dose, scales)
    targets = case.target_prescription_map() > 0
    cord = case.structures["SpinalCord"].mask & ~targets
    lpar = case.structures["Parotid_L"].mask
    assert cord.sum() > 100 and (lpar & targets).any()  # pt_201: the left parotid overlaps a PTV
    np.testing.assert_allclose(out[cord], 0.8 * dose[cord], rtol=1e-6)
    np.testing.assert_allclose(out[lpar & ~targets], 0.9 * dose[lpar & ~targets], rtol=1e-6)
    np.testing.assert_array_equal(out[lpar & targets], dose[lpar & targets])  # target voxels keep their dose
    rest = ~(cord | (lpar & ~targets))
    np.testing.assert_array_equal(out[rest], dose[rest])
    # the right parotid is not named: untouched, so a swapped left/right lookup would fail here
    rpar = case.structures["Parotid_R"].mask & ~targets
    np.testing.assert_array_equal(out[rpar], dose[rpar])
    np.testing.assert_array_equal(apply_oar_prior(case, dose, {}), dose)


def test_oar_prior_overlaps_take_the_smallest_factor_and_bad_values_are_refused(case):
    a, b = case.structures["Bone_Mandible"].mask, case.structures["Larynx"].mask  # the OAR_ORDER name is Mandible
    factor = oar_scale_map(case, {"Mandible": 0.95, "Larynx": 0.85})
    both = a & b & ~(case.target_prescription_map() > 0)
    if both.any():
        assert np.allclose(factor[both], 0.85)
    with pytest.raises(InputError):
        oar_scale_map(case, {"Liver": 0.9})
    with pytest.raises(InputError):
        oar_scale_map(case, {"SpinalCord": 0.1})
    with pytest.raises(InputError):
        apply_oar_prior(case, case.dose_gy[:-1], {"SpinalCord": 0.9})


def test_the_model_config_carries_the_oar_prior_and_flip_averaging(case):
    torch.manual_seed(0)
    model = UNet3D(UNetConfig(widths=(4, 8, 16), resolution_factor=2, oar_scales={"SpinalCord": 0.7})).eval()
    assert oar_scale_parameters(model) == {"SpinalCord": 0.7}
    on = predict_case(case, model, device="cpu")
    off = predict_case(case, model, device="cpu", oar_prior=False)
    assert on.provenance["oar_prior"] == {"SpinalCord": 0.7} and off.provenance["oar_prior"] is None
    np.testing.assert_allclose(on.dose_gy, off.dose_gy * oar_scale_map(case, {"SpinalCord": 0.7}), atol=1e-4)
    assert not on.provenance["flip_averaged"]
    # flip averaging for one sample: the mean of the pass and the mirrored pass, no std
    flip = UNet3D(dataclasses.replace(model.config, tta_flip=True, oar_scales={})).eval()
    flip.load_state_dict(model.state_dict())
    averaged = predict_case(case, flip, device="cpu", coverage_prior=False)
    two = predict_case(case, model, device="cpu", samples=2, coverage_prior=False, oar_prior=False)
    assert averaged.provenance["flip_averaged"] and averaged.dose_std_gy is None
    np.testing.assert_allclose(averaged.dose_gy, two.dose_gy, atol=1e-4)
    assert np.abs(averaged.dose_gy - off.dose_gy).max() > 1e-3  # random weights: the mirrored pass differs
    assert UNetConfig.from_dict(flip.config.to_dict()) == flip.config  # round trip through the JSON config
