"""LightweightVAE3D: a 4x-per-axis dose autoencoder whose decoder also sees the full-resolution anatomy.

A 4x dose autoencoder alone cannot be accurate enough (average-pooling the reference dose 4x scores
3.64 / 6.71 Gy OpenKBP dose / DVH), so an anatomy encoder turns the 12 input channels into skip
features at full, 1/2 and 1/4 resolution that the decoder concatenates at each level: the latent
carries what the anatomy does not explain, the skips carry the sharp target / body edges.

Shapes (spatial size (D, H, W), each a multiple of 4; 128^3 -> 32^3 latent):
  anatomy (B, 12, D, H, W) -> AnatomyFeatures (w0 @ D, w1 @ D/2, w2 @ D/4)
  dose (B, 1, D, H, W), dose/70 units -> Posterior mean/logvar (B, latent, D/4, H/4, W/4)
  latent + AnatomyFeatures -> dose (B, 1, D, H, W), dose/70 units (unbounded; clamp when predicting)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import ConvNormAct, ResBlock3D, Upsample3D, check_divisible, conv1, conv3, group_norm
from .config_json import JsonConfig

DOWNSAMPLE = 4  # per axis, fixed by the two stride-2 levels


@dataclass(frozen=True)
class VAEConfig(JsonConfig):
    """in_channels: anatomy channels (12); latent_channels: 4; widths: (full, 1/2, 1/4 resolution).

    The full-resolution width dominates the cost (a 3x3x3 conv at 128^3 costs 2*27*Cin*Cout*2.1M FLOP),
    hence 8 there; forward cost at 128^3 is ~110 GFLOP for anatomy encoder + decoder."""

    in_channels: int = 12
    latent_channels: int = 4
    widths: tuple[int, int, int] = (8, 32, 64)
    encoder_uses_anatomy: bool = False  # dose encoder also sees the 1/4-res anatomy features

    def __post_init__(self):
        if len(self.widths) != 3 or min(self.widths) < 1 or self.latent_channels < 1:
            raise ValueError(f"widths must be 3 positive ints, got {self.widths}")


@dataclass
class AnatomyFeatures:
    """Skip features of one batch: full (B, w0, D, H, W), half (B, w1, D/2..), quarter (B, w2, D/4..)."""

    full: torch.Tensor
    half: torch.Tensor
    quarter: torch.Tensor

    def repeat(self, k: int) -> "AnatomyFeatures":
        """Each case's features repeated k times along the batch (case-major), for K samples per case."""
        return AnatomyFeatures(*(t.repeat_interleave(k, dim=0) for t in (self.full, self.half, self.quarter)))


@dataclass
class Posterior:
    """Diagonal Gaussian over the latent: mean, logvar (B, latent, D/4, H/4, W/4)."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """(B,) KL to N(0, I), averaged over latent elements."""
        m, lv = self.mean.float(), self.logvar.float()
        return 0.5 * (m.pow(2) + lv.exp() - 1.0 - lv).flatten(1).mean(dim=1)


class AnatomyEncoder3D(nn.Module):
    """12 anatomy channels -> skip features at full, 1/2 and 1/4 resolution."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int]):
        super().__init__()
        w0, w1, w2 = widths
        self.stem = ConvNormAct(in_channels, w0)
        self.down1 = ConvNormAct(w0, w1, stride=2)
        self.down2 = ConvNormAct(w1, w2, stride=2)
        self.res2 = ResBlock3D(w2, w2)

    def forward(self, anatomy: torch.Tensor) -> AnatomyFeatures:
        full = self.stem(anatomy)
        half = self.down1(full)
        return AnatomyFeatures(full, half, self.res2(self.down2(half)))


class DoseEncoder3D(nn.Module):
    """Dose (B, 1, D, H, W) [+ quarter anatomy features] -> Posterior at 1/4 resolution."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w0, w1, w2 = cfg.widths
        self.uses_anatomy = cfg.encoder_uses_anatomy
        self.stem = ConvNormAct(1, w0)
        self.down1 = ConvNormAct(w0, w1, stride=2)
        self.down2 = ConvNormAct(w1, w2, stride=2)
        self.res = ResBlock3D(w2 * (2 if self.uses_anatomy else 1), w2)
        self.head = nn.Sequential(group_norm(w2), nn.SiLU(), conv1(w2, 2 * cfg.latent_channels))

    def forward(self, dose: torch.Tensor, anatomy: AnatomyFeatures | None = None) -> Posterior:
        h = self.down2(self.down1(self.stem(dose)))
        if self.uses_anatomy:
            h = torch.cat([h, anatomy.quarter], dim=1)
        mean, logvar = self.head(self.res(h)).chunk(2, dim=1)
        return Posterior(mean, logvar.clamp(-30.0, 20.0))


class DoseDecoder3D(nn.Module):
    """Latent (B, latent, D/4, ..) + AnatomyFeatures -> dose (B, 1, D, H, W) in dose/70 units."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w0, w1, w2 = cfg.widths
        self.inp = conv3(cfg.latent_channels + w2, w2)
        self.res2 = ResBlock3D(w2, w2)
        self.up1 = Upsample3D(w2, w1)
        self.fuse1 = ConvNormAct(2 * w1, w1)
        self.up0 = Upsample3D(w1, w0)
        self.fuse0 = ConvNormAct(2 * w0, w0)
        self.out = conv1(w0, 1)

    def forward(self, z: torch.Tensor, anatomy: AnatomyFeatures) -> torch.Tensor:
        h = self.res2(self.inp(torch.cat([z, anatomy.quarter], dim=1)))
        h = self.fuse1(torch.cat([self.up1(h), anatomy.half], dim=1))
        h = self.fuse0(torch.cat([self.up0(h), anatomy.full], dim=1))
        return self.out(h)


class LightweightVAE3D(nn.Module):
    """Anatomy encoder + dose encoder + anatomy-aware decoder. Spatial sizes must be multiples of 4
    (ModelError otherwise); the diffusion model as a whole needs multiples of 16."""

    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        self.config = cfg or VAEConfig()
        self.anatomy_encoder = AnatomyEncoder3D(self.config.in_channels, self.config.widths)
        self.encoder = DoseEncoder3D(self.config)
        self.decoder = DoseDecoder3D(self.config)

    def encode_anatomy(self, anatomy: torch.Tensor) -> AnatomyFeatures:
        """anatomy: (B, 12, D, H, W) float32 (conditioning channels)."""
        check_divisible(tuple(anatomy.shape[2:]), DOWNSAMPLE, "VAE anatomy")
        return self.anatomy_encoder(anatomy)

    def encode(self, dose: torch.Tensor, anatomy: AnatomyFeatures | None = None) -> Posterior:
        """dose: (B, 1, D, H, W) in dose/70 units."""
        check_divisible(tuple(dose.shape[2:]), DOWNSAMPLE, "VAE dose")
        return self.encoder(dose, anatomy)

    def decode(self, z: torch.Tensor, anatomy: AnatomyFeatures) -> torch.Tensor:
        """z: (B, latent, D/4, H/4, W/4) unscaled latent -> (B, 1, D, H, W) dose/70."""
        return self.decoder(z, anatomy)

    def forward(self, dose: torch.Tensor, anatomy: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, Posterior]:
        """Reconstruction (B, 1, D, H, W) from a posterior sample, and the posterior."""
        feats = self.encode_anatomy(anatomy)
        post = self.encode(dose, feats)
        return self.decode(post.sample(generator), feats), post
