"""Export a dose node as a DICOM RT Dose with the library's writer (:func:`ADDiffDoseLib.io.dicom.write_rtdose`).

SlicerRT's own exporter (``DicomRtImportExportPlugin``, SlicerRt/SlicerRT ``DicomRtImportExport/``) needs the
Slicer application's DICOM database and export dialog; the library's writer works anywhere and writes the same
kind of object: 16-bit RT Dose in Gy with DoseGridScaling, the study's UIDs carried over, a minimal RT Plan beside
it describing the beams the prediction assumed, provenance and "not for clinical use" in the dataset.

Geometry: the dose node's IJK-to-RAS with its linear parent transforms hardened (a non-linear transform is
refused), converted to DICOM LPS. Study identity (Study/Frame of Reference UIDs, patient) is taken from the
reference (CT) node when it was loaded from DICOM: Slicer stores its SOP Instance UIDs in the node attribute
``DICOM.instanceUIDs`` and the tags are read through ``instance_value(sop_uid, "gggg,eeee")`` (in Slicer:
``slicer.dicomDatabase.instanceValue``). Without them, new UIDs are made (then the RT Dose does not overlay the
original CT in other systems; the caller is warned through the returned warnings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..case import Beam, Case, Plan
from ..errors import DoseError, ErrorCode
from . import dose_output, nodes

#: Case.metadata key -> DICOM tag read from the reference CT's first instance.
STUDY_TAGS = {"StudyInstanceUID": "0020,000D", "FrameOfReferenceUID": "0020,0052", "PatientID": "0010,0020",
              "PatientName": "0010,0010", "StudyID": "0020,0010", "StudyDate": "0008,0020",
              "AccessionNumber": "0008,0050", "StudyDescription": "0008,1030"}
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"


def study_metadata(reference_node, instance_value: Callable[[str, str], str] | None) -> dict[str, str]:
    """Study identity of a node loaded from DICOM (empty when it was not, or no lookup is given)."""
    if reference_node is None or instance_value is None:
        return {}
    uids = (reference_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if not uids:
        return {}
    found = {key: str(instance_value(uids[0], tag) or "").strip() for key, tag in STUDY_TAGS.items()}
    return {k: v for k, v in found.items() if v}


def _beams_from_provenance(prov: dict[str, str]) -> tuple[Beam, ...]:
    """Beams recorded on the dose node (attribute ADDiffDose.Beams: JSON list of Beam dicts)."""
    try:
        items = json.loads(prov.get("Beams", "[]"))
    except json.JSONDecodeError:
        return ()
    if not isinstance(items, list):
        return ()
    return tuple(Beam(**{k: v for k, v in b.items() if k in Beam.__dataclass_fields__})
                 for b in items if isinstance(b, dict) and "gantry_deg" in b)


def export_dose_rtdose(dose_node, path: str | Path, *, reference_node=None,
                       instance_value: Callable[[str, str], str] | None = None, overwrite: bool = False,
                       bits: int = 16) -> tuple[Path, list[str]]:
    """Write `dose_node` (Gy) as an RT Dose at `path` (plus a minimal RT Plan beside it); returns (path, warnings).

    Refuses a node that is not a dose (no ``DicomRtImport.DoseVolume``) and negative doses (DoseError).
    """
    if not dose_output.is_dose_node(dose_node):
        raise DoseError(f"volume '{dose_node.GetName()}' is not marked as a dose (DicomRtImport.DoseVolume)",
                        path=path, code=ErrorCode.INVALID_VALUE)
    grid = nodes.grid_from_volume_node(dose_node, harden=True)
    dose = nodes.array_from_volume_node(dose_node)
    prov = dose_output.provenance_of(dose_node)
    metadata = study_metadata(reference_node, instance_value)
    warnings = [] if metadata.get("FrameOfReferenceUID") else [
        "no DICOM identity for the reference CT: new Study and Frame of Reference UIDs were made"]
    plan = Plan(beams=_beams_from_provenance(prov), source="user")
    case = Case(name=metadata.get("PatientID") or dose_node.GetName(), grid=grid, plan=plan, metadata=metadata)
    names = {suffix: key for key, suffix in dose_output.PROVENANCE_KEYS.items()}  # Model -> model, ...
    provenance = {names[k]: v for k, v in prov.items() if k in names}
    provenance.setdefault("model", "unknown")
    from ..io.dicom import write_rtdose  # lazy: pydicom only when exporting

    out = write_rtdose(path, case, np.asarray(dose, np.float32), provenance=provenance, overwrite=overwrite,
                       bits=bits)
    return Path(out), warnings
