"""Noise schedules: beta tables and the forward-process maths (no nn.Module, no sampling loop).

Convention (DDPM): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t in [0, T-1];
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022).
"""

from __future__ import annotations

import math

import torch

from ..errors import ErrorCode, ModelError

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction")


def make_betas(kind: str, num_timesteps: int, beta_start: float = 0.0015, beta_end: float = 0.0195) -> torch.Tensor:
    """(T,) float64 betas. 'linear', 'scaled_linear' (linear in sqrt(beta), latent-diffusion default)
    or 'cosine' (Nichol & Dhariwal 2021, beta clipped at 0.999)."""
    if num_timesteps < 2:
        raise ModelError(f"num_timesteps must be >= 2, got {num_timesteps}")
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ModelError(f"unknown beta schedule {kind!r}; use one of {BETA_SCHEDULES}")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift/scale sqrt(abar) so the last step has SNR 0 (Lin et al. 2023, arXiv 2305.08891, Alg. 1).
    Use with v-prediction: epsilon cannot be predicted from pure noise."""
    sqrt_abar = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


class NoiseSchedule:
    """Forward process for `betas` and conversions between x0, eps, v and the network output.

    prediction_type: 'epsilon' or 'v_prediction'. All tensor methods take t as a (B,) long tensor
    (or int) and broadcast over any trailing shape; values are computed in float32 on x's device.
    """

    def __init__(self, betas: torch.Tensor, prediction_type: str = "v_prediction"):
        if prediction_type not in PREDICTION_TYPES:
            raise ModelError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}",
                             code=ErrorCode.INVALID_CONFIG)
        self.betas = betas.double()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.prediction_type = prediction_type

    @classmethod
    def create(cls, kind: str = "scaled_linear", num_timesteps: int = 1000, beta_start: float = 0.0015,
               beta_end: float = 0.0195, prediction_type: str = "v_prediction", zero_terminal_snr: bool = False
               ) -> "NoiseSchedule":
        betas = make_betas(kind, num_timesteps, beta_start, beta_end)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        return cls(betas, prediction_type)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def _coef(self, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t), sqrt(1 - abar_t) shaped (B, 1, 1, ...) for broadcasting against x."""
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long().reshape(-1)
        abar = self.alphas_cumprod[t].to(device=x.device, dtype=torch.float32)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return abar.sqrt().view(shape), (1 - abar).clamp(min=0).sqrt().view(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        a, s = self._coef(t, x0)
        return a * x0 + s * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        a, s = self._coef(t, x0)
        return a * noise - s * x0

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """What the network is trained to output: eps or v."""
        return noise if self.prediction_type == "epsilon" else self.velocity(x0, noise, t)

    def split_prediction(self, model_output: torch.Tensor, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output at (x_t, t) -> (x0 estimate, eps estimate)."""
        a, s = self._coef(t, x_t)
        if self.prediction_type == "epsilon":
            eps = model_output
            x0 = (x_t - s * eps) / a.clamp(min=1e-8)
        else:  # v: x0 = a x_t - s v, eps = s x_t + a v
            x0 = a * x_t - s * model_output
            eps = s * x_t + a * model_output
        return x0, eps
