"""Shared 3D building blocks: res blocks (conv + GroupNorm + SiLU), down/up sampling, the sinusoidal
time embedding and attention (cross-attention to plan tokens, self-attention over voxels).

All feature maps are (B, C, D, H, W) float tensors; tokens are (B, T, token_dim) with a (B, T) bool
mask that is True for real tokens (padding False).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ErrorCode, ModelError


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide `channels` (at least 2 channels per group when possible)."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0 and (channels // g >= 2 or g == 1))
    return nn.GroupNorm(groups, channels)


def conv3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1)


def conv1(in_ch: int, out_ch: int) -> nn.Conv3d:
    return nn.Conv3d(in_ch, out_ch, 1)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ConvNormAct(nn.Sequential):
    """conv3 (optionally strided) -> GroupNorm -> SiLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__(conv3(in_ch, out_ch, stride), group_norm(out_ch), nn.SiLU())


class ResBlock3D(nn.Module):
    """Pre-activation residual block: (GN, SiLU, conv3) x 2, with an optional time embedding added as a
    per-channel scale and shift after the second norm. Shape (B, in_ch, ...) -> (B, out_ch, ...)."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int | None = None):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), conv3(in_ch, out_ch)
        self.norm2, self.conv2 = group_norm(out_ch), zero_module(conv3(out_ch, out_ch))
        self.time = nn.Linear(time_dim, 2 * out_ch) if time_dim else None
        self.skip = conv1(in_ch, out_ch) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.time is not None and temb is not None:
            scale, shift = self.time(F.silu(temb))[:, :, None, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Downsample3D(nn.Module):
    """Stride-2 conv3: (B, in_ch, D, H, W) -> (B, out_ch, D/2, H/2, W/2)."""

    def __init__(self, in_ch: int, out_ch: int | None = None):
        super().__init__()
        self.conv = conv3(in_ch, out_ch or in_ch, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """conv1 at the low resolution (cheap channel change), then trilinear x2:
    (B, in_ch, D, H, W) -> (B, out_ch, 2D, 2H, 2W)."""

    def __init__(self, in_ch: int, out_ch: int | None = None):
        super().__init__()
        self.proj = conv1(in_ch, out_ch or in_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.proj(x), scale_factor=2.0, mode="trilinear", align_corners=False)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) integer or float timesteps -> (B, dim) float32 (cos half, sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """(B,) timesteps -> (B, out_dim): sinusoidal features then a 2-layer MLP."""

    def __init__(self, base_dim: int, out_dim: int):
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.base_dim))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)  # (B, heads, N, C/heads)


class CrossAttention3D(nn.Module):
    """Residual multi-head cross-attention from voxels (queries) to tokens (keys/values).

    x: (B, C, D, H, W); tokens: (B, T, token_dim); token_mask: (B, T) bool, True = real token.
    A case whose mask has no True entry attends to nothing (its update is zero).
    """

    def __init__(self, channels: int, token_dim: int, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be divisible by heads {heads}")
        self.heads = heads
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels, bias=False)
        self.kv = nn.Linear(token_dim, 2 * channels, bias=False)
        self.out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        q = self.q(self.norm(x).flatten(2).transpose(1, 2))
        k, v = self.kv(tokens.to(q.dtype)).chunk(2, dim=-1)
        attn_mask = None
        if token_mask is not None:
            valid = token_mask.bool()
            any_valid = valid.any(dim=1)
            attn_mask = (valid | ~any_valid[:, None])[:, None, None, :]  # (B, 1, 1, T); never all-False (NaN)
        h = F.scaled_dot_product_attention(_heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads),
                                           attn_mask=attn_mask)
        h = self.out(h.transpose(1, 2).reshape(b, -1, c))
        if token_mask is not None:
            h = h * any_valid[:, None, None].to(h.dtype)
        return x + h.transpose(1, 2).reshape(b, c, *spatial)


class SelfAttention3D(nn.Module):
    """Residual multi-head self-attention over all voxels; use only at coarse grids (8^3 = 512 voxels)."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be divisible by heads {heads}")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        q, k, v = self.qkv(self.norm(x).flatten(2).transpose(1, 2)).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(_heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads))
        h = self.out(h.transpose(1, 2).reshape(b, -1, c))
        return x + h.transpose(1, 2).reshape(b, c, *spatial)


def check_divisible(shape: tuple[int, ...], factor: int, what: str) -> None:
    """Raise ModelError unless every spatial size in `shape` is a positive multiple of `factor`."""
    if any(s <= 0 or s % factor for s in shape):
        raise ModelError(f"{what}: spatial size {tuple(shape)} must be a multiple of {factor} along every axis "
                         f"(pad or crop the volume)", code=ErrorCode.INVALID_VALUE)
