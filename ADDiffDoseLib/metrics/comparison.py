"""Voxel-wise and DVH-level comparisons of a predicted dose with a reference dose (both Gy, one grid).

* GDP-HMM MAE (RiqiangGao/GDP-HMM_AAPMChallenge@8c20090 ``evaluation.ipynb``):
  M = ((ref > 5 Gy) | (pred > 5 Gy)) & body; MAE = sum_M |ref - pred| / count((ref > 5 Gy) & body).
* MAE in body: mean |ref - pred| over the body voxels.
* Isodose Dice at levels given as fractions of the highest prescription: Dice(ref >= L, pred >= L), inside the body
  when one is given. The headline ``dice`` is the 50 % level: that envelope is shaped by the beam arrangement
  (the part of the dose a beam-aware model must get right, unlike the target-shaped high-dose levels), it is large
  enough to be stable voxel-wise, and 50 % is the level of the usual gradient measures (R50, Paddick GI).
  The mean over 10 %..100 % is reported too (``dice_mean``).
* Dmax error per OAR: pred - ref of the maximum voxel dose (the spinal-cord figure uses its absolute value).
* Per-structure DVH differences: pred - ref of Dmean, Dmax (point), D0.03cc, D0.1cc, D2 %, D50 %, D95 %, D98 %.
"""

from __future__ import annotations

import numpy as np

from .constraints import canonical_name
from .dose_stats import check_same_shape
from .dvh import DVH

GDPHMM_THRESHOLD_GY = 5.0
DEFAULT_DICE_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 11))
HEADLINE_DICE_FRACTION = 0.5


def gdphmm_mae(ref_gy: np.ndarray, pred_gy: np.ndarray, body_mask: np.ndarray,
               threshold_gy: float = GDPHMM_THRESHOLD_GY) -> float:
    """GDP-HMM challenge MAE (Gy); NaN if no body voxel of the reference reaches the threshold."""
    ref = np.asarray(ref_gy, dtype=np.float64)
    pred = np.asarray(pred_gy, dtype=np.float64)
    check_same_shape(ref, pred, "reference dose", "predicted dose")
    ref_hot = (ref > threshold_gy) & body_mask
    region = ((ref > threshold_gy) | (pred > threshold_gy)) & body_mask
    denom = int(np.count_nonzero(ref_hot))
    if denom == 0:
        return float("nan")
    return float(np.abs(ref[region] - pred[region]).sum() / denom)


def mae_in_mask(ref_gy: np.ndarray, pred_gy: np.ndarray, mask: np.ndarray) -> float:
    """Mean |ref - pred| (Gy) over the voxels of `mask`."""
    check_same_shape(np.asarray(ref_gy), np.asarray(pred_gy), "reference dose", "predicted dose")
    if not mask.any():
        return float("nan")
    return float(np.abs(np.asarray(ref_gy, np.float64)[mask] - np.asarray(pred_gy, np.float64)[mask]).mean())


def isodose_dice(ref_gy: np.ndarray, pred_gy: np.ndarray, level_gy: float, body_mask: np.ndarray | None = None) -> float:
    """Dice of the volumes with dose >= `level_gy`; NaN when both are empty."""
    a = ref_gy >= level_gy
    b = pred_gy >= level_gy
    if body_mask is not None:
        a &= body_mask
        b &= body_mask
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return float("nan")
    return 2.0 * int(np.count_nonzero(a & b)) / total


def isodose_dice_levels(ref_gy, pred_gy, prescription_gy: float, fractions=DEFAULT_DICE_FRACTIONS,
                        body_mask=None) -> dict[str, float]:
    """{'dice_10': ..., 'dice_100': ...} (key = level in % of `prescription_gy`)."""
    return {f"dice_{int(round(100 * f))}": isodose_dice(ref_gy, pred_gy, f * prescription_gy, body_mask)
            for f in fractions}


def dvh_differences(ref: dict[str, DVH], pred: dict[str, DVH]) -> dict[str, dict[str, float]]:
    """{structure: {metric_diff_gy: pred - ref}} for structures in both."""
    out = {}
    for key, r in ref.items():
        p = pred.get(key)
        if p is None or r.n_voxels == 0:
            continue
        pairs = {"dmean": (r.mean_gy, p.mean_gy), "dmax": (r.max_gy, p.max_gy), "d0.03cc": (r.d_cc(0.03), p.d_cc(0.03)),
                 "d0.1cc": (r.d_cc(0.1), p.d_cc(0.1))}
        for pct in (2, 50, 95, 98):
            pairs[f"d{pct}pct"] = (r.d_percent(pct), p.d_percent(pct))
        out[key] = {f"{m}_diff_gy": b - a for m, (a, b) in pairs.items()}
        out[key].update({f"{m}_ref_gy": a for m, (a, b) in pairs.items()})
    return out


def oar_dmax_errors(ref: dict[str, DVH], pred: dict[str, DVH], oar_names) -> dict[str, float]:
    """{oar: pred Dmax - ref Dmax (Gy)} for the named OARs present in both."""
    return {k: pred[k].max_gy - ref[k].max_gy for k in oar_names if k in ref and k in pred and ref[k].n_voxels}


def cord_dmax_error(dmax_errors: dict[str, float], original_names: dict[str, str] | None = None) -> float:
    """|Dmax error| of the spinal cord (matched by canonical name), NaN if there is none."""
    original_names = original_names or {}
    for key, err in dmax_errors.items():
        if "spinalcord" in (canonical_name(key), canonical_name(original_names.get(key, key))):
            return abs(err)
    return float("nan")
