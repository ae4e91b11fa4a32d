"""Fit a model's target-coverage prior (ADDiffDoseLib/model/postprocess.py) on the model-selection subset.

    python scripts/fit_coverage_prior.py runs/unet_cpu/best.safetensors --data ../shared/data --write

Predicts the 20 clinical model-selection patients (training split, never used for gradient steps) without the
prior, then grid-searches level x strength for the lowest mean OpenKBP dose score + DVH score. --write stores
the winner in the checkpoint's .json config (coverage_level / coverage_strength) and its fit in the record.
OpenKBP validation is not touched.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ADDiffDoseLib.io.atomic import write_text_atomic
from ADDiffDoseLib.metrics.openkbp_score import case_openkbp_scores
from ADDiffDoseLib.model.data import list_cases, load_case
from ADDiffDoseLib.model.postprocess import apply_coverage_prior
from ADDiffDoseLib.model.predict import predict_case
from ADDiffDoseLib.model.weights import load_checkpoint

LEVELS = (0.96, 0.98, 1.0, 1.01, 1.02, 1.03, 1.04, 1.06)
STRENGTHS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="model .safetensors (its .json beside it)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, help="sampler steps (diffusion)")
    ap.add_argument("--write", action="store_true", help="store the fitted values in the checkpoint's .json")
    args = ap.parse_args()
    t0 = time.time()
    model = load_checkpoint(args.checkpoint)
    refs = [r for r in list_cases(args.data, "train", include_pyradplan=False) if r.selection]
    cases, preds = [], []
    for ref in tqdm(refs, desc="predicting the model-selection cases"):
        case = load_case(ref)
        cases.append(case)
        preds.append(predict_case(case, model, steps=args.steps, device="cpu", coverage_prior=False).dose_gy)
    results = []
    for level in LEVELS:
        for strength in STRENGTHS:
            if strength == 0 and level != LEVELS[0]:
                continue
            scores = [case_openkbp_scores(c, apply_coverage_prior(c, p, level, strength)) for c, p in zip(cases, preds)]
            dose = float(np.mean([s["dose_score"] for s in scores]))
            dvh = float(np.mean([s["dvh_score"] for s in scores]))
            results.append((dose + dvh, level, strength, dose, dvh))
    results.sort()
    off = next(r for r in results if r[2] == 0)
    print(f"without the prior: dose score {off[3]:.3f} Gy, DVH score {off[4]:.3f} Gy ({len(cases)} selection cases)")
    for total, level, strength, dose, dvh in results[:5]:
        print(f"level {level:.2f} strength {strength:.2f}: dose score {dose:.3f} Gy, DVH score {dvh:.3f} Gy")
    _, level, strength, dose, dvh = results[0]
    if args.write:
        cfg_path = Path(args.checkpoint).with_suffix(".json")
        meta = json.loads(cfg_path.read_text())
        meta["config"].update(coverage_level=level, coverage_strength=strength)
        meta["record"]["coverage_prior_fit"] = {
            "cases": [c.name for c in cases], "level": level, "strength": strength,
            "without": {"dose_score": round(off[3], 3), "dvh_score": round(off[4], 3)},
            "with": {"dose_score": round(dose, 3), "dvh_score": round(dvh, 3)}, "seconds": round(time.time() - t0, 1)}
        write_text_atomic(cfg_path, json.dumps(meta, indent=2) + "\n", overwrite=True)
        load_checkpoint(args.checkpoint)  # proves the config still loads
        print(f"wrote level {level}, strength {strength} -> {cfg_path}")


if __name__ == "__main__":
    main()
