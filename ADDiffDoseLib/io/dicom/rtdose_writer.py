"""A dose volume -> RT Dose (Gy, 16-bit unsigned + DoseGridScaling by default)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ...case import Case
from ...errors import DoseError, ErrorCode
from .orient import axial_reorientation
from .uids import RT_DOSE, RT_PLAN, new_uid
from .writer_common import StudyContext, new_dataset, provenance_text, save, short_description
from .rtplan_writer import write_rtplan


def _f(v: float) -> str:
    return f"{float(v):.10g}"[:16]


def build_rtdose(case: Case, dose_gy: np.ndarray, ctx: StudyContext, plan_uid: str | None, provenance: dict | None,
                 bits: int = 16):
    """The RT Dose dataset for `dose_gy` ((n0, n1, n2) Gy on case.grid)."""
    if bits not in (16, 32):
        raise DoseError(f"bits must be 16 or 32, got {bits}", code=ErrorCode.INVALID_VALUE)
    case.grid.check_array(dose_gy, "dose")
    dose = np.asarray(dose_gy, dtype=np.float64)
    if not np.all(np.isfinite(dose)):
        raise DoseError("dose contains NaN or infinite values", code=ErrorCode.INVALID_VALUE)
    if dose.min(initial=0) < -1e-3:
        raise DoseError(f"dose is negative (min {dose.min():.3f} Gy)", code=ErrorCode.NEGATIVE_DOSE)
    ro = axial_reorientation(case.grid)
    grid, dose = ro.grid, np.maximum(ro.apply(dose), 0)
    top = (1 << bits) - 1
    scaling = float(dose.max()) / top if dose.max() > 0 else 1e-6
    stored = np.clip(np.rint(dose / scaling), 0, top).astype("<u2" if bits == 16 else "<u4")
    ds = new_dataset(ctx, RT_DOSE, "RTDOSE", new_uid(), series_number=4,
                     series_description=short_description(provenance, "ADDiffDose dose"))
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ImageComments = provenance_text(provenance)[:10240]
    ds.ImagePositionPatient = [_f(v) for v in grid.origin_lps]
    ds.ImageOrientationPatient = [_f(v) for v in np.concatenate([grid.direction_ijk[:, 0], grid.direction_ijk[:, 1]])]
    ds.PixelSpacing = [_f(grid.spacing_mm[1]), _f(grid.spacing_mm[2])]
    ds.SliceThickness = _f(grid.spacing_mm[0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames = grid.shape[0]
    ds.FrameIncrementPointer = 0x3004000C
    ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.DoseUnits, ds.DoseType = "GY", "PHYSICAL"
    ds.DoseComment = "NOT FOR CLINICAL USE"
    ds.GridFrameOffsetVector = [_f(k * grid.spacing_mm[0]) for k in range(grid.shape[0])]
    ds.DoseGridScaling = f"{scaling:.8e}"
    if plan_uid:
        ds.DoseSummationType = "PLAN"
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = RT_PLAN, plan_uid
        ds.ReferencedRTPlanSequence = [ref]
    else:
        ds.DoseSummationType = "PLAN"
    ds.PixelData = stored.tobytes()
    return ds


def write_rtdose(path: str | Path, case: Case, dose_gy: np.ndarray, provenance: dict | None = None,
                 overwrite: bool = False, bits: int = 16, *, context: StudyContext | None = None) -> Path:
    """Write `dose_gy` ((n0, n1, n2) total Gy on case.grid) as an RT Dose at `path`.

    The RT Plan it references is the case's own (case.metadata RTPLANSOPInstanceUID), one written with the
    same `context`, or else a minimal RT Plan written beside it as `<stem>_rtplan.dcm`.
    Provenance (model name, SHA-256, seed, steps, beams ...) goes into ImageComments; SeriesDescription
    names the model and says NOT FOR CLINICAL USE.
    """
    path = Path(path)
    ctx = context or StudyContext.from_case(case)
    plan_uid = (ctx.refs.get("RTPLAN") or {}).get("sop_uid") or (case.metadata or {}).get("RTPLANSOPInstanceUID")
    if not plan_uid:
        write_rtplan(path.with_name(f"{path.stem}_rtplan.dcm"), case, overwrite, context=ctx, provenance=provenance)
        plan_uid = ctx.refs["RTPLAN"]["sop_uid"]
    ds = build_rtdose(case, dose_gy, ctx, plan_uid, provenance, bits)
    return save(ds, path, overwrite)
