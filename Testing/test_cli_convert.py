"""`addiffdose convert` (and `inspect` on DICOM inputs), through the real entry point cli.main.main."""

from __future__ import annotations

import json

import pytest

from ADDiffDoseLib.cli.main import main
from ADDiffDoseLib.io.detect import read_case
from nrrd_helpers import assert_itk_volume, itk_segments


def test_convert_openkbp_to_dicom_and_back(openkbp_npz, tmp_path, capsys):
    out = tmp_path / "dcm"
    assert main(["convert", str(openkbp_npz), str(out), "--to", "dicom"]) == 0
    assert (out / "RS.dcm").exists() and (out / "RD.dcm").exists() and len(list((out / "CT").glob("*.dcm"))) == 128
    assert main(["convert", str(openkbp_npz), str(out), "--to", "dicom"]) == 2  # exists, no --overwrite
    assert "E301" in capsys.readouterr().err
    assert main(["inspect", str(out), "--json"]) == 0  # inspect reads the written study
    info = json.loads(capsys.readouterr().out)
    assert info["grid"]["shape"] == [128, 128, 128] and info["dose"]["max_gy"] == pytest.approx(72.3, abs=0.01)
    assert {"PTV70", "SpinalCord", "Brainstem", "Parotid_L"} <= {x["name"] for x in info["structures"]}
    assert info["patient_position"] == "HFS"


def test_convert_dicom_to_nrrd_and_npz(tg119_dir, tmp_path):
    assert main(["convert", str(tg119_dir), str(tmp_path / "n"), "--to", "nrrd"]) == 0
    assert (tmp_path / "n" / "ct.nrrd").exists() and (tmp_path / "n" / "segmentation.seg.nrrd").exists()
    case = read_case(tg119_dir)  # ITK (as Slicer) opens both with the case's geometry and values
    assert_itk_volume(tmp_path / "n" / "ct.nrrd", case.ct_hu, case.grid)
    masks = itk_segments(tmp_path / "n" / "segmentation.seg.nrrd", case.grid)
    assert int(masks["OuterTarget"].sum()) == 7458 and int(masks["Core"].sum()) == 1320
    assert main(["convert", str(tg119_dir), str(tmp_path / "z"), "--to", "npz"]) == 0
    back = read_case(next((tmp_path / "z").glob("*.npz")))
    assert back.grid.shape == (129, 167, 167)
    assert int(back.structures["OuterTarget"].mask.sum()) == 7458


def test_convert_ambiguous_folder_needs_series(breast_dir, tg119_dir, tmp_path, capsys):
    import shutil

    shutil.copytree(breast_dir, tmp_path / "in" / "b")
    shutil.copytree(tg119_dir / "ct", tmp_path / "in" / "t")
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "o"), "--to", "npz"]) == 2
    assert "E106" in capsys.readouterr().err



def test_third_party_warnings_and_errors_are_one_line_each(tg119_dir, tmp_path, capsys):
    """pydicom's warnings reach the user as our `warning:` lines (not Python warning blocks, not twice through
    pydicom's logger); a damaged file is one error line."""
    import shutil

    from ADDiffDoseLib.cli.main import main as cli

    raw = (tg119_dir / "ct" / "ct.050.dcm").read_bytes()
    relabelled = raw.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2\x00\x00\x00")
    folder = tmp_path / "tg"
    shutil.copytree(tg119_dir, folder, ignore=shutil.ignore_patterns("*.npz"))
    (folder / "ct" / "ct.050.dcm").write_bytes(relabelled)
    assert cli(["convert", str(folder), str(tmp_path / "o"), "--to", "npz"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "Expected implicit VR" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: pydicom: Expected implicit VR"), err
    assert "UserWarning" not in err and "warnings.warn" not in err
    at = raw.find(b"\x20\x00\x32\x00DS")
    (folder / "ct" / "ct.050.dcm").write_bytes(raw[:at + 4] + b"ZZ" + raw[at + 6:])
    assert cli(["inspect", str(folder / "ct" / "ct.050.dcm")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error E103 ") and "ct.050.dcm" in err[0], err


def test_names_as_read_survive_dicom_and_nrrd_round_trips(breast_dir, tmp_path, capsys):
    """The breast study's names ('BODY', 'Lt Lung', 'Tumor Bed') are written as read into the RTSTRUCT and the
    seg.nrrd, and read back with the same normalized names; DVH rows show both."""
    import csv as csvlib

    import pydicom

    from ADDiffDoseLib.cli.main import main as cli

    case = read_case(breast_dir)
    as_read = {k: s.original_name for k, s in case.structures.items()}
    assert as_read["External"] == "BODY" and as_read["Lung_L"] == "Lt Lung"
    assert cli(["convert", str(breast_dir), str(tmp_path / "dcm"), "--to", "dicom"]) == 0
    rs = pydicom.dcmread(tmp_path / "dcm" / "RS.dcm")
    assert {r.ROIName for r in rs.StructureSetROISequence} == set(as_read.values())
    back = read_case(tmp_path / "dcm")
    assert {k: s.original_name for k, s in back.structures.items()} == as_read
    assert cli(["convert", str(breast_dir), str(tmp_path / "nrrd"), "--to", "nrrd"]) == 0
    seg = itk_segments(tmp_path / "nrrd" / "segmentation.seg.nrrd", case.grid)
    assert set(seg) == set(as_read.values())
    back = read_case(tmp_path / "nrrd")
    assert {k: s.original_name for k, s in back.structures.items()} == as_read
    assert {k: s.role for k, s in back.structures.items()} == {k: s.role for k, s in case.structures.items()}
    assert cli(["dvh", "--dose", str(breast_dir), "--csv", str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["Lt", "Lung", "Lung_L"] for line in out.splitlines()), out
    rows = list(csvlib.DictReader(ln for ln in (tmp_path / "d.csv").read_text().splitlines() if not ln.startswith("#")))
    assert {(r["structure"], r["normalized_name"]) for r in rows} >= {("BODY", "External"), ("Lt Lung", "Lung_L")}


def test_ring_typed_ptv_is_not_a_target(breast_dir, tmp_path):
    """An SBRT ring 'D2CM PTV' typed PTV gets neither the target role nor the plan's prescription."""
    import pydicom
    import shutil

    folder = tmp_path / "b"
    shutil.copytree(breast_dir, folder)
    ds = pydicom.dcmread(folder / "rtss.dcm")
    roi = next(r for r in ds.StructureSetROISequence if r.ROIName == "Tumor Bed Block")
    roi.ROIName = "D2CM PTV"
    obs = next(o for o in ds.RTROIObservationsSequence if o.ReferencedROINumber == roi.ROINumber)
    obs.RTROIInterpretedType = "PTV"
    ds.save_as(folder / "rtss.dcm")
    s = read_case(folder).structures["D2CM PTV"]
    assert s.role.value == "other" and s.prescription_gy is None
