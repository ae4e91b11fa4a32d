"""Calibrate the DVH-metric intervals of model/bands.py: fit one factor per family on the model-selection
subset, then measure coverage and width on OpenKBP validation.

    python scripts/calibrate_bands.py --data ../shared/data [--cache /tmp/bands_cache] [--write]

Per case: one prediction with the error map (predict_case samples=2: flip-averaged dose + std), K coherent
samples (seed 0) through the coverage prior, the raw (factor 1) 5/50/95 % sample quantiles of every banded
metric. Per family f (target: D99/D95/D1/Dmean/V95%Rx of the PTVs; oar_mean: OAR Dmean; oar_max: OAR
D0.1cc/D2cc/D1%) the factor s_f is the 90th percentile over the 20 selection patients' metrics of the factor
that would just put the clinical value inside (lo = c - s (med - q05), hi = c + s (q95 - med), c = the
sample median or the point prediction: both are fitted on selection and the one with the smaller mean
calibrated width is kept). Validation (33 patients) is only measured, raw and calibrated. Writes
Docs/bands_calibration.json and prints a markdown table; --write stores band_scales / band_center in the
bundled model's record (Resources/Models/unet.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ADDiffDoseLib.io.atomic import write_text_atomic
from ADDiffDoseLib.model.bands import (DEFAULT_CORR_MM, FAMILIES, INTERVAL, apply_priors_to_samples,
                                       coherent_samples, dvh_bands, reference_in_bands)
from ADDiffDoseLib.model.data import list_cases, load_case
from ADDiffDoseLib.model.predict import _cached_model, predict_case

REPO = Path(__file__).resolve().parents[1]


def case_items(case, ref, K, corr_mm, cache: Path | None, model: str, seed: int = 0):
    """Raw (factor 1) interval rows of one case, and the seconds: single prediction, banded prediction."""
    path = cache / f"{'sel' if ref.selection else 'val'}_{ref.name}.npz" if cache else None
    if path and path.is_file():
        z = np.load(path)
        dose, std, t1, t2 = z["dose"], z["std"], float(z["t1"]), float(z["t2"])
    else:
        t = time.time()
        predict_case(case, model, samples=1, device="cpu")
        t1 = time.time() - t
        t = time.time()
        p = predict_case(case, model, samples=2, device="cpu")
        t2 = time.time() - t
        dose, std = p.dose_gy, p.dose_std_gy
        if path:
            np.savez(path, dose=dose, std=std, t1=t1, t2=t2)
    net = _cached_model(model)[0]
    t = time.time()
    samples = coherent_samples(dose, std, K, seed, corr_mm, case.grid.spacing_mm)
    apply_priors_to_samples(case, samples, net)
    bands = dvh_bands(case, samples, point_dose=dose, curves=True)
    t_bands = time.time() - t
    rows = reference_in_bands(case, bands)
    for r in rows:
        r["value"] = bands["structures"][r["structure"]]["metrics"][r["metric"]]["value"]
        r["q05"], r["q95"] = r["lo"], r["hi"]  # factor 1: the raw sample quantiles
        r["case"] = ref.name
    return rows, t1, t2 + t_bands


def needed_factor(r, center):
    c = r["median"] if center == "median" else r["value"]
    spread = (r["q95"] - r["median"]) if r["reference"] >= c else (r["median"] - r["q05"])
    gap = abs(r["reference"] - c)
    if gap <= 1e-9:
        return 0.0
    return gap / spread if spread > 1e-9 else np.inf


def interval(r, center, s):
    c = r["median"] if center == "median" else r["value"]
    lo, hi = c - s * (r["median"] - r["q05"]), c + s * (r["q95"] - r["median"])
    if r["metric"].startswith("V"):
        return max(lo, 0.0), min(hi, 100.0)
    return max(lo, 0.0), hi


def summarize(rows, center, scales):
    out = {}
    groups = {"all": rows} | {f: [r for r in rows if r["family"] == f] for f in FAMILIES}
    for name, group in groups.items():
        inside, widths, vwidths = [], [], []
        for r in group:
            lo, hi = interval(r, center, scales[r["family"]])
            inside.append(lo <= r["reference"] <= hi)
            (vwidths if r["metric"].startswith("V") else widths).append(hi - lo)
        out[name] = {"n": len(group), "coverage": float(np.mean(inside)) if inside else float("nan"),
                     "mean_width_gy": float(np.mean(widths)) if widths else float("nan")}
        if vwidths:
            out[name]["mean_width_v_pct"] = float(np.mean(vwidths))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--corr-mm", type=float, default=DEFAULT_CORR_MM)
    ap.add_argument("--seed", type=int, default=0, help="seed of the coherent samples")
    ap.add_argument("--scales", help="JSON of fixed band_scales (and center) to measure instead of fitting, "
                    "e.g. '{\"target\": 2.0, \"oar_mean\": 1.2, \"oar_max\": 1.2, \"center\": \"point\"}'")
    ap.add_argument("--cache", help="folder for the cached predictions (dose, std, timings)")
    ap.add_argument("--out", default=str(REPO / "Docs" / "bands_calibration.json"))
    ap.add_argument("--write", action="store_true", help="store the factors in the bundled model's record")
    args = ap.parse_args(argv)
    cache = Path(args.cache) if args.cache else None
    if cache:
        cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sel_refs = [r for r in list_cases(args.data, "train", include_pyradplan=False) if r.selection]
    val_refs = list_cases(args.data, "validation", include_pyradplan=False)
    rows = {"selection": [], "validation": []}
    times = []
    for split, refs in (("selection", sel_refs), ("validation", val_refs)):
        for ref in refs:
            r, t1, tb = case_items(load_case(ref), ref, args.samples, args.corr_mm, cache, args.model, args.seed)
            rows[split] += r
            times.append((t1, tb))
            print(f"{split} {ref.name}: {len(r)} metrics, single {t1:.1f} s, bands {tb:.1f} s", flush=True)
    fits = {}
    for center in ("median", "point"):
        scales = {f: float(np.quantile([needed_factor(r, center) for r in rows["selection"] if r["family"] == f],
                                       INTERVAL)) for f in FAMILIES}
        fits[center] = {"band_scales": scales, "selection": summarize(rows["selection"], center, scales)}
    width = lambda c: np.nanmean([fits[c]["selection"][f]["mean_width_gy"] for f in FAMILIES])  # noqa: E731
    center = min(fits, key=width)
    scales = fits[center]["band_scales"]
    if args.scales:  # measure given factors (e.g. the released ones with another seed)
        fixed = json.loads(args.scales)
        center = fixed.pop("center", center)
        scales = {f: float(fixed.get(f, 1.0)) for f in FAMILIES}
    ones = {f: 1.0 for f in FAMILIES}
    result = {
        "K": args.samples, "corr_mm": args.corr_mm, "interval": INTERVAL, "seed": args.seed, "model": args.model,
        "center": center, "band_scales": scales, "fits_on_selection": fits,
        "validation_raw": summarize(rows["validation"], "median", ones),
        "validation_calibrated": summarize(rows["validation"], center, scales),
        "seconds_per_case": {"single_prediction": float(np.mean([t[0] for t in times])),
                             "bands": float(np.mean([t[1] for t in times])),
                             "ratio": float(np.mean([t[1] for t in times]) / np.mean([t[0] for t in times]))},
        "cases": {"selection": len(sel_refs), "validation": len(val_refs)},
        "minutes": round((time.time() - t0) / 60, 1),
        "validation_rows": rows["validation"],
    }
    write_text_atomic(Path(args.out), json.dumps(result, indent=1) + "\n", overwrite=True)
    print(f"\nK = {args.samples}, corr {args.corr_mm} mm, nominal {INTERVAL:.0%}; center {center}; factors "
          + ", ".join(f"{f} {s:.2f}" for f, s in scales.items())
          + (" (given)\n" if args.scales else " (fitted on the 20 selection patients)\n"))
    print("| validation (33) | n | coverage raw (factor 1, median-centred) | width raw (Gy) | coverage calibrated "
          "| width calibrated (Gy) |")
    print("|---|---|---|---|---|---|")
    for f in ("all",) + FAMILIES:
        raw, cal = result["validation_raw"][f], result["validation_calibrated"][f]
        print(f"| {f} | {raw['n']} | {raw['coverage']:.1%} | {raw['mean_width_gy']:.2f} | {cal['coverage']:.1%} | "
              f"{cal['mean_width_gy']:.2f} |")
    s = result["seconds_per_case"]
    print(f"\ntime per case: single prediction {s['single_prediction']:.1f} s, bands (K={args.samples}) "
          f"{s['bands']:.1f} s ({s['ratio']:.2f}x)")
    if args.write:
        path = REPO / "Resources" / "Models" / "unet.json"
        meta = json.loads(path.read_text())
        meta["record"]["band_scales"] = scales
        meta["record"]["band_center"] = center
        meta["record"]["band_fit"] = {"K": args.samples, "corr_mm": args.corr_mm, "fitted_on": "model selection (20)",
                                      "script": "scripts/calibrate_bands.py"}
        write_text_atomic(path, json.dumps(meta, indent=2) + "\n", overwrite=True)
        print(f"wrote band_scales into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
