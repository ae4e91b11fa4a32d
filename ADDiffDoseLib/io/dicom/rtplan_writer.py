"""A minimal RT Plan carrying the beams, fractions and prescription of a Case (no MLC, no MU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ...case import Beam, Case
from .uids import RT_PLAN, RT_STRUCT, new_uid
from .writer_common import StudyContext, new_dataset, provenance_text, save

JAW_MM = 50.0  # nominal symmetric 10 x 10 cm field: the plan records angles, not apertures


def _cp(index: int, weight: float, gantry: float, beam: Beam, rotation: str, iso, first: bool) -> Dataset:
    cp = Dataset()
    cp.ControlPointIndex, cp.CumulativeMetersetWeight = index, f"{weight:.6g}"
    cp.GantryAngle, cp.GantryRotationDirection = f"{gantry % 360.0:.6g}", rotation
    if first:
        cp.NominalBeamEnergy = f"{beam.energy_mv:g}"
        cp.BeamLimitingDeviceAngle, cp.BeamLimitingDeviceRotationDirection = f"{beam.collimator_deg:.6g}", "NONE"
        cp.PatientSupportAngle, cp.PatientSupportRotationDirection = f"{beam.couch_deg:.6g}", "NONE"
        cp.TableTopEccentricAngle, cp.TableTopEccentricRotationDirection = "0", "NONE"
        cp.TableTopVerticalPosition = cp.TableTopLongitudinalPosition = cp.TableTopLateralPosition = ""
        cp.IsocenterPosition = [f"{v:.4f}" for v in iso]
        jaws = []
        for kind in ("ASYMX", "ASYMY"):
            j = Dataset()
            j.RTBeamLimitingDeviceType, j.LeafJawPositions = kind, [f"{-JAW_MM:g}", f"{JAW_MM:g}"]
            jaws.append(j)
        cp.BeamLimitingDevicePositionSequence = jaws
    return cp


def _rotation(angles: tuple[float, ...]) -> str:
    step = (angles[1] - angles[0] + 180.0) % 360.0 - 180.0
    return "CW" if step >= 0 else "CC"


def _beam(number: int, beam: Beam, iso, machine: str) -> Dataset:
    b = Dataset()
    b.BeamNumber, b.BeamName = number, f"{beam.technique} G{beam.gantry_deg:g}"[:64]
    b.BeamType = "STATIC" if beam.technique == "3D-CRT" else "DYNAMIC"
    b.RadiationType, b.TreatmentMachineName, b.PrimaryDosimeterUnit = "PHOTON", machine, "MU"
    b.SourceAxisDistance = "1000"
    devices = []
    for kind in ("ASYMX", "ASYMY"):
        d = Dataset()
        d.RTBeamLimitingDeviceType, d.NumberOfLeafJawPairs = kind, 1
        devices.append(d)
    b.BeamLimitingDeviceSequence = devices
    b.TreatmentDeliveryType = "TREATMENT"
    b.NumberOfWedges = b.NumberOfCompensators = b.NumberOfBoli = b.NumberOfBlocks = 0
    b.FinalCumulativeMetersetWeight = "1"
    if beam.technique == "VMAT" and beam.arc_gantry_deg and len(beam.arc_gantry_deg) > 1:
        angles = beam.arc_gantry_deg
        rot = _rotation(angles)
        weights = np.linspace(0.0, 1.0, len(angles))
        cps = [_cp(i, w, a, beam, rot if i < len(angles) - 1 else "NONE", iso, i == 0)
               for i, (w, a) in enumerate(zip(weights, angles))]
    else:
        cps = [_cp(0, 0.0, beam.gantry_deg, beam, "NONE", iso, True), _cp(1, 1.0, beam.gantry_deg, beam, "NONE", iso, False)]
    b.NumberOfControlPoints = len(cps)
    b.ControlPointSequence = cps
    return b


def build_rtplan(case: Case, ctx: StudyContext, provenance: dict | None = None, prescription_gy: float | None = None):
    """The RT Plan dataset (not written)."""
    ds = new_dataset(ctx, RT_PLAN, "RTPLAN", new_uid(), series_number=3,
                     series_description="ADDiffDose plan NOT FOR CLINICAL USE")
    ds.InstanceNumber = 1
    ds.RTPlanLabel, ds.RTPlanName = "ADDiffDose"[:16], case.name[:64]
    ds.RTPlanDescription = provenance_text(provenance)[:1024]
    ds.RTPlanDate, ds.RTPlanTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    rs = ctx.refs.get("RTSTRUCT")
    if rs:
        ds.RTPlanGeometry = "PATIENT"
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = RT_STRUCT, rs["sop_uid"]
        ds.ReferencedStructureSetSequence = [ref]
    else:
        ds.RTPlanGeometry = "TREATMENT_DEVICE"
    rx = prescription_gy or case.max_prescription_gy
    if rx:
        dr = Dataset()
        dr.DoseReferenceNumber, dr.DoseReferenceUID = 1, new_uid()
        dr.DoseReferenceStructureType, dr.DoseReferenceDescription = "SITE", str(case.plan.site or "target")[:64]
        dr.DoseReferenceType, dr.TargetPrescriptionDose = "TARGET", f"{rx:.6g}"
        ds.DoseReferenceSequence = [dr]
    iso = case.isocenter_lps() if (case.plan.isocenter_lps is not None or case.targets) else np.asarray(
        case.grid.index_to_lps((np.asarray(case.grid.shape) - 1) / 2.0))
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = case.plan.fractions or 1
    fg.NumberOfBeams, fg.NumberOfBrachyApplicationSetups = len(case.plan.beams), 0
    ds.FractionGroupSequence = [fg]
    setup = Dataset()
    setup.PatientSetupNumber, setup.PatientPosition = 1, case.patient_position
    ds.PatientSetupSequence = [setup]
    if case.plan.beams:
        # with no beams (a dose-only study) the RT Beams module and ReferencedBeamSequence (Type 1C) are left out:
        # present and empty, they are errors (dciodvfy); the plan then records fractions and prescription only
        fg.ReferencedBeamSequence = []
        for n in range(1, len(case.plan.beams) + 1):
            rb = Dataset()
            rb.ReferencedBeamNumber = n
            fg.ReferencedBeamSequence.append(rb)
        ds.BeamSequence = [_beam(n, b, iso, "ADDiffDose") for n, b in enumerate(case.plan.beams, start=1)]
        for b in ds.BeamSequence:
            b.ReferencedPatientSetupNumber = 1
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def write_rtplan(path: str | Path, case: Case, overwrite: bool = False, *, context: StudyContext | None = None,
                 provenance: dict | None = None) -> Path:
    """Write a minimal RT Plan (beam angles, energies, fractions, prescription, isocenter) at `path`."""
    ctx = context or StudyContext.from_case(case)
    ds = build_rtplan(case, ctx, provenance)
    out = save(ds, path, overwrite)
    ctx.refs["RTPLAN"] = {"sop_uid": ds.SOPInstanceUID}
    return out
