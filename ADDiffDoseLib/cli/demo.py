"""`addiffdose demo`: the README's main job. Predict the bundled sample case (an OpenKBP validation patient no
model was trained on) with the bundled default model; write the dose (NRRD and RT Dose), the uncertainty map
and the HTML report; print where they are and the sample's errors against its clinical dose."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import NOT_FOR_CLINICAL_USE

SAMPLE = Path(os.environ.get("ADDIFFDOSE_SAMPLE", Path(__file__).resolve().parents[2] / "Resources" / "Sample" / "pt_201.npz"))


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="predict the bundled sample case and report its errors (the main job)")
    p.add_argument("--out", default="addiffdose_demo", help="output folder (default ./addiffdose_demo)")
    p.add_argument("--input", default=str(SAMPLE),
                   help="a case; its own dose, if any, is the reference (default: the bundled sample)")
    p.add_argument("--model", default="default")
    p.add_argument("--samples", type=int, default=4, help="K samples for the uncertainty map (default 4)")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io.atomic import check_writable
    from ..io.detect import read_case, write_dose
    from ..io.nrrd import write_dose_std_nrrd
    from ..model.predict import predict_case
    from .predict import write_case_report

    out = Path(args.out)
    case = read_case(args.input)
    paths = {"dose (NRRD)": out / f"{case.name}_dose.nrrd", "dose (DICOM RT Dose)": out / f"{case.name}_RTDOSE.dcm",
             "uncertainty (NRRD, Gy std)": out / f"{case.name}_dose_std.nrrd", "report (HTML)": out / f"{case.name}_report.html"}
    for p in paths.values():
        check_writable(p, args.overwrite)
    print(f"ADDiffDose demo - {NOT_FOR_CLINICAL_USE}")
    print(f"case {case.name}: grid {case.grid.shape}, spacing {np.round(case.grid.spacing_mm, 2).tolist()} mm, "
          f"{len(case.targets)} targets, {len(case.plan.beams)} beams")
    pred = predict_case(case, args.model, steps=args.steps, samples=args.samples, seed=args.seed, device=args.device,
                        progress=lambda f, m: print(f"  {100 * f:3.0f}% {m}", flush=True))
    for w in pred.warnings:
        print(f"warning: {w}")
    prov = pred.provenance
    write_dose(paths["dose (NRRD)"], case, pred.dose_gy, provenance=prov, overwrite=args.overwrite)
    write_dose(paths["dose (DICOM RT Dose)"], case, pred.dose_gy, provenance=prov, overwrite=args.overwrite)
    if pred.dose_std_gy is not None:
        write_dose_std_nrrd(paths["uncertainty (NRRD, Gy std)"], pred.dose_std_gy, case.grid,
                            "dose standard deviation (Gy): spread over samples, with the model's learned error "
                            "scale where it has one", overwrite=args.overwrite)
    else:
        del paths["uncertainty (NRRD, Gy std)"]
    print(f"model {prov['model']} ({prov['family']}), {prov['seconds']} s on {prov['device']}")
    if pred.dose_std_gy is not None:  # issue 16: DVH bands from coherent samples, shaded in the report
        from ..model.bands import add_bands, write_bands

        add_bands(case, pred, args.model, args.samples, seed=args.seed)
        bands_json, _ = write_bands(out / f"{case.name}_dose.npz", pred.bands, overwrite=args.overwrite)
        paths["DVH bands (JSON/CSV)"] = bands_json
    ev = write_case_report(paths["report (HTML)"], case, pred, prov, overwrite=args.overwrite)
    if case.dose_gy is not None:
        _print_errors(case, pred.dose_gy, ev.metrics)
    for what, p in paths.items():
        print(f"wrote {what}: {p}")
    return 0


def _print_errors(case, dose, m: dict) -> None:
    ref = case.dose_gy
    target = next(iter(case.targets.values()))
    d95_pred = float(np.percentile(dose[target.mask], 5))
    d95_ref = float(np.percentile(ref[target.mask], 5))
    body = case.body_mask
    outside = float(dose[~body].mean()) if body is not None and (~body).any() else 0.0
    rx = case.max_prescription_gy
    print(f"errors against the clinical dose of {case.name}:")
    print(f"  OpenKBP dose score {m['dose_score']:.2f} Gy, DVH score {m['dvh_score']:.2f} Gy, "
          f"gamma 3%/3mm {m.get('gamma_3mm3pct', float('nan')):.1f} %")
    print(f"  {target.name} D95 predicted {d95_pred:.1f} Gy vs reference {d95_ref:.1f} Gy "
          f"({100 * (d95_pred - d95_ref) / d95_ref:+.1f} %)")
    print(f"  Dmax {dose.max():.1f} Gy = {100 * dose.max() / rx:.0f} % of the highest prescription ({rx:g} Gy); "
          f"mean dose outside the body {outside:.2f} Gy")
