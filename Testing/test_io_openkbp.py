"""OpenKBP readers on the real data: npz, the original CSV layout, orientation in LPS."""

import numpy as np
import pytest

from ADDiffDoseLib.case import Role
from ADDiffDoseLib.errors import ErrorCode, GeometryError, InputError, OutputError
from ADDiffDoseLib.io.openkbp import (load_openkbp_arrays, read_openkbp_csv_folder, read_openkbp_npz,
                                      write_openkbp_csv_folder)


def test_read_npz_pt201(openkbp_npz):
    c = read_openkbp_npz(openkbp_npz)
    raw = np.load(openkbp_npz)
    assert c.name == "pt_201" and c.metadata == {"patient_id": "pt_201", "format": "openkbp-npz",
                                                  "path": str(openkbp_npz)}
    assert c.grid.shape == (128, 128, 128) and c.patient_position == "HFS"
    np.testing.assert_allclose(c.grid.spacing_mm, raw["voxel_dimensions"])
    # CT: stored - 1000 = HU; stored 0 (outside the scan) -> -1000 HU
    np.testing.assert_array_equal(c.ct_hu, raw["ct"].astype(np.float32) - 1000)
    assert c.ct_hu.min() == -1000
    np.testing.assert_allclose(c.dose_gy, raw["dose"] / 100.0, rtol=1e-6)
    assert c.structures["External"].role == Role.EXTERNAL
    assert c.structures["External"].original_name == "possible_dose_mask"
    assert {k: s.prescription_gy for k, s in c.targets.items()} == {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}
    assert c.structures["Parotid_L"].original_name == "LeftParotid"
    assert c.structures["Bone_Mandible"].original_name == "Mandible"
    p = c.plan
    assert [b.gantry_deg for b in p.beams] == [0, 40, 80, 120, 160, 200, 240, 280, 320]
    assert all(b.couch_deg == 0 and b.energy_mv == 6 and b.technique == "IMRT" for b in p.beams)
    assert (p.fractions, p.source, p.site, p.isocenter_lps) == (35, "openkbp-clinical", "head-and-neck", None)
    assert c.problems() == []


def test_fast_loader_matches_case(openkbp_npz):
    a = load_openkbp_arrays(openkbp_npz)
    c = read_openkbp_npz(openkbp_npz)
    assert a["ct"].dtype == np.int16 and a["dose"].dtype == np.float32
    np.testing.assert_array_equal(a["ct"], c.ct_hu)
    np.testing.assert_array_equal(a["masks"]["LeftParotid"], c.structures["Parotid_L"].mask)
    np.testing.assert_array_equal(a["possible_dose_mask"], c.body_mask)


def test_csv_folder_written_in_openkbp_format_agrees_with_npz(openkbp_npz, tmp_path):
    c = read_openkbp_npz(openkbp_npz)
    folder = write_openkbp_csv_folder(c, tmp_path / "pt_201")
    lines = (folder / "ct.csv").read_text().splitlines()
    assert lines[0] == ",data" and len(lines[1].split(",")) == 2
    assert (folder / "Larynx.csv").read_text().splitlines()[1].endswith(",")  # masks: empty value
    assert len((folder / "voxel_dimensions.csv").read_text().split()) == 3
    d = read_openkbp_csv_folder(folder)
    assert d.metadata["format"] == "openkbp-csv" and d.name == "pt_201"
    assert d.grid.same_as(c.grid)
    np.testing.assert_array_equal(d.ct_hu, c.ct_hu)
    np.testing.assert_array_equal(d.dose_gy, c.dose_gy)
    assert d.structures.keys() == c.structures.keys()
    for key, s in c.structures.items():
        np.testing.assert_array_equal(d.structures[key].mask, s.mask)
        assert d.structures[key].original_name == s.original_name
    with pytest.raises(OutputError) as e:
        write_openkbp_csv_folder(c, folder)
    assert e.value.code == ErrorCode.OUTPUT_EXISTS


def _centroid_lps(case, name):
    return case.grid.index_to_lps(np.argwhere(case.structures[name].mask).mean(axis=0))


@pytest.mark.parametrize("patient", ["pt_201", "pt_204", "pt_211", "pt_225", "pt_236"])
def test_orientation_in_lps(openkbp_validation, patient):
    c = read_openkbp_npz(openkbp_validation / f"{patient}.npz")
    have = c.structures
    checked = 0
    if "Parotid_L" in have and "Parotid_R" in have:
        assert _centroid_lps(c, "Parotid_L")[0] > _centroid_lps(c, "Parotid_R")[0] + 30  # left = +x
        checked += 1
    if "Brainstem" in have:
        for side in ("Parotid_L", "Parotid_R"):
            if side in have:
                assert _centroid_lps(c, "Brainstem")[2] > _centroid_lps(c, side)[2]  # superior = +z
                checked += 1
    if "SpinalCord" in have and "Bone_Mandible" in have:
        assert _centroid_lps(c, "SpinalCord")[1] > _centroid_lps(c, "Bone_Mandible")[1] + 30  # posterior = +y
        checked += 1
    assert checked >= 3


def test_reader_errors(tmp_path, openkbp_npz):
    with pytest.raises(InputError) as e:
        read_openkbp_npz(tmp_path / "missing.npz")
    assert e.value.code == ErrorCode.FILE_NOT_FOUND
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError) as e:
        read_openkbp_npz(bad)
    assert e.value.code == ErrorCode.CORRUPT_FILE
    partial = tmp_path / "partial.npz"
    np.savez(partial, ct=np.zeros((128, 128, 128), np.int16))
    with pytest.raises(InputError) as e:
        read_openkbp_npz(partial)
    assert e.value.code == ErrorCode.MISSING_FIELD
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, ct=np.zeros((64, 64, 64), np.int16), possible_dose_mask=np.zeros(10, np.uint8),
             voxel_dimensions=np.ones(3, np.float32))
    with pytest.raises(GeometryError) as e:
        read_openkbp_npz(wrong)
    assert e.value.code == ErrorCode.GRID_MISMATCH
    with pytest.raises(InputError) as e:
        read_openkbp_csv_folder(tmp_path)
    assert e.value.code == ErrorCode.MISSING_FIELD


def test_csv_writer_refuses_other_grids(openkbp_npz, tmp_path):
    c = read_openkbp_npz(openkbp_npz)
    other = c.replace(grid=type(c.grid)(c.grid.shape, c.grid.spacing_mm, c.grid.origin_lps, np.eye(3)))
    with pytest.raises(GeometryError) as e:
        write_openkbp_csv_folder(other, tmp_path / "x")
    assert e.value.code == ErrorCode.GRID_MISMATCH
