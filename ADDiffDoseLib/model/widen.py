"""Grow a trained U-Net's widths without changing its output (a function-preserving widening).

Issue 13's accumulating run flattened (about -0.01 Gy per 1,000 steps) while the training-case error stayed close
to the held-out one: the net underfits, so more capacity is the next lever, and a wider net started from scratch
would throw away hundreds of CPU-minutes. Here every old channel keeps its weights; each new channel gets fresh
random incoming weights and zero outgoing weights, so the widened net computes exactly the old dose at step 0
and the new channels start learning from the first gradient (their outgoing weights get a non-zero gradient).

The refiner (error head) keeps its own widths and weights.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..errors import ErrorCode, ModelError
from .unet import UNet3D


def _input_positions(name: str, old_in: int, new_in: int) -> torch.Tensor:
    """Where the old input channels sit in the widened input. A decoder level's first conv reads
    cat([reduce(x), skip]): two halves, each widened on its own."""
    if name.startswith("ups.") and name.endswith("convs.0") and old_in != new_in:
        half_old, half_new = old_in // 2, new_in // 2
        return torch.cat([torch.arange(half_old), half_new + torch.arange(half_old)])
    return torch.arange(old_in)


@torch.no_grad()
def widen_unet(model: UNet3D, widths: tuple[int, ...], generator: torch.Generator | None = None) -> UNet3D:
    """A copy of `model` with the coarse net's `widths` (each >= the old one, same depth); same output."""
    old_widths = tuple(model.config.widths)
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(old_widths) or any(n < o for n, o in zip(widths, old_widths)):
        raise ModelError(f"widths {widths} must have {len(old_widths)} levels, each >= {old_widths}",
                         code=ErrorCode.INVALID_CONFIG)
    if generator is not None:  # the new channels' random init
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    wide = UNet3D(dataclasses.replace(model.config, widths=widths))
    old_modules = dict(model.named_modules())
    for name, new in wide.named_modules():
        old = old_modules.get(name)
        if isinstance(new, nn.Conv3d):
            o_out, o_in = old.weight.shape[:2]
            n_out, n_in = new.weight.shape[:2]
            inputs = _input_positions(name, o_in, n_in)
            if name != "stem.0":  # new input channels are new features: they must not reach the old outputs
                fresh = torch.ones(n_in, dtype=torch.bool)
                fresh[inputs] = False
                new.weight[:, fresh] = 0.0
            new.weight[:o_out, inputs] = old.weight
            if new.bias is not None:
                new.bias[:o_out] = old.bias
        elif isinstance(new, nn.InstanceNorm3d) and new.affine:
            n = old.weight.shape[0]
            new.weight[:n] = old.weight
            new.bias[:n] = old.bias
    if model.refiner is not None:
        wide.refiner.load_state_dict(model.refiner.state_dict())
    wide.record = dict(getattr(model, "record", {}) or {}, widened_from=list(old_widths))
    return wide.train(model.training)
