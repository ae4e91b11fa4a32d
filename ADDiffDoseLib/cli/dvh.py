"""`addiffdose dvh`: DVH table (and curves) of a dose over a set of structures.

DOSE may be a case with dose (OpenKBP / pyRadPlan / case npz, NRRD folder, RTDOSE) or a prediction npz (`dose`
only, on the structures' grid). STRUCTS (default: DOSE itself) is any case with structures (RTSTRUCT, seg.nrrd,
npz). When the grids differ, structures without a CT (a lone RTSTRUCT) are resampled onto the dose grid
(nearest), as planning systems do; otherwise the dose is resampled trilinearly onto the structure grid.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from .. import NOT_FOR_CLINICAL_USE
from ..errors import DoseError, ErrorCode
from ..geometry import resample_to_grid
from ..io.atomic import write_text_atomic
from ..metrics.dvh import case_dvhs, dvh_row
from ..metrics.evaluate import to_jsonable
from ..metrics.loading import is_prediction_file, read_any_case, read_prediction_dose

COLUMNS = ("structure", "role", "volume_cc", "mean_gy", "min_gy", "max_gy", "d0.1cc_gy", "d2pct_gy", "d50pct_gy",
           "d95pct_gy", "d98pct_gy")


def register(subparsers) -> None:
    p = subparsers.add_parser("dvh", help="DVH table of a dose over structures", description=__doc__)
    p.add_argument("--dose", required=True, help="dose file/folder (case with dose, RTDOSE, or prediction npz)")
    p.add_argument("--structures", help="structures file/folder (default: the dose input)")
    p.add_argument("--json", help="write rows and DVH curves as JSON")
    p.add_argument("--csv", help="write the rows as CSV")
    p.add_argument("--slicerrt", action="store_true", help="SlicerRT-compatible DVH (x2 oversampling, 0.2 Gy bins)")
    p.add_argument("--data-root", help="folder that pyRadPlan plan files' anatomy paths are relative to")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=run)


def _load(args):
    """(structure case, dose Gy, dose grid)."""
    if args.structures is None and is_prediction_file(args.dose):
        raise DoseError("a prediction file has no structures: pass --structures", path=args.dose,
                        code=ErrorCode.MISSING_FIELD)
    struct_case = read_any_case(args.structures or args.dose, data_root=args.data_root)
    if args.structures is None:
        dose_case = struct_case
    elif is_prediction_file(args.dose):
        return struct_case, read_prediction_dose(args.dose, struct_case.grid), struct_case.grid
    else:
        dose_case = read_any_case(args.dose, data_root=args.data_root)
    if dose_case.dose_gy is None:
        raise DoseError("input has no dose", path=args.dose, code=ErrorCode.MISSING_FIELD)
    if not dose_case.grid.same_as(struct_case.grid) and struct_case.ct_hu is None:
        moved = {k: s.__class__(s.name, resample_to_grid(s.mask, struct_case.grid, dose_case.grid, order=0), s.role,
                                s.prescription_gy, s.original_name, s.color_rgb)
                 for k, s in struct_case.structures.items()}
        struct_case = struct_case.replace(grid=dose_case.grid, structures=moved, ct_hu=None, dose_gy=None)
    return struct_case, dose_case.dose_gy, dose_case.grid


def _table(rows) -> str:
    lines = [" ".join(f"{c[:10]:>10}" if i else f"{c:<16}" for i, c in enumerate(COLUMNS))]
    for r in rows:
        cells = [f"{r['structure'][:16]:<16}", f"{r['role'][:10]:>10}"]
        cells += [f"{r[c]:>10.2f}" for c in COLUMNS[2:]]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def run(args) -> int:
    case, dose, dose_grid = _load(args)
    mode = "slicerrt" if args.slicerrt else "native"
    dvhs = case_dvhs(case, np.asarray(dose, np.float32), mode, dose_grid=dose_grid)
    rows = [dvh_row(d, case.structures[k].role.value, case.structures[k].prescription_gy) for k, d in dvhs.items()]
    print(_table(rows))
    print(NOT_FOR_CLINICAL_USE)
    if args.json:
        doc = {"note": NOT_FOR_CLINICAL_USE, "case": case.name, "mode": mode, "dose": str(args.dose),
               "structures_input": str(args.structures or args.dose),
               "rows": rows, "curves": {k: {"dose_gy": d.dose_bins_gy.tolist(), "volume_pct": d.volume_pct.tolist()}
                                        for k, d in dvhs.items()}}
        write_text_atomic(args.json, json.dumps(to_jsonable(doc), indent=1, allow_nan=False), args.overwrite)
    if args.csv:
        buf = io.StringIO()
        keys = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(args.csv, f"# {NOT_FOR_CLINICAL_USE}\n" + buf.getvalue(), args.overwrite)
    return 0
