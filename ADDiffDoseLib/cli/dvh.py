"""`addiffdose dvh`: DVH table (and curves) of a dose over a set of structures.

DOSE may be a case with dose (OpenKBP / pyRadPlan / case npz, NRRD or DICOM folder, RTDOSE file), a dose volume
(NRRD/NIfTI, Gy) or a prediction npz (`dose` only, on the structures' grid). STRUCTS (default: DOSE itself) is any
case with structures (RTSTRUCT file or DICOM folder, seg.nrrd, npz). A lone RTSTRUCT file is rasterized on the
dose grid and other structures without a CT (seg.nrrd) are resampled onto it (nearest), as planning systems do;
structures with a CT keep their grid and the dose is resampled trilinearly onto it.

Conventions (README, DICOM-RT): voxel-centre inclusion; --end-cap full (default) counts the first and last
contoured slice of each structure as full slabs, --end-cap half as half slabs; max_gy is the point maximum and
d0.03cc_gy the volume-based maximum. Rows, JSON and CSV record the mode and end cap.
"""

from __future__ import annotations

import csv
import io
import json
import sys

import numpy as np

from .. import NOT_FOR_CLINICAL_USE
from ..case import implausible_dose
from ..errors import DoseError, ErrorCode, InputError
from ..geometry import resample_to_grid, voxels_inside
from ..io.atomic import write_text_atomic
from ..metrics.dvh import case_dvhs, dvh_warnings, structure_row
from ..metrics.end_caps import END_CAPS
from ..metrics.evaluate import to_jsonable
from ..metrics.loading import (is_prediction_file, read_any_case, read_dose_input, read_prediction_dose,
                               read_structures_for_dose)

COLUMNS = ("structure", "normalized_name", "role", "volume_cc", "mean_gy", "min_gy", "max_gy", "d0.03cc_gy",
           "d0.1cc_gy", "d2pct_gy", "d50pct_gy", "d95pct_gy", "d98pct_gy")


def register(subparsers) -> None:
    p = subparsers.add_parser("dvh", help="DVH table of a dose over structures", description=__doc__)
    p.add_argument("--dose", required=True, help="dose file/folder (case with dose, RTDOSE, or prediction npz)")
    p.add_argument("--structures", help="structures file/folder (default: the dose input)")
    p.add_argument("--json", help="write rows and DVH curves as JSON")
    p.add_argument("--csv", help="write the rows as CSV")
    p.add_argument("--slicerrt", action="store_true", help="SlicerRT-compatible DVH (x2 oversampling, 0.2 Gy bins)")
    add_end_cap_argument(p)
    p.add_argument("--data-root", help="folder that pyRadPlan plan files' anatomy paths are relative to")
    p.add_argument("--fractions", type=int, default=None, help="number of fractions of a FRACTION RT Dose when no RT Plan gives it (overrides the plan's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def add_end_cap_argument(p) -> None:
    p.add_argument("--end-cap", choices=END_CAPS, default="full",
                   help="first and last contoured slice of each structure: full slabs (default) or half slabs")


def _load(args):
    """(structure case, dose Gy, dose grid, warnings of the inputs)."""
    struct_case, dose, dose_grid, dose_case = _load_inputs(args)
    found = [*(dose_case.warnings if dose_case is not None else ()), *struct_case.warnings]
    if not any(w.startswith("implausible dose") for w in found):  # e.g. a dose volume read without its case
        w = implausible_dose(float(np.max(dose)), struct_case.max_prescription_gy)
        found += [w] if w else []
    return struct_case, dose, dose_grid, list(dict.fromkeys(found))


def _load_inputs(args):
    if is_prediction_file(args.dose):
        if args.structures is None:
            raise DoseError("a prediction file has no structures: pass --structures", path=args.dose,
                            code=ErrorCode.MISSING_FIELD)
        struct_case = read_any_case(args.structures, data_root=args.data_root, fractions=args.fractions)
        return struct_case, read_prediction_dose(args.dose, struct_case.grid), struct_case.grid, None
    dose, dose_grid, dose_case = read_dose_input(args.dose, data_root=args.data_root, fractions=args.fractions)
    if args.structures is None:
        if dose_case is None:
            raise InputError("a dose volume has no structures: pass --structures", path=args.dose,
                             code=ErrorCode.MISSING_FIELD)
        return dose_case, dose, dose_grid, None
    struct_case = read_structures_for_dose(args.structures, dose_grid, dose_case, data_root=args.data_root,
                                           fractions=args.fractions)
    if not dose_grid.same_as(struct_case.grid) and struct_case.ct_hu is None:
        clipped = []
        for s in struct_case.structures.values():
            total, inside = int(s.mask.sum()), voxels_inside(s.mask, struct_case.grid, dose_grid)
            if inside < total:
                vcc = struct_case.grid.voxel_volume_cc
                clipped.append(f"structure {s.original_name!r} lies partly outside the dose grid: "
                               f"{inside * vcc:.1f} of {total * vcc:.1f} cc inside")
        moved = {k: s.__class__(s.name, resample_to_grid(s.mask, struct_case.grid, dose_grid, order=0), s.role,
                                s.prescription_gy, s.original_name, s.color_rgb)
                 for k, s in struct_case.structures.items()}
        struct_case = struct_case.replace(grid=dose_grid, structures=moved, ct_hu=None, dose_gy=None,
                                          warnings=(*struct_case.warnings, *clipped))
    return struct_case, dose, dose_grid, dose_case


def _table(rows) -> str:
    head = ["structure (as read)", "normalized"]
    lines = [f"{head[0]:<20} {head[1]:<16} " + " ".join(f"{c[:10]:>10}" for c in COLUMNS[2:])]
    for r in rows:
        cells = [f"{r['structure'][:20]:<20}", f"{r['normalized_name'][:16]:<16}", f"{r['role'][:10]:>10}"]
        cells += [f"{r[c]:>10.2f}" for c in COLUMNS[3:]]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def run(args) -> int:
    case, dose, dose_grid, warnings = _load(args)
    mode = "slicerrt" if args.slicerrt else "native"
    dvhs = case_dvhs(case, np.asarray(dose, np.float32), mode, dose_grid=dose_grid, end_cap=args.end_cap)
    rows = [structure_row(d, case.structures[k]) for k, d in dvhs.items()]
    warnings = list(dict.fromkeys([*warnings, *dvh_warnings(dvhs, case)]))
    print(_table(rows))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(NOT_FOR_CLINICAL_USE)
    if args.json:
        doc = {"note": NOT_FOR_CLINICAL_USE, "case": case.name, "mode": mode, "end_cap": args.end_cap,
               "dose": str(args.dose),
               "structures_input": str(args.structures or args.dose), "warnings": warnings,
               "rows": rows, "curves": {k: {"structure": case.structures[k].original_name, "dose_gy": d.dose_bins_gy.tolist(),
                                            "volume_pct": d.volume_pct.tolist()}
                                        for k, d in dvhs.items()}}
        write_text_atomic(args.json, json.dumps(to_jsonable(doc), indent=1, allow_nan=False), args.overwrite)
    if args.csv:
        buf = io.StringIO()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        head = "".join(f"# warning: {w}\n" for w in warnings)
        write_text_atomic(args.csv, f"# {NOT_FOR_CLINICAL_USE}\n{head}" + buf.getvalue(), args.overwrite)
    return 0
