"""Training losses: masked dose error, noise-prediction MSE, KL, and one-sided dose-constraint penalties.

Doses are (B, 1, D, H, W) in dose/70 units (``DOSE_SCALE_GY``); channels are the (B, 12, D, H, W)
conditioning channels (1 = target prescription / 70, 2..8 OAR masks in ``OAR_ORDER``, 9 body).
Losses are float32 (computed in float32 even under autocast): scalars, or (B,) per case for the
constraint penalties so callers can weight them per sample.
"""

from __future__ import annotations

import math

import torch

from ..errors import ErrorCode, ModelError
from .conditioning import DOSE_SCALE_GY, OAR_ORDER

RX_CHANNEL, OAR_CHANNEL0, BODY_CHANNEL = 1, 2, 9
OAR_METRICS = ("max", "mean")


def masked_dose_loss(pred: torch.Tensor, ref: torch.Tensor, body: torch.Tensor, outside_weight: float = 0.1,
                     kind: str = "l1") -> torch.Tensor:
    """Mean error inside `body` (B, 1, ...) bool, plus `outside_weight` x the mean over all voxels (which
    drives the dose outside the body to zero). kind: 'l1' or 'mse'."""
    diff = pred.float() - ref.float()
    err = diff.abs() if kind == "l1" else diff.pow(2)
    inside = body.to(err.dtype)
    return (err * inside).sum() / inside.sum().clamp(min=1.0) + outside_weight * err.mean()


def noise_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the network output and eps / v; optional (B,) per-sample weights."""
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights.float()
    return per_sample.mean()


def soft_quantile(values: torch.Tensor, q: float, bandwidth: float = 0.01) -> torch.Tensor:
    """Differentiable q-quantile of a 1-D tensor: a Gaussian-kernel average of the sorted values around
    rank fraction q (kernel width `bandwidth` in rank fraction). It lies within [min, max], so when all
    values meet a bound the penalty built from it is zero."""
    v = values.float().reshape(-1)
    if v.numel() == 1:
        return v[0]
    ranked, _ = torch.sort(v)
    u = torch.linspace(0.0, 1.0, v.numel(), device=v.device)
    w = torch.softmax(-0.5 * ((u - q) / bandwidth) ** 2, dim=0)
    return (w * ranked).sum()


def soft_max(values: torch.Tensor, tau: float = 0.02) -> torch.Tensor:
    """tau * log(mean(exp(v / tau))): between the mean and the max (never above the max)."""
    v = values.float().reshape(-1)
    return tau * (torch.logsumexp(v / tau, dim=0) - math.log(v.numel()))


def target_underdose(dose: torch.Tensor, channels: torch.Tensor, d95_fraction: float = 1.0,
                     bandwidth: float = 0.01) -> torch.Tensor:
    """(B,) per case: relu(d95_fraction - softD95(dose / rx))^2 over the target voxels
    (rx from channel 1; 0 for a case without target voxels)."""
    terms = []
    for d, ch in zip(dose.float(), channels.float()):
        rx = ch[RX_CHANNEL]
        inside = rx > 0
        if not bool(inside.any()):
            terms.append(d.sum() * 0.0)
            continue
        ratio = d[0][inside] / rx[inside]
        terms.append(torch.relu(d95_fraction - soft_quantile(ratio, 0.05, bandwidth)) ** 2)
    return torch.stack(terms)


def oar_overdose(dose: torch.Tensor, channels: torch.Tensor, limits: tuple[tuple[str, str, float], ...],
                 tau: float = 0.02) -> torch.Tensor:
    """(B,) per case: sum over `limits` (organ in OAR_ORDER, 'max' | 'mean', limit Gy) of
    relu(stat(dose in organ) - limit/70)^2; 'max' is :func:`soft_max` (<= the true max). Absent organs add 0."""
    terms = []
    for d, ch in zip(dose.float(), channels.float()):
        total = d.sum() * 0.0
        for organ, metric, limit_gy in limits:
            mask = ch[OAR_CHANNEL0 + OAR_ORDER.index(organ)] > 0.5
            if not bool(mask.any()):
                continue
            values = d[0][mask]
            stat = soft_max(values, tau) if metric == "max" else values.mean()
            total = total + torch.relu(stat - limit_gy / DOSE_SCALE_GY) ** 2
        terms.append(total)
    return torch.stack(terms)


def check_limits(limits) -> None:
    """Raise ModelError for an unknown organ or metric, or a non-positive limit, in an OAR limits table."""
    for entry in limits:
        organ, metric, limit = entry
        if organ not in OAR_ORDER or metric not in OAR_METRICS or not float(limit) > 0:
            raise ModelError(f"bad OAR limit {tuple(entry)!r}: organ in {OAR_ORDER}, metric in {OAR_METRICS}, "
                             "limit > 0 Gy", code=ErrorCode.INVALID_CONFIG)


def target_levels(rx_gy: torch.Tensor, min_voxels: int = 8) -> list[float]:
    """Prescription levels (Gy) of one case's (pooled) prescription map. A 2x-pooled boundary voxel mixes a
    level with zero (L x k/8) or with another level; such values are rarer than a level's interior, so a level
    is a value held by at least max(min_voxels, 5 % of the target voxels) that is not L x k/8 of a higher level."""
    inside = rx_gy[rx_gy > 0]
    values, counts = torch.unique(inside, return_counts=True)
    enough = max(min_voxels, int(0.05 * inside.numel()))
    candidates = sorted((float(v) for v, c in zip(values, counts) if int(c) >= enough), reverse=True)
    levels: list[float] = []
    for v in candidates:
        if not any(abs(v - higher * k / 8) < 1e-3 for higher in levels for k in range(1, 8)):
            levels.append(v)
    return levels


def structure_masks(channels: torch.Tensor, min_voxels: int = 8) -> list[torch.Tensor]:
    """Bool masks (D, H, W) of one case's structures from its (12, D, H, W) channels: each target level
    (target_levels; a boundary voxel that mixes levels belongs to none) and each present OAR (mask > 0.5)."""
    rx_gy = channels[RX_CHANNEL].float() * DOSE_SCALE_GY
    masks = [(rx_gy - level).abs() < 1e-3 for level in target_levels(rx_gy, min_voxels)]
    for k in range(len(OAR_ORDER)):
        mask = channels[OAR_CHANNEL0 + k] > 0.5
        if int(mask.sum()) >= min_voxels:
            masks.append(mask)
    return masks


def dvh_moment_loss(pred: torch.Tensor, ref: torch.Tensor, channels: torch.Tensor,
                    powers: tuple[float, ...] = (1.0, 2.0, 10.0)) -> torch.Tensor:
    """(B,) per case: the mean over its structures and `powers` p of |M_p(pred) - M_p(ref)|, where
    M_p = mean(dose^p)^(1/p) over the structure: p = 1 is the mean dose, large p approaches the maximum, so
    the term pulls the predicted DVH towards the reference one (the moment loss of Jhanwar et al., PMB 2022,
    with an L1 instead of a squared difference, like the dose loss)."""
    terms = []
    for p_case, r_case, ch in zip(pred.float(), ref.float(), channels):
        masks = structure_masks(ch)
        diffs = []
        for mask in masks:
            pv, rv = p_case[0][mask].clamp(min=0) + 1e-6, r_case[0][mask].clamp(min=0) + 1e-6
            for p in powers:
                diffs.append((pv.pow(p).mean().pow(1 / p) - rv.pow(p).mean().pow(1 / p)).abs())
        terms.append(torch.stack(diffs).mean() if diffs else p_case.sum() * 0.0)
    return torch.stack(terms)
