"""The model commands end to end through `addiffdose` (ADDiffDoseLib.cli.main.main): predict (npz, nrrd, RT Dose,
beam overrides, folders), models (list, import, verify), benchmark and demo, on real OpenKBP cases with
models from a manifest written in tmp."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import torch

from ADDiffDoseLib.cli.main import main
from ADDiffDoseLib.io.case_npz import read_dose_npz
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.unet import UNet3D, UNetConfig
from ADDiffDoseLib.model.weights import load_model, save_checkpoint
from model_helpers import tiny_diffusion_model, use_models_folder, write_heuristic_manifest


@pytest.fixture
def models(tmp_path, monkeypatch):
    """Bundled models = a tmp folder with the heuristic (default); user home in tmp."""
    bundled = write_heuristic_manifest(tmp_path / "bundled")
    use_models_folder(monkeypatch, bundled, tmp_path / "home")
    return bundled


@pytest.fixture(scope="module")
def diffusion_path(tmp_path_factory):
    """A beam-sensitive (random-weight) model file: the heuristic ignores the beams."""
    return save_checkpoint(tiny_diffusion_model(), tmp_path_factory.mktemp("diffusion") / "tiny")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_npz_with_samples(models, openkbp_npz, tmp_path, capsys):
    out = tmp_path / "dose.npz"
    code, stdout, _ = _run(capsys, "predict", openkbp_npz, "-o", out, "--model", "heuristic", "--device", "cpu")
    assert code == 0 and "NOT FOR CLINICAL USE" in stdout
    dose, grid, extra, meta = read_dose_npz(out)
    case = read_openkbp_npz(openkbp_npz)
    assert dose.shape == case.grid.shape and grid.same_as(case.grid)
    assert not dose[~case.body_mask].any() and dose.max() == pytest.approx(70.0, abs=0.5)
    assert "dose_std" not in extra and meta["model"] == "heuristic"
    out2 = tmp_path / "dose2.npz"
    assert _run(capsys, "predict", openkbp_npz, "-o", out2, "--model", "heuristic", "--samples", "2")[0] == 0
    _, _, extra2, meta2 = read_dose_npz(out2)
    assert extra2["dose_std"].shape == case.grid.shape and meta2["samples"] == 2


def test_predict_nrrd_and_rtdose(models, openkbp_npz, tmp_path, capsys):
    import nrrd
    import pydicom

    case = read_openkbp_npz(openkbp_npz)
    assert _run(capsys, "predict", openkbp_npz, "-o", tmp_path / "d.nrrd", "--model", "heuristic")[0] == 0
    data, header = nrrd.read(str(tmp_path / "d.nrrd"))
    assert data.size == np.prod(case.grid.shape)
    assert any("NOT FOR CLINICAL USE" in str(v) for v in header.values())
    from ADDiffDoseLib.io.nrrd import read_volume
    from nrrd_helpers import assert_itk_volume

    assert assert_itk_volume(tmp_path / "d.nrrd", read_volume(tmp_path / "d.nrrd")[0], case.grid)["ADDiffDose_DoseUnit"] == "Gy"
    assert _run(capsys, "predict", openkbp_npz, "-o", tmp_path / "d.dcm", "--model", "heuristic")[0] == 0
    ds = pydicom.dcmread(tmp_path / "d.dcm")
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY"
    assert "NOT FOR CLINICAL USE" in str(ds.get("DoseComment", "")) + str(ds.get("ImageComments", ""))
    dose = ds.pixel_array * float(ds.DoseGridScaling)
    assert dose.max() == pytest.approx(70.0, abs=0.5)


def test_predict_refuses_to_overwrite(models, openkbp_npz, tmp_path, capsys, monkeypatch):
    from ADDiffDoseLib.model import predict

    out = tmp_path / "dose.npz"
    out.write_bytes(b"keep me")
    with monkeypatch.context() as m:  # refused before predicting, not after
        m.setattr(predict, "predict_case", lambda *a, **k: pytest.fail("predicted before refusing"))
        code, _, err = _run(capsys, "predict", openkbp_npz, "-o", out, "--model", "heuristic")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error E301") and "Traceback" not in err
    assert out.read_bytes() == b"keep me"
    assert _run(capsys, "predict", openkbp_npz, "-o", out, "--model", "heuristic", "--overwrite")[0] == 0
    assert zipfile.is_zipfile(out)


def test_gantry_override_changes_the_dose(openkbp_npz, diffusion_path, tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert _run(capsys, "predict", openkbp_npz, "-o", a, "--model", diffusion_path)[0] == 0
    assert _run(capsys, "predict", openkbp_npz, "-o", b, "--model", diffusion_path, "--gantry", "0,120,240")[0] == 0
    da, _, _, meta_a = read_dose_npz(a)
    db, _, _, meta_b = read_dose_npz(b)
    assert len(meta_a["beams"]) == 9 and [x["gantry_deg"] for x in meta_b["beams"]] == [0, 120, 240]
    assert np.abs(da - db).max() > 0.1


def test_no_coverage_prior_flag(openkbp_npz, tmp_path, capsys):
    torch.manual_seed(0)
    net = UNet3D(UNetConfig(widths=(4, 8, 16), resolution_factor=2, coverage_strength=1.0)).eval()
    path = save_checkpoint(net, tmp_path / "covered")
    on, off = tmp_path / "on.npz", tmp_path / "off.npz"
    assert _run(capsys, "predict", openkbp_npz, "-o", on, "--model", path, "--device", "cpu")[0] == 0
    assert _run(capsys, "predict", openkbp_npz, "-o", off, "--model", path, "--device", "cpu", "--no-coverage-prior")[0] == 0
    d_on, _, _, meta_on = read_dose_npz(on)
    d_off, _, _, meta_off = read_dose_npz(off)
    ptv70 = read_openkbp_npz(openkbp_npz).structures["PTV70"].mask
    assert meta_on["coverage_prior"] == {"level": 1.0, "strength": 1.0} and meta_off["coverage_prior"] is None
    assert d_on[ptv70].min() >= 70.0 - 0.01 > d_off[ptv70].min()  # random weights: far below Rx without it
    targets = read_openkbp_npz(openkbp_npz).target_prescription_map() > 0
    np.testing.assert_array_equal(d_on[~targets], d_off[~targets])  # only target voxels move


def test_no_oar_prior_flag(openkbp_npz, tmp_path, capsys):
    torch.manual_seed(0)
    net = UNet3D(UNetConfig(widths=(4, 8, 16), resolution_factor=2, oar_scales={"SpinalCord": 0.8})).eval()
    path = save_checkpoint(net, tmp_path / "scaled")
    on, off = tmp_path / "on.npz", tmp_path / "off.npz"
    assert _run(capsys, "predict", openkbp_npz, "-o", on, "--model", path, "--device", "cpu")[0] == 0
    assert _run(capsys, "predict", openkbp_npz, "-o", off, "--model", path, "--device", "cpu", "--no-oar-prior")[0] == 0
    d_on, _, _, meta_on = read_dose_npz(on)
    d_off, _, _, meta_off = read_dose_npz(off)
    assert meta_on["oar_prior"] == {"SpinalCord": 0.8} and meta_off["oar_prior"] is None
    case = read_openkbp_npz(openkbp_npz)
    cord = case.structures["SpinalCord"].mask & ~(case.target_prescription_map() > 0)
    np.testing.assert_allclose(d_on[cord], 0.8 * d_off[cord], atol=1e-3)
    np.testing.assert_array_equal(d_on[~cord], d_off[~cord])


def _no_target_copy(src, dst):
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files if not k.startswith("mask_PTV")}
    np.savez(dst, **arrays)


def test_predict_folder_skips_existing_and_reports_bad_cases(models, openkbp_validation, tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("pt_201.npz", "pt_203.npz"):
        shutil.copy(openkbp_validation / name, cases / name)
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, "predict", cases, "-o", out, "--model", "heuristic")
    assert code == 0 and "2 of 2" in stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == ["pt_201.npz", "pt_203.npz"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, stdout, _ = _run(capsys, "predict", cases, "-o", out, "--model", "heuristic")
    assert code == 0 and stdout.count("skip pt_") == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    # a case without targets and a damaged file: both reported, the new good case still written, exit 1
    _no_target_copy(openkbp_validation / "pt_204.npz", cases / "pt_300.npz")
    (cases / "pt_301.npz").write_bytes(b"PK\x03\x04 damaged")
    shutil.copy(openkbp_validation / "pt_202.npz", cases / "pt_202.npz")
    code, stdout, err = _run(capsys, "predict", cases, "-o", out, "--model", "heuristic")
    assert code == 1
    text = stdout + err
    assert "error pt_300: E203" in text
    assert "error pt_301: E103" in text
    assert "3 of 5 cases" in text
    assert sorted(p.name for p in out.iterdir()) == ["pt_201.npz", "pt_202.npz", "pt_203.npz"]


def test_models_list_import_verify(models, tmp_path, capsys):
    code, out, _ = _run(capsys, "models", "list")
    assert code == 0 and "heuristic" in out and "*" in out
    net = UNet3D(UNetConfig(widths=(4, 8, 16)))
    src = save_checkpoint(net, tmp_path / "src" / "tiny_unet")
    code, out, _ = _run(capsys, "models", "import", src, "--name", "tiny")
    assert code == 0 and "imported tiny" in out
    loaded, entry = load_model("tiny")
    assert entry.name == "tiny" and entry.sha256 and loaded.family == "unet"
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    listed = json.loads(_run(capsys, "models", "list", "--json")[1])
    assert {e["name"] for e in listed} == {"heuristic", "tiny"}
    code, out, _ = _run(capsys, "models", "verify", "tiny")
    assert code == 0 and "OK" in out
    # altered file: SHA-256 mismatch
    stored = entry.weights_path
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF
    stored.write_bytes(bytes(data))
    code, _, err = _run(capsys, "models", "verify", "tiny")
    assert code == 2 and err.startswith("error E403") and "Traceback" not in err
    # pickled checkpoints are refused
    pickled = tmp_path / "model.pt"
    torch.save(net.state_dict(), pickled)
    code, _, err = _run(capsys, "models", "import", pickled, "--name", "bad")
    assert code == 2 and err.startswith("error E105")
    disguised = tmp_path / "disguised.safetensors"
    shutil.copy(pickled, disguised)
    shutil.copy(src.with_suffix(".json"), disguised.with_suffix(".json"))
    code, _, err = _run(capsys, "models", "import", disguised, "--name", "bad")
    assert code == 2 and err.startswith("error E")
    assert "bad" not in _run(capsys, "models", "list")[1]


def test_benchmark_heuristic_on_a_small_data_root(models, data_dir, tmp_path, capsys):
    root = tmp_path / "data"
    (root / "openkbp" / "validation").mkdir(parents=True)
    (root / "openkbp-pyradplan" / "validation").mkdir(parents=True)
    shutil.copy(data_dir / "openkbp" / "validation" / "pt_201.npz", root / "openkbp" / "validation")
    plan = sorted((data_dir / "openkbp-pyradplan" / "validation").glob("pt_*_*.npz"))[0]
    with np.load(plan) as f:
        source = str(f["source"])
    assert source.startswith("openkbp/validation/")  # relative to the data root
    shutil.copy(plan, root / "openkbp-pyradplan" / "validation")
    shutil.copy(data_dir / source, root / source)
    out = tmp_path / "bench.json"
    code, stdout, _ = _run(capsys, "benchmark", "--data", root, "--models", "heuristic", "--limit", "1",
                           "--no-gamma", "--json", out, "--device", "cpu")
    assert code == 0
    assert "heuristic" in stdout and "dose" in stdout and "beam sensitivity heuristic" in stdout
    result = json.loads(out.read_text())
    assert result["cases"] == ["pt_201"]
    means = result["summary"]["means"]["heuristic"]
    assert 0 < means["dose_score"] < 20
    bs = result["beam_sensitivity"]["heuristic"]
    assert bs["plans"] == 1
    # the heuristic ignores the beams: rotating them changes nothing
    assert bs["mae_true_beams"] == pytest.approx(bs["mae_rotated_beams"]) and bs["mae_true_beams"] > 0


def test_demo_writes_dose_rtdose_report_and_prints_errors(models, openkbp_npz, tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, _ = _run(capsys, "demo", "--out", out, "--model", models / "heuristic.json", "--samples", "1",
                           "--input", openkbp_npz, "--device", "cpu")
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["pt_201_RTDOSE.dcm", "pt_201_RTDOSE_rtplan.dcm", "pt_201_dose.nrrd", "pt_201_report.html"]
    assert "OpenKBP dose score" in stdout and "D95" in stdout and "NOT FOR CLINICAL USE" in stdout
    assert "PTV70 D95 predicted 70.0 Gy" in stdout
    code, _, err = _run(capsys, "demo", "--out", out, "--model", models / "heuristic.json", "--samples", "1",
                        "--input", openkbp_npz)
    assert code == 2 and err.startswith("error E301")


def test_predict_without_ct_refused_unless_allowed(models, breast_dir, tmp_path, capsys):
    """The breast study has one CT slice, so no usable CT series: predict refuses in one line; with
    --allow-missing-ct it runs and says so once on stderr and in the output's header."""
    import nrrd

    code, out, err = _run(capsys, "predict", breast_dir, "-o", tmp_path / "d.nrrd", "--model", "heuristic")
    assert code == 2 and not (tmp_path / "d.nrrd").exists()
    assert len(err.strip().splitlines()) == 1 and err.startswith("error E104 ") and "--allow-missing-ct" in err
    code, out, err = _run(capsys, "predict", breast_dir, "-o", tmp_path / "d.nrrd", "--model", "heuristic",
                          "--allow-missing-ct")
    assert code == 0, err
    assert err.count("no CT: predicted with air") == 1 and err.count("warning:") == len(set(err.splitlines()))
    _, header = nrrd.read(str(tmp_path / "d.nrrd"))
    assert header["ADDiffDose_warnings"].count("no CT: predicted with air") == 1


