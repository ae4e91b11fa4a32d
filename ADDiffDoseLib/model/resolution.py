"""Running a network below the input resolution (CPU-sized models).

A model whose config has ``resolution_factor = f`` sees inputs average-pooled by f per axis (masks become
occupancy fractions) and its dose is trilinearly upsampled back. Training stores pooled samples; prediction
pools, predicts and upsamples here, so networks stay unaware of it (a network with a full-resolution
refiner says ``handles_resolution`` and gets the full-resolution channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resolution_factor(model) -> int:
    return int(getattr(model.config, "resolution_factor", 1) or 1)


def pool_sample(sample: dict, factor: int) -> dict:
    """Unbatched sample dict (channels (C,D,H,W), dose (1,D,H,W), body (1,D,H,W) bool) pooled by `factor`."""
    if factor == 1:
        return sample
    out = dict(sample)
    for key in ("channels", "dose"):
        out[key] = F.avg_pool3d(sample[key][None].float(), factor)[0].to(sample[key].dtype)
    out["body"] = F.avg_pool3d(sample["body"][None].float(), factor)[0] > 0.5
    return out


def predict_full_resolution(model, channels: torch.Tensor, tokens, token_mask, **kwargs):
    """model.predict on (B, C, D, H, W) full-resolution channels -> (mean, std) at full resolution."""
    factor = resolution_factor(model)
    if factor == 1 or getattr(model, "handles_resolution", False):
        return model.predict(channels, tokens, token_mask, **kwargs)
    pooled = F.avg_pool3d(channels.float(), factor)
    mean, std = model.predict(pooled, tokens, token_mask, **kwargs)
    size = channels.shape[2:]
    up = lambda t: F.interpolate(t.float(), size=size, mode="trilinear", align_corners=False)  # noqa: E731
    return up(mean).clamp(min=0), up(std).clamp(min=0)
