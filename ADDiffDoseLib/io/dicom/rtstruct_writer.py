"""Case structures -> an RT Structure Set with contours traced along the voxel boundaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from skimage.measure import find_contours

from ...case import Case, Role
from ...geometry import Grid
from .orient import axial_reorientation
from .uids import CT_IMAGE, RT_STRUCT, new_uid
from .writer_common import StudyContext, new_dataset, save

DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
DEFAULT_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 128, 0)]


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """Remove vertices lying on the straight line through their neighbours (closed polygon)."""
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    d1, d2 = points - before, after - points
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    keep = (np.abs(cross) > 1e-9) | (np.einsum("ij,ij->i", d1, d2) <= 0)
    return points[keep]


def trace_slice(mask2d: np.ndarray) -> list[np.ndarray]:
    """(rows, cols) bool -> closed outlines along the pixel edges, (n, 2) fractional (row, col) each.

    The mask is upsampled 2x so the 0.5 iso-line runs on the pixel edges; holes come out as separate
    outlines (the reader XORs them)."""
    up = np.pad(np.repeat(np.repeat(mask2d, 2, 0), 2, 1).astype(np.float32), 1)
    out = []
    for c in find_contours(up, 0.5):
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        c = _drop_collinear(c)
        if len(c) >= 3:
            out.append((c - 1.5) / 2.0)  # upsampled padded index u -> original index (u - 1 - 0.5) / 2
    return out


CONTOUR_DATA = Tag(0x3006, 0x0050)


def _raw_ds(values: np.ndarray) -> RawDataElement:
    """ContourData as an already-encoded DS element (pydicom's per-value DS objects are slow)."""
    text = "\\".join(f"{v:.3f}" for v in values).encode("ascii")
    if len(text) % 2:
        text += b" "
    return RawDataElement(CONTOUR_DATA, "DS", len(text), text, 0, False, True)


def interpreted_type(name: str, role: Role) -> str:
    if role == Role.EXTERNAL:
        return "EXTERNAL"
    if role == Role.TARGET:
        prefix = name[:3].upper()
        return prefix if prefix in ("PTV", "CTV", "GTV") else "PTV"
    return "ORGAN" if role == Role.OAR else "CONTROL"


def _contours(mask: np.ndarray, grid: Grid, sops: list[str] | None) -> list[Dataset]:
    items = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for ji in trace_slice(mask[k]):
            idx = np.column_stack([np.full(len(ji), float(k)), ji])
            lps = grid.index_to_lps(idx)
            c = Dataset()
            if sops:
                img = Dataset()
                img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = CT_IMAGE, sops[k]
                c.ContourImageSequence = [img]
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(lps)
            c[CONTOUR_DATA] = _raw_ds(lps.ravel())
            items.append(c)
    return items


def write_rtstruct(path: str | Path, case: Case, overwrite: bool = False, *, context: StudyContext | None = None) -> Path:
    """Write every structure of `case` as an RT Structure Set at `path`.

    References the CT series written with the same `context` (write_ct_series first); otherwise the
    contour-image references are left out.
    """
    ctx = context or StudyContext.from_case(case)
    ro = axial_reorientation(case.grid)
    ct = ctx.refs.get("CT")
    sops = ct["sop_uids"] if ct and ct["grid"].same_as(ro.grid) else None
    ds = new_dataset(ctx, RT_STRUCT, "RTSTRUCT", new_uid(), series_number=2,
                     series_description="ADDiffDose structures NOT FOR CLINICAL USE")
    ds.StructureSetLabel = "ADDiffDose"[:16]
    ds.StructureSetName = case.name[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.InstanceNumber = 1
    frame = Dataset()
    frame.FrameOfReferenceUID = ctx.frame_of_reference_uid
    if sops:
        series = Dataset()
        series.SeriesInstanceUID = ct["series_uid"]
        series.ContourImageSequence = []
        for uid in sops:
            img = Dataset()
            img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = CT_IMAGE, uid
            series.ContourImageSequence.append(img)
        study = Dataset()
        study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = DETACHED_STUDY_MANAGEMENT, ctx.study_uid
        study.RTReferencedSeriesSequence = [series]
        frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    names = case.names_as_read(64)
    for number, (key, s) in enumerate(case.structures.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, ctx.frame_of_reference_uid
        roi.ROIName, roi.ROIGenerationAlgorithm = names[key], "AUTOMATIC"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        color = s.color_rgb and tuple(int(round(255 * c)) for c in s.color_rgb)
        rc.ROIDisplayColor = list(color or DEFAULT_COLORS[(number - 1) % len(DEFAULT_COLORS)])
        contours = _contours(ro.apply(s.mask), ro.grid, sops)
        if contours:
            rc.ContourSequence = contours
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = number, number
        obs.RTROIInterpretedType, obs.ROIInterpreter = interpreted_type(key, s.role), ""
        ds.RTROIObservationsSequence.append(obs)
    ctx.refs["RTSTRUCT"] = {"sop_uid": ds.SOPInstanceUID}
    return save(ds, path, overwrite)
