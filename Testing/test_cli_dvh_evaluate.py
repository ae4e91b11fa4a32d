"""`addiffdose dvh` and `addiffdose evaluate` through the real entry point (cli.main.main) on every data set in
../shared/data: OpenKBP, pyRadPlan plans, the DICOM breast plan (RTDOSE + RTSTRUCT), TG-119 (no dose: one clear
error line) and an NRRD case written with our writers."""

import csv
import json
import shutil

import numpy as np
import pytest

from ADDiffDoseLib.cli.main import main
from ADDiffDoseLib.io.nrrd import write_dose_nrrd, write_segmentation_nrrd, write_volume_nrrd
from ADDiffDoseLib.io.openkbp import read_openkbp_npz


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(err: str, code: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error {code}") and "Traceback" not in err, err


def test_dvh_openkbp_json_csv(openkbp_npz, tmp_path, capsys):
    code, out, _ = _run(capsys, "dvh", "--dose", openkbp_npz, "--json", tmp_path / "d.json",
                        "--csv", tmp_path / "d.csv")
    assert code == 0 and "PTV70" in out and "NOT FOR CLINICAL USE" in out
    doc = json.loads((tmp_path / "d.json").read_text())
    case = read_openkbp_npz(openkbp_npz)
    rows = {r["normalized_name"]: r for r in doc["rows"]}
    assert rows["SpinalCord"]["max_gy"] == pytest.approx(float(case.dose_gy[case.structures["SpinalCord"].mask].max()))
    assert doc["curves"]["PTV70"]["volume_pct"][0] == 100
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert lines[0].startswith("#") and len(list(csv.DictReader(lines[1:]))) == len(rows)
    code, _, err = _run(capsys, "dvh", "--dose", openkbp_npz, "--json", tmp_path / "d.json")  # no --overwrite
    assert code == 2
    _one_error_line(err, "E301")
    assert _run(capsys, "dvh", "--dose", openkbp_npz, "--json", tmp_path / "d.json", "--slicerrt",
                "--overwrite")[0] == 0
    assert json.loads((tmp_path / "d.json").read_text())["mode"] == "slicerrt"


def test_dvh_prediction_file_with_structures(openkbp_npz, tmp_path, capsys):
    case = read_openkbp_npz(openkbp_npz)
    np.savez(tmp_path / "pred.npz", dose=np.full(case.grid.shape, 3.0, np.float32))
    assert _run(capsys, "dvh", "--dose", tmp_path / "pred.npz", "--structures", openkbp_npz,
                "--json", tmp_path / "o.json")[0] == 0
    rows = json.loads((tmp_path / "o.json").read_text())["rows"]
    assert all(r["mean_gy"] == pytest.approx(3.0) for r in rows)
    np.savez(tmp_path / "bad.npz", dose=np.zeros((10, 10, 10), np.float32))
    code, _, err = _run(capsys, "dvh", "--dose", tmp_path / "bad.npz", "--structures", openkbp_npz)
    assert code == 2
    _one_error_line(err, "E202")
    code, _, err = _run(capsys, "dvh", "--dose", tmp_path / "missing.npz")
    assert code == 2
    _one_error_line(err, "E101")


def test_dvh_pyradplan_plan(pyradplan_dir, data_dir, tmp_path, capsys):
    plan = pyradplan_dir / "validation" / "pt_204_0.npz"
    code, out, _ = _run(capsys, "dvh", "--dose", plan, "--data-root", data_dir, "--json", tmp_path / "p.json")
    assert code == 0 and "PTV70" in out
    rows = {r["normalized_name"]: r for r in json.loads((tmp_path / "p.json").read_text())["rows"]}
    # the plans are scaled so that the highest target's D95 is its prescription (data README)
    assert rows["PTV70"]["d95pct_gy"] == pytest.approx(70.0, abs=0.3)


def test_dvh_dicom_breast_rtdose_with_lone_rtstruct(breast_dir, tmp_path, capsys):
    """A lone RTSTRUCT is rasterized on the RTDOSE grid; the numbers equal those of the whole study folder."""
    code, out, err = _run(capsys, "dvh", "--dose", breast_dir / "rtdose.dcm", "--structures", breast_dir / "rtss.dcm",
                          "--json", tmp_path / "files.json")
    assert code == 0 and "Lung_L" in out, err
    code, _, _ = _run(capsys, "dvh", "--dose", breast_dir, "--json", tmp_path / "folder.json")
    assert code == 0
    files = {r["normalized_name"]: r for r in json.loads((tmp_path / "files.json").read_text())["rows"]}
    folder = {r["normalized_name"]: r for r in json.loads((tmp_path / "folder.json").read_text())["rows"]}
    assert set(files) == set(folder) and "Areola" not in files  # no contours: a warning, not a row
    for name in files:
        for key in ("volume_cc", "mean_gy", "max_gy", "d95pct_gy"):
            assert files[name][key] == pytest.approx(folder[name][key], rel=1e-6, abs=1e-6), (name, key)
    assert max(r["max_gy"] for r in files.values()) == pytest.approx(14.68, abs=0.01)  # recorded RTDOSE max
    assert 300 < files["Lung_L"]["volume_cc"] < 5000


def test_dvh_and_evaluate_tg119_without_dose_fail_cleanly(tg119_dir, capsys):
    for argv in (("dvh", "--dose", tg119_dir),
                 ("dvh", "--dose", tg119_dir / "ct", "--structures", tg119_dir / "rtss.dcm"),
                 ("evaluate", "--pred", tg119_dir, "--ref", tg119_dir, "--no-gamma")):
        code, _, err = _run(capsys, *argv)
        assert code == 2
        _one_error_line(err, "E104")
        assert "no dose" in err


def test_dvh_rtstruct_of_another_frame_is_refused(breast_dir, tg119_dir, capsys):
    code, _, err = _run(capsys, "dvh", "--dose", breast_dir / "rtdose.dcm", "--structures", tg119_dir / "rtss.dcm")
    assert code == 2
    _one_error_line(err, "E206")


@pytest.fixture(scope="module")
def nrrd_case(openkbp_npz, tmp_path_factory):
    """The OpenKBP case as ct.nrrd + segmentation.seg.nrrd + dose.nrrd, written with our writers."""
    case = read_openkbp_npz(openkbp_npz)
    folder = tmp_path_factory.mktemp("nrrd") / "pt_201"
    folder.mkdir()
    write_volume_nrrd(folder / "ct.nrrd", case.ct_hu, case.grid)
    write_segmentation_nrrd(folder / "segmentation.seg.nrrd", case)
    write_dose_nrrd(folder / "dose.nrrd", case.dose_gy, case.grid, {"model": "reference-copy", "seed": 3})
    return case, folder


def test_dvh_nrrd_folder_and_files(nrrd_case, openkbp_npz, tmp_path, capsys):
    case, folder = nrrd_case
    assert _run(capsys, "dvh", "--dose", openkbp_npz, "--json", tmp_path / "kbp.json")[0] == 0
    assert _run(capsys, "dvh", "--dose", folder, "--json", tmp_path / "folder.json")[0] == 0
    assert _run(capsys, "dvh", "--dose", folder / "dose.nrrd", "--structures", folder / "segmentation.seg.nrrd",
                "--json", tmp_path / "files.json")[0] == 0
    kbp = {r["normalized_name"]: r for r in json.loads((tmp_path / "kbp.json").read_text())["rows"]}
    for out in ("folder.json", "files.json"):
        rows = {r["normalized_name"]: r for r in json.loads((tmp_path / out).read_text())["rows"]}
        for name in ("PTV70", "SpinalCord", "Brainstem"):
            for key in ("volume_cc", "mean_gy", "max_gy"):
                assert rows[name][key] == pytest.approx(kbp[name][key], rel=1e-4), (out, name, key)
    code, _, err = _run(capsys, "dvh", "--dose", folder / "dose.nrrd")  # a dose volume alone has no structures
    assert code == 2
    _one_error_line(err, "E104")


def test_evaluate_nrrd_dose_against_its_case(nrrd_case, tmp_path, capsys):
    case, folder = nrrd_case
    code, _, _ = _run(capsys, "evaluate", "--pred", folder / "dose.nrrd", "--ref", folder, "--no-gamma",
                      "--json", tmp_path / "e.json")
    assert code == 0
    m = json.loads((tmp_path / "e.json").read_text())["cases"]["pt_201"]
    assert m["mae_body"] == pytest.approx(0.0, abs=1e-4) and m["dice"] == pytest.approx(1.0)
    assert m["provenance"]["model"] == "reference-copy" and m["provenance"]["seed"] == "3"


def test_evaluate_dicom_rtdose_against_breast_study(breast_dir, tmp_path, capsys):
    code, out, _ = _run(capsys, "evaluate", "--pred", breast_dir / "rtdose.dcm", "--ref", breast_dir, "--no-gamma",
                        "--json", tmp_path / "e.json")
    assert code == 0 and "breast" in out
    m = json.loads((tmp_path / "e.json").read_text())["cases"]["breast"]
    assert m["mae_body"] == pytest.approx(0.0, abs=1e-6) and m["prescription_gy"] == pytest.approx(14.0)
    assert any(w.startswith("structure 'Nodes' is 0.66 cc (< 1 cc)") for w in m["warnings"])  # DVH consumer warns


def test_evaluate_pyradplan_vs_clinical(pyradplan_dir, data_dir, tmp_path, capsys):
    plan = sorted((pyradplan_dir / "validation").glob("*.npz"))[0]
    ref = data_dir / "openkbp" / "validation" / (plan.stem.rsplit("_", 1)[0] + ".npz")
    code, out, _ = _run(capsys, "evaluate", "--pred", plan, "--ref", ref, "--json", tmp_path / "e.json", "--report",
                        tmp_path / "r.html", "--no-gamma", "--data-root", data_dir)
    assert code == 0 and "dose_score" in out
    m = json.loads((tmp_path / "e.json").read_text())["cases"][ref.stem]
    assert 1 < m["dose_score"] < 30 and 0 < m["dice"] < 1 and "gamma_3mm3pct" not in m
    assert m["provenance"]["beams"].startswith(f"{len(np.load(plan)['gantry_deg'])} x IMRT 6 MV")
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "plan source: pyradplan" in html
    beams = html[html.index("<h3>Beams</h3>"):html.index("<h3>Dose constraints</h3>")]
    assert "<caption>Beams of the prediction</caption>" in beams  # the pyRadPlan plan's beams
    assert beams.count("<tr><td>") == len(np.load(plan)["gantry_deg"])


def test_evaluate_folders_of_predictions(openkbp_validation, tmp_path, capsys):
    refs, preds = tmp_path / "ref", tmp_path / "pred"
    refs.mkdir()
    preds.mkdir()
    for name in ("pt_201", "pt_204"):
        shutil.copy(openkbp_validation / f"{name}.npz", refs / f"{name}.npz")
        case = read_openkbp_npz(refs / f"{name}.npz")
        np.savez_compressed(preds / f"{name}.npz", dose=(case.dose_gy + 1.0) * case.body_mask)
    (preds / "notes.txt").write_text("not a case")
    assert _run(capsys, "evaluate", "--pred", preds, "--ref", refs, "--json", tmp_path / "e.json")[0] == 0
    doc = json.loads((tmp_path / "e.json").read_text())
    assert set(doc["cases"]) == {"pt_201", "pt_204"}
    assert doc["mean"]["dose_score"] == pytest.approx(1.0, abs=1e-6)
    assert doc["mean"]["gamma_3mm3pct"] == pytest.approx(100.0)
    assert "NOT FOR CLINICAL USE" in doc["note"]


def test_evaluate_folders_of_nrrd_doses(nrrd_case, tmp_path, capsys):
    """A folder of dose volumes (<case>.nrrd) against a folder of case folders, matched by name."""
    case, folder = nrrd_case
    refs, preds = tmp_path / "ref", tmp_path / "pred"
    shutil.copytree(folder, refs / "pt_201")
    preds.mkdir()
    write_dose_nrrd(preds / "pt_201.nrrd", case.dose_gy * 1.02, case.grid)
    assert _run(capsys, "evaluate", "--pred", preds, "--ref", refs, "--no-gamma", "--json", tmp_path / "e.json")[0] == 0
    m = json.loads((tmp_path / "e.json").read_text())["cases"]["pt_201"]
    body = case.body_mask
    assert m["mae_body"] == pytest.approx(float(np.mean(0.02 * case.dose_gy[body])), rel=1e-3)


def test_fraction_dose_without_plan_needs_fractions_and_is_flagged_everywhere(breast_dir, tmp_path, capsys):
    """A Pinnacle-like FRACTION dose without its RT Plan: one error line asking for --fractions; with
    --fractions 7 the 103 Gy maximum (no plan, so no prescription: the 100 Gy limit) is a warning on stderr and
    in the JSON, CSV, inspect and HTML report, naming how the dose was scaled."""
    import pydicom

    folder = tmp_path / "pinnacle"
    folder.mkdir()
    ds = pydicom.dcmread(breast_dir / "rtdose.dcm")
    ds.DoseSummationType = "FRACTION"
    ds.save_as(folder / "rtdose.dcm")
    shutil.copy(breast_dir / "rtss.dcm", folder / "rtss.dcm")
    code, _, err = _run(capsys, "dvh", "--dose", folder)
    assert code == 2
    _one_error_line(err, "E104")
    assert "--fractions N" in err
    code, out, err = _run(capsys, "dvh", "--dose", folder, "--fractions", "7", "--json", tmp_path / "d.json",
                          "--csv", tmp_path / "d.csv")
    assert code == 0, err
    expected = ("implausible dose: maximum 102.8 Gy exceeds 100 Gy (no prescription known); "
                "DoseSummationType FRACTION, DoseGridScaling 1.4e-05, x 7 fractions (given)")
    assert f"warning: {expected}" in err.splitlines()
    assert expected in json.loads((tmp_path / "d.json").read_text())["warnings"]
    assert f"# warning: {expected}" in (tmp_path / "d.csv").read_text().splitlines()
    code, out, _ = _run(capsys, "inspect", folder, "--fractions", "7", "--json")
    assert code == 0 and expected in json.loads(out)["warnings"]
    code, _, err = _run(capsys, "evaluate", "--pred", breast_dir / "rtdose.dcm", "--ref", folder, "--fractions", "7",
                        "--no-gamma", "--report", tmp_path / "r.html", "--json", tmp_path / "e.json")
    assert code == 0 and expected in err
    assert expected in json.loads((tmp_path / "e.json").read_text())["cases"]["pinnacle"]["warnings"]
    assert "implausible dose: maximum 102.8 Gy" in (tmp_path / "r.html").read_text()


def _crop_rtdose_columns(src, dst, columns):
    """The RT Dose with only its first `columns` columns (x up to -228.65 + 2.5 (columns - 1) mm)."""
    import pydicom

    ds = pydicom.dcmread(src)
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, :, :columns]).tobytes()
    ds.Columns = columns
    ds.save_as(dst)
    return dst


