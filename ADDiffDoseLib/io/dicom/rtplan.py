"""RT Plan -> Plan (beams, fractions, isocenter), prescription and patient position."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from ...case import PATIENT_POSITIONS, Beam, Plan
from ...errors import ErrorCode, InputError

#: A DYNAMIC beam with at most this many control points and no arc is still 3D-CRT if its type says STATIC.
STATIC_MAX_CPS = 2


@dataclass
class PlanInfo:
    plan: Plan
    prescription_gy: float | None
    patient_position: str | None
    label: str = ""
    warnings: list[str] = field(default_factory=list)


def _float(value, default=None):
    try:
        v = float(value)
        return v if np.isfinite(v) else default
    except (TypeError, ValueError):
        return default


def _beam(b: pydicom.Dataset, path: Path) -> Beam | None:
    cps = list(b.get("ControlPointSequence", []) or [])
    if not cps:
        raise InputError(f"beam {b.get('BeamNumber')} has no control points", path=path, code=ErrorCode.MISSING_FIELD)
    cp0 = cps[0]
    radiation = str(b.get("RadiationType", "PHOTON") or "PHOTON").upper()
    gantry = _float(cp0.get("GantryAngle"), 0.0)
    couch = _float(cp0.get("PatientSupportAngle"), 0.0)
    coll = _float(cp0.get("BeamLimitingDeviceAngle"), 0.0)
    energy = _float(cp0.get("NominalBeamEnergy"), None)
    if energy is None or not 0 < energy < 100:
        energy = 6.0
    rotation = str(cp0.get("GantryRotationDirection", "NONE") or "NONE").upper()
    angles = [_float(cp.get("GantryAngle"), None) for cp in cps]
    angles = [a for a in angles if a is not None]
    if rotation in ("CW", "CC") and len(set(np.round(angles, 3))) > 1:
        technique, arc = "VMAT", tuple(angles)
    elif str(b.get("BeamType", "STATIC")).upper() == "DYNAMIC" or len(cps) > STATIC_MAX_CPS:
        technique, arc = "IMRT", None
    else:
        technique, arc = "3D-CRT", None
    if radiation != "PHOTON":
        return None
    return Beam(gantry, couch, coll, energy, technique, arc)


def _prescription(ds: pydicom.Dataset, fractions: int | None) -> float | None:
    for ref in ds.get("DoseReferenceSequence", []) or []:
        rx = _float(ref.get("TargetPrescriptionDose"))
        if rx and str(ref.get("DoseReferenceStructureType", "")).upper() == "SITE" and \
                str(ref.get("DoseReferenceType", "")).upper() == "TARGET":
            return rx
    for fg in ds.get("FractionGroupSequence", []) or []:
        doses = [_float(rb.get("BeamDose")) for rb in fg.get("ReferencedBeamSequence", []) or []]
        doses = [d for d in doses if d]
        n = int(_float(fg.get("NumberOfFractionsPlanned"), 0) or 0)
        if doses and n:
            return float(sum(doses) * n)
    return None


def read_rtplan(ds: pydicom.Dataset, path: Path) -> PlanInfo:
    """Beams from control point 0, fractions, prescription (Gy total), isocenter, patient position."""
    warnings = []
    beams, iso = [], None
    for b in ds.get("BeamSequence", []) or []:
        if str(b.get("TreatmentDeliveryType", "TREATMENT")).upper() not in ("TREATMENT", ""):
            continue  # setup / verification fields
        beam = _beam(b, path)
        if beam is None:
            warnings.append(f"beam {b.get('BeamName', b.get('BeamNumber'))} is not a photon beam; ignored")
            continue
        beams.append(beam)
        cp_iso = b.ControlPointSequence[0].get("IsocenterPosition")
        if iso is None and cp_iso is not None and len(cp_iso) == 3:
            iso = tuple(float(v) for v in cp_iso)
    fractions = None
    for fg in ds.get("FractionGroupSequence", []) or []:
        n = _float(fg.get("NumberOfFractionsPlanned"))
        if n and n >= 1:
            fractions = int(round(n))
            break
    position = str(ds.get("PatientPosition", "") or "").upper() or None
    if position is None:
        setups = {str(s.get("PatientPosition", "") or "").upper() for s in ds.get("PatientSetupSequence", []) or []}
        setups.discard("")
        if len(setups) == 1:
            position = setups.pop()
        elif len(setups) > 1:
            warnings.append(f"RT Plan has several patient positions {sorted(setups)}; the first is used")
            position = sorted(setups)[0]
    if position is not None and position not in PATIENT_POSITIONS:
        warnings.append(f"RT Plan patient position {position!r} unknown; ignored")
        position = None
    site = "unknown"
    for ref in ds.get("DoseReferenceSequence", []) or []:
        if str(ref.get("DoseReferenceStructureType", "")).upper() == "SITE" and ref.get("DoseReferenceDescription"):
            site = str(ref.DoseReferenceDescription)
            break
    plan = Plan(tuple(beams), fractions, iso, site=site, source="dicom")
    return PlanInfo(plan, _prescription(ds, fractions), position, str(ds.get("RTPlanLabel", "")), warnings)
