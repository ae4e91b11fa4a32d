"""A whole study: CT series + RT Structure Set + RT Plan + RT Dose sharing study and frame UIDs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...case import Case
from .writer_common import StudyContext
from .ct_writer import write_ct_series
from .rtdose_writer import write_rtdose
from .rtplan_writer import write_rtplan
from .rtstruct_writer import write_rtstruct


def write_dicom_study(folder: str | Path, case: Case, dose_gy: np.ndarray | None = None, *, provenance: dict | None = None,
                      overwrite: bool = False, bits: int = 16, write_plan: bool = True) -> dict[str, list[Path]]:
    """Write CT/ (one file per slice), RS.dcm, RP.dcm (when beams are known) and RD.dcm (dose_gy or case.dose_gy).

    Returns {'CT': [...], 'RTSTRUCT': [...], 'RTPLAN': [...], 'RTDOSE': [...]}.
    """
    folder = Path(folder)
    ctx = StudyContext.from_case(case)
    out: dict[str, list[Path]] = {"CT": write_ct_series(folder / "CT", case, overwrite, context=ctx)}
    out["RTSTRUCT"] = [write_rtstruct(folder / "RS.dcm", case, overwrite, context=ctx)] if case.structures else []
    out["RTPLAN"] = []
    if write_plan and case.plan.beams:
        out["RTPLAN"] = [write_rtplan(folder / "RP.dcm", case, overwrite, context=ctx, provenance=provenance)]
    dose = dose_gy if dose_gy is not None else case.dose_gy
    out["RTDOSE"] = []
    if dose is not None:
        if not out["RTPLAN"]:
            ctx.refs.pop("RTPLAN", None)
        out["RTDOSE"] = [write_rtdose(folder / "RD.dcm", case, dose, provenance, overwrite, bits, context=ctx)]
    return out