def _report_images(text: str) -> int:
    """Number of embedded PNGs, each checked to decode as a non-blank image of a sensible size."""
    import base64
    import io
    import re

    import matplotlib.image as mpimg

    srcs = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', text)
    for s in srcs:
        img = mpimg.imread(io.BytesIO(base64.b64decode(s, validate=True)), format="png")
        assert img.ndim == 3 and 300 <= img.shape[0] <= 2000 and 300 <= img.shape[1] <= 2000, img.shape
        assert img[..., :3].std() > 0.05
    return len(srcs)


def test_predict_report_with_the_inputs_dose_as_reference(models, openkbp_npz, openkbp_validation, tmp_path, capsys):
    """--report: the images decode, the input's clinical dose is the reference (difference, gamma), the overridden
    beams fill the beam table, bands and intervals when sampled; a folder of cases is refused in one line."""
    report = tmp_path / "r.html"
    code, out, err = _run(capsys, "predict", openkbp_npz, "-o", tmp_path / "d.nrrd", "--model", "heuristic",
                          "--gantry", "10,130,250", "--couch", "5", "--samples", "2", "--report", report,
                          "--device", "cpu")
    assert code == 0, err
    assert str(report) in out
    text = report.read_text()
    assert _report_images(text) == 4  # dose, difference, gamma, DVH
    assert "<h3>Dose difference (prediction - reference)</h3>" in text and "<h3>Gamma 3 %/3 mm</h3>" in text
    assert "<caption>Beams of the prediction</caption>" in text
    assert "<tr><td>3</td><td>250.0</td><td>5.0</td><td>0.0</td><td>6 MV</td><td>IMRT</td></tr>" in text
    assert "<tr><td>4</td>" not in text[text.index("<h3>Beams</h3>"):]  # not the input's 9 beams
    assert "90 % interval low" in text and "Reference in interval" in text and "band shaded" in text
    code, out, err = _run(capsys, "predict", openkbp_validation, "-o", tmp_path / "out", "--report", report,
                          "--model", "heuristic", "--overwrite")
    assert code == 2 and not (tmp_path / "out").exists()
    assert len(err.strip().splitlines()) == 1 and err.startswith("error E106 ")
    assert "--report needs a single case" in err


