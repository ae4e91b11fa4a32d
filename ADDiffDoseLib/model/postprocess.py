"""Post-processing of a predicted dose on the case grid: the target-coverage prior.

A plan is made to cover its targets: in the clinical OpenKBP plans PTV70's D95 is 0.98 of the prescription on
average (model-selection subset), while a network trained by voxel-wise MAE on a coarse grid blurs the dose at
the target edges (the U-Net's PTV70 D95 was 0.90 of the reference there). The prior pulls target voxels below
``level x prescription`` a fraction ``strength`` of the way up:

    dose' = dose + strength * max(0, level * Rx(voxel) - dose)   inside targets (highest Rx where they overlap)

level and strength belong to the model (``coverage_level`` / ``coverage_strength`` in its config, fitted on the
model-selection subset by ``scripts/fit_coverage_prior.py``); strength 0 switches it off.
"""

from __future__ import annotations

import numpy as np

from ..case import Case
from ..errors import ErrorCode, InputError


def coverage_parameters(model) -> tuple[float, float]:
    """(level, strength) from a model's config; (1.0, 0.0) (off) for models without them."""
    cfg = getattr(model, "config", None)
    return float(getattr(cfg, "coverage_level", 1.0)), float(getattr(cfg, "coverage_strength", 0.0))


def apply_coverage_prior(case: Case, dose_gy: np.ndarray, level: float, strength: float) -> np.ndarray:
    """The dose with target voxels below level x Rx pulled up by `strength` of the gap (float32 copy)."""
    if not (0.0 <= strength <= 1.0) or not (0.0 < level <= 1.5):
        raise InputError(f"coverage prior needs 0 <= strength <= 1 and 0 < level <= 1.5, got {strength}, {level}",
                         code=ErrorCode.INVALID_VALUE)
    if strength == 0.0:
        return dose_gy.astype(np.float32, copy=True)
    rx = case.target_prescription_map()
    if rx.shape != dose_gy.shape:
        raise InputError(f"dose shape {dose_gy.shape} does not match the case grid {rx.shape}",
                         code=ErrorCode.GRID_MISMATCH)
    gap = np.maximum(0.0, level * rx - dose_gy) * (rx > 0)
    return (dose_gy + strength * gap).astype(np.float32)
