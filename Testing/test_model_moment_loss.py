"""The DVH moment loss on a real pooled OpenKBP case: target levels found from the pooled prescription map
(boundary mixtures refused), zero for the reference itself, a known answer for a scaled dose (the moments are
homogeneous), gradient only inside structures, and the U-Net loss adds it when configured."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.conditioning import build_inputs
from ADDiffDoseLib.model.losses import dvh_moment_loss, structure_masks, target_levels
from ADDiffDoseLib.model.unet import UNet3D, UNetConfig


@pytest.fixture(scope="module")
def pooled(openkbp_validation):
    """pt_203 (PTV56 + PTV70) at the U-Net's half resolution: channels (1, 12, 64^3), dose / 70 (1, 1, 64^3)."""
    case = read_openkbp_npz(openkbp_validation / "pt_203.npz")
    channels = F.avg_pool3d(build_inputs(case).channels[None], 2)
    dose = F.avg_pool3d(torch.from_numpy(case.dose_gy[None, None] / 70.0).float(), 2)
    return case, channels, dose


def test_target_levels_are_the_prescriptions_not_boundary_mixtures(pooled):
    case, channels, _ = pooled
    rx_gy = channels[0, 1] * 70.0
    assert sorted(s.prescription_gy for s in case.structures.values() if s.prescription_gy) == [56.0, 70.0]
    # pooled boundary voxels hold 35 Gy (70 x 4/8) and 28 Gy (56 x 4/8) often; those are not levels
    assert int(((rx_gy - 35.0).abs() < 1e-3).sum()) > 20
    assert target_levels(rx_gy) == pytest.approx([70.0, 56.0], abs=1e-3)
    masks = structure_masks(channels[0])
    assert len(masks) == 2 + 5  # two target levels + the organs present in pt_203
    assert int(masks[0].sum()) > 400


def test_moment_loss_known_answers(pooled):
    _, channels, dose = pooled
    assert float(dvh_moment_loss(dose, dose, channels)) < 1e-6
    # M_p(c x d) = c M_p(d): a dose 10 % high errs by 0.1 x the mean of the reference's moments
    masks = structure_masks(channels[0])
    moments = [(dose[0, 0][m] + 1e-6).pow(p).mean().pow(1 / p) for m in masks for p in (1.0, 2.0, 10.0)]
    expected = 0.1 * torch.stack(moments).mean()
    pred = (dose * 1.1).requires_grad_()
    loss = dvh_moment_loss(pred, dose, channels)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-3)
    assert float(loss.detach()) * 70 > 1.0  # Gy: a real dose, so the check has teeth
    loss.sum().backward()
    union = torch.stack(masks).any(0)
    assert pred.grad[0, 0][~union].abs().max() == 0 and pred.grad[0, 0][union].abs().sum() > 0


def test_unet_loss_adds_the_moment_term_when_configured(pooled):
    _, channels, dose = pooled
    body = channels[:, 9:10] > 0.5
    batch = {"channels": channels, "dose": dose, "body": body}
    torch.manual_seed(0)
    plain = UNet3D(UNetConfig(widths=(4, 8, 16)))
    with_moments = UNet3D(UNetConfig(widths=(4, 8, 16), moment_loss_weight=0.5))
    with_moments.load_state_dict(plain.state_dict())
    loss_plain, logs_plain = plain.compute_loss(batch)
    loss_moments, logs = with_moments.compute_loss(batch)
    assert "moment_gy" not in logs_plain and logs["moment_gy"] > 1.0
    assert float(loss_moments - loss_plain) == pytest.approx(0.5 * logs["moment_gy"] / 70.0, rel=1e-4)
