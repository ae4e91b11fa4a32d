"""Every metric of a predicted dose against a reference case, for one case or two folders.

Keys of :func:`evaluate_case` (Gy unless the name says otherwise; NaN where a metric does not apply):
dose_score, dvh_score (OpenKBP), gdphmm_mae, mae_body, dice (= dice_50), dice_mean, dice_10 ... dice_100
(isodose Dice at % of the highest prescription), gamma_3mm3pct, gamma_2mm2pct (pass rates, %), cord_dmax_error,
plus nested details: oar_dmax_error, dvh_diff, openkbp_dvh_details, quality (ref/pred CI and HI per target),
constraints (ref/pred rows), prescription_gy, dvh_convention (DVH mode and end cap used).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import NOT_FOR_CLINICAL_USE
from ..case import Case
from ..errors import DoseError, ErrorCode, InputError
from ..geometry import resample_to_grid
from .comparison import (HEADLINE_DICE_FRACTION, cord_dmax_error, dvh_differences, gdphmm_mae, isodose_dice_levels,
                         mae_in_mask, oar_dmax_errors)
from .constraints import check_constraints
from .dvh import DVH, case_dvhs, dvh_warnings
from .end_caps import check_end_cap
from .gamma import GammaResult, gamma_index
from .openkbp_score import case_openkbp_scores
from .quality import target_quality

log = logging.getLogger(__name__)
HEADLINE_KEYS = ("dose_score", "dvh_score", "gdphmm_mae", "mae_body", "dice", "dice_mean", "gamma_3mm3pct",
                 "gamma_2mm2pct", "cord_dmax_error")


@dataclass(eq=False)
class Evaluation:
    """metrics: the JSON-ready dict; ref_dvhs / pred_dvhs: per structure; gamma_3mm3pct: the gamma map (or None).
    ref_dose_gy None: a prediction without reference (:func:`evaluate_prediction`); beams: the prediction's."""

    metrics: dict
    ref_dose_gy: np.ndarray | None
    pred_dose_gy: np.ndarray
    ref_dvhs: dict[str, DVH] = field(default_factory=dict)
    pred_dvhs: dict[str, DVH] = field(default_factory=dict)
    gamma_3mm3pct: GammaResult | None = None
    bands: dict | None = None  # DVH bands / metric intervals (metrics/intervals.py): the report shades them
    beams: tuple | None = None  # Beam objects or dicts the prediction was made for (the report's beam table)


def _prediction_on_ref(pred, ref_case: Case) -> np.ndarray:
    if isinstance(pred, Case):
        if pred.dose_gy is None:
            raise DoseError(f"predicted case {pred.name!r} has no dose", code=ErrorCode.MISSING_FIELD)
        if pred.grid.same_as(ref_case.grid):
            return pred.dose_gy
        return resample_to_grid(pred.dose_gy, pred.grid, ref_case.grid, order=1)
    dose = np.asarray(pred, dtype=np.float32)
    ref_case.grid.check_array(dose, "predicted dose")
    return dose


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def evaluate_case_full(pred, ref_case: Case, *, gamma: bool = True, constraints=None, dvh_mode: str = "native",
                       dvh_end_cap: str = "full") -> Evaluation:
    """All metrics of `pred` (Case or (n0, n1, n2) Gy array on ref_case.grid) against `ref_case.dose_gy`.

    dvh_mode / dvh_end_cap: the DVH convention (:func:`~.dvh.compute_dvh`) of every DVH-based metric."""
    if ref_case.dose_gy is None:
        raise DoseError(f"reference case {ref_case.name!r} has no dose", code=ErrorCode.MISSING_FIELD)
    ref = ref_case.dose_gy
    pred_dose = _prediction_on_ref(pred, ref_case)
    body = ref_case.body_mask
    if body is None:
        body = np.ones(ref_case.grid.shape, bool)
        log.warning("case %s has no body structure; the whole grid is used as body", ref_case.name)
    m: dict = {"case": ref_case.name, "note": NOT_FOR_CLINICAL_USE, "warnings": list(ref_case.warnings),
               "dvh_convention": {"mode": dvh_mode, "end_cap": check_end_cap(dvh_end_cap)}}
    if isinstance(pred, Case):
        m["warnings"] += [f"prediction: {w}" for w in pred.warnings]
    kbp = case_openkbp_scores(ref_case, pred_dose) if ref_case.body_mask is not None else None
    m["dose_score"] = kbp["dose_score"] if kbp else float("nan")
    m["dvh_score"] = kbp["dvh_score"] if kbp else float("nan")
    m["gdphmm_mae"] = gdphmm_mae(ref, pred_dose, body)
    m["mae_body"] = mae_in_mask(ref, pred_dose, body)
    rx = ref_case.max_prescription_gy
    m["prescription_gy"] = rx
    if rx:
        levels = isodose_dice_levels(ref, pred_dose, rx, body_mask=body)
        m.update(levels)
        m["dice"] = levels[f"dice_{int(round(100 * HEADLINE_DICE_FRACTION))}"]
        m["dice_mean"] = float(np.nanmean(list(levels.values())))
    else:
        m["dice"] = m["dice_mean"] = float("nan")
    gamma3 = None
    if gamma:
        gamma3 = gamma_index(ref, pred_dose, ref_case.grid.spacing_mm, 3.0, 3.0, 10.0)
        m["gamma_3mm3pct"] = gamma3.pass_rate_pct
        m["gamma_2mm2pct"] = gamma_index(ref, pred_dose, ref_case.grid.spacing_mm, 2.0, 2.0, 10.0).pass_rate_pct
    ref_dvhs = case_dvhs(ref_case, ref, dvh_mode, end_cap=dvh_end_cap)
    pred_dvhs = case_dvhs(ref_case, pred_dose, dvh_mode, end_cap=dvh_end_cap)
    m["warnings"] += [w for w in dvh_warnings(ref_dvhs, ref_case) if w not in m["warnings"]]
    dmax = oar_dmax_errors(ref_dvhs, pred_dvhs, list(ref_case.oars))
    originals = {k: s.original_name for k, s in ref_case.structures.items()}
    m["cord_dmax_error"] = cord_dmax_error(dmax, originals)
    m["oar_dmax_error"] = dmax
    m["dvh_diff"] = dvh_differences(ref_dvhs, pred_dvhs)
    m["quality"] = {"ref": target_quality(ref_case, ref), "pred": target_quality(ref_case, pred_dose)}
    m["constraints"] = {"ref": check_constraints(ref_dvhs, constraints, originals),
                        "pred": check_constraints(pred_dvhs, constraints, originals)}
    m["openkbp_dvh_details"] = kbp["dvh_details"] if kbp else []
    return Evaluation(m, ref, pred_dose, ref_dvhs, pred_dvhs, gamma3)


