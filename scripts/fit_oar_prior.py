"""Fit a model's OAR-scale prior (ADDiffDoseLib/model/postprocess.py) on the model-selection subset.

    python scripts/fit_oar_prior.py MODEL.safetensors --data ../shared/data --write

Predicts the 20 clinical model-selection patients (training split, never used for gradient steps) with the
model's other defaults (flip averaging, coverage prior) and without the OAR prior, then, organ by organ,
picks the factor in SCALES for that organ's dose outside the targets that lowers the mean OpenKBP dose score
+ DVH score the most (the organ's D0.1cc and mean, and the dose score of its voxels; overlaps with other
organs are ignored in the search and included in the final check). --write stores the factors in the
checkpoint's .json config (oar_scales) and the fit in its record. OpenKBP validation is not touched.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ADDiffDoseLib.io.atomic import write_text_atomic
from ADDiffDoseLib.metrics.openkbp_score import case_openkbp_scores, case_rois, roi_metrics
from ADDiffDoseLib.model.conditioning import find_oar_masks
from ADDiffDoseLib.model.data import list_cases, load_case
from ADDiffDoseLib.model.postprocess import apply_oar_prior
from ADDiffDoseLib.model.predict import predict_case
from ADDiffDoseLib.model.weights import load_checkpoint

SCALES = tuple(float(round(x, 2)) for x in np.arange(0.75, 1.0801, 0.01))


def organ_terms(cases, preds, organ: str) -> list[tuple]:
    """Per case what the search needs for one organ, computed once: (ref, pred) in its mask, which of those
    voxels lie outside the targets and inside the body, the body's size and the case's DVH metric count."""
    terms = []
    for case, pred in zip(cases, preds):
        mask = find_oar_masks(case).get(organ)
        if mask is None or not mask.any():
            continue
        movable = (~(case.target_prescription_map() > 0) & case.body_mask)[mask]
        n_metrics = sum(2 if kind == "oar" else 3 for _, kind in case_rois(case).values())
        terms.append((case.dose_gy[mask], pred[mask], movable, int(case.body_mask.sum()), n_metrics,
                      float(np.prod(case.grid.spacing_mm))))
    return terms


def organ_gain(terms, scale: float) -> float:
    """Mean over cases of the change in (dose score + DVH score) when the organ outside the targets is scaled."""
    gains = []
    for ref, pred, movable, body_count, n_metrics, vox in terms:
        new = np.where(movable, pred * scale, pred)
        d_dose = (np.abs(ref - new)[movable].sum() - np.abs(ref - pred)[movable].sum()) / body_count
        flat = np.ones(ref.shape, bool)
        r, a, b = (roi_metrics(d, flat, "oar", vox) for d in (ref, pred, new))
        d_dvh = sum(abs(b[m] - r[m]) - abs(a[m] - r[m]) for m in r) / n_metrics
        gains.append(d_dose + d_dvh)
    return float(np.mean(gains)) if gains else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="model .safetensors (its .json beside it)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--write", action="store_true", help="store the fitted factors in the checkpoint's .json")
    args = ap.parse_args()
    t0 = time.time()
    model = load_checkpoint(args.checkpoint)
    refs = [r for r in list_cases(args.data, "train", include_pyradplan=False) if r.selection]
    cases, preds = [], []
    for ref in tqdm(refs, desc="predicting the model-selection cases"):
        case = load_case(ref)
        cases.append(case)
        preds.append(predict_case(case, model, device="cpu", oar_prior=False).dose_gy)
    organs = sorted({o for c in cases for o in find_oar_masks(c)})
    scales = {}
    for organ in organs:
        terms = organ_terms(cases, preds, organ)
        best = min(SCALES, key=lambda s: (organ_gain(terms, s), abs(s - 1.0)))
        if best != 1.0:
            scales[organ] = best
        print(f"{organ}: factor {best:.2f} (gain {organ_gain(terms, best):+.4f} Gy)")
    before = [case_openkbp_scores(c, p) for c, p in zip(cases, preds)]
    after = [case_openkbp_scores(c, apply_oar_prior(c, p, scales)) for c, p in zip(cases, preds)]
    mean = lambda xs, k: round(float(np.mean([x[k] for x in xs])), 3)  # noqa: E731
    fit = {"cases": [c.name for c in cases], "scales": scales,
           "without": {"dose_score": mean(before, "dose_score"), "dvh_score": mean(before, "dvh_score")},
           "with": {"dose_score": mean(after, "dose_score"), "dvh_score": mean(after, "dvh_score")},
           "seconds": round(time.time() - t0, 1)}
    print(json.dumps(fit["without"]), "->", json.dumps(fit["with"]), f"({len(cases)} selection cases)")
    if args.write:
        cfg_path = Path(args.checkpoint).with_suffix(".json")
        meta = json.loads(cfg_path.read_text())
        meta["config"]["oar_scales"] = scales
        meta["record"]["oar_prior_fit"] = fit
        write_text_atomic(cfg_path, json.dumps(meta, indent=2) + "\n", overwrite=True)
        load_checkpoint(args.checkpoint)  # proves the config still loads
        print(f"wrote {scales} -> {cfg_path}")


if __name__ == "__main__":
    main()
