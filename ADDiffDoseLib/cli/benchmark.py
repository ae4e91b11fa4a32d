"""`addiffdose benchmark --data DIR`: models side by side on cases with reference doses."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .. import NOT_FOR_CLINICAL_USE
from ..errors import ErrorCode, InputError

TABLE_KEYS = (("dose_score", "dose"), ("dvh_score", "DVH"), ("gdphmm_mae", "GDP-MAE"), ("gamma_3mm3pct", "g3%3mm"),
              ("cord_dmax_error", "cordDmax"), ("dice", "Dice50"), ("seconds", "s/case"), ("peak_memory_gb", "GB"))


def register(subparsers) -> None:
    p = subparsers.add_parser("benchmark", help="compare models on cases with reference doses")
    p.add_argument("--data", required=True,
                   help="data root holding openkbp/<split> (and openkbp-pyradplan/<split>), or a folder of cases")
    p.add_argument("--split", default="validation",
                   help="openkbp split: validation (reported figures), or selection (the 20-patient model-selection "
                        "subset of train, for choosing checkpoints and releases)")
    p.add_argument("--models", default="default,unet,heuristic", help="comma-separated model names (first = baseline of the paired differences)")
    p.add_argument("--limit", type=int, help="only the first N cases")
    p.add_argument("--steps", type=int)
    p.add_argument("--samples", type=int, default=1, help="K > 1 adds the uncertainty check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--no-gamma", action="store_true", help="skip the gamma pass rates (faster)")
    p.add_argument("--no-beam-check", action="store_true", help="skip the beam-sensitivity check")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="earlier benchmark JSON files (same cases) whose models join this table and its paired differences")
    p.add_argument("--json", help="write every number to this JSON file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def _fmt(v) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:7.3f}"


def run(args) -> int:
    from tqdm import tqdm

    from ..io.atomic import check_writable, write_text_atomic
    from ..io.detect import iter_cases
    from ..metrics.evaluate import to_jsonable
    from ..model.benchmark import beam_sensitivity, run_case, summarize

    if args.json:
        check_writable(args.json, args.overwrite)
    root = Path(args.data)
    split = "train" if args.split == "selection" else args.split
    folder = root / "openkbp" / split if (root / "openkbp").is_dir() else root
    cases = list(iter_cases(folder))
    if args.split == "selection":
        from ..model.data import model_selection_ids

        chosen = set(model_selection_ids())
        cases = [(n, p) for n, p in cases if n in chosen]
    cases = cases[: args.limit]
    if not cases:
        raise InputError("no cases found", path=folder, code=ErrorCode.FILE_NOT_FOUND)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    per_model: dict[str, list[dict]] = {}
    earlier_beams: dict = {}
    for path in args.merge:  # models measured before, on the same cases
        earlier = json.loads(Path(path).read_text())
        if earlier["cases"] != [n for n, _ in cases]:
            raise InputError("merged benchmark was run on other cases", path=path, code=ErrorCode.INVALID_VALUE)
        per_model.update(earlier["per_case"])
        earlier_beams.update(earlier.get("beam_sensitivity", {}))
    models = models + [m for m in per_model if m not in models]  # the first listed is the paired baseline
    for model in [m for m in models if m not in per_model]:
        rows = []
        for name, path in tqdm(cases, desc=f"benchmark {model}", unit="case"):
            row = run_case(model, path, steps=args.steps, samples=args.samples, seed=args.seed, device=args.device,
                           gamma=not args.no_gamma, data_root=root)
            rows.append({"case": name, **row})
        per_model[model] = rows
    per_model = {m: per_model[m] for m in models}
    result = {"notice": NOT_FOR_CLINICAL_USE, "data": str(folder), "cases": [n for n, _ in cases],
              "summary": summarize(per_model), "per_case": per_model}
    plans_dir = root / "openkbp-pyradplan" / split
    if not args.no_beam_check and args.split != "selection" and plans_dir.is_dir():
        plans = sorted(plans_dir.glob("pt_*_*.npz"))[: args.limit]
        result["beam_sensitivity"] = {
            m: earlier_beams.get(m) or beam_sensitivity(m, plans, root, steps=args.steps, seed=args.seed, device=args.device)
            for m in models}
    print(f"{len(cases)} cases from {folder}   ({NOT_FOR_CLINICAL_USE})")
    print(f"{'model':14s}" + "".join(f"{h:>9s}" for _, h in TABLE_KEYS))
    for m, means in result["summary"]["means"].items():
        print(f"{m:14s}" + "".join(f"{_fmt(means.get(k)):>9s}" for k, _ in TABLE_KEYS))
    for m, diffs in result["summary"].get("paired_vs_" + models[0], {}).items():
        d = diffs["dose_score"]
        print(f"paired dose-score difference {m} - {models[0]}: {d['mean']:+.3f} Gy (95% CI {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f})")
    for m, b in result.get("beam_sensitivity", {}).items():
        print(f"beam sensitivity {m}: MAE true beams {b['mae_true_beams']:.2f} Gy, rotated 20 deg "
              f"{b['mae_rotated_beams']:.2f} Gy over {b['plans']} pyRadPlan plans")
    if args.samples > 1:
        for m, means in result["summary"]["means"].items():
            print(f"uncertainty {m}: Spearman(std, |error|) {_fmt(means.get('uncertainty_spearman'))}, "
                  f"dose-gradient heuristic {_fmt(means.get('gradient_spearman'))}")
        print(f"DVH-metric intervals (nominal 90 %, K = {args.samples}): coverage / mean width (Gy)")
        print(f"{'model':14s}" + "".join(f"{f:>18s}" for f in ("all", "target", "oar_mean", "oar_max")))
        for m, means in result["summary"]["means"].items():
            cells = [(means.get("band_coverage" + s), means.get("band_width_gy" + s))
                     for s in ("", "_target", "_oar_mean", "_oar_max")]
            print(f"{m:14s}" + "".join(f"{'n/a' if c is None else f'{c:.1%}':>10s} {_fmt(w):>7s}" for c, w in cells))
    if args.json:
        write_text_atomic(args.json, json.dumps(to_jsonable(result), indent=1), overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return 0