def evaluate_prediction(pred, case: Case, *, constraints=None, dvh_mode: str = "native",
                        dvh_end_cap: str = "full") -> Evaluation:
    """DVHs, target quality and constraints of a prediction alone (no reference dose), for the report:
    `pred` (Case or Gy array on case.grid); the returned Evaluation has ref_dose_gy None and no ref_dvhs."""
    pred_dose = _prediction_on_ref(pred, case)
    pred_dvhs = case_dvhs(case, pred_dose, dvh_mode, end_cap=dvh_end_cap)
    originals = {k: s.original_name for k, s in case.structures.items()}
    warnings = [*case.warnings, *dvh_warnings(pred_dvhs, case)]
    if isinstance(pred, Case):
        warnings += [f"prediction: {w}" for w in pred.warnings]
    m: dict = {"case": case.name, "note": NOT_FOR_CLINICAL_USE, "prescription_gy": case.max_prescription_gy,
               "warnings": list(dict.fromkeys(warnings)),
               "dvh_convention": {"mode": dvh_mode, "end_cap": check_end_cap(dvh_end_cap)},
               "quality": {"pred": target_quality(case, pred_dose)},
               "constraints": {"pred": check_constraints(pred_dvhs, constraints, originals)}}
    return Evaluation(m, None, pred_dose, {}, pred_dvhs)


def evaluate_case(pred, ref_case: Case, **kwargs) -> dict:
    """The metrics dict of :func:`evaluate_case_full` (see the module docstring for the keys)."""
    return evaluate_case_full(pred, ref_case, **kwargs).metrics


def mean_metrics(per_case: list[dict]) -> dict:
    """nanmean over cases of every scalar top-level metric (dice_*, gamma_*, scores, ...)."""
    keys = [k for k, v in per_case[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)] if per_case else []
    out = {}
    for k in keys:
        vals = np.array([c.get(k) if c.get(k) is not None else np.nan for c in per_case], dtype=float)
        out[k] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
    return out


def _case_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".npz" or p.is_dir()}


def evaluate_folders(pred_dir: str | Path, ref_dir: str | Path, *, gamma: bool = True, constraints=None,
                     data_root=None, progress=None) -> dict:
    """Match files by case name (stem) and evaluate each pair: {'cases': {name: metrics}, 'mean': {...},
    'missing_predictions': [...]} . A prediction is a dose-only npz on the reference grid or a full case."""
    from .loading import is_prediction_file, read_any_case, read_prediction_dose

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for d in (pred_dir, ref_dir):
        if not d.is_dir():
            raise InputError("not a folder", path=d, code=ErrorCode.FILE_NOT_FOUND)
    refs, preds = _case_files(ref_dir), _case_files(pred_dir)
    names = [n for n in refs if n in preds]
    if not names:
        raise InputError(f"no prediction matches a reference case by name (refs: {list(refs)[:5]}...)",
                         path=pred_dir, code=ErrorCode.MISSING_FIELD)
    cases = {}
    for i, name in enumerate(names):
        ref_case = read_any_case(refs[name], data_root=data_root)
        p = preds[name]
        pred = read_prediction_dose(p, ref_case.grid) if is_prediction_file(p) else read_any_case(p, data_root)
        cases[name] = evaluate_case(pred, ref_case, gamma=gamma, constraints=constraints)
        if progress:
            progress(i + 1, len(names), name)
    return {"cases": cases, "mean": mean_metrics(list(cases.values())),
            "missing_predictions": [n for n in refs if n not in preds], "note": NOT_FOR_CLINICAL_USE}


def to_jsonable(obj):
    """Replace NaN/inf by None and numpy scalars by Python ones, recursively (for strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return _finite(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
