"""pyRadPlan plan files: beams, dose and isocentre in LPS on the OpenKBP anatomy."""

import json

import numpy as np
import pytest

from ADDiffDoseLib.errors import ErrorCode, InputError
from ADDiffDoseLib.io.pyradplan import read_pyradplan_plan


def test_read_plan_pt11_0(pyradplan_dir, data_dir):
    path = pyradplan_dir / "train" / "pt_11_0.npz"
    c = read_pyradplan_plan(path)
    raw = np.load(path)
    assert c.name == "pt_11_0" and c.metadata["patient_id"] == "pt_11"
    assert c.plan.source == "pyradplan" and c.plan.fractions == 35
    assert [b.gantry_deg for b in c.plan.beams] == pytest.approx([7.2, 58.6, 110, 161.4, 212.9, 264.3, 315.7])
    assert all(b.couch_deg == 0 and b.collimator_deg == 0 and b.energy_mv == 6 and b.technique == "IMRT"
               for b in c.plan.beams)
    np.testing.assert_allclose(c.dose_gy, raw["dose"].astype(np.float32))
    rx = json.loads(str(raw["prescriptions_json"]))
    assert {s.original_name: s.prescription_gy for s in c.targets.values()} == {k: float(v) for k, v in rx.items()}
    # isocentre: voxel index -> LPS via the grid, and back
    np.testing.assert_allclose(c.grid.lps_to_index(c.plan.isocenter_lps), raw["isocenter_vox"], atol=1e-4)
    # same case with an explicit data root
    c2 = read_pyradplan_plan(path, data_root=data_dir)
    np.testing.assert_array_equal(c2.ct_hu, c.ct_hu)


@pytest.mark.parametrize("plan", ["train/pt_60_1.npz", "validation/pt_204_0.npz", "validation/pt_231_0.npz"])
def test_isocenter_is_ptv_centre_of_mass(pyradplan_dir, plan):
    c = read_pyradplan_plan(pyradplan_dir / plan)
    union = np.zeros(c.grid.shape, bool)
    for s in c.targets.values():
        union |= s.mask
    com_lps = c.grid.index_to_lps(np.argwhere(union).mean(axis=0))
    assert np.all(np.abs(np.asarray(c.plan.isocenter_lps) - com_lps) <= c.grid.spacing_mm)  # within 1 voxel


def test_missing_anatomy(pyradplan_dir, tmp_path):
    with pytest.raises(InputError) as e:
        read_pyradplan_plan(pyradplan_dir / "train" / "pt_11_0.npz", data_root=tmp_path)
    assert e.value.code == ErrorCode.FILE_NOT_FOUND
    bad = tmp_path / "plan.npz"
    np.savez(bad, dose=np.zeros(3))
    with pytest.raises(InputError) as e:
        read_pyradplan_plan(bad)
    assert e.value.code == ErrorCode.MISSING_FIELD
