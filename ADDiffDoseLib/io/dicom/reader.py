"""Assemble one study's CT + RTSTRUCT + RTPLAN + RTDOSE into a Case."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...case import Case, Plan, Role, Structure, implausible_dose
from ...errors import ErrorCode, GeometryError, InputError
from ...geometry import resample_to_grid
from .body import body_from_ct
from .ct_series import read_ct_series
from .pixels import read_full
from .rtdose import read_rtdose
from .rtplan import read_rtplan
from .rtstruct import parse_rois, structures_from_rois
from .scan import SeriesInfo, scan, third_party_warnings

log = logging.getLogger(__name__)


def _ambiguous(path, what: str, series: list[SeriesInfo]) -> InputError:
    listing = "; ".join(s.summary() for s in series)
    return InputError(f"{what}; pick one with --series UID: {listing}", path=path, code=ErrorCode.AMBIGUOUS_INPUT)


def select_study(path, series: list[SeriesInfo], series_uid: str | None) -> list[SeriesInfo]:
    """The series of the one study to read (by `series_uid`'s study, else the only study)."""
    if series_uid:
        chosen = [s for s in series if s.series_uid == series_uid]
        if not chosen:
            raise InputError(f"series {series_uid} not found; found: " + "; ".join(s.summary() for s in series),
                             path=path, code=ErrorCode.AMBIGUOUS_INPUT)
        study = chosen[0].study_uid
        return [s for s in series if s.study_uid == study]
    studies = {s.study_uid for s in series}
    if len(studies) > 1:
        raise _ambiguous(path, f"{len(studies)} studies found", series)
    return series


def _pick(path, kind: str, candidates: list[SeriesInfo], preferred_uid: str | None, preferred_sop: set[str]) -> SeriesInfo | None:
    if not candidates:
        return None
    if preferred_uid:
        for s in candidates:
            if s.series_uid == preferred_uid:
                return s
    if len(candidates) > 1 and preferred_sop:
        hits = [s for s in candidates if preferred_sop & {f.sop_instance_uid for f in s.files}]
        if len(hits) == 1:
            return hits[0]
    if len(candidates) > 1:
        raise _ambiguous(path, f"{len(candidates)} {kind} series found", candidates)
    return candidates[0]


def _files_of(series: list[SeriesInfo], modality: str):
    return [f for s in series if s.modality == modality for f in s.files]


def _referenced_ct_sops(rs) -> set[str]:
    out = set()
    for fr in rs.get("ReferencedFrameOfReferenceSequence", []) or []:
        for st in fr.get("RTReferencedStudySequence", []) or []:
            for se in st.get("RTReferencedSeriesSequence", []) or []:
                for im in se.get("ContourImageSequence", []) or []:
                    out.add(str(im.get("ReferencedSOPInstanceUID", "")))
    return out


def read_dicom(path: str | Path, series_uid: str | None = None, prescription_gy: float | None = None,
               fractions: int | None = None) -> Case:
    """Read one study from a DICOM file or folder.

    series_uid picks the study (and that series when several of its kind exist); prescription_gy (total Gy)
    overrides the plan's and is needed for RELATIVE dose; fractions overrides the plan's number of fractions
    and is needed for a FRACTION dose without its RT Plan. The case grid is the CT's; with no CT series of
    at least two slices it is the RTDOSE grid. Structures are rasterized on it, dose resampled trilinearly.
    A dose maximum that cannot be right (:func:`~ADDiffDoseLib.case.implausible_dose`) is a warning naming the
    summation type, fractions and DoseGridScaling used; pydicom's own warnings become case warnings (one line each).
    """
    caught: list[str] = []
    with third_party_warnings(caught):
        case = _read_study(Path(path), series_uid, prescription_gy, fractions)
    return case.replace(warnings=(*case.warnings, *caught)) if caught else case


def _read_study(path: Path, series_uid, prescription_gy, fractions) -> Case:
    series = select_study(path, scan(path), series_uid)
    by_mod = {m: [s for s in series if s.modality == m] for m in ("CT", "RTSTRUCT", "RTPLAN", "RTDOSE")}
    warnings: list[str] = []
    no_meta = [f for s in series for f in s.files if not f.file_meta]
    if no_meta:
        kinds = ", ".join(sorted({f.modality for f in no_meta}))
        warnings.append(f"{len(no_meta)} {kinds} file(s) without preamble / File Meta header, e.g. "
                        f"{no_meta[0].path.name}: read with the transfer syntax pydicom guessed")

    rs_series = _pick(path, "RTSTRUCT", by_mod["RTSTRUCT"], series_uid, set())
    rs_ds = read_full(rs_series.files[0].path) if rs_series else None
    if rs_series and len(rs_series.files) > 1:
        warnings.append(f"RTSTRUCT series holds {len(rs_series.files)} files; the first is used")
    ct_series = _pick(path, "CT", by_mod["CT"], series_uid, _referenced_ct_sops(rs_ds) if rs_ds else set())
    ct = read_ct_series(ct_series.paths) if ct_series else None

    plan_series = _pick(path, "RTPLAN", by_mod["RTPLAN"], series_uid, set())
    plan_ds = read_full(plan_series.files[0].path) if plan_series else None
    plan_info = read_rtplan(plan_ds, plan_series.files[0].path) if plan_ds is not None else None
    if plan_info:
        warnings += plan_info.warnings
    rx = prescription_gy or (plan_info.prescription_gy if plan_info else None)

    doses, how = _read_doses(path, by_mod["RTDOSE"], series_uid, plan_ds, plan_info, rx, fractions, warnings)

    frame_uid = ct.first.get("FrameOfReferenceUID") if ct else (doses[0][2] if doses else None)
    frame_uid = str(frame_uid) if frame_uid else None
    if ct is not None and (ct.grid.shape[0] > 1 or not doses):
        grid, ct_hu = ct.grid, ct.ct_hu
        warnings += ct.warnings
    elif doses:
        grid, ct_hu = doses[0][0].grid, None
        if ct is not None:
            warnings.append("CT series has a single slice: the RTDOSE grid is the case grid and the CT is not used")
        else:
            warnings.append("no CT series: the RTDOSE grid is the case grid")
    else:
        raise InputError("no CT series and no RT Dose: nothing defines a grid", path=path, code=ErrorCode.MISSING_FIELD)

    dose_gy = None
    for dd, _, dose_for, dpath in doses:
        if frame_uid and dose_for and dose_for != frame_uid:
            raise GeometryError(f"RT Dose frame of reference {dose_for} differs from the image's {frame_uid}",
                                path=dpath, code=ErrorCode.FRAME_OF_REFERENCE)
        on_grid = resample_to_grid(dd.dose, dd.grid, grid, order=1)
        dose_gy = on_grid if dose_gy is None else dose_gy + on_grid

    structures: dict[str, Structure] = {}
    if rs_ds is not None:
        rois = parse_rois(rs_ds, frame_uid, rs_series.files[0].path)
        on_grid = structures_from_rois if ct_hu is not None else structures_on_part_of_grid  # RTDOSE grid: clipped
        structures, w = on_grid(rois, grid, rx)
        warnings += w
    if doses:
        target_rx = [s.prescription_gy for s in structures.values() if s.role == Role.TARGET and s.prescription_gy]
        top_rx = max([r for r in [rx, *target_rx] if r], default=None)
        w = implausible_dose(float(dose_gy.max()), top_rx, how)
        if w:
            warnings.append(w)
    if not any(s.role == Role.EXTERNAL for s in structures.values()) and ct_hu is not None:
        structures["External"] = Structure("External", body_from_ct(ct_hu), Role.EXTERNAL,
                                           original_name="External (CT threshold)")
        warnings.append("no body contour: External made from the CT (HU > -400)")

    position = None
    if ct is not None:
        position = str(ct.first.get("PatientPosition", "") or "").upper() or None
    if plan_info and plan_info.patient_position:
        if position and position != plan_info.patient_position:
            warnings.append(f"CT patient position {position} differs from the plan's {plan_info.patient_position}")
        position = position or plan_info.patient_position
    if not position:
        warnings.append("patient position unknown; HFS assumed")
        position = "HFS"

    first = next((d for d in (ct.first if ct else None, rs_ds, plan_ds) if d is not None), None)
    if first is None:
        first = read_full(doses[0][3])
    metadata = {
        "source_format": "dicom",
        "source_path": str(path),
        "StudyInstanceUID": str(first.get("StudyInstanceUID", "")),
        "FrameOfReferenceUID": frame_uid or "",
        "PatientID": str(first.get("PatientID", "")),
        "PatientName": str(first.get("PatientName", "")),
        "PatientBirthDate": str(first.get("PatientBirthDate", "")),
        "PatientSex": str(first.get("PatientSex", "")),
        "StudyID": str(first.get("StudyID", "")),
        "StudyDate": str(first.get("StudyDate", "")),
        "StudyDescription": str(first.get("StudyDescription", "")),
        "AccessionNumber": str(first.get("AccessionNumber", "")),
        "series": {m: s.series_uid for m, s in (("CT", ct_series), ("RTSTRUCT", rs_series), ("RTPLAN", plan_series)) if s},
        "RTDOSESeriesInstanceUIDs": sorted({d[1] for d in doses}),
    }
    if ct is not None:
        metadata["CTSOPInstanceUIDs"] = ct.sop_instance_uids
    if rs_ds is not None:
        metadata["RTSTRUCTSOPInstanceUID"] = str(rs_ds.get("SOPInstanceUID", ""))
    if plan_ds is not None:
        metadata["RTPLANSOPInstanceUID"] = str(plan_ds.get("SOPInstanceUID", ""))
        metadata["RTPlanLabel"] = plan_info.label
    if rx:
        metadata["prescription_gy"] = float(rx)
    plan = plan_info.plan if plan_info else Plan(source="dicom", site="unknown")
    name = metadata["PatientID"] or path.stem
    for w in warnings:
        log.info("%s: %s", path, w)
    return Case(name=name, grid=grid, ct_hu=ct_hu, structures=structures, plan=plan, dose_gy=dose_gy,
                patient_position=position, metadata=metadata, warnings=tuple(warnings))


def read_rtstruct_on_grid(path: str | Path, grid, frame_of_reference_uid: str | None = None,
                          prescription_gy: float | None = None) -> tuple[dict[str, Structure], list[str]]:
    """Rasterize one RT Structure Set file on a given grid, e.g. an RTDOSE's when there is no CT series (as
    planning systems do). Contours of another frame of reference than `frame_of_reference_uid` are refused.
    Returns (name -> Structure with a bool mask of grid.shape, warnings)."""
    path = Path(path)
    caught: list[str] = []
    with third_party_warnings(caught):
        ds = read_full(path)
        if str(ds.get("Modality", "")).upper() != "RTSTRUCT":
            raise InputError(f"not an RT Structure Set (Modality {ds.get('Modality', '')!s})", path=path,
                             code=ErrorCode.UNSUPPORTED_FORMAT)
        structures, warnings = structures_on_part_of_grid(parse_rois(ds, frame_of_reference_uid, path), grid,
                                                          prescription_gy)
    return structures, warnings + caught


#: Largest grid (voxels) rasterized to measure how much of a structure lies outside the dose grid.
MAX_EXTENDED_VOXELS = 64 * 1024**2


def structures_on_part_of_grid(rois, grid, prescription_gy):
    """:func:`structures_from_rois` on `grid` (an RT Dose's), warning for each structure that lies partly outside
    it ('31.4 of 54.5 cc inside'): the ROIs are rasterized on `grid` extended over all contours, then cropped."""
    points = [pts for r in rois for pts in r.contours_lps]
    if not points:
        return structures_from_rois(rois, grid, prescription_gy)
    idx = grid.lps_to_index(np.concatenate(points))
    lo = np.minimum(np.floor(idx.min(axis=0) + 0.5).astype(int), 0)
    hi = np.maximum(np.ceil(idx.max(axis=0) - 0.5).astype(int), np.asarray(grid.shape) - 1)
    shape = hi - lo + 1
    if np.all(lo == 0) and np.all(hi == np.asarray(grid.shape) - 1):
        return structures_from_rois(rois, grid, prescription_gy)
    if np.prod(shape.astype(float)) > MAX_EXTENDED_VOXELS:
        structures, warnings = structures_from_rois(rois, grid, prescription_gy)
        return structures, warnings + ["contours reach beyond the dose grid; the volume outside was not measured"]
    structures, warnings = structures_from_rois(rois, grid.with_shape(tuple(shape), offset_index=lo), prescription_gy)
    crop = tuple(slice(-a, -a + n) for a, n in zip(lo, grid.shape))
    out = {}
    for key, s in structures.items():
        inside = s.mask[crop]
        total, kept = int(s.mask.sum()), int(inside.sum())
        if kept < total:
            warnings.append(f"structure {s.original_name!r} lies partly outside the dose grid: "
                            f"{kept * grid.voxel_volume_cc:.1f} of {total * grid.voxel_volume_cc:.1f} cc inside")
        out[key] = replace(s, mask=np.ascontiguousarray(inside))
    return out, warnings


def _read_doses(path, dose_series, series_uid, plan_ds, plan_info, rx, fractions, warnings):
    """([(DoseData in Gy, series uid, frame uid, path)] to be summed: one PLAN dose, or all BEAM doses;
    how they were scaled, in words)."""
    files = [(s, f) for s in dose_series for f in s.files]
    if series_uid and any(s.series_uid == series_uid for s, _ in files):
        files = [(s, f) for s, f in files if s.series_uid == series_uid]
    loaded = []
    for s, f in files:
        ds = read_full(f.path)
        loaded.append((read_rtdose(ds, f.path), s.series_uid, str(ds.get("FrameOfReferenceUID", "")), f.path))
    if not loaded:
        return [], ""
    plan_uid = str(plan_ds.get("SOPInstanceUID", "")) if plan_ds is not None else None
    kinds = {d[0].summation_type for d in loaded}
    if len(loaded) > 1:
        if kinds <= {"BEAM", "BEAM_SESSION", "CONTROL_POINT"} and len(kinds) == 1:
            warnings.append(f"{len(loaded)} {next(iter(kinds))} doses summed")
        else:
            plan_level = [d for d in loaded if d[0].summation_type in ("PLAN", "MULTI_PLAN")]
            linked = [d for d in plan_level if plan_uid and d[0].referenced_plan_uid == plan_uid]
            chosen = linked or plan_level
            if len(chosen) != 1:
                raise _ambiguous(path, f"{len(loaded)} RT Dose files of types {sorted(kinds)}",
                                 [s for s in dose_series])
            loaded = chosen
    plan_fractions = plan_info.plan.fractions if plan_info else None
    if fractions and plan_fractions and int(fractions) != int(plan_fractions):
        warnings.append(f"{fractions} fractions given; the RT Plan says {plan_fractions}")
    n_fx, fx_source = (int(fractions), "given") if fractions else (plan_fractions, "RT Plan")
    out, how = [], []
    for dd, suid, fuid, p in loaded:
        step = f"DoseSummationType {dd.summation_type}, DoseGridScaling {dd.scaling:.6g}"
        if dd.units == "RELATIVE":
            if not rx:
                raise InputError("DoseUnits RELATIVE: give the prescription (total Gy) to convert to Gy", path=p,
                                 code=ErrorCode.MISSING_FIELD)
            dd.dose = dd.dose * np.float32(rx / 100.0)  # RELATIVE taken as percent of the prescription
            warnings.append("RELATIVE dose taken as percent of the prescription")
            step += f", RELATIVE as % of {rx:g} Gy"
        if dd.summation_type == "FRACTION":
            if not n_fx:
                raise InputError("DoseSummationType FRACTION: the number of fractions is unknown (no RT Plan); "
                                 "give it with --fractions N", path=p, code=ErrorCode.MISSING_FIELD)
            dd.dose = dd.dose * np.float32(n_fx)
            step += f", x {n_fx} fractions ({fx_source})"
        how.append(step)
        out.append((dd, suid, fuid, p))
    return out, "; ".join(dict.fromkeys(how))
