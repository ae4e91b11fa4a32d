"""Attributes every written object shares: patient, study, series, frame of reference, equipment."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from ... import NOT_FOR_CLINICAL_USE, __version__
from ...case import Case
from ..atomic import atomic_path
from .uids import new_uid


@dataclass
class StudyContext:
    """UIDs and identity shared by the objects of one written study (taken from case.metadata or new)."""

    study_uid: str
    frame_of_reference_uid: str
    patient_id: str
    patient_name: str
    study_id: str = "1"
    study_date: str = ""
    study_time: str = ""
    accession: str = ""
    study_description: str = ""
    refs: dict = field(default_factory=dict)  # what writers learn about each other: CT series/SOPs, RTSTRUCT, RTPLAN

    @classmethod
    def from_case(cls, case: Case) -> "StudyContext":
        md = case.metadata or {}
        now = _dt.datetime.now()
        return cls(
            study_uid=md.get("StudyInstanceUID") or new_uid(),
            frame_of_reference_uid=md.get("FrameOfReferenceUID") or new_uid(),
            patient_id=str(md.get("PatientID") or case.name)[:64],
            patient_name=str(md.get("PatientName") or case.name)[:64],
            study_id=str(md.get("StudyID") or "1")[:16],
            study_date=str(md.get("StudyDate") or now.strftime("%Y%m%d")),
            study_time=now.strftime("%H%M%S"),
            accession=str(md.get("AccessionNumber") or "")[:16],
            study_description=str(md.get("StudyDescription") or "")[:64],
        )


def new_dataset(ctx: StudyContext, sop_class_uid: str, modality: str, series_uid: str, *, series_number: int,
                series_description: str, sop_instance_uid: str | None = None) -> FileDataset:
    """A dataset with file meta, SOP common, patient, general study, series, frame of reference, equipment."""
    sop_uid = sop_instance_uid or new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    now = _dt.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, sop_uid
    name = ctx.patient_name if "^" in ctx.patient_name else ctx.patient_name + "^"  # family^given, not retired form
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, ctx.patient_id, "", ""
    ds.StudyInstanceUID, ds.StudyID = ctx.study_uid, ctx.study_id
    ds.StudyDate, ds.StudyTime = ctx.study_date, ctx.study_time
    ds.ReferringPhysicianName, ds.AccessionNumber = "", ctx.accession
    if ctx.study_description:
        ds.StudyDescription = ctx.study_description
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid, series_number
    ds.SeriesDescription = series_description[:64]
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = ctx.frame_of_reference_uid, ""
    ds.Manufacturer = "ADDiffDose"
    ds.ManufacturerModelName = "ADDiffDose (research, NOT FOR CLINICAL USE)"
    ds.SoftwareVersions = __version__
    ds.InstitutionName = ""
    return ds


def save(ds: FileDataset, path: str | Path, overwrite: bool) -> Path:
    """Write through io.atomic (tmp file + rename)."""
    with atomic_path(path, overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)


def provenance_text(provenance: dict | None) -> str:
    """'NOT FOR CLINICAL USE' + model name, SHA-256, seed, steps, beams (for ImageComments / descriptions)."""
    parts = [NOT_FOR_CLINICAL_USE]
    for key, value in (provenance or {}).items():
        parts.append(f"{key}={value}")
    return "; ".join(parts)


def short_description(provenance: dict | None, default: str) -> str:
    """A SeriesDescription (<= 64 chars) naming the model and saying NOT FOR CLINICAL USE."""
    model = (provenance or {}).get("model") or (provenance or {}).get("model_name")
    base = f"ADDiffDose {model}" if model else default
    return f"{base[:40]} NOT FOR CLINICAL USE"[:64]
