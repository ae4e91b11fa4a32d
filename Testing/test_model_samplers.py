"""Schedules and samplers: beta tables, forward-process conversions, timestep spacing, and DDIM/DDPM
with an oracle network recovering x0 exactly."""

import pytest
import torch

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.model.samplers import DDIMSampler, DDPMSampler, spaced_timesteps
from ADDiffDoseLib.model.schedules import NoiseSchedule, make_betas, rescale_zero_terminal_snr


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "cosine"])
def test_betas(kind):
    betas = make_betas(kind, 1000)
    assert betas.shape == (1000,) and (betas > 0).all() and (betas < 1).all()
    abar = torch.cumprod(1 - betas, 0)
    assert (abar[1:] < abar[:-1]).all()


def test_bad_schedule_names():
    with pytest.raises(ModelError):
        make_betas("quadratic", 10)
    with pytest.raises(ModelError):
        NoiseSchedule(make_betas("linear", 10), prediction_type="sample")


def test_zero_terminal_snr():
    betas = make_betas("scaled_linear", 1000)
    abar0 = torch.cumprod(1 - betas, 0)
    abar = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    assert abar[-1] < 1e-12
    assert torch.isclose(abar[0], abar0[0])


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_add_noise_and_conversions(prediction_type):
    sched = NoiseSchedule.create(prediction_type=prediction_type)
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, 4, generator=gen)
    t = torch.tensor([0, 500, 999])
    x_t = sched.add_noise(x0, eps, t)
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    a, s = abar.sqrt().float(), (1 - abar).sqrt().float()
    assert torch.allclose(x_t, a * x0 + s * eps, atol=1e-6)
    v = sched.velocity(x0, eps, t)
    assert torch.allclose(v, a * eps - s * x0, atol=1e-6)
    x0_hat, eps_hat = sched.split_prediction(sched.target(x0, eps, t), x_t, t)
    assert torch.allclose(x0_hat, x0, atol=1e-3) and torch.allclose(eps_hat, eps, atol=1e-3)


def test_spaced_timesteps():
    assert spaced_timesteps(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    assert spaced_timesteps(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert spaced_timesteps(1000, 1, "trailing").tolist() == [999]
    assert spaced_timesteps(1000, 3, "linspace").tolist() == [999, 500, 0]
    with pytest.raises(ModelError):
        spaced_timesteps(1000, 0)
    with pytest.raises(ModelError):
        spaced_timesteps(1000, 5, "random")


def _oracle(sched, x0):
    """The network that knows x0: returns the exact eps / v for any x_t."""
    def net(x_t, t):
        a, s = sched._coef(t, x_t)
        eps = (x_t - a * x0) / s
        return eps if sched.prediction_type == "epsilon" else a * eps - s * x0
    return net


@pytest.mark.parametrize(("prediction_type", "zero_snr", "spacing"), [
    ("epsilon", False, "leading"), ("epsilon", False, "trailing"), ("v_prediction", False, "trailing"),
    ("v_prediction", True, "trailing"), ("v_prediction", True, "linspace"),
])
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_ddim_oracle_recovers_x0(prediction_type, zero_snr, spacing, steps):
    sched = NoiseSchedule.create(prediction_type=prediction_type, zero_terminal_snr=zero_snr)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 3, 3, 3, generator=gen) * 2
    sampler = DDIMSampler(sched, spacing)
    sampler.set_timesteps(steps)
    assert len(sampler.timesteps) == steps
    x = sched.add_noise(x0, torch.randn(x0.shape, generator=gen), int(sampler.timesteps[0]))
    net = _oracle(sched, x0)
    for t in sampler.timesteps.tolist():
        x, x0_hat = sampler.step(net(x, t), t, x, eta=0.0)
    assert torch.allclose(x, x0, atol=1e-3)
    assert torch.allclose(x0_hat, x0, atol=1e-3)


def test_ddim_eta_noise_is_seeded():
    sched = NoiseSchedule.create()
    sampler = DDIMSampler(sched)
    sampler.set_timesteps(5)
    x = torch.randn(1, 4, 2, 2, 2)
    out = torch.zeros_like(x)
    t = int(sampler.timesteps[0])
    a = sampler.step(out, t, x, generator=torch.Generator().manual_seed(7), eta=1.0)[0]
    b = sampler.step(out, t, x, generator=torch.Generator().manual_seed(7), eta=1.0)[0]
    c = sampler.step(out, t, x, generator=torch.Generator().manual_seed(8), eta=1.0)[0]
    d = sampler.step(out, t, x, eta=0.0)[0]
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, d)


def test_ddpm_oracle_ends_at_x0():
    sched = NoiseSchedule.create(prediction_type="epsilon")
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, 4, 2, 2, 2, generator=gen)
    sampler = DDPMSampler(sched, "leading")
    sampler.set_timesteps(20)
    x = sched.add_noise(x0, torch.randn(x0.shape, generator=gen), int(sampler.timesteps[0]))
    net = _oracle(sched, x0)
    for t in sampler.timesteps.tolist():
        x, _ = sampler.step(net(x, t), t, x, generator=gen)
    assert torch.allclose(x, x0, atol=1e-3)


def test_step_outside_timesteps_raises():
    sampler = DDIMSampler(NoiseSchedule.create())
    sampler.set_timesteps(10)
    with pytest.raises(ModelError, match="set_timesteps"):
        sampler.step(torch.zeros(1, 1), 5, torch.zeros(1, 1))
