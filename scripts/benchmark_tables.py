"""Markdown tables for the README and the model card from `addiffdose benchmark --json` files.

    python scripts/benchmark_tables.py bench/validation.json [bench/uncertainty.json]
"""

from __future__ import annotations

import json
import math
import sys

COLUMNS = (("dose_score", "OpenKBP dose score (Gy)"), ("dvh_score", "DVH score (Gy)"), ("gdphmm_mae", "GDP-HMM MAE (Gy)"),
           ("mae_body", "MAE in body (Gy)"), ("gamma_3mm3pct", "gamma 3%/3mm (%)"), ("gamma_2mm2pct", "gamma 2%/2mm (%)"),
           ("cord_dmax_error", "cord Dmax error (Gy)"), ("dice", "isodose Dice 50%"), ("seconds", "s/case"),
           ("peak_memory_gb", "peak GB"))


def fmt(v, digits=2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def main() -> None:
    result = json.loads(open(sys.argv[1]).read())
    means = result["summary"]["means"]
    print(f"Validation: {len(result['cases'])} OpenKBP validation patients.\n")
    print("| model | " + " | ".join(h for _, h in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for m, row in means.items():
        print(f"| {m} | " + " | ".join(fmt(row.get(k)) for k, _ in COLUMNS) + " |")
    paired = next(v for k, v in result["summary"].items() if k.startswith("paired_vs_"))
    base = next(k for k in result["summary"] if k.startswith("paired_vs_"))[len("paired_vs_"):]
    print(f"\nPaired per-case differences (model - {base}), mean and 95 % t-interval:\n")
    print("| model | dose score (Gy) | DVH score (Gy) | gamma 3%/3mm (points) |")
    print("|---|---|---|---|")
    for m, d in paired.items():
        cell = lambda x: f"{x['mean']:+.2f} [{x['ci95'][0]:+.2f}, {x['ci95'][1]:+.2f}]"  # noqa: E731
        print(f"| {m} | {cell(d['dose_score'])} | {cell(d['dvh_score'])} | {cell(d['gamma_3mm3pct'])} |")
    beams = result.get("beam_sensitivity", {})
    if beams:
        print("\nBeam sensitivity (pyRadPlan validation plans, anatomies not trained on; MAE in body, Gy):\n")
        print("| model | true beams | beams rotated 20 deg | rotated - true [95 % CI] |")
        print("|---|---|---|---|")
        for m, b in beams.items():
            d = b["rotated_minus_true"]
            print(f"| {m} | {b['mae_true_beams']:.2f} | {b['mae_rotated_beams']:.2f} | "
                  f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] |")
    # per-structure DVH errors of each model (mean |pred - ref| over cases)
    print("\nPer-structure mean absolute DVH errors (Gy; OARs D0.1cc / Dmean, targets D99 / D95 / D1):\n")
    for m, rows in result["per_case"].items():
        acc: dict[tuple[str, str], list[float]] = {}
        for r in rows:
            for d in r.get("openkbp_dvh_details", []):
                acc.setdefault((d["roi"], d["metric"]), []).append(d["abs_diff"])
        cells = [f"{roi} {metric} {sum(v) / len(v):.1f}" for (roi, metric), v in sorted(acc.items())]
        print(f"- {m}: " + "; ".join(cells))
    if len(sys.argv) > 2:
        unc = json.loads(open(sys.argv[2]).read())["summary"]["means"]
        print("\nUncertainty (--samples 4): Spearman correlation over body voxels with the absolute error:\n")
        print("| model | dose_std | dose-gradient heuristic |")
        print("|---|---|---|")
        for m, row in unc.items():
            print(f"| {m} | {fmt(row.get('uncertainty_spearman'))} | {fmt(row.get('gradient_spearman'))} |")


if __name__ == "__main__":
    main()
