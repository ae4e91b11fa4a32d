"""RT Structure Set -> structures on a grid."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ...case import Role, Structure
from ...errors import ErrorCode, GeometryError, InputError
from ...geometry import Grid
from ...names import is_derived_structure
from .rasterize import rasterize_contours

TARGET_TYPES = ("PTV", "CTV", "GTV")  # outermost first
OAR_TYPES = ("ORGAN", "AVOIDANCE", "OAR")
EXTERNAL_ALIASES = ("body", "external", "skin", "outline", "patient", "body_outline")


@dataclass
class RoiData:
    number: int
    name: str
    interpreted_type: str
    color: tuple[float, float, float] | None
    contours_lps: list[np.ndarray]


def _names(original: list[str]) -> tuple[list, list[str]]:
    """Normalized NameInfo-like (name, role, prescription_gy) per ROI name, and naming warnings."""
    try:
        from ...names import assign_names
    except ImportError:  # names.py absent: keep names raw
        return [None] * len(original), []
    return assign_names(original)


def _contour_data(item: pydicom.Dataset, roi: str, path: Path) -> np.ndarray:
    """ContourData as floats; parses the raw bytes directly (pydicom's DS conversion is slow)."""
    elem = item.get_item("ContourData")
    try:
        if isinstance(elem.value, bytes):
            text = elem.value.replace(b"\\", b" ").decode("ascii")
            arr = np.array(text.split(), dtype=np.float64)
        else:
            values = item.ContourData
            values = values if hasattr(values, "__iter__") and not isinstance(values, str) else [values]
            arr = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise InputError(f"ROI {roi!r}: ContourData is not numeric", path=path) from None
    return arr


def parse_rois(ds: pydicom.Dataset, frame_of_reference_uid: str | None, path: Path) -> list[RoiData]:
    """ROIs of a structure set with their contours in LPS mm; checks frames of reference."""
    if "StructureSetROISequence" not in ds:
        raise InputError("RT Structure Set lacks StructureSetROISequence", path=path, code=ErrorCode.MISSING_FIELD)
    types = {int(o.get("ReferencedROINumber", -1)): str(o.get("RTROIInterpretedType", "") or "").upper()
             for o in ds.get("RTROIObservationsSequence", [])}
    contours: dict[int, tuple] = {}
    for item in ds.get("ROIContourSequence", []):
        color = item.get("ROIDisplayColor")
        contours[int(item.get("ReferencedROINumber", -1))] = (item.get("ContourSequence"), color)
    rois = []
    for roi in ds.StructureSetROISequence:
        number = int(roi.get("ROINumber", -1))
        name = str(roi.get("ROIName", "") or f"ROI {number}").strip()
        roi_for = str(roi.get("ReferencedFrameOfReferenceUID", "") or "")
        seq, color = contours.get(number, (None, None))
        if seq and frame_of_reference_uid and roi_for and roi_for != frame_of_reference_uid:
            raise GeometryError(f"ROI {name!r} is contoured in frame of reference {roi_for}, the image in "
                                f"{frame_of_reference_uid}", path=path, code=ErrorCode.FRAME_OF_REFERENCE)
        pts = []
        for c in seq or []:
            if "ContourData" not in c:
                continue
            arr = _contour_data(c, name, path)
            if arr.size < 3 or arr.size % 3 or not np.all(np.isfinite(arr)):
                raise InputError(f"ROI {name!r}: ContourData must hold x,y,z triplets", path=path)
            pts.append(arr.reshape(-1, 3))
        try:
            rgb = tuple(float(v) / 255.0 for v in color) if color is not None and len(color) == 3 else None
        except (TypeError, ValueError):
            rgb = None
        rois.append(RoiData(number, name, types.get(number, ""), rgb, pts))
    return rois


def role_of(name: str, interpreted_type: str, name_role: Role | None = None) -> Role:
    """RTROIInterpretedType EXTERNAL/PTV/CTV/GTV/ORGAN decides; otherwise the name (body aliases -> EXTERNAL,
    PTV.../CTV.../GTV... -> TARGET, known organs -> OAR, helpers -> OTHER)."""
    t = interpreted_type.upper()
    low = name.lower().replace(" ", "_")
    if t == "EXTERNAL":
        return Role.EXTERNAL
    if is_derived_structure(name):  # SBRT rings 'D2CM ...' typed PTV, 'Cord_PRV5' typed ORGAN: never targets/organs
        return Role.OTHER
    if t in TARGET_TYPES:
        return Role.TARGET
    if t == "ORGAN":
        return Role.OAR
    if name_role is not None:
        return Role(name_role)
    if low in EXTERNAL_ALIASES:
        return Role.EXTERNAL
    if low[:3] in ("ptv", "ctv", "gtv", "itv"):
        return Role.TARGET
    return Role.OAR if t in OAR_TYPES or not t else Role.OTHER


def dose_in_name_gy(name: str) -> float | None:
    """'PTV70' -> 70, 'CTV_54.25' -> 54.25, 'CTV 7000' -> 70 (cGy when >= 200); None when no dose-like number."""
    m = re.search(r"(\d+(?:[.,]\d+)?)", name)
    if not m:
        return None
    v = float(m.group(1).replace(",", "."))
    if v >= 200:
        v /= 100.0
    return v if 10 <= v < 200 else None


def target_rank(name: str, interpreted_type: str) -> int:
    """0 for PTV, 1 CTV, 2 GTV/other targets (lower = outermost)."""
    t = interpreted_type.upper() if interpreted_type.upper() in TARGET_TYPES else name[:3].upper()
    return TARGET_TYPES.index(t) if t in TARGET_TYPES else len(TARGET_TYPES)


def structures_from_rois(rois: list[RoiData], grid: Grid, plan_rx_gy: float | None) -> tuple[dict[str, Structure], list[str]]:
    """Rasterize ROIs on `grid`; assign prescriptions (names, else plan prescription to the outermost targets)."""
    warnings: list[str] = []
    built = []
    rois = [r for r in rois if r.contours_lps or warnings.append(f"ROI {r.name!r} has no contours; skipped")]
    infos, name_warnings = _names([r.name for r in rois])
    warnings += name_warnings
    for roi, info in zip(rois, infos):
        mask, off = rasterize_contours(roi.contours_lps, grid)
        if off:
            warnings.append(f"ROI {roi.name!r}: {off} contour(s) not on an image plane (nearest plane used or dropped)")
        if not mask.any():
            warnings.append(f"ROI {roi.name!r} covers no voxel of the grid")
        role = role_of(roi.name, roi.interpreted_type, info.role if info else None)
        built.append((roi, mask, role, info.name if info else roi.name))
    named_rx = {roi.number: (info.prescription_gy if info and info.prescription_gy else dose_in_name_gy(roi.name))
                for roi, info in zip(rois, infos)}
    unnamed = [(roi, target_rank(roi.name, roi.interpreted_type)) for roi, _, role, _ in built
               if role == Role.TARGET and named_rx[roi.number] is None]
    if plan_rx_gy and unnamed:
        best = min(rank for _, rank in unnamed)
        for roi, rank in unnamed:
            if rank == best:
                named_rx[roi.number] = plan_rx_gy
    out: dict[str, Structure] = {}
    for roi, mask, role, key in built:
        if role == Role.EXTERNAL and "External" not in out and not any(b[3] == "External" for b in built):
            key = "External"  # typed EXTERNAL under any name ('Outer Contour', 'possible_dose_mask')
        if key in out:
            key = f"{key}_{roi.number}"
        out[key] = Structure(key, mask, role, named_rx.get(roi.number) if role == Role.TARGET else None,
                             original_name=roi.name, color_rgb=roi.color)
    return out, warnings
