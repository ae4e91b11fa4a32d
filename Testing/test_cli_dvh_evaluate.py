"""`addiffdose dvh` and `addiffdose evaluate` on real OpenKBP and pyRadPlan files."""

import argparse
import csv
import json
import shutil

import numpy as np
import pytest

from ADDiffDoseLib.cli import dvh, evaluate
from ADDiffDoseLib.errors import ADDiffDoseError, ErrorCode
from ADDiffDoseLib.io.openkbp import read_openkbp_npz


def _run(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    dvh.register(sub)
    evaluate.register(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_dvh_openkbp_json_csv(openkbp_npz, tmp_path, capsys):
    assert _run(["dvh", "--dose", openkbp_npz, "--json", tmp_path / "d.json", "--csv", tmp_path / "d.csv"]) == 0
    out = capsys.readouterr().out
    assert "PTV70" in out and "NOT FOR CLINICAL USE" in out
    doc = json.loads((tmp_path / "d.json").read_text())
    case = read_openkbp_npz(openkbp_npz)
    rows = {r["structure"]: r for r in doc["rows"]}
    assert rows["SpinalCord"]["max_gy"] == pytest.approx(float(case.dose_gy[case.structures["SpinalCord"].mask].max()))
    assert doc["curves"]["PTV70"]["volume_pct"][0] == 100
    lines = (tmp_path / "d.csv").read_text().splitlines()
    assert lines[0].startswith("#") and len(list(csv.DictReader(lines[1:]))) == len(rows)
    with pytest.raises(ADDiffDoseError) as err:  # no overwrite
        _run(["dvh", "--dose", openkbp_npz, "--json", tmp_path / "d.json"])
    assert err.value.code == ErrorCode.OUTPUT_EXISTS
    assert _run(["dvh", "--dose", openkbp_npz, "--json", tmp_path / "d.json", "--slicerrt", "--overwrite"]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["mode"] == "slicerrt"


def test_dvh_prediction_file_with_structures(openkbp_npz, tmp_path):
    case = read_openkbp_npz(openkbp_npz)
    np.savez(tmp_path / "pred.npz", dose=np.full(case.grid.shape, 3.0, np.float32))
    assert _run(["dvh", "--dose", tmp_path / "pred.npz", "--structures", openkbp_npz, "--json", tmp_path / "o.json"]) == 0
    rows = json.loads((tmp_path / "o.json").read_text())["rows"]
    assert all(r["mean_gy"] == pytest.approx(3.0) for r in rows)
    np.savez(tmp_path / "bad.npz", dose=np.zeros((10, 10, 10), np.float32))
    with pytest.raises(ADDiffDoseError) as err:
        _run(["dvh", "--dose", tmp_path / "bad.npz", "--structures", openkbp_npz])
    assert err.value.code == ErrorCode.GRID_MISMATCH


def test_evaluate_pyradplan_vs_clinical(pyradplan_dir, data_dir, tmp_path, capsys):
    plan = sorted((pyradplan_dir / "validation").glob("*.npz"))[0]
    ref = data_dir / "openkbp" / "validation" / (plan.stem.rsplit("_", 1)[0] + ".npz")
    assert _run(["evaluate", "--pred", plan, "--ref", ref, "--json", tmp_path / "e.json", "--report",
                 tmp_path / "r.html", "--no-gamma", "--data-root", data_dir]) == 0
    doc = json.loads((tmp_path / "e.json").read_text())
    m = doc["cases"][ref.stem]
    assert 1 < m["dose_score"] < 30 and 0 < m["dice"] < 1 and "gamma_3mm3pct" not in m
    assert (tmp_path / "r.html").read_text().count("data:image/png;base64,") == 2
    assert "dose_score" in capsys.readouterr().out


def test_evaluate_folders_of_predictions(openkbp_validation, tmp_path):
    refs, preds = tmp_path / "ref", tmp_path / "pred"
    refs.mkdir()
    preds.mkdir()
    for name in ("pt_201", "pt_204"):
        shutil.copy(openkbp_validation / f"{name}.npz", refs / f"{name}.npz")
        case = read_openkbp_npz(refs / f"{name}.npz")
        np.savez_compressed(preds / f"{name}.npz", dose=(case.dose_gy + 1.0) * case.body_mask)
    assert _run(["evaluate", "--pred", preds, "--ref", refs, "--json", tmp_path / "e.json"]) == 0
    doc = json.loads((tmp_path / "e.json").read_text())
    assert set(doc["cases"]) == {"pt_201", "pt_204"}
    assert doc["mean"]["dose_score"] == pytest.approx(1.0, abs=1e-6)
    assert doc["mean"]["gamma_3mm3pct"] == pytest.approx(100.0)
    assert "NOT FOR CLINICAL USE" in doc["note"]
