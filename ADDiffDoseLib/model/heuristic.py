"""HeuristicDoseModel: a model-free baseline. The prescription inside each target, an exponential
fall-off with the distance (mm) from the targets outside them, zero outside the body:

    dose(x) = rx(x)                                         inside a target
            = max over levels p of  p * exp(-d_p(x) / L)     elsewhere in the body

where d_p is the distance to the region prescribed >= p. One length L (mm) is fitted on training cases
(:func:`fit_heuristic`); it is the model's only parameter and lives in its JSON config (no weights).
The beam plate is not used: with OpenKBP's fixed 9-field geometry it adds nothing to a radial fall-off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..errors import ErrorCode, ModelError
from .config_json import JsonConfig
from .losses import BODY_CHANNEL, RX_CHANNEL

GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class HeuristicConfig(JsonConfig):
    """length_mm: fall-off length L; default_spacing_mm: voxel size assumed when none is passed
    (OpenKBP's most common one), along array axes 0, 1, 2."""

    length_mm: float = 15.0
    default_spacing_mm: tuple[float, float, float] = (3.906, 3.906, 2.5)

    def __post_init__(self):
        if not self.length_mm > 0:
            raise ValueError(f"length_mm must be > 0, got {self.length_mm}")


def level_distances(rx_map: np.ndarray, spacing_mm) -> list[tuple[float, np.ndarray]]:
    """(level, distance in mm to the voxels prescribed >= level) per prescription level, highest first.
    rx_map: (n0, n1, n2) prescription per voxel (any dose unit, 0 outside targets)."""
    levels = sorted({float(v) for v in np.unique(rx_map) if v > 0}, reverse=True)
    return [(p, ndimage.distance_transform_edt(rx_map < p - 1e-6, sampling=spacing_mm).astype(np.float32))
            for p in levels]


def heuristic_dose(rx_map: np.ndarray, body: np.ndarray, spacing_mm, length_mm: float,
                   distances: list[tuple[float, np.ndarray]] | None = None) -> np.ndarray:
    """(n0, n1, n2) float32 dose in rx_map's unit. body: bool mask; spacing_mm along axes 0, 1, 2.
    `distances` (from :func:`level_distances`) may be passed to reuse them across lengths."""
    distances = distances if distances is not None else level_distances(rx_map, spacing_mm)
    dose = np.zeros(rx_map.shape, np.float32)
    for level, dist in distances:
        np.maximum(dose, level * np.exp(-dist / np.float32(length_mm)), out=dose)
    dose = np.where(rx_map > 0, rx_map, dose)
    return np.where(body, dose, 0.0).astype(np.float32)


def _as_arrays(item) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A Case or a (rx_map, body, dose, spacing_mm) tuple -> the tuple (rx and dose in one unit)."""
    if hasattr(item, "grid"):
        if item.dose_gy is None or item.body_mask is None:
            raise ModelError(f"case {item.name!r} needs a reference dose and a body to fit the heuristic",
                             code=ErrorCode.INVALID_VALUE)
        return item.target_prescription_map(), item.body_mask, item.dose_gy, item.grid.spacing_mm
    rx, body, dose, spacing = item
    return np.asarray(rx, np.float32), np.asarray(body, bool), np.asarray(dose, np.float32), np.asarray(spacing, float)


def masked_mae(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Mean |pred - ref| inside `mask` (the OpenKBP dose score when mask is the possible-dose mask)."""
    return float(np.abs(pred[mask] - ref[mask]).mean())


def fit_heuristic(cases_or_arrays: Iterable, bounds_mm: tuple[float, float] = (2.0, 80.0), tol_mm: float = 0.2,
                  ) -> tuple[HeuristicConfig, float]:
    """Golden-section search for the L minimizing the mean in-body MAE over the cases.
    Items: Case (with dose and body) or (rx_map, body, dose, spacing_mm) with rx and dose in one unit.
    Returns (config, mean MAE at the fitted L)."""
    data = []
    for item in cases_or_arrays:
        rx, body, dose, spacing = _as_arrays(item)
        data.append((rx, body, dose, spacing, level_distances(rx, spacing)))
    if not data:
        raise ModelError("fit_heuristic needs at least one case", code=ErrorCode.INVALID_VALUE)

    def cost(length: float) -> float:
        return float(np.mean([masked_mae(heuristic_dose(rx, b, s, length, dist), d, b) for rx, b, d, s, dist in data]))

    lo, hi = bounds_mm
    a, b = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
    fa, fb = cost(a), cost(b)
    while hi - lo > tol_mm:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - GOLDEN * (hi - lo)
            fa = cost(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + GOLDEN * (hi - lo)
            fb = cost(b)
    best = (a + b) / 2
    return HeuristicConfig(length_mm=round(best, 3)), cost(best)


class HeuristicDoseModel(nn.Module):
    """Weight-free model with the same predict protocol as the networks (an nn.Module only so that
    .to()/.eval() work; its state_dict is empty)."""

    family = "heuristic"
    stages: tuple[str, ...] = ()

    def __init__(self, config: HeuristicConfig | None = None):
        super().__init__()
        self.config = config or HeuristicConfig()

    @torch.no_grad()
    def predict(self, channels: torch.Tensor, tokens=None, token_mask=None, *, steps: int = 0, samples: int = 1,
                generator: torch.Generator | None = None, spacing_mm=None) -> tuple[torch.Tensor, torch.Tensor]:
        """channels (B, 12, D, H, W) -> mean (B, 1, D, H, W) float32 dose/70 (channel 1 is rx/70), std zeros.
        spacing_mm: voxel size along axes 0, 1, 2 (default config.default_spacing_mm)."""
        spacing = np.asarray(spacing_mm if spacing_mm is not None else self.config.default_spacing_mm, float)
        out = []
        for ch in channels.detach().float().cpu().numpy():
            out.append(heuristic_dose(ch[RX_CHANNEL], ch[BODY_CHANNEL] > 0.5, spacing, self.config.length_mm)[None])
        mean = torch.from_numpy(np.stack(out)).to(channels.device)
        return mean, torch.zeros_like(mean)
