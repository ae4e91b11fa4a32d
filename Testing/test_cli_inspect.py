"""`addiffdose inspect` on the real data sets (text and JSON; OpenKBP, pyRadPlan, both DICOM sets; the written
head-and-neck DICOM study is inspected in test_cli_convert.py), and the console script."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ADDiffDoseLib.cli.main as cli_main


def _run(capsys, *argv):
    code = cli_main.main(["inspect", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_text_output_openkbp(capsys, openkbp_npz):
    code, out, _ = _run(capsys, openkbp_npz)
    assert code == 0
    assert "NOT FOR CLINICAL USE" in out
    assert "128 x 128 x 128 voxels" in out and "patient position HFS" in out
    assert "Parotid_L" in out and "LeftParotid" in out
    assert "fractions 35" in out and "9 beam(s) IMRT" in out
    assert "isocenter (LPS mm)" in out and "dose: max" in out


def test_json_output_pyradplan(capsys, pyradplan_dir):
    code, out, _ = _run(capsys, pyradplan_dir / "train" / "pt_11_0.npz", "--json")
    assert code == 0
    s = json.loads(out)
    assert s["plan"]["source"] == "pyradplan" and len(s["plan"]["beams"]) == 7
    assert s["plan"]["beams"][0]["gantry_deg"] == pytest.approx(7.2)
    assert s["plan"]["isocenter_from"] == "plan"
    targets = {x["name"]: x["prescription_gy"] for x in s["structures"] if x["role"] == "target"}
    assert targets == {"PTV70": 70.0, "PTV56": 56.0}
    assert s["dose"]["max_gy"] > 70 and s["warnings"] == []


@pytest.mark.parametrize("sub", ["openkbp/train", "openkbp/validation", "openkbp-pyradplan/train",
                                 "openkbp-pyradplan/validation"])
def test_every_data_file_inspects(capsys, data_dir, sub):
    """Each folder lists every case without error (every npz file of the shared data sets is read)."""
    code, out, err = _run(capsys, data_dir / sub, "--json")
    assert code == 0, err
    listing = json.loads(out)
    files = sorted((data_dir / sub).glob("*.npz"))
    assert len(listing["cases"]) == len(files) > 0
    assert all("error" not in r for r in listing["cases"])


def test_missing_target_only_warns(capsys, openkbp_npz, tmp_path):
    from ADDiffDoseLib.io.case_npz import write_case_npz
    from ADDiffDoseLib.io.openkbp import read_openkbp_npz

    c = read_openkbp_npz(openkbp_npz)
    c = c.replace(structures={k: s for k, s in c.structures.items() if s.role.value != "target"})
    write_case_npz(tmp_path / "c.npz", c)
    code, out, _ = _run(capsys, tmp_path / "c.npz")
    assert code == 0 and "no target structure" in out and "isocenter: unknown" in out


def test_errors_are_one_line_exit_2(capsys, tmp_path):
    code, _, err = _run(capsys, tmp_path / "nothing.npz")
    assert code == 2 and err.startswith("error E101")
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = _run(capsys, tmp_path / "notes.txt")
    assert code == 2 and "E102" in err


def test_mapping_option(capsys, tmp_path, openkbp_npz):
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"PTV_High": "PTV_70"}))
    code, out, _ = _run(capsys, openkbp_npz, "--mapping", mapping, "--json")
    assert code == 0 and json.loads(out)["name"] == "pt_201"


def test_console_script(openkbp_npz):
    """The installed `addiffdose` entry point runs inspect in a fresh process."""
    exe = shutil.which("addiffdose") or str(Path(sys.executable).parent / "addiffdose")
    r = subprocess.run([exe, "inspect", str(openkbp_npz), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "pt_201"


@pytest.mark.parametrize("which", ["breast", "tg119"])
def test_inspect_dicom_sets(capsys, which, breast_dir, tg119_dir):
    path = {"breast": breast_dir, "tg119": tg119_dir}[which]
    code, out, err = _run(capsys, path, "--json")
    assert code == 0, err
    s = json.loads(out)
    if which == "breast":  # facts recorded in dicom-rt/README.md
        assert s["grid"]["shape"] == [98, 129, 194] and s["dose"]["max_gy"] == pytest.approx(14.68, abs=0.01)
        assert [round(b["gantry_deg"]) for b in s["plan"]["beams"]] == [327, 0, 56, 150]
        assert s["plan"]["fractions"] == 7 and any("Areola" in w for w in s["warnings"])
    else:
        assert s["grid"]["shape"] == [129, 167, 167] and s["dose"] is None
        assert {"Core", "OuterTarget"} <= {x["name"] for x in s["structures"]}
    code, out, _ = _run(capsys, path)  # text form
    assert code == 0 and "NOT FOR CLINICAL USE" in out

