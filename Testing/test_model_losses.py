"""Losses: soft quantile / soft max, masked dose loss, and the dose-constraint penalties (zero when met)."""

import numpy as np
import pytest
import torch

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.model.conditioning import OAR_ORDER
from ADDiffDoseLib.model.losses import (check_limits, masked_dose_loss, noise_mse, oar_overdose, soft_max,
                                        soft_quantile, target_underdose)

CORD = 2 + OAR_ORDER.index("SpinalCord")
PAROTID_L = 2 + OAR_ORDER.index("Parotid_L")
LIMITS = (("SpinalCord", "max", 45.0), ("Parotid_L", "mean", 26.0))


def test_soft_quantile_matches_quantile_and_has_gradient():
    values = torch.rand(20000, generator=torch.Generator().manual_seed(0), requires_grad=True)
    q = soft_quantile(values, 0.05, bandwidth=0.005)
    assert abs(float(q.detach()) - np.quantile(values.detach().numpy(), 0.05)) < 0.01
    q.backward()
    assert values.grad.abs().sum() > 0
    const = torch.full((50,), 0.7)
    assert torch.isclose(soft_quantile(const, 0.05), torch.tensor(0.7))


def test_soft_max_between_mean_and_max():
    v = torch.tensor([0.1, 0.2, 0.9, 0.3])
    s = soft_max(v, tau=0.02)
    assert v.mean() < s <= v.max()
    assert torch.isclose(soft_max(torch.full((10,), 0.5)), torch.tensor(0.5))


def _case(target_dose: float, cord_dose: float, parotid_dose: float):
    ch = torch.zeros(1, 12, 16, 16, 16)
    ch[0, 1, 4:8, 4:8, 4:8] = 1.0  # 70 Gy target
    ch[0, 1, 8:10, 4:8, 4:8] = 0.8  # 56 Gy target
    ch[0, CORD, 12:14, 12:14, :] = 1.0
    ch[0, PAROTID_L, 0:2, 10:14, 0:4] = 1.0
    ch[0, 9] = 1.0
    dose = torch.full((1, 1, 16, 16, 16), 0.05)
    dose[0, 0][ch[0, 1] > 0] = ch[0, 1][ch[0, 1] > 0] * target_dose
    dose[0, 0][ch[0, CORD] > 0] = cord_dose / 70
    dose[0, 0][ch[0, PAROTID_L] > 0] = parotid_dose / 70
    return dose, ch


def test_constraints_zero_when_met():
    dose, ch = _case(target_dose=1.02, cord_dose=40.0, parotid_dose=20.0)
    assert float(target_underdose(dose, ch)) == 0.0
    assert float(oar_overdose(dose, ch, LIMITS)) == 0.0


def test_underdosed_target_and_overdosed_oars_are_penalised():
    dose, ch = _case(target_dose=0.9, cord_dose=40.0, parotid_dose=20.0)
    under = target_underdose(dose, ch)
    assert under.shape == (1,) and torch.isclose(under[0], torch.tensor(0.01), atol=1e-4)  # (1 - 0.9)^2
    hot, ch = _case(target_dose=1.0, cord_dose=52.0, parotid_dose=33.0)
    expected = ((52 - 45) / 70) ** 2 + ((33 - 26) / 70) ** 2
    assert torch.isclose(oar_overdose(hot, ch, LIMITS)[0], torch.tensor(expected), rtol=0.02)
    hot.requires_grad_(True)
    oar_overdose(hot, ch, LIMITS).sum().backward()
    assert hot.grad[0, 0][ch[0, CORD] > 0].abs().sum() > 0


def test_no_target_gives_zero():
    ch = torch.zeros(2, 12, 8, 8, 8)
    assert torch.equal(target_underdose(torch.rand(2, 1, 8, 8, 8), ch), torch.zeros(2))


def test_masked_dose_loss_known_answer():
    pred, ref = torch.ones(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2)
    body = torch.zeros(1, 1, 2, 2, 2, dtype=torch.bool)
    body[..., 0] = True
    pred[..., 1] = 3.0  # outside the body
    assert torch.isclose(masked_dose_loss(pred, ref, body, 0.1), torch.tensor(1.0 + 0.1 * 2.0))
    assert torch.isclose(masked_dose_loss(pred, ref, body, 0.0, "mse"), torch.tensor(1.0))
    assert torch.isclose(noise_mse(torch.ones(2, 3), torch.zeros(2, 3), torch.tensor([1.0, 0.0])), torch.tensor(0.5))


def test_check_limits():
    check_limits(LIMITS)
    for bad in [("Heart", "max", 20.0), ("SpinalCord", "median", 45.0), ("SpinalCord", "max", 0.0)]:
        with pytest.raises(ModelError):
            check_limits((bad,))
