"""Fit the heuristic baseline's one fall-off length on the OpenKBP training split and write its model files.

    python scripts/fit_heuristic.py --data ../shared/data --cases 40 --out Resources/Models/heuristic.json

Uses clinical plans of openkbp/train minus the model-selection subset (seeded choice of --cases patients).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ADDiffDoseLib.model.data import list_cases, load_case
from ADDiffDoseLib.model.heuristic import HeuristicDoseModel, fit_heuristic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="Resources/Models/heuristic.json")
    args = ap.parse_args()
    refs = [r for r in list_cases(args.data, "train", include_pyradplan=False) if not r.selection]
    rng = np.random.default_rng(args.seed)
    chosen = [refs[i] for i in sorted(rng.choice(len(refs), min(args.cases, len(refs)), replace=False))]
    t0 = time.time()
    config, mae = fit_heuristic(load_case(r) for r in chosen)
    model = HeuristicDoseModel(config)
    record = {"name": "heuristic", "fitted_on": [r.name for r in chosen], "mean_mae_body_gy": round(mae, 3),
              "seed": args.seed, "seconds": round(time.time() - t0, 1)}
    out = Path(args.out)
    meta = {"family": model.family, "config": config.to_dict(), "record": record}
    out.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"L = {config.length_mm} mm, mean in-body MAE {mae:.3f} Gy on {len(chosen)} training cases -> {out}")


if __name__ == "__main__":
    main()
