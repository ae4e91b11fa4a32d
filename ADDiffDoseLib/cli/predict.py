"""`addiffdose predict INPUT -o OUTPUT`: predict a dose for one case or a folder of cases.

OUTPUT by extension: .dcm (RT Dose), .nrrd, or .npz (`dose` and, with --samples K > 1, `dose_std`).
For a folder INPUT, OUTPUT is a folder with one output per case named after it.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

from .. import NOT_FOR_CLINICAL_USE
from ..case import Beam, Role
from ..errors import ADDiffDoseError, ErrorCode, InputError

log = logging.getLogger(__name__)

MISSING_CT_WARNING = ("no CT: predicted with air (-1000 HU) in place of the patient's CT (--allow-missing-ct); "
                      "this dose does not reflect the patient's anatomy")


class _Printed(logging.Filter):
    """Drops the model's log records of warnings that the command prints (and writes into the outputs) itself."""

    def filter(self, record) -> bool:
        return record.levelno != logging.WARNING


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}", code=ErrorCode.INVALID_VALUE) from exc


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict the 3D dose of a case (or a folder of cases)",
                              description=f"Predict a dose. {NOT_FOR_CLINICAL_USE}.")
    p.add_argument("input", help="a case (OpenKBP npz/CSV folder, pyRadPlan plan, NRRD folder, DICOM study) or a folder of cases")
    p.add_argument("-o", "--output", required=True, help="output file (.dcm/.nrrd/.npz) or, for a folder input, a folder")
    p.add_argument("--model", default="default", help="model name from the manifest, or a .safetensors path")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (diffusion models)")
    p.add_argument("--samples", type=int, default=1, help="K samples; K > 1 also writes the per-voxel std "
                   "(uncertainty) and <output>_bands.json/.csv: DVH bands and a 90 %% interval per "
                   "structure x DVH metric")
    p.add_argument("--no-bands", action="store_true", help="with --samples K > 1: skip the DVH bands")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--gantry", help="gantry angles in degrees, e.g. 0,40,80 (overrides the input's beams)")
    p.add_argument("--couch", help="couch angle(s): one for all beams or one per beam")
    p.add_argument("--energy", type=float, help="nominal energy in MV (default 6)")
    p.add_argument("--technique", choices=("IMRT", "VMAT", "3D-CRT"), help="treatment technique")
    p.add_argument("--fractions", type=int, help="number of fractions (also: of a FRACTION RT Dose without its RT Plan)")
    p.add_argument("--rx", action="append", default=[], metavar="STRUCTURE=GY",
                   help="mark STRUCTURE as a target with this total prescription (repeatable)")
    p.add_argument("--normalize-d95", action="store_true", help="scale so the highest target's D95 equals its prescription")
    p.add_argument("--no-coverage-prior", action="store_true",
                   help="skip the model's target-coverage prior (target voxels pulled towards the prescription)")
    p.add_argument("--no-oar-prior", action="store_true",
                   help="skip the model's OAR-scale prior (organ doses outside the targets scaled by fitted factors)")
    p.add_argument("--format", choices=("npz", "nrrd", "dcm"), help="output type in folder mode (default: like the input)")
    p.add_argument("--data-root", help="data root for pyRadPlan plans (anatomy files)")
    p.add_argument("--series", help="DICOM series UID when a folder holds several")
    p.add_argument("--allow-missing-ct", action="store_true",
                   help="predict even when the input has no CT (the model then sees air: the dose is not meaningful)")
    p.add_argument("--report", metavar="OUT.html", help="also write the HTML report (single case): predicted dose "
                   "over the CT with isodoses, DVHs (with bands when --samples K > 1), beams, constraints; the "
                   "input's own dose, if any, as reference")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--progress-lines", action="store_true", help="print 'PROGRESS <pct> <message>' lines (for the Slicer module)")
    p.set_defaults(func=run)


def apply_overrides(case, args):
    """Beams, fractions and prescriptions from the command line replace the input's."""
    beams = case.plan.beams
    if args.gantry or args.couch or args.energy or args.technique:
        gantries = _floats(args.gantry, "--gantry") if args.gantry else [b.gantry_deg for b in beams]
        if not gantries:
            raise InputError("no beams: give --gantry", code=ErrorCode.MISSING_FIELD)
        couches = _floats(args.couch, "--couch") if args.couch else [0.0]
        if len(couches) not in (1, len(gantries)):
            raise InputError(f"--couch needs 1 or {len(gantries)} values", code=ErrorCode.INVALID_VALUE)
        couches = couches * len(gantries) if len(couches) == 1 else couches
        energy = args.energy or (beams[0].energy_mv if beams else 6.0)
        technique = args.technique or (beams[0].technique if beams else "IMRT")
        beams = tuple(Beam(g, c, energy_mv=energy, technique=technique) for g, c in zip(gantries, couches))
    plan = replace(case.plan, beams=beams, fractions=args.fractions or case.plan.fractions)
    structures = dict(case.structures)
    for item in args.rx:
        name, sep, gy = item.partition("=")
        match = [k for k, s in structures.items() if name in (k, s.original_name)]
        if not sep or not match:
            known = ", ".join(sorted(structures))
            raise InputError(f"--rx {item!r}: expected STRUCTURE=GY with a known structure ({known})",
                             code=ErrorCode.INVALID_VALUE)
        for k in match:
            structures[k] = replace(structures[k], role=Role.TARGET, prescription_gy=float(_floats(gy, "--rx")[0]))
    return case.replace(plan=plan, structures=structures)


def _progress_printer(enabled: bool, prefix: str = ""):
    if not enabled:
        return None

    def report(fraction: float, message: str) -> None:
        print(f"PROGRESS {100 * fraction:.0f} {prefix}{message}", flush=True)

    return report


def predict_one(in_path: Path, out_path: Path, args, progress=None) -> list[str]:
    """Predict one case and write it (dose, and dose_std when K > 1). Returns the warnings."""
    from ..io.atomic import check_writable
    from ..io.detect import read_case, write_dose
    from ..model.predict import predict_case

    check_writable(out_path, args.overwrite)  # before minutes of prediction, not after
    if getattr(args, "report", None):
        check_writable(args.report, args.overwrite)
    case = apply_overrides(read_case(in_path, data_root=args.data_root, series_uid=args.series,
                                     fractions=args.fractions), args)
    input_warnings = list(case.warnings)
    if case.ct_hu is None:
        if not args.allow_missing_ct:
            raise InputError("no CT series: a prediction needs the CT (pass --allow-missing-ct to predict on air "
                             "anyway)", path=in_path, code=ErrorCode.MISSING_FIELD)
        input_warnings.append(MISSING_CT_WARNING)
    model_log, printed = logging.getLogger(predict_case.__module__), _Printed()
    model_log.addFilter(printed)
    try:
        pred = predict_case(case, args.model, steps=args.steps, samples=args.samples, seed=args.seed,
                            device=args.device, normalize_d95=args.normalize_d95,
                            coverage_prior=not args.no_coverage_prior,
                            oar_prior=not args.no_oar_prior, progress=progress)
    finally:
        model_log.removeFilter(printed)
    if pred.dose_std_gy is not None and not getattr(args, "no_bands", False):  # issue 16: DVH bands
        from ..model.bands import add_bands, write_bands

        add_bands(case, pred, args.model, args.samples, seed=args.seed, coverage_prior=not args.no_coverage_prior)
        write_bands(out_path, pred.bands, overwrite=args.overwrite)
    warnings = list(dict.fromkeys([*input_warnings, *pred.warnings]))
    provenance = {**pred.provenance, "warnings": warnings}
    extra = {"dose_std": pred.dose_std_gy} if pred.dose_std_gy is not None else None
    if out_path.suffix.lower() == ".npz":
        write_dose(out_path, case, pred.dose_gy, extra=extra, provenance=provenance, overwrite=args.overwrite)
    else:
        write_dose(out_path, case, pred.dose_gy, provenance=provenance, overwrite=args.overwrite)
        if pred.dose_std_gy is not None:  # the uncertainty map beside it, never marked as a dose
            from ..io.nrrd import write_dose_std_nrrd

            write_dose_std_nrrd(out_path.with_name(out_path.name.split(".")[0] + "_std.nrrd"), pred.dose_std_gy,
                                case.grid, "dose standard deviation (Gy) over samples", overwrite=args.overwrite)
    if getattr(args, "report", None):
        write_case_report(args.report, case, pred, provenance, args.overwrite)
    return warnings


def write_case_report(path, case, pred, provenance: dict, overwrite: bool = False):
    """Write the HTML report of one prediction `pred` (model.predict's result) for `case` (with the command
    line's beams applied): the case's own dose, if any, is the reference (with gamma and, when sampled, the
    reference inside / outside the intervals); without one, a report of the prediction alone. Returns the
    Evaluation."""
    from ..metrics.evaluate import evaluate_case_full, evaluate_prediction
    from ..metrics.intervals import interval_check
    from ..metrics.report import write_report

    has_ref = case.dose_gy is not None
    ev = evaluate_case_full(pred.dose_gy, case) if has_ref else evaluate_prediction(pred.dose_gy, case)
    ev.bands = pred.bands
    ev.beams = case.plan.beams or None
    if pred.bands and has_ref:
        ev.metrics["intervals"] = interval_check(case, pred.bands)
    ev.metrics["warnings"] = list(dict.fromkeys([*ev.metrics["warnings"], *provenance.get("warnings", [])]))
    write_report(path, [(ev, case)], {k: v for k, v in provenance.items() if k != "warnings"}, overwrite=overwrite)
    return ev


def _output_suffix(args, in_path: Path) -> str:
    if args.format:
        return "." + args.format
    if in_path.is_file() and in_path.suffix.lower() == ".npz":
        return ".npz"
    from ..io.detect import _has_dicom

    return ".dcm" if in_path.is_dir() and _has_dicom(in_path) else ".nrrd"


def run(args) -> int:
    in_path, out_path = Path(args.input), Path(args.output)
    from ..io.detect import is_case_folder, iter_cases

    if not (in_path.is_dir() and not is_case_folder(in_path)):
        for w in predict_one(in_path, out_path, args, _progress_printer(args.progress_lines)):
            print(f"warning: {w}", file=sys.stderr)
        print(f"wrote {out_path}" + (f" and {args.report}" if args.report else "") + f"  ({NOT_FOR_CLINICAL_USE})")
        return 0
    if args.report:
        raise InputError("--report needs a single case (a folder of cases was given)", path=in_path,
                         code=ErrorCode.AMBIGUOUS_INPUT)
    cases = list(iter_cases(in_path))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cases = cases[rank::world]  # shard across torchrun ranks
    out_path.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    failed = 0
    bar = tqdm(cases, desc="predict", unit="case", disable=args.progress_lines)
    for i, (name, path) in enumerate(bar):
        target = out_path / f"{name}{_output_suffix(args, path)}"
        if target.exists() and not args.overwrite:
            bar.write(f"skip {name}: {target} exists")
            continue
        try:
            predict_one(path, target, args, _progress_printer(args.progress_lines, f"[{i + 1}/{len(cases)}] {name}: "))
        except ADDiffDoseError as exc:
            failed += 1
            bar.write(f"error {name}: {exc}")
    print(f"{len(cases) - failed} of {len(cases)} cases written to {out_path}  ({NOT_FOR_CLINICAL_USE})")
    return 1 if failed else 0
