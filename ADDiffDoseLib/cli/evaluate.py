"""`addiffdose evaluate`: every metric of a predicted dose against a reference, for one case or two folders.

--pred: a case with dose, an RTDOSE file, a dose volume (NRRD/NIfTI, Gy; resampled onto the reference grid) or a
prediction npz (key `dose` on the reference grid); --ref: a case with dose. Or two folders whose entries are
matched by case name (file name without .npz/.nrrd/.nii.gz/.dcm). Prints a table; --json writes every metric
per case plus means; --report writes one self-contained HTML file.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from .. import NOT_FOR_CLINICAL_USE
from .dvh import add_end_cap_argument
from ..errors import ErrorCode, InputError
from ..geometry import resample_to_grid
from ..io.atomic import check_writable, write_text_atomic
from ..metrics.evaluate import HEADLINE_KEYS, evaluate_case_full, mean_metrics, to_jsonable
from ..metrics.loading import (is_prediction_file, prediction_beams, prediction_provenance, read_any_case,
                               read_dose_input, read_prediction_dose)

#: File endings of cases and doses matched by name in two folders (longest first).
CASE_SUFFIXES = (".nii.gz", ".npz", ".nrrd", ".nhdr", ".nii", ".dcm")


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="compare predicted and reference doses", description=__doc__)
    p.add_argument("--pred", required=True, help="prediction file or folder")
    p.add_argument("--ref", required=True, help="reference case file or folder")
    p.add_argument("--json", help="write all metrics as JSON")
    p.add_argument("--report", help="write a self-contained HTML report")
    p.add_argument("--constraints", help="constraint table (YAML/JSON); default: the built-in H&N table")
    p.add_argument("--no-gamma", action="store_true", help="skip the gamma pass rates (faster)")
    add_end_cap_argument(p)
    p.add_argument("--data-root", help="folder that pyRadPlan plan files' anatomy paths are relative to")
    p.add_argument("--fractions", type=int, default=None, help="number of fractions of a FRACTION RT Dose when no RT Plan gives it (overrides the plan's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def _pairs(pred: Path, ref: Path) -> list[tuple[str, Path, Path]]:
    """(case name, prediction, reference) triples: one pair of files, or two folders matched by name."""
    for p in (pred, ref):
        if not p.exists():
            raise InputError("no such file or folder", path=p, code=ErrorCode.FILE_NOT_FOUND)
    folders = pred.is_dir() and ref.is_dir() and not _is_case_folder(ref)
    if not folders:
        if pred.is_dir() and not _is_case_folder(pred):
            raise InputError("--pred is a folder but --ref a single case; give two files or two folders",
                             path=pred, code=ErrorCode.AMBIGUOUS_INPUT)
        return [(ref.stem, pred, ref)]
    refs = {_case_name(p): p for p in sorted(ref.iterdir()) if _case_name(p)}
    preds = {_case_name(p): p for p in sorted(pred.iterdir()) if _case_name(p)}
    names = [n for n in refs if n in preds]
    if not names:
        raise InputError("no prediction file matches a reference case by name", path=pred, code=ErrorCode.MISSING_FIELD)
    return [(n, preds[n], refs[n]) for n in names]


def _case_name(path: Path) -> str | None:
    """Case name of a folder entry (file name without its case/dose suffix), None for other files."""
    if path.is_dir():
        return path.name
    low = path.name.lower()
    if low.endswith(".seg.nrrd"):
        return None
    for suffix in CASE_SUFFIXES:
        if low.endswith(suffix) and len(low) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def _is_case_folder(folder: Path) -> bool:
    """A folder that is one case (DICOM, NRRD, OpenKBP CSV) rather than a folder of cases."""
    from ..io.detect import is_case_folder

    return folder.is_dir() and bool(is_case_folder(folder))


def _cell(v) -> str:
    return "       -" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:8.3f}"


def run(args) -> int:
    for out in (args.json, args.report):
        if out:
            check_writable(out, args.overwrite)  # fail before the slow part
    constraints = None
    if args.constraints:
        from ..metrics.constraints import load_constraints

        constraints = load_constraints(args.constraints)
    results, keep = {}, []
    print(f"{'case':<16}" + "".join(f"{k[:13]:>14}" for k in HEADLINE_KEYS))
    for name, pred_path, ref_path in _pairs(Path(args.pred), Path(args.ref)):
        ref_case = read_any_case(ref_path, data_root=args.data_root, fractions=args.fractions)
        pred_case = None
        if is_prediction_file(pred_path):
            pred = read_prediction_dose(pred_path, ref_case.grid)
        else:  # a case with dose, an RTDOSE or a dose volume, on any grid
            pred, pred_grid, pred_case = read_dose_input(pred_path, data_root=args.data_root, fractions=args.fractions)
            if not pred_grid.same_as(ref_case.grid):
                pred = resample_to_grid(pred, pred_grid, ref_case.grid, order=1)
        ev = evaluate_case_full(pred, ref_case, gamma=not args.no_gamma, constraints=constraints,
                                dvh_end_cap=args.end_cap)
        ev.metrics["provenance"] = prediction_provenance(pred_path, pred_case)
        ev.beams = prediction_beams(pred_path, pred_case)  # the report's beam table: the prediction's beams
        if pred_case is not None:
            ev.metrics["warnings"] += [f"prediction: {w}" for w in pred_case.warnings]
        for w in ev.metrics["warnings"]:
            print(f"warning: {name}: {w}", file=sys.stderr)
        from ..metrics.intervals import bands_file_for, interval_check, read_bands

        if bands_file_for(pred_path):  # issue 16: is each reference DVH metric inside the predicted interval?
            ev.bands = read_bands(bands_file_for(pred_path))
            ev.metrics["intervals"] = interval_check(ref_case, ev.bands)
        results[name] = ev.metrics
        if args.report:
            keep.append((ev, ref_case))
        print(f"{name[:16]:<16}" + "".join(f"{_cell(ev.metrics.get(k)):>14}" for k in HEADLINE_KEYS), flush=True)
    means = mean_metrics(list(results.values()))
    rows = [r for m in results.values() for r in m.get("intervals", {}).get("rows", [])]
    if rows:
        from ..metrics.intervals import band_coverage

        cov = band_coverage(rows)
        print("reference inside the 90 % interval: " + ", ".join(
            f"{f} {cov['band_coverage' + s]:.0%}" for f, s in (("all", ""), ("target", "_target"),
                                                                ("OAR mean", "_oar_mean"), ("OAR max", "_oar_max"))))
    if len(results) > 1:
        print(f"{'mean':<16}" + "".join(f"{_cell(means.get(k)):>14}" for k in HEADLINE_KEYS))
    print(NOT_FOR_CLINICAL_USE)
    if args.json:
        doc = {"note": NOT_FOR_CLINICAL_USE, "pred": str(args.pred), "ref": str(args.ref), "cases": results,
               "mean": means}
        write_text_atomic(args.json, json.dumps(to_jsonable(doc), indent=1, allow_nan=False), args.overwrite)
    if args.report:
        from ..metrics.report import write_report

        prov = {"prediction": str(args.pred), "reference": str(args.ref)}
        if len(results) == 1:
            prov.update(next(iter(results.values()))["provenance"])
        write_report(args.report, keep, prov, means if len(results) > 1 else None, overwrite=args.overwrite)
    return 0
