"""Reverse-process samplers (DDIM, DDPM). They hold no nn.Module: the pipeline calls the network and
hands its output to ``step``. No x0 clipping (latents are not in [-1, 1]).

Usage::

    sampler.set_timesteps(10)
    for t in sampler.timesteps:
        x, x0 = sampler.step(net(x, t, cond), int(t), x, generator=g)
"""

from __future__ import annotations

import torch

from ..errors import ErrorCode, ModelError
from .schedules import NoiseSchedule

SPACINGS = ("trailing", "leading", "linspace")


def spaced_timesteps(num_train: int, n: int, spacing: str = "trailing") -> torch.Tensor:
    """(n,) long, strictly decreasing timesteps in [0, num_train-1] (diffusers' spacings; 'trailing'
    starts at T-1, which zero-terminal-SNR schedules need)."""
    if not 1 <= n <= num_train:
        raise ModelError(f"number of steps must be in 1..{num_train}, got {n}", code=ErrorCode.INVALID_VALUE)
    if spacing == "trailing":
        ts = torch.round(torch.arange(num_train, 0, -num_train / n, dtype=torch.float64)) - 1
    elif spacing == "leading":
        ts = torch.arange(n - 1, -1, -1, dtype=torch.float64) * (num_train // n)
    elif spacing == "linspace":
        ts = torch.round(torch.linspace(num_train - 1, 0, n, dtype=torch.float64))
    else:
        raise ModelError(f"unknown timestep spacing {spacing!r}; use one of {SPACINGS}", code=ErrorCode.INVALID_CONFIG)
    return ts.long()[:n]


class _Sampler:
    def __init__(self, schedule: NoiseSchedule, timestep_spacing: str = "trailing"):
        self.schedule = schedule
        self.timestep_spacing = timestep_spacing
        self.timesteps = torch.empty(0, dtype=torch.long)
        self._prev: dict[int, int] = {}

    def set_timesteps(self, n: int) -> None:
        """Fill ``.timesteps`` with n decreasing steps; the step after the last one is 'clean' (abar = 1)."""
        self.timesteps = spaced_timesteps(self.schedule.num_timesteps, n, self.timestep_spacing)
        ts = self.timesteps.tolist()
        self._prev = {t: (ts[i + 1] if i + 1 < len(ts) else -1) for i, t in enumerate(ts)}

    def _abar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.schedule.alphas_cumprod[t])

    def _prev_t(self, t) -> int:
        t = int(t)
        if t not in self._prev:
            raise ModelError(f"timestep {t} is not in the sampler's timesteps; call set_timesteps first",
                             code=ErrorCode.INVALID_VALUE)
        return self._prev[t]


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    gen_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gen_device, dtype=torch.float32).to(x.device, x.dtype)


class DDIMSampler(_Sampler):
    """DDIM (Song et al. 2021). eta = 0 is deterministic; eta = 1 matches DDPM's variance."""

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator: torch.Generator | None = None,
             eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One step t -> previous timestep. Returns (x_prev, x0 estimate), both shaped like x_t."""
        prev_t = self._prev_t(t)
        x0, eps = self.schedule.split_prediction(model_output.float(), x_t.float(), int(t))
        abar_t, abar_prev = self._abar(int(t)), self._abar(prev_t)
        sigma = 0.0
        if eta > 0 and abar_t < 1.0:
            sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
        direction = max(1 - abar_prev - sigma**2, 0.0) ** 0.5
        prev = abar_prev**0.5 * x0 + direction * eps
        if sigma > 0:
            prev = prev + sigma * _noise_like(x_t, generator)
        return prev.to(x_t.dtype), x0.to(x_t.dtype)


class DDPMSampler(_Sampler):
    """Ancestral DDPM sampling on (possibly strided) timesteps; the variance is the posterior's."""

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator: torch.Generator | None = None,
             eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        prev_t = self._prev_t(t)
        x0, _ = self.schedule.split_prediction(model_output.float(), x_t.float(), int(t))
        abar_t, abar_prev = self._abar(int(t)), self._abar(prev_t)
        alpha = abar_t / abar_prev
        beta = 1 - alpha
        mean = (abar_prev**0.5 * beta / (1 - abar_t)) * x0 + (alpha**0.5 * (1 - abar_prev) / (1 - abar_t)) * x_t.float()
        if prev_t >= 0:
            var = beta * (1 - abar_prev) / (1 - abar_t)
            mean = mean + eta * var**0.5 * _noise_like(x_t, generator)
        return mean.to(x_t.dtype), x0.to(x_t.dtype)
