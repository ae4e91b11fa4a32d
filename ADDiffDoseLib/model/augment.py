"""Augmentation that keeps anatomy honest.

Only a left-right mirror (which swaps left/right organs and mirrors gantry angles: in the beam tokens
sin(gantry) changes sign; the beam-plate channel is mirrored with the volume, which is exactly the plate
of the mirrored beams) and small translations. No superior-inferior flips or arbitrary rotations: the
beams would no longer match the dose.
"""

from __future__ import annotations

import torch

from .conditioning import CHANNELS

_PAROTID_R = CHANNELS.index("oar_Parotid_R")
_PAROTID_L = CHANNELS.index("oar_Parotid_L")
LR_DIM = 3  # (B, C, D0, D1, D2): array axis 1 (patient right -> left) is tensor dim 3
VOLUME_KEYS = ("channels", "dose", "body", "coarse")  # batch volumes that move with the anatomy (coarse: refine stage)


def flip_channels_lr(channels: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> mirrored across the patient's sagittal plane, left/right organs swapped."""
    out = torch.flip(channels, dims=[LR_DIM])
    order = list(range(channels.shape[1]))
    order[_PAROTID_R], order[_PAROTID_L] = _PAROTID_L, _PAROTID_R
    return out[:, order]


def flip_tokens_lr(tokens: torch.Tensor) -> torch.Tensor:
    """Mirror the beam angles: gantry g -> 360 - g, couch c -> 360 - c (sin changes sign)."""
    out = tokens.clone()
    beam = out[..., 0] > 0.5
    out[..., 2] = torch.where(beam, -out[..., 2], out[..., 2])
    out[..., 4] = torch.where(beam, -out[..., 4], out[..., 4])
    return out


def augment_batch(batch: dict, generator: torch.Generator, max_shift: int = 8, p_flip: float = 0.5) -> dict:
    """Random left-right mirror (per sample) and a random translation (same for a batch, by roll:
    the field of view has empty margins around the body, so wrapping moves only air)."""
    out = dict(batch)
    device = batch["channels"].device
    flip = torch.rand(batch["channels"].shape[0], generator=generator) < p_flip
    if flip.any():
        idx = flip.nonzero().flatten().to(device)
        for key in (k for k in VOLUME_KEYS if k in out):
            t = out[key].clone()
            t[idx] = flip_channels_lr(t[idx]) if key == "channels" else torch.flip(t[idx], dims=[LR_DIM])
            out[key] = t
        if "tokens" in out:
            t = out["tokens"].clone()
            t[idx] = flip_tokens_lr(t[idx])
            out["tokens"] = t
    if max_shift > 0:
        shifts = [int(s) for s in torch.randint(-max_shift, max_shift + 1, (3,), generator=generator)]
        for key in (k for k in VOLUME_KEYS if k in out):
            out[key] = torch.roll(out[key], shifts=shifts, dims=(2, 3, 4))
    return out
