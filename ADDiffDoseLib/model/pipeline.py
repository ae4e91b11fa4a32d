"""DiffusionDosePipeline: the only place where the VAE, the denoiser and a sampler meet.

Per case: encode the anatomy once, draw K latent noises with the caller's seeded generator, run the
K samples through the sampler AS ONE BATCH, decode them with the anatomy skips, and reduce to a
per-voxel mean and standard deviation (dose/70 units). Diversity comes only from the initial latent
noise (DDIM eta = 0 is deterministic given the seed).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .blocks import check_divisible
from .denoiser import LatentDenoiser3D
from .losses import BODY_CHANNEL
from .samplers import DDIMSampler
from .schedules import NoiseSchedule
from .vae import LightweightVAE3D

SPATIAL_MULTIPLE = 16  # VAE 4x, then two stride-2 levels in the latent U-Net


class DiffusionDosePipeline:
    """vae + denoiser + DDIM. latent_scale multiplies VAE latents into the diffusion space (1/std(z))."""

    def __init__(self, vae: LightweightVAE3D, denoiser: LatentDenoiser3D, schedule: NoiseSchedule,
                 latent_scale: float = 1.0, timestep_spacing: str = "trailing", mask_outside_body: bool = True):
        self.vae, self.denoiser = vae, denoiser
        self.sampler = DDIMSampler(schedule, timestep_spacing)
        self.latent_scale = float(latent_scale)
        self.mask_outside_body = mask_outside_body

    @torch.no_grad()
    def sample_case(self, channels: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor, *, steps: int,
                    samples: int, generator: torch.Generator, eta: float = 0.0,
                    progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """One case: channels (1, 12, D, H, W), tokens (1, T, 14), token_mask (1, T) ->
        (samples, 1, D, H, W) float32 dose/70 units, >= 0 (and 0 outside the body when masking)."""
        check_divisible(tuple(channels.shape[2:]), SPATIAL_MULTIPLE, "diffusion model input")
        device = channels.device
        feats = self.vae.encode_anatomy(channels)
        latent_shape = tuple(s // 4 for s in channels.shape[2:])
        cond = self.denoiser.condition(channels, latent_shape).repeat_interleave(samples, dim=0)
        tok, mask = tokens.repeat_interleave(samples, dim=0), token_mask.repeat_interleave(samples, dim=0)
        shape = (samples, self.vae.config.latent_channels, *latent_shape)
        x = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)
        self.sampler.set_timesteps(steps)
        for i, t in enumerate(self.sampler.timesteps.tolist()):
            t_batch = torch.full((samples,), t, dtype=torch.long, device=device)
            out = self.denoiser(x, t_batch, cond, tok, mask)
            x, _ = self.sampler.step(out, t, x, generator=generator, eta=eta)
            if progress:
                progress(i + 1, steps)
        dose = self.vae.decode(x / self.latent_scale, feats.repeat(samples)).float().clamp(min=0.0)
        if self.mask_outside_body:
            dose = dose * (channels[:, BODY_CHANNEL:BODY_CHANNEL + 1] > 0.5).to(dose.dtype)
        return dose

    @torch.no_grad()
    def __call__(self, channels: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor, *, steps: int = 10,
                 samples: int = 1, generator: torch.Generator, eta: float = 0.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched cases: channels (B, 12, D, H, W), tokens (B, T, 14), token_mask (B, T) ->
        mean, std (B, 1, D, H, W) float32 dose/70 units; std is the sample std (n-1) and 0 when samples == 1."""
        means, stds = [], []
        for b in range(channels.shape[0]):
            doses = self.sample_case(channels[b:b + 1], tokens[b:b + 1], token_mask[b:b + 1], steps=steps,
                                     samples=samples, generator=generator, eta=eta)
            means.append(doses.mean(dim=0, keepdim=True))
            stds.append(doses.std(dim=0, keepdim=True) if samples > 1 else torch.zeros_like(doses[:1]))
        return torch.cat(means), torch.cat(stds)
