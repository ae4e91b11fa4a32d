"""LatentDenoiser3D: shapes, conditioning checks, token masking, and real-data denoiser-stage steps."""

import pytest
import torch
from diffusion_helpers import randomize_zero_params, random_inputs, real_batch

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.model.denoiser import DenoiserConfig, LatentDenoiser3D
from ADDiffDoseLib.model.diffusion import DiffusionConfig, DiffusionDoseModel


def _net(**kw):
    net = LatentDenoiser3D(DenoiserConfig(**kw))
    randomize_zero_params(net)
    return net.eval()


@pytest.mark.parametrize("shape", [(32, 32, 32), (48, 32, 64)])
def test_shapes(shape):
    net = _net()
    ch, tok, mask = random_inputs(2, shape)
    latent_shape = tuple(s // 4 for s in shape)
    cond = net.condition(ch, latent_shape)
    assert cond.shape == (2, 16, *latent_shape)
    out = net(torch.randn(2, 4, *latent_shape), torch.tensor([0, 999]), cond, tok, mask)
    assert out.shape == (2, 4, *latent_shape)


def test_divisibility_and_grid_errors():
    net = _net()
    ch, tok, mask = random_inputs(1, (24, 32, 32))
    with pytest.raises(ModelError, match="multiple of 4"):
        net(torch.randn(1, 4, 6, 8, 8), torch.tensor([1]), net.condition(ch, (6, 8, 8)), tok, mask)
    with pytest.raises(ModelError, match="integer multiple"):
        net.condition(ch, (8, 8, 8))


def test_output_depends_on_t_tokens_and_anatomy_not_padding():
    net = _net()
    ch, tok, mask = random_inputs(1, (32, 32, 32))
    x = torch.randn(1, 4, 8, 8, 8)
    cond = net.condition(ch, (8, 8, 8))
    with torch.no_grad():
        out = net(x, torch.tensor([500]), cond, tok, mask)
        assert not torch.allclose(out, net(x, torch.tensor([10]), cond, tok, mask))
        padded = tok.clone()
        padded[~mask] = 50.0
        assert torch.allclose(out, net(x, torch.tensor([500]), cond, padded, mask), atol=1e-5)
        real = tok.clone()
        real[0, 1] += 1.0
        assert not torch.allclose(out, net(x, torch.tensor([500]), cond, real, mask))
        ch2 = ch.clone()
        ch2[:, 1] = 0.0
        assert not torch.allclose(out, net(x, torch.tensor([500]), net.condition(ch2, (8, 8, 8)), tok, mask))


def test_attention_switches():
    plain = _net(cross_attention=False, self_attention=False)
    assert plain.cross1 is None and plain.self2 is None
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in _net().parameters())


def test_denoiser_stage_steps_lower_loss_on_real_cases(openkbp_train):
    torch.manual_seed(0)
    batch = real_batch([openkbp_train / "pt_1.npz", openkbp_train / "pt_10.npz"], size=48)
    model = DiffusionDoseModel(DiffusionConfig())
    samples = [{k: v[i] for k, v in batch.items()} for i in range(2)]
    model.prepare_training("denoiser", samples)
    assert bool(model.latent_scale_calibrated) and float(model.latent_scale) > 0
    vae_before = {k: v.clone() for k, v in model.vae.state_dict().items()}
    opt = torch.optim.Adam(model.trainable_parameters("denoiser"), lr=3e-3)

    def loss_now():
        with torch.no_grad():
            return model.compute_loss(batch, "denoiser", generator=torch.Generator().manual_seed(3))[1]["loss"]

    before = loss_now()
    for _ in range(8):  # the same timesteps and noise each step: overfitting them must work
        loss, logs = model.compute_loss(batch, "denoiser", generator=torch.Generator().manual_seed(3))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {"noise_mse", "target_pen", "oar_pen", "loss"} <= set(logs)
    assert loss_now() < 0.95 * before  # untrained VAE latents: a modest but sure drop
    assert all(torch.equal(v, model.vae.state_dict()[k]) for k, v in vae_before.items())  # VAE frozen
    assert all(p.grad is None for p in model.vae.parameters())
