"""The OpenKBP challenge scores, exactly as the organisers compute them.

Source: ababier/open-kbp@ce625e6 ``provided_code/dose_evaluation_class.py`` (``EvaluateDose.make_metrics`` and
``calculate_metrics``) and ``provided_code/network_functions.py`` (``predict_dose`` multiplies predictions by
``possible_dose_mask`` before saving):

* dose score (per patient) = sum over ALL voxels of |ref - pred| / count(possible_dose_mask), with pred masked;
  averaged over patients.
* DVH score = nanmean over (patient, ROI, metric) of |ref metric - pred metric|. OARs: D_0.1_cc and mean;
  targets: D_99, D_95, D_1 = np.percentile(roi doses, 1 / 5 / 99). D_0.1_cc = np.percentile(roi doses,
  100 - 100 n / N) with n = max(1, round(100 / voxel_volume_mm3)) (np.percentile default linear interpolation;
  np.round rounds halves to even, as in the original). ROIs absent from the case are skipped.
"""

from __future__ import annotations

import numpy as np

from ..case import Case, Role
from ..errors import ErrorCode, GeometryError
from .dose_stats import check_dose, check_same_shape, masked_doses

OAR_METRICS = ("D_0.1_cc", "mean")
TARGET_METRICS = ("D_99", "D_95", "D_1")


def roi_metrics(dose_gy: np.ndarray, mask: np.ndarray, kind: str, voxel_volume_mm3: float) -> dict[str, float]:
    """OpenKBP metrics of one ROI: kind 'oar' -> D_0.1_cc, mean; 'target' -> D_99, D_95, D_1 (Gy)."""
    roi_dose = masked_doses(dose_gy, mask)
    n = roi_dose.size
    if n == 0:
        return {}
    if kind == "oar":
        voxels_in_tenth_of_cc = max(1.0, float(np.round(100.0 / voxel_volume_mm3)))
        return {"D_0.1_cc": float(np.percentile(roi_dose, 100.0 - voxels_in_tenth_of_cc / n * 100.0)),
                "mean": float(roi_dose.mean())}
    if kind == "target":
        return {"D_99": float(np.percentile(roi_dose, 1)), "D_95": float(np.percentile(roi_dose, 5)),
                "D_1": float(np.percentile(roi_dose, 99))}
    raise ValueError(f"kind must be 'oar' or 'target', got {kind!r}")


def dose_score(ref_gy: np.ndarray, pred_gy: np.ndarray, possible_dose_mask: np.ndarray,
               mask_prediction: bool = True) -> float:
    """sum |ref - pred * mask| / count(mask) (Gy); mask_prediction=False scores pred as given (unmasked)."""
    ref = np.asarray(ref_gy, dtype=np.float64)
    pred = np.asarray(pred_gy, dtype=np.float64)
    check_same_shape(ref, pred, "reference dose", "predicted dose")
    if mask_prediction:
        pred = pred * possible_dose_mask
    count = int(np.count_nonzero(possible_dose_mask))
    if count == 0:
        raise GeometryError("possible dose mask is empty", code=ErrorCode.INVALID_VALUE)
    return float(np.abs(ref - pred).sum() / count)


def openkbp_scores(ref_gy: np.ndarray, pred_gy: np.ndarray, possible_dose_mask: np.ndarray,
                   rois: dict[str, tuple[np.ndarray, str]], voxel_volume_mm3: float,
                   mask_prediction: bool = True) -> dict:
    """Dose score, DVH score and per-metric details for one patient.

    rois: name -> (bool mask, 'oar' | 'target'). Returns {dose_score, dvh_score, dvh_details: [{roi, metric,
    ref, pred, abs_diff}]}; dvh_score is NaN when no ROI is present.
    """
    ref = check_dose(ref_gy, "reference dose")
    pred = check_dose(pred_gy, "predicted dose")
    if mask_prediction:
        pred = pred * possible_dose_mask
    details = []
    for name, (mask, kind) in rois.items():
        ref_m = roi_metrics(ref, mask, kind, voxel_volume_mm3)
        pred_m = roi_metrics(pred, mask, kind, voxel_volume_mm3)
        for metric, value in ref_m.items():
            details.append({"roi": name, "metric": metric, "ref": value, "pred": pred_m[metric],
                            "abs_diff": abs(value - pred_m[metric])})
    diffs = np.array([d["abs_diff"] for d in details], dtype=np.float64)
    dvh = float(np.nanmean(diffs)) if diffs.size else float("nan")
    return {"dose_score": dose_score(ref, pred, possible_dose_mask, mask_prediction=False),
            "dvh_score": dvh, "dvh_details": details}


def case_rois(case: Case) -> dict[str, tuple[np.ndarray, str]]:
    """OARs -> 'oar', targets -> 'target' (OpenKBP scores exactly its 7 OARs and 3 PTVs; other cases by role)."""
    out = {}
    for key, s in case.structures.items():
        if s.is_empty:
            continue
        if s.role == Role.OAR:
            out[key] = (s.mask, "oar")
        elif s.role == Role.TARGET:
            out[key] = (s.mask, "target")
    return out


def case_openkbp_scores(ref_case: Case, pred_gy: np.ndarray, ref_gy: np.ndarray | None = None) -> dict:
    """OpenKBP scores of `pred_gy` against the case's dose; possible_dose_mask = the EXTERNAL structure(s)."""
    ref = ref_case.dose_gy if ref_gy is None else ref_gy
    body = ref_case.body_mask
    if ref is None or body is None:
        raise GeometryError(f"case {ref_case.name!r} needs a dose and a body (EXTERNAL) structure for OpenKBP scores",
                            code=ErrorCode.MISSING_FIELD)
    voxel_mm3 = float(np.prod(ref_case.grid.spacing_mm))
    return openkbp_scores(ref, pred_gy, body, case_rois(ref_case), voxel_mm3)