def test_predict_and_demo_report_without_reference(models, openkbp_npz, tmp_path, capsys):
    """An input without a dose: predict --report and demo still write the report, of the prediction alone."""
    with np.load(openkbp_npz) as f:
        arrays = {k: f[k] for k in f.files if k != "dose"}
    case_path = tmp_path / "pt_201.npz"
    np.savez_compressed(case_path, **arrays)
    assert read_openkbp_npz(case_path).dose_gy is None
    report = tmp_path / "r.html"
    code, _, err = _run(capsys, "predict", case_path, "-o", tmp_path / "d.npz", "--model", "heuristic",
                        "--report", report, "--device", "cpu")
    assert code == 0, err
    text = report.read_text()
    assert _report_images(text) == 2  # dose, DVH
    assert "No reference dose" in text and "<h3>Gamma 3 %/3 mm</h3>" not in text and "Dose difference" not in text
    out = tmp_path / "demo"
    code, stdout, err = _run(capsys, "demo", "--out", out, "--model", models / "heuristic.json", "--samples", "1",
                             "--input", case_path, "--device", "cpu")
    assert code == 0, err
    assert (out / "pt_201_report.html").is_file() and "wrote report (HTML)" in stdout
    assert "No reference dose" in (out / "pt_201_report.html").read_text()


def test_evaluate_report_shows_the_beams_of_the_prediction(models, openkbp_npz, tmp_path, capsys):
    """evaluate --report on our dose npz: the beam table lists the beams it was predicted for (npz metadata),
    not the reference plan's."""
    pred = tmp_path / "d.npz"
    assert _run(capsys, "predict", openkbp_npz, "-o", pred, "--model", "heuristic", "--gantry", "20,200",
                "--device", "cpu")[0] == 0
    code, _, err = _run(capsys, "evaluate", "--pred", pred, "--ref", openkbp_npz, "--report", tmp_path / "r.html",
                        "--no-gamma")
    assert code == 0, err
    text = (tmp_path / "r.html").read_text()
    beams = text[text.index("<h3>Beams</h3>"):text.index("<h3>Dose constraints</h3>")]
    assert "<caption>Beams of the prediction</caption>" in beams and beams.count("<tr><td>") == 2
    assert "<tr><td>2</td><td>200.0</td>" in beams