def test_dvh_warns_for_structures_outside_the_dose_grid_and_small_ones(breast_dir, tmp_path, capsys):
    """The breast dose cut at x = 18.9 mm leaves most of the left lung (patient left = +x) outside: the lone
    RTSTRUCT rasterized on it says how much is inside (of the 2004.7 cc the full grid gives); the sub-cc 'Nodes'
    and 'Scar' get the small-structure warning; on stderr and in the JSON."""
    code, _, err = _run(capsys, "dvh", "--dose", breast_dir, "--json", tmp_path / "full.json")
    assert code == 0 and "partly outside" not in err  # the whole study: every contour inside the dose grid
    small = [w for w in json.loads((tmp_path / "full.json").read_text())["warnings"] if "(< 1 cc)" in w]
    assert {w.split("'")[1] for w in small} == {"Nodes", "Scar"}  # 0.66 and 0.49 cc; Borders is 1.2 cc
    cropped = _crop_rtdose_columns(breast_dir / "rtdose.dcm", tmp_path / "rd.dcm", 100)
    code, out, err = _run(capsys, "dvh", "--dose", cropped, "--structures", breast_dir / "rtss.dcm",
                          "--json", tmp_path / "d.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "d.json").read_text())
    lung = next(r for r in doc["rows"] if r["structure"] == "Lt Lung")
    (w,) = [w for w in doc["warnings"] if w.startswith("structure 'Lt Lung' lies partly outside the dose grid")]
    assert w.endswith(f"{lung['volume_cc']:.1f} of 2004.7 cc inside") and lung["volume_cc"] < 1000
    assert f"warning: {w}" in err
    # the totals are the volumes on the whole dose grid; structures wholly outside (Tumor Bed) say "0.0 of"
    full = {r["structure"]: r["volume_cc"] for r in json.loads((tmp_path / "full.json").read_text())["rows"]}
    totals = {w.split("'")[1]: float(w.split(" of ")[1].split()[0]) for w in doc["warnings"] if "partly outside" in w}
    assert set(totals) == set(full) and all(totals[k] == pytest.approx(full[k], abs=0.05) for k in full)
    assert "structure 'Tumor Bed' lies partly outside the dose grid: 0.0 of 13.1 cc inside" in doc["warnings"]


def test_dvh_warns_when_a_ct_grid_structure_leaves_the_dose_grid(nrrd_case, tmp_path, capsys):
    """Structures on a CT grid, dose on the right half of it (the native DVH resamples the dose): the same
    warning, with the structures named as read (OpenKBP's LeftParotid)."""
    from ADDiffDoseLib.io.nrrd import write_dose_nrrd

    case, folder = nrrd_case
    sub = case.grid.with_shape((128, 64, 128), offset_index=(0, 0, 0))  # axis 1 < 64: the patient's right half
    write_dose_nrrd(tmp_path / "half.nrrd", case.dose_gy[:, :64, :], sub)
    code, _, err = _run(capsys, "dvh", "--dose", tmp_path / "half.nrrd", "--structures", folder, "--json",
                        tmp_path / "d.json")
    assert code == 0, err
    warnings = json.loads((tmp_path / "d.json").read_text())["warnings"]
    cord_cc = case.structures["SpinalCord"].volume_cc(case.grid)
    vcc = case.grid.voxel_volume_cc
    assert (f"structure 'SpinalCord' lies partly outside the dose grid: {43 * vcc:.1f} of {cord_cc:.1f} cc inside "
            "(no dose outside)") in warnings  # 43 of its 282 voxels lie on the right half
    assert any(w.startswith("structure 'LeftParotid' lies partly outside the dose grid: 0.0 of") for w in warnings)
    assert not any("'RightParotid' lies partly outside" in w for w in warnings)  # patient right: axis 1 low side


def test_dvh_and_evaluate_end_cap_half_recorded_everywhere(breast_dir, tmp_path, capsys):
    """--end-cap half (contours on the breast CT): every structure loses half its end slices, the rows, JSON, CSV,
    evaluate JSON and report name the convention; max_gy (point) and d0.03cc_gy are both in the rows."""
    outs = {}
    for cap in ("full", "half"):
        code, out, err = _run(capsys, "dvh", "--dose", breast_dir, "--end-cap", cap, "--json", tmp_path / f"{cap}.json",
                              "--csv", tmp_path / f"{cap}.csv")
        assert code == 0 and "d0.03cc" in out, err
        doc = json.loads((tmp_path / f"{cap}.json").read_text())
        assert doc["end_cap"] == cap and all(r["end_cap"] == cap for r in doc["rows"])
        outs[cap] = {r["normalized_name"]: r for r in doc["rows"]}
        rows = list(csv.DictReader(x for x in (tmp_path / f"{cap}.csv").read_text().splitlines() if x[:1] != "#"))
        assert {r["end_cap"] for r in rows} == {cap} and all(r["d0.03cc_gy"] for r in rows)
    for name, full in outs["full"].items():
        half = outs["half"][name]
        assert half["volume_cc"] < full["volume_cc"] and full["d0.03cc_gy"] <= full["max_gy"]
    code, _, _ = _run(capsys, "evaluate", "--pred", breast_dir / "rtdose.dcm", "--ref", breast_dir, "--no-gamma",
                      "--end-cap", "half", "--json", tmp_path / "e.json", "--report", tmp_path / "r.html")
    assert code == 0
    m = json.loads((tmp_path / "e.json").read_text())["cases"]["breast"]
    assert m["dvh_convention"] == {"mode": "native", "end_cap": "half"} and "d0.03cc_diff_gy" in m["dvh_diff"]["Lung_L"]
    assert "end cap half" in (tmp_path / "r.html").read_text()
