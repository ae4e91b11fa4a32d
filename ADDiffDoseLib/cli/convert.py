"""`addiffdose convert INPUT OUTPUT_DIR --to dicom|nrrd|npz`: rewrite a case in another format.

dicom: OUTPUT_DIR/CT/*.dcm, RS.dcm, RP.dcm (beams known), RD.dcm (dose known).
nrrd:  OUTPUT_DIR/ct.nrrd, segmentation.seg.nrrd, dose.nrrd (dose known).
npz:   OUTPUT_DIR/<case name>.npz (ADDiffDose case npz).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from .. import NOT_FOR_CLINICAL_USE
from ..case import Case

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a case between DICOM-RT, NRRD and npz",
                              description="Convert a case (any readable input) to DICOM-RT, NRRD or npz. "
                                          + NOT_FOR_CLINICAL_USE)
    p.add_argument("input", type=Path, help="case file or folder (DICOM, OpenKBP, NRRD, npz, ...)")
    p.add_argument("output_dir", type=Path, help="folder to write into (created)")
    p.add_argument("--to", required=True, choices=("dicom", "nrrd", "npz"), help="output format")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--series", default=None, help="DICOM series instance UID when the input holds several")
    p.add_argument("--fractions", type=int, default=None, help="number of fractions of a FRACTION RT Dose when no RT Plan gives it (overrides the plan's)")
    p.set_defaults(func=run)


def convert_case(case: Case, output_dir: Path, to: str, overwrite: bool = False) -> list[Path]:
    """Write `case` into `output_dir` in format `to`; returns the files written."""
    if to == "dicom":
        from ..io.dicom import write_dicom_study

        written = write_dicom_study(output_dir, case, overwrite=overwrite)
        return [p for paths in written.values() for p in paths]
    if to == "nrrd":
        from ..io.nrrd import write_dose_nrrd, write_segmentation_nrrd, write_volume_nrrd

        out = []
        if case.ct_hu is not None:
            out.append(write_volume_nrrd(output_dir / "ct.nrrd", case.ct_hu, case.grid, overwrite))
        if case.structures:
            out.append(write_segmentation_nrrd(output_dir / "segmentation.seg.nrrd", case, overwrite))
        if case.dose_gy is not None:
            out.append(write_dose_nrrd(output_dir / "dose.nrrd", case.dose_gy, case.grid, None, overwrite))
        return out
    from ..io.case_npz import write_case_npz

    stem = re.sub(r"[^\w.-]", "_", case.name) or "case"
    return [write_case_npz(output_dir / f"{stem}.npz", case, overwrite)]


def run(args: argparse.Namespace) -> int:
    from ..io.detect import read_case

    case = read_case(args.input, series_uid=args.series, fractions=args.fractions)
    for w in case.warnings:
        print(f"warning: {w}", file=sys.stderr)
    written = convert_case(case, args.output_dir, args.to, args.overwrite)
    print(f"wrote {len(written)} file(s) to {args.output_dir} ({NOT_FOR_CLINICAL_USE})")
    return 0
