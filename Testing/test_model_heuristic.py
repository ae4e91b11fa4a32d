"""Heuristic baseline: closed-form fall-off, fitting L on real training cases, beating a constant dose."""

import json

import numpy as np
import pytest
import torch

from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.conditioning import DOSE_SCALE_GY
from ADDiffDoseLib.model.data import case_tensors
from ADDiffDoseLib.model.heuristic import (HeuristicConfig, HeuristicDoseModel, fit_heuristic, heuristic_dose,
                                           masked_mae)


def test_closed_form_falloff_with_anisotropic_spacing():
    rx = np.zeros((9, 9, 9), np.float32)
    rx[4, 4, 4] = 70.0
    rx[4, 4, 5] = 56.0
    body = np.ones_like(rx, bool)
    body[0] = False
    dose = heuristic_dose(rx, body, spacing_mm=(2.0, 3.0, 5.0), length_mm=10.0)
    assert dose[4, 4, 4] == 70.0 and dose[4, 4, 5] == 56.0  # prescription inside each target
    assert np.isclose(dose[6, 4, 4], 70 * np.exp(-4.0 / 10))  # 2 voxels along axis 0 = 4 mm
    assert np.isclose(dose[4, 6, 4], 70 * np.exp(-6.0 / 10))  # axis 1: 3 mm voxels
    # beside the 56 Gy voxel: the max over levels (70 Gy at 10 mm vs 56 Gy at 5 mm)
    assert np.isclose(dose[4, 4, 6], max(70 * np.exp(-1.0), 56 * np.exp(-0.5)))
    assert (dose[0] == 0).all()  # outside the body


@pytest.fixture(scope="module")
def fitted(openkbp_train):
    cases = [read_openkbp_npz(openkbp_train / f"pt_{n}.npz") for n in (1, 10, 100)]
    return cases, *fit_heuristic(cases)


def test_fit_gives_sensible_length(fitted):
    cases, config, mae = fitted
    assert 3.0 < config.length_mm < 60.0
    assert 0.0 < mae < 15.0  # Gy, in the body
    # the fit is a minimum: L/2 and 2L are worse on the training cases
    for factor in (0.5, 2.0):
        other = np.mean([masked_mae(heuristic_dose(c.target_prescription_map(), c.body_mask, c.grid.spacing_mm,
                                                   config.length_mm * factor), c.dose_gy, c.body_mask) for c in cases])
        assert other > mae


def test_heuristic_beats_constant_dose_on_validation(fitted, openkbp_npz):
    cases, config, _ = fitted
    constant_gy = float(np.mean([c.dose_gy[c.body_mask].mean() for c in cases]))
    val = read_openkbp_npz(openkbp_npz)
    body = val.body_mask
    model = HeuristicDoseModel(config)
    sample = case_tensors(val)
    mean, std = model.predict(sample["channels"][None], sample["tokens"][None], sample["token_mask"][None],
                              samples=3, spacing_mm=val.grid.spacing_mm)
    assert mean.shape == (1, 1, 128, 128, 128) and torch.equal(std, torch.zeros_like(std))
    pred_gy = mean[0, 0].numpy() * DOSE_SCALE_GY
    heuristic_mae = masked_mae(pred_gy, val.dose_gy, body)
    constant_mae = masked_mae(np.full(body.shape, constant_gy, np.float32), val.dose_gy, body)
    assert heuristic_mae < 0.8 * constant_mae, (heuristic_mae, constant_mae)


def test_config_round_trip_and_no_weights():
    cfg = HeuristicConfig(length_mm=12.5)
    assert HeuristicConfig.from_dict(json.loads(json.dumps({**cfg.to_dict(), "family": "heuristic"}))) == cfg
    assert HeuristicDoseModel(cfg).state_dict() == {}
    with pytest.raises(Exception, match="length_mm"):
        HeuristicConfig.from_dict({"length_mm": -1})
