"""Case CT -> a CT image series (one file per axial slice, int16 HU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...case import Case
from ...errors import ErrorCode, OutputError
from .orient import axial_reorientation
from .uids import CT_IMAGE, new_uid
from .writer_common import StudyContext, new_dataset, save

AIR_HU = -1000.0


def _ds_float(v: float) -> str:
    return f"{float(v):.10g}"[:16]


BODY_PARTS = (("head", "HEADNECK"), ("brain", "BRAIN"), ("prostate", "PROSTATE"), ("pelvis", "PELVIS"),
              ("abdomen", "ABDOMEN"), ("liver", "LIVER"), ("thorax", "CHEST"), ("chest", "CHEST"), ("lung", "CHEST"))


def _body_part(ds, site: str | None) -> None:
    """BodyPartExamined for unpaired sites (then Laterality stays absent); otherwise an empty Laterality,
    which dciodvfy accepts with a warning (absent Laterality without a body part is an error)."""
    low = (site or "").lower()
    for key, part in BODY_PARTS:
        if key in low:
            ds.BodyPartExamined = part
            return
    ds.Laterality = ""


def write_ct_series(folder: str | Path, case: Case, overwrite: bool = False, *, context: StudyContext | None = None,
                    prefix: str = "CT") -> list[Path]:
    """Write `case.ct_hu` (air where the case has no CT) as CT_0001.dcm ... in `folder`; returns the paths.

    Records the series and SOP instance UIDs in `context.refs['CT']` for the RTSTRUCT.
    """
    folder = Path(folder)
    ctx = context or StudyContext.from_case(case)
    ro = axial_reorientation(case.grid)
    grid = ro.grid
    hu = ro.apply(case.ct_hu) if case.ct_hu is not None else np.full(grid.shape, AIR_HU, np.float32)
    stored = np.clip(np.rint(hu), -32768, 32767).astype("<i2")
    row_dir, col_dir = grid.direction_ijk[:, 0], grid.direction_ijk[:, 1]
    series_uid = new_uid()
    desc = "ADDiffDose CT" + ("" if case.ct_hu is not None else " (no CT: air)")
    paths, sops = [], []
    for k in range(grid.shape[0]):
        ds = new_dataset(ctx, CT_IMAGE, "CT", series_uid, series_number=1, series_description=desc)
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.PatientPosition = case.patient_position
        _body_part(ds, case.plan.site)
        ds.InstanceNumber = k + 1
        ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
        ds.AcquisitionNumber = ""
        ds.KVP = ""
        ds.ImagePositionPatient = [_ds_float(v) for v in grid.index_to_lps((k, 0, 0))]
        ds.ImageOrientationPatient = [_ds_float(v) for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [_ds_float(grid.spacing_mm[1]), _ds_float(grid.spacing_mm[2])]
        ds.SliceThickness = _ds_float(grid.spacing_mm[0])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.ImageComments = "NOT FOR CLINICAL USE"
        ds.PixelData = stored[k].tobytes()
        path = folder / f"{prefix}_{k + 1:04d}.dcm"
        if path.exists() and not overwrite:
            raise OutputError("exists; pass --overwrite to replace it", path=path, code=ErrorCode.OUTPUT_EXISTS)
        paths.append(save(ds, path, overwrite))
        sops.append(ds.SOPInstanceUID)
    ctx.refs["CT"] = {"series_uid": series_uid, "sop_uids": sops, "grid": grid}
    return paths
