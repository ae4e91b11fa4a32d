"""Post-processing of a predicted dose on the case grid: the target-coverage prior and the OAR-scale prior.

A plan is made to cover its targets: in the clinical OpenKBP plans PTV70's D95 is 0.98 of the prescription on
average (model-selection subset), while a network trained by voxel-wise MAE on a coarse grid blurs the dose at
the target edges (the U-Net's PTV70 D95 was 0.90 of the reference there). The prior pulls target voxels below
``level x prescription`` a fraction ``strength`` of the way up:

    dose' = dose + strength * max(0, level * Rx(voxel) - dose)   inside targets (highest Rx where they overlap)

level and strength belong to the model (``coverage_level`` / ``coverage_strength`` in its config, fitted on the
model-selection subset by ``scripts/fit_coverage_prior.py``); strength 0 switches it off.

The OAR-scale prior multiplies the dose inside each organ at risk, outside the targets, by a factor of that
organ (``oar_scales`` in the model's config, fitted by ``scripts/fit_oar_prior.py``). Why: a network trained by
voxel-wise MAE on a coarse grid spreads the steep fall-off that planners shape around the cord, brainstem and
larynx, so it over-predicts their doses (issue 13: SpinalCord D0.1cc +6 Gy on validation); where organs
overlap the smallest factor wins.
"""

from __future__ import annotations

import numpy as np

from ..case import Case
from ..errors import ErrorCode, InputError
from .conditioning import OAR_ORDER, find_oar_masks


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


def oar_scale_parameters(model) -> dict[str, float]:
    """organ -> factor from a model's config (OAR_ORDER names); {} (off) for models without them."""
    scales = getattr(getattr(model, "config", None), "oar_scales", None) or {}
    return {str(k): float(v) for k, v in dict(scales).items()}


def oar_scale_map(case: Case, scales: dict[str, float]) -> np.ndarray:
    """Per-voxel factor on the case grid: the organ's factor inside it and outside every target, else 1."""
    unknown = set(scales) - set(OAR_ORDER)
    if unknown or any(not (0.5 <= v <= 1.5) for v in scales.values()):
        raise InputError(f"OAR scales must name organs of {OAR_ORDER} with factors in [0.5, 1.5], got {scales}",
                         code=ErrorCode.INVALID_VALUE)
    factor = np.ones(case.grid.shape, np.float32)
    targets = case.target_prescription_map() > 0
    for organ, mask in find_oar_masks(case).items():
        if organ in scales:
            region = mask & ~targets
            factor[region] = np.minimum(factor[region], scales[organ])
    return factor


def apply_oar_prior(case: Case, dose_gy: np.ndarray, scales: dict[str, float]) -> np.ndarray:
    """The dose with each organ's voxels outside the targets scaled by its factor (float32 copy)."""
    if dose_gy.shape != case.grid.shape:
        raise InputError(f"dose shape {dose_gy.shape} does not match the case grid {case.grid.shape}",
                         code=ErrorCode.GRID_MISMATCH)
    if not scales:
        return dose_gy.astype(np.float32, copy=True)
    return (dose_gy * oar_scale_map(case, scales)).astype(np.float32)
