"""Helpers for the diffusion-model tests: real OpenKBP crops and small random-weight models."""

from __future__ import annotations

from pathlib import Path

import torch

from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.data import case_tensors, stack_samples


def crop_around_target(sample: dict, size: int = 64) -> dict:
    """A size^3 crop of one unbatched training sample, centred on the targets' bounding box."""
    target = (sample["channels"][1] > 0).nonzero()
    centre = (target.min(0).values + target.max(0).values) // 2
    shape = sample["channels"].shape[1:]
    lo = [int(min(max(int(c) - size // 2, 0), n - size)) for c, n in zip(centre, shape)]
    sl = (slice(None),) + tuple(slice(a, a + size) for a in lo)
    return {k: (v[sl] if v.dim() == 4 else v) for k, v in sample.items()}


def real_batch(paths: list[Path], size: int = 64) -> dict:
    """Batched crops (B = len(paths)) with keys channels, tokens, token_mask, dose, body."""
    return stack_samples([crop_around_target(case_tensors(read_openkbp_npz(p)), size) for p in paths])


def randomize_zero_params(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> None:
    """Give zero-initialised layers (residual outputs) random values so every path affects the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def random_inputs(batch: int, shape: tuple[int, int, int], seed: int = 0, n_tokens: int = 4) -> tuple:
    """(channels (B,12,*shape), tokens (B,25,14), token_mask (B,25)) with a target cube and a body."""
    gen = torch.Generator().manual_seed(seed)
    ch = torch.zeros(batch, 12, *shape)
    ch[:, 0] = torch.rand(batch, *shape, generator=gen) - 0.5
    d, h, w = shape
    ch[:, 1, d // 4: d // 2, h // 4: h // 2, w // 4: w // 2] = 1.0
    ch[:, 2, -4:, -4:, -4:] = 1.0
    ch[:, 9, 2:-2, 2:-2, 2:-2] = 1.0
    tokens = torch.randn(batch, 25, 14, generator=gen)
    mask = torch.arange(25)[None].expand(batch, 25) < n_tokens
    return ch, tokens, mask
