"""LightweightVAE3D: shapes, divisibility, KL, and a few real-data VAE-stage steps lowering the loss."""

import pytest
import torch
from diffusion_helpers import real_batch

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.model.diffusion import DiffusionConfig, DiffusionDoseModel
from ADDiffDoseLib.model.vae import LightweightVAE3D, Posterior, VAEConfig


@pytest.mark.parametrize("shape", [(32, 32, 32), (48, 32, 64), (12, 8, 4)])
def test_shapes(shape):
    vae = LightweightVAE3D()
    recon, post = vae(torch.rand(2, 1, *shape), torch.rand(2, 12, *shape))
    assert recon.shape == (2, 1, *shape)
    assert post.mean.shape == (2, 4, *(s // 4 for s in shape))
    feats = vae.encode_anatomy(torch.rand(1, 12, *shape))
    assert feats.full.shape[2:] == shape and feats.half.shape[2:] == tuple(s // 2 for s in shape)
    assert feats.repeat(3).quarter.shape[0] == 3


def test_divisibility_error():
    with pytest.raises(ModelError, match="multiple of 4"):
        LightweightVAE3D().encode_anatomy(torch.rand(1, 12, 32, 30, 32))


def test_encoder_with_anatomy_option():
    vae = LightweightVAE3D(VAEConfig(encoder_uses_anatomy=True, widths=(4, 8, 16)))
    recon, _ = vae(torch.rand(1, 1, 16, 16, 16), torch.rand(1, 12, 16, 16, 16))
    assert recon.shape == (1, 1, 16, 16, 16)


def test_kl_known_values():
    zero = Posterior(torch.zeros(2, 4, 2, 2, 2), torch.zeros(2, 4, 2, 2, 2))
    assert torch.allclose(zero.kl(), torch.zeros(2))
    shifted = Posterior(torch.ones(1, 1, 1, 1, 1) * 2.0, torch.zeros(1, 1, 1, 1, 1))
    assert torch.isclose(shifted.kl()[0], torch.tensor(2.0))  # 0.5 * mu^2


def test_vae_stage_steps_lower_loss_on_real_cases(openkbp_train):
    torch.manual_seed(0)
    batch = real_batch([openkbp_train / "pt_1.npz", openkbp_train / "pt_10.npz"], size=48)
    model = DiffusionDoseModel(DiffusionConfig())
    opt = torch.optim.Adam(model.trainable_parameters("vae"), lr=3e-3)

    def loss_now():
        with torch.no_grad():
            return model.compute_loss(batch, "vae", generator=torch.Generator().manual_seed(5))[1]

    before = loss_now()
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        loss, _ = model.compute_loss(batch, "vae", generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = loss_now()
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    assert after["mae_body_gy"] < before["mae_body_gy"]
    assert not any(p.grad is not None for p in model.denoiser.parameters())
