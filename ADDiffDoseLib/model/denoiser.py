"""LatentDenoiser3D: a small 3-level U-Net on the dose latent, conditioned on the anatomy and the plan.

Conditioning:
  * anatomy channels (B, 12, D, H, W) average-pooled to the latent grid, through a small conv stem,
    concatenated with x_t (fusion by concatenation at latent resolution);
  * plan tokens (B, T, 14) + mask: embedded, pooled into the time embedding, and attended to by
    4-head cross-attention at the 1/2 and 1/4 latent levels (16^3 and 8^3 for a 32^3 latent);
  * self-attention only at the coarsest level (8^3 = 512 voxels).

Shapes: x_t (B, latent, d, h, w) with d, h, w multiples of 4 (the anatomy grid is an integer
multiple of the latent grid, the same factor on every axis); t (B,) long -> (B, latent, d, h, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ErrorCode, ModelError
from .blocks import (ConvNormAct, CrossAttention3D, Downsample3D, ResBlock3D, SelfAttention3D, TimeEmbedding,
                     Upsample3D, check_divisible, conv3, group_norm, zero_module)
from .config_json import JsonConfig


@dataclass(frozen=True)
class DenoiserConfig(JsonConfig):
    latent_channels: int = 4
    anatomy_channels: int = 12
    cond_channels: int = 16
    widths: tuple[int, int, int] = (32, 64, 128)
    time_dim: int = 128
    token_dim: int = 14
    token_width: int = 64
    heads: int = 4
    cross_attention: bool = True  # at the 1/2 and 1/4 levels
    self_attention: bool = True  # at the 1/4 level only

    def __post_init__(self):
        if len(self.widths) != 3 or any(w % self.heads for w in self.widths[1:]):
            raise ValueError(f"widths {self.widths} must be 3 ints, the last two divisible by heads {self.heads}")


class LatentDenoiser3D(nn.Module):
    """Predicts eps or v (per the schedule) for latent x_t at timestep t, given anatomy and tokens."""

    def __init__(self, cfg: DenoiserConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or DenoiserConfig()
        w0, w1, w2 = cfg.widths
        td = cfg.time_dim
        self.time = TimeEmbedding(w0, td)
        self.token_embed = nn.Sequential(nn.Linear(cfg.token_dim, cfg.token_width), nn.SiLU(),
                                         nn.Linear(cfg.token_width, cfg.token_width))
        self.token_to_time = nn.Linear(cfg.token_width, td)
        self.cond_stem = nn.Sequential(ConvNormAct(cfg.anatomy_channels, cfg.cond_channels),
                                       conv3(cfg.cond_channels, cfg.cond_channels))
        self.inp = conv3(cfg.latent_channels + cfg.cond_channels, w0)
        self.res0 = ResBlock3D(w0, w0, td)
        self.down0 = Downsample3D(w0, w1)
        self.res1 = ResBlock3D(w1, w1, td)
        self.cross1 = CrossAttention3D(w1, cfg.token_width, cfg.heads) if cfg.cross_attention else None
        self.down1 = Downsample3D(w1, w2)
        self.res2a = ResBlock3D(w2, w2, td)
        self.cross2 = CrossAttention3D(w2, cfg.token_width, cfg.heads) if cfg.cross_attention else None
        self.self2 = SelfAttention3D(w2, cfg.heads) if cfg.self_attention else None
        self.res2b = ResBlock3D(w2, w2, td)
        self.up1 = Upsample3D(w2, w1)
        self.res1_up = ResBlock3D(2 * w1, w1, td)
        self.cross1_up = CrossAttention3D(w1, cfg.token_width, cfg.heads) if cfg.cross_attention else None
        self.up0 = Upsample3D(w1, w0)
        self.res0_up = ResBlock3D(2 * w0, w0, td)
        self.out = nn.Sequential(group_norm(w0), nn.SiLU(), zero_module(conv3(w0, cfg.latent_channels)))

    def condition(self, anatomy: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
        """Anatomy (B, 12, D, H, W) -> (B, cond_channels, *latent_shape): average-pool then conv stem.
        Compute once per case and reuse across sampling steps."""
        factors = {s // l for s, l in zip(anatomy.shape[2:], latent_shape)}
        if len(factors) != 1 or any(s % l for s, l in zip(anatomy.shape[2:], latent_shape)):
            raise ModelError(f"anatomy grid {tuple(anatomy.shape[2:])} is not one integer multiple of the latent grid "
                             f"{tuple(latent_shape)}", code=ErrorCode.GRID_MISMATCH)
        factor = factors.pop()
        pooled = F.avg_pool3d(anatomy, factor) if factor > 1 else anatomy
        return self.cond_stem(pooled)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, tokens: torch.Tensor,
                token_mask: torch.Tensor) -> torch.Tensor:
        """x_t (B, latent, d, h, w); t (B,) long; cond from :meth:`condition`; tokens (B, T, 14); mask (B, T)."""
        check_divisible(tuple(x_t.shape[2:]), 4, "denoiser latent")
        tok = self.token_embed(tokens.to(x_t.dtype))
        m = token_mask.to(tok.dtype)[..., None]
        pooled = (tok * m).sum(1) / m.sum(1).clamp(min=1.0)
        temb = self.time(t.reshape(-1).expand(x_t.shape[0])) + self.token_to_time(pooled)

        h0 = self.res0(self.inp(torch.cat([x_t, cond.to(x_t.dtype)], dim=1)), temb)
        h1 = self.res1(self.down0(h0), temb)
        h1 = self.cross1(h1, tok, token_mask) if self.cross1 else h1
        h = self.res2a(self.down1(h1), temb)
        h = self.cross2(h, tok, token_mask) if self.cross2 else h
        h = self.self2(h) if self.self2 else h
        h = self.res2b(h, temb)
        h = self.res1_up(torch.cat([self.up1(h), h1], dim=1), temb)
        h = self.cross1_up(h, tok, token_mask) if self.cross1_up else h
        h = self.res0_up(torch.cat([self.up0(h), h0], dim=1), temb)
        return self.out(h)
