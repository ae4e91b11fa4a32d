"""DICOM-RT writing: an OpenKBP head-and-neck case written as a study and read back; dciodvfy conformance."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from ADDiffDoseLib.case import Beam, Plan, Role
from ADDiffDoseLib.errors import OutputError
from ADDiffDoseLib.io.dicom import read_dicom, write_dicom_study, write_rtdose
from ADDiffDoseLib.io.dicom.orient import axial_reorientation
from ADDiffDoseLib.io.openkbp import read_openkbp_npz

PROVENANCE = {"model": "unit-test-model", "sha256": "ab" * 32, "seed": 7, "steps": 50, "beams": "9 x IMRT"}


@pytest.fixture(scope="session")
def hn_study(tmp_path_factory, openkbp_npz):
    """pt_201 written as CT + RTSTRUCT + RTPLAN + RTDOSE, and read back (built once)."""
    case = read_openkbp_npz(openkbp_npz)
    folder = tmp_path_factory.mktemp("hn_dicom")
    written = write_dicom_study(folder, case, provenance=PROVENANCE)
    return case, folder, written, read_dicom(folder)


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_round_trip_geometry_masks_dose(hn_study):
    case, _, _, back = hn_study
    ro = axial_reorientation(case.grid)  # the writer stores axial slices: same voxels, permuted/flipped
    assert back.grid.same_as(ro.grid)
    assert np.allclose(back.grid.direction_ijk, np.eye(3))
    assert np.allclose(back.grid.index_to_lps(np.zeros(3)), ro.grid.origin_lps)
    # same physical position for a voxel, via both grids
    probe = np.array([10, 20, 30])
    orig_lps = case.grid.index_to_lps(probe)
    assert np.allclose(back.grid.index_to_lps(np.rint(back.grid.lps_to_index(orig_lps))), orig_lps, atol=1e-3)
    assert set(back.structures) == set(case.structures)
    for key, s in case.structures.items():
        if s.volume_cc(case.grid) >= 5:
            assert _dice(back.structures[key].mask, ro.apply(s.mask)) >= 0.95, key
        assert back.structures[key].role == s.role
    assert back.structures["PTV70"].prescription_gy == pytest.approx(70)
    scaling = float(pydicom.dcmread(hn_study[1] / "RD.dcm", stop_before_pixels=True).DoseGridScaling)
    assert np.abs(back.dose_gy - ro.apply(case.dose_gy)).max() <= scaling
    assert np.array_equal(back.ct_hu, np.rint(ro.apply(case.ct_hu)))


def test_round_trip_orientation(hn_study):
    _, _, _, back = hn_study
    centroid_x = {k: back.grid.index_to_lps(np.argwhere(back.structures[k].mask).mean(0))[0]
                  for k in ("Parotid_L", "Parotid_R")}
    assert centroid_x["Parotid_L"] > centroid_x["Parotid_R"]  # +x LPS is patient left
    brainstem_z = back.grid.index_to_lps(np.argwhere(back.structures["Brainstem"].mask).mean(0))[2]
    parotid_z = back.grid.index_to_lps(np.argwhere(back.structures["Parotid_L"].mask).mean(0))[2]
    assert brainstem_z > parotid_z  # superior


def test_plan_and_provenance(hn_study):
    case, folder, _, back = hn_study
    assert [b.gantry_deg for b in back.plan.beams] == [b.gantry_deg for b in case.plan.beams]
    assert back.plan.fractions == case.plan.fractions and back.patient_position == "HFS"
    rd = pydicom.dcmread(folder / "RD.dcm", stop_before_pixels=True)
    assert "NOT FOR CLINICAL USE" in rd.SeriesDescription and "unit-test-model" in rd.SeriesDescription
    assert "sha256=" + "ab" * 32 in rd.ImageComments and "seed=7" in rd.ImageComments
    assert rd.BitsAllocated == 16 and rd.DoseSummationType == "PLAN"
    rp = pydicom.dcmread(folder / "RP.dcm")
    assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
    uids = {pydicom.dcmread(p, stop_before_pixels=True).FrameOfReferenceUID for p in folder.rglob("*.dcm")}
    assert len(uids) == 1


def test_overwrite_refused(hn_study, tmp_path):
    case = hn_study[0]
    write_rtdose(tmp_path / "d.dcm", case, case.dose_gy)
    assert (tmp_path / "d_rtplan.dcm").exists()  # no plan known: a minimal one beside it
    with pytest.raises(OutputError):
        write_rtdose(tmp_path / "d.dcm", case, case.dose_gy)
    write_rtdose(tmp_path / "d.dcm", case, case.dose_gy, overwrite=True, bits=32)
    ds = pydicom.dcmread(tmp_path / "d.dcm")
    assert ds.BitsAllocated == 32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_vmat_beam_round_trip(hn_study, tmp_path):
    case = hn_study[0]
    arc = tuple(np.arange(181.0, 181.0 + 360.0, 10.0) % 360)
    small = case.replace(plan=Plan((Beam(181.0, technique="VMAT", arc_gantry_deg=arc, energy_mv=10),), 30,
                                   source="user"), dose_gy=None)
    from ADDiffDoseLib.io.dicom import write_rtplan

    from ADDiffDoseLib.io.dicom.rtplan import read_rtplan

    write_rtplan(tmp_path / "rp.dcm", small)  # a plan alone has no grid: check it with the plan parser

    info = read_rtplan(pydicom.dcmread(tmp_path / "rp.dcm"), tmp_path / "rp.dcm")
    beam = info.plan.beams[0]
    assert beam.technique == "VMAT" and beam.energy_mv == 10 and len(beam.arc_gantry_deg) == len(arc)
    assert np.allclose(beam.arc_gantry_deg, arc) and info.plan.fractions == 30


def _dciodvfy_errors(path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.fail("dciodvfy not on PATH: install dicom3tools (apt-get install -y dicom3tools)")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_dciodvfy_accepts_written_objects(hn_study):
    _, folder, written, _ = hn_study
    for path in (folder / "RD.dcm", folder / "RP.dcm", folder / "RS.dcm", written["CT"][0]):
        assert _dciodvfy_errors(path) == [], path


def test_minimal_plan_of_dose_only_study_passes_dciodvfy(tg119_dir, tmp_path):
    """A study without beams (TG-119: CT + RTSTRUCT only) gets a minimal RT Plan beside its RT Dose; with no
    beams it has no (empty) BeamSequence / ReferencedBeamSequence, which dciodvfy counts as 3 errors."""
    from ADDiffDoseLib.io import read_case
    from ADDiffDoseLib.io.dicom.rtplan import read_rtplan

    case = read_case(tg119_dir)
    assert case.plan.beams == ()
    case = case.replace(plan=Plan((), 25, source="user"))
    write_rtdose(tmp_path / "rd.dcm", case, np.full(case.grid.shape, 2.0, np.float32))
    for path in (tmp_path / "rd_rtplan.dcm", tmp_path / "rd.dcm"):
        assert _dciodvfy_errors(path) == [], path
    rp = pydicom.dcmread(tmp_path / "rd_rtplan.dcm")
    assert "BeamSequence" not in rp and rp.FractionGroupSequence[0].NumberOfBeams == 0
    info = read_rtplan(rp, tmp_path / "rd_rtplan.dcm")
    assert info.plan.fractions == 25 and info.plan.beams == ()
    assert pydicom.dcmread(tmp_path / "rd.dcm").ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
