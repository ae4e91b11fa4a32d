"""`addiffdose inspect INPUT`: what a reader makes of an input (grid, structures, beams, dose, warnings).

Never fails for a missing target, prescription or beam list: those are warnings. A folder holding
several cases is listed one line per case.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .. import NOT_FOR_CLINICAL_USE
from ..case import Case
from ..errors import ADDiffDoseError
from ..io.detect import is_case_folder, iter_cases, read_case
from ..names import load_name_mapping


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="show what a case file or folder contains",
                              description="Show grid, structures, beams, dose and warnings of an input. "
                                          + NOT_FOR_CLINICAL_USE)
    p.add_argument("input", type=Path, help="case file or folder (OpenKBP, pyRadPlan, GDP-HMM, NRRD, DICOM, npz)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder that pyRadPlan plans' 'source' paths are relative to")
    p.add_argument("--series", default=None, help="DICOM series instance UID when a folder holds several")
    p.add_argument("--mapping", type=Path, default=None, help="JSON/YAML structure name mapping file")
    p.add_argument("--fractions", type=int, default=None, help="number of fractions of a FRACTION RT Dose when no RT Plan gives it (overrides the plan's)")
    p.set_defaults(func=run)


def case_summary(case: Case) -> dict:
    """JSON-ready description of a case (what inspect prints)."""
    g = case.grid
    structures = [{"name": k, "original_name": s.original_name, "role": s.role.value,
                   "prescription_gy": s.prescription_gy, "volume_cc": round(s.volume_cc(g), 2)}
                  for k, s in case.structures.items()]
    beams = [{"gantry_deg": round(b.gantry_deg, 2), "couch_deg": round(b.couch_deg, 2),
              "collimator_deg": round(b.collimator_deg, 2), "energy_mv": b.energy_mv, "technique": b.technique,
              "arc_points": len(b.arc_gantry_deg) if b.arc_gantry_deg else None} for b in case.plan.beams]
    iso, iso_from = None, None
    if case.plan.isocenter_lps is not None:
        iso, iso_from = list(case.plan.isocenter_lps), "plan"
    elif case.targets:
        iso, iso_from = case.isocenter_lps().tolist(), "targets' centre of mass"
    dose = None
    if case.dose_gy is not None:
        body = case.body_mask
        dose = {"max_gy": round(float(case.dose_gy.max()), 3),
                "mean_in_body_gy": round(float(case.dose_gy[body].mean()), 3) if body is not None and body.any()
                else None}
    return {
        "name": case.name,
        "format": case.metadata.get("format"),
        "notice": NOT_FOR_CLINICAL_USE,
        "grid": {"shape": list(g.shape), "spacing_mm": [round(v, 4) for v in g.spacing_mm.tolist()],
                 "origin_lps_mm": [round(v, 3) for v in g.origin_lps.tolist()],
                 "direction": np.round(g.direction, 6).tolist()},
        "patient_position": case.patient_position,
        "ct": case.ct_hu is not None,
        "plan": {"source": case.plan.source, "site": case.plan.site, "fractions": case.plan.fractions,
                 "technique": case.plan.technique, "isocenter_lps_mm": [round(v, 2) for v in iso] if iso else None,
                 "isocenter_from": iso_from, "beams": beams},
        "structures": structures,
        "dose": dose,
        "warnings": case.problems(),
    }


def _fmt(value, spec: str = "g", empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def format_summary(s: dict) -> str:
    g, plan = s["grid"], s["plan"]
    lines = [NOT_FOR_CLINICAL_USE, f"case: {s['name']} ({s['format']})",
             "grid: {} voxels, spacing {} mm, patient position {}".format(
                 " x ".join(map(str, g["shape"])), " x ".join(f"{v:.3f}" for v in g["spacing_mm"]),
                 s["patient_position"]),
             f"origin (LPS mm): {g['origin_lps_mm']}",
             f"CT: {'yes' if s['ct'] else 'no'}",
             f"plan: source {plan['source']}, site {plan['site']}, fractions {_fmt(plan['fractions'])}, "
             f"{len(plan['beams'])} beam(s) {plan['technique'] or ''}".rstrip()]
    if plan["isocenter_lps_mm"]:
        lines.append(f"isocenter (LPS mm): {plan['isocenter_lps_mm']} (from {plan['isocenter_from']})")
    else:
        lines.append("isocenter: unknown")
    if plan["beams"]:
        lines.append("beams:")
        lines.append(f"  {'#':>3} {'gantry':>8} {'couch':>7} {'coll':>7} {'MV':>5}  technique")
        for i, b in enumerate(plan["beams"], 1):
            arc = f" (arc, {b['arc_points']} angles)" if b["arc_points"] else ""
            lines.append(f"  {i:>3} {b['gantry_deg']:>8.1f} {b['couch_deg']:>7.1f} {b['collimator_deg']:>7.1f} "
                         f"{b['energy_mv']:>5g}  {b['technique']}{arc}")
    lines.append("structures:")
    width = max([len(x["name"]) for x in s["structures"]] + [4])
    owidth = max([len(str(x["original_name"])) for x in s["structures"]] + [8])
    lines.append(f"  {'name':<{width}}  {'original':<{owidth}}  {'role':<8} {'Rx (Gy)':>8} {'volume (cc)':>12}")
    for x in s["structures"]:
        lines.append(f"  {x['name']:<{width}}  {str(x['original_name']):<{owidth}}  {x['role']:<8} "
                     f"{_fmt(x['prescription_gy']):>8} {x['volume_cc']:>12.1f}")
    if s["dose"]:
        mean = s["dose"]["mean_in_body_gy"]
        lines.append(f"dose: max {s['dose']['max_gy']:.2f} Gy" + (f", mean in body {mean:.2f} Gy" if mean else ""))
    else:
        lines.append("dose: none")
    if s["warnings"]:
        lines.append("warnings:")
        lines += [f"  - {w}" for w in s["warnings"]]
    return "\n".join(lines)


def _list_folder(args, mapping) -> int:
    """One line per case of a folder of cases; errors are reported per case."""
    rows, failed = [], 0
    for name, path in iter_cases(args.input):
        try:
            c = read_case(path, data_root=args.data_root, series_uid=args.series, mapping=mapping,
                          fractions=args.fractions)
            rows.append({"name": name, "path": str(path), "format": c.metadata.get("format"),
                         "shape": list(c.grid.shape), "structures": len(c.structures), "beams": len(c.plan.beams),
                         "dose_max_gy": round(float(c.dose_gy.max()), 2) if c.dose_gy is not None else None,
                         "warnings": len(c.problems())})
        except ADDiffDoseError as exc:
            failed += 1
            rows.append({"name": name, "path": str(path), "error": str(exc)})
    if args.json:
        print(json.dumps({"folder": str(args.input), "notice": NOT_FOR_CLINICAL_USE, "cases": rows}, indent=1))
    else:
        print(NOT_FOR_CLINICAL_USE)
        print(f"{len(rows)} case(s) in {args.input}")
        for r in rows:
            if "error" in r:
                print(f"  {r['name']}: error {r['error']}")
            else:
                print(f"  {r['name']}: {r['format']}, {'x'.join(map(str, r['shape']))}, {r['structures']} structures, "
                      f"{r['beams']} beams, dose max {_fmt(r['dose_max_gy'])} Gy, {r['warnings']} warning(s)")
    return 2 if failed else 0


def run(args: argparse.Namespace) -> int:
    mapping = load_name_mapping(args.mapping) if args.mapping else None
    if args.input.is_dir() and not is_case_folder(args.input):
        return _list_folder(args, mapping)
    case = read_case(args.input, data_root=args.data_root, series_uid=args.series, mapping=mapping,
                     fractions=args.fractions)
    summary = case_summary(case)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0
