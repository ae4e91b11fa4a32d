"""GDP-HMM npz reader and its restricted unpickler.

The test files are written the way the challenge's own converter writes them
(RiqiangGao/GDP-HMM_AAPMChallenge, DICOM2NPZ.py: `np.savez_compressed(path, crop_dict)` of a dict with
img (z, y, x) HU, dose + dose_scale, uint8 masks, all_mask, isVMAT, isocenter [z, y, x], angle_list,
SimpleITK origin / spacing (x, y, z) / direction), since no sample file is in the shared data.
"""

import json
import os

import numpy as np
import pytest

from ADDiffDoseLib.case import Role
from ADDiffDoseLib.errors import ErrorCode, InputError
from ADDiffDoseLib.io import read_case
from ADDiffDoseLib.io.gdphmm import load_gdphmm_dict, read_gdphmm_npz

SHAPE = (10, 12, 14)  # (z, y, x)


def _plan_dict(vmat=True):
    rng = np.random.default_rng(0)
    ptv = np.zeros(SHAPE, np.uint8)
    ptv[4:7, 5:8, 6:9] = 1
    cord = np.zeros(SHAPE, np.uint8)
    cord[:, 9, 7] = 1
    return {
        "img": rng.integers(-1000, 1000, SHAPE).astype(np.int16),
        "dose": rng.integers(0, 1000, SHAPE).astype(np.uint32), "dose_scale": 0.07,
        "Body": np.ones(SHAPE, np.uint8), "PTV70OPT": ptv, "PTV70": ptv.copy(), "PTV56": ptv.copy(),
        "SpinalCord": cord, "SpinalCord_05": cord.copy(), "RingPTV70": np.zeros(SHAPE, np.uint8),
        "all_mask": ["Body", "PTV70OPT", "PTV70", "PTV56", "SpinalCord", "SpinalCord_05", "RingPTV70"],
        "isVMAT": np.bool_(vmat), "isocenter": np.array([5.0, 6.0, 7.0], np.float32),
        "angle_list": np.array([180.0, 90.0, 0.0, 270.0], np.float32),
        "origin": (-10.0, -20.0, 30.0), "spacing": (2.5, 2.5, 2.0), "direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
        "size": SHAPE[::-1],
    }


def test_read_vmat_plan_with_ptv_dict(tmp_path):
    d = _plan_dict()
    path = tmp_path / "0522c0001+5.npz"
    np.savez_compressed(path, d)  # as the challenge's DICOM2NPZ.py does
    (tmp_path / "PTV_DICT.json").write_text(json.dumps({"0522c0001": {
        "PTV_High": {"OPTName": "PTV70OPT", "PDose": 67.0, "RingName": "RingPTV70"},
        "PTV_Low": {"OPTName": "PTV56OPT", "PDose": 54, "StructName": "PTV56", "MinusName": "PTV56-PTV63"}}}))
    c = read_gdphmm_npz(path)
    assert c.metadata["patient_id"] == "0522c0001" and c.metadata["plan_id"] == "5"
    assert c.plan.source == "gdp-hmm" and c.warnings == ()
    # grid: spacing (x, y, z) -> array axes (z, y, x)
    np.testing.assert_allclose(c.grid.spacing_mm, [2.0, 2.5, 2.5])
    np.testing.assert_allclose(c.grid.index_to_lps([1, 2, 3]), [-10 + 3 * 2.5, -20 + 2 * 2.5, 30 + 1 * 2.0])
    np.testing.assert_allclose(c.plan.isocenter_lps, [-10 + 7 * 2.5, -20 + 6 * 2.5, 30 + 5 * 2.0])
    np.testing.assert_array_equal(c.ct_hu, d["img"])
    np.testing.assert_allclose(c.dose_gy, d["dose"] * 0.07, rtol=1e-6)
    assert {k: s.prescription_gy for k, s in c.targets.items()} == {"PTV70OPT": 67.0, "PTV56": 54.0}
    assert c.structures["PTV70"].role == Role.OTHER  # the table, not the name, decides
    assert c.structures["External"].original_name == "Body"
    assert c.structures["SpinalCord"].role == Role.OAR and c.structures["SpinalCord_05"].role == Role.OTHER
    (beam,) = c.plan.beams
    assert beam.technique == "VMAT" and beam.arc_gantry_deg == (0, 90, 180, 270)
    # format detection finds it too
    assert read_case(path).metadata["format"] == "gdp-hmm-npz"


def test_imrt_plan_without_ptv_dict_uses_names(tmp_path):
    path = tmp_path / "17+2.npz"
    np.savez_compressed(path, _plan_dict(vmat=False))
    c = read_gdphmm_npz(path)
    assert c.metadata["patient_id"] == "017"
    assert [b.gantry_deg for b in c.plan.beams] == [0, 90, 180, 270]
    assert all(b.technique == "IMRT" for b in c.plan.beams)
    assert {k: s.prescription_gy for k, s in c.targets.items()} == {"PTV70": 70.0, "PTV56": 56.0}
    assert any("PTV_DICT" in w for w in c.warnings)
    c2 = read_gdphmm_npz(path, prescriptions={"PTV70OPT": 66.0})
    assert list(c2.targets) == ["PTV70OPT"]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez_compressed(path, {"img": _Evil(marker)})
    with pytest.raises(InputError) as e:
        load_gdphmm_dict(path)
    assert e.value.code == ErrorCode.UNSAFE_CONTENT
    assert not marker.exists()
    with pytest.raises(InputError) as e:
        read_case(path)
    assert e.value.code == ErrorCode.UNSAFE_CONTENT
    assert not marker.exists()


def test_gdphmm_errors(tmp_path):
    path = tmp_path / "x.npz"
    np.savez_compressed(path, {"dose": np.zeros(SHAPE)})
    with pytest.raises(InputError) as e:
        read_gdphmm_npz(path)
    assert e.value.code == ErrorCode.MISSING_FIELD
    plain = tmp_path / "plain.npz"
    np.savez_compressed(plain, np.zeros(3))
    with pytest.raises(InputError) as e:
        load_gdphmm_dict(plain)
    assert e.value.code == ErrorCode.UNSUPPORTED_FORMAT
