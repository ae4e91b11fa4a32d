"""Our own case and dose npz files: lossless round trips, no pickle."""

import numpy as np
import pytest

from ADDiffDoseLib import NOT_FOR_CLINICAL_USE
from ADDiffDoseLib.errors import ErrorCode, GeometryError, InputError
from ADDiffDoseLib.io import read_case, write_dose
from ADDiffDoseLib.io.case_npz import read_case_npz, read_dose_npz, write_case_npz, write_dose_npz
from ADDiffDoseLib.io.pyradplan import read_pyradplan_plan


@pytest.fixture(scope="module")
def case(pyradplan_dir):
    return read_pyradplan_plan(pyradplan_dir / "validation" / "pt_204_0.npz")


def test_case_round_trip(case, tmp_path):
    path = write_case_npz(tmp_path / "c.npz", case)
    with np.load(path, allow_pickle=False) as f:  # loads without pickle
        assert str(f["format"]) == "addiffdose-case-1"
    back = read_case_npz(path)
    assert back.name == case.name and back.grid.same_as(case.grid)
    np.testing.assert_array_equal(back.ct_hu, case.ct_hu)
    np.testing.assert_array_equal(back.dose_gy, case.dose_gy)
    assert back.plan == case.plan
    assert back.metadata == case.metadata and back.patient_position == case.patient_position
    for key, s in case.structures.items():
        b = back.structures[key]
        np.testing.assert_array_equal(b.mask, s.mask)
        assert (b.role, b.prescription_gy, b.original_name) == (s.role, s.prescription_gy, s.original_name)
    assert read_case(path).structures.keys() == case.structures.keys()


def test_dose_file_and_reference(case, tmp_path):
    pred = case.dose_gy * 0.9
    std = np.full(case.grid.shape, 0.5, np.float32)
    path = write_dose_npz(tmp_path / "p.npz", pred, case.grid, extra_arrays={"dose_std": std},
                          metadata={"model": "m"})
    dose, grid, extras, meta = read_dose_npz(path)
    np.testing.assert_array_equal(dose, pred.astype(np.float32))
    assert grid.same_as(case.grid) and meta == {"model": "m"}
    np.testing.assert_array_equal(extras["dose_std"], std)
    with np.load(path) as f:
        assert str(f["not_for_clinical_use"]) == NOT_FOR_CLINICAL_USE
    merged = read_case_npz(path, reference=case)
    np.testing.assert_array_equal(merged.dose_gy, pred.astype(np.float32))
    with pytest.raises(InputError) as e:
        read_case_npz(path)
    assert e.value.code == ErrorCode.MISSING_FIELD
    with pytest.raises(InputError) as e:
        read_case(path)
    assert e.value.code == ErrorCode.MISSING_FIELD
    other = case.replace(grid=case.grid.with_shape(case.grid.shape, offset_index=(1, 0, 0)), ct_hu=None,
                         structures={}, dose_gy=None)
    with pytest.raises(GeometryError) as e:
        read_case_npz(path, reference=other)
    assert e.value.code == ErrorCode.GRID_MISMATCH


def test_write_dose_dispatch(case, tmp_path):
    write_dose(tmp_path / "d.npz", case, case.dose_gy, extra={"dose_std": case.dose_gy * 0}, provenance={"m": 1})
    assert "dose_std" in read_dose_npz(tmp_path / "d.npz")[2]
    write_dose(tmp_path / "d.nrrd", case, case.dose_gy, provenance={"model": "x"})
    assert read_case(tmp_path / "d.nrrd").dose_gy is None  # a lone volume is read as CT
    from ADDiffDoseLib.io.nrrd import read_volume

    arr, grid, header = read_volume(tmp_path / "d.nrrd")
    np.testing.assert_allclose(arr, case.dose_gy)
    assert header["ADDiffDose_model"] == "x"
    from ADDiffDoseLib.errors import OutputError

    with pytest.raises(OutputError) as e:
        write_dose(tmp_path / "d.nrrd", case, case.dose_gy)
    assert e.value.code == ErrorCode.OUTPUT_EXISTS
    with pytest.raises(OutputError) as e:
        write_dose(tmp_path / "d.txt", case, case.dose_gy)
    assert e.value.code == ErrorCode.UNSUPPORTED_FORMAT


def test_pickled_npz_is_not_loaded(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, format=np.array("addiffdose-case-1"), grid_json=np.array({"a": 1}, dtype=object),
             structures_json=np.array("[]"))
    with pytest.raises(InputError) as e:
        read_case_npz(path)
    assert e.value.code == ErrorCode.UNSAFE_CONTENT
    (tmp_path / "junk.npz").write_bytes(b"PK junk")
    with pytest.raises(InputError) as e:
        read_case_npz(tmp_path / "junk.npz")
    assert e.value.code == ErrorCode.CORRUPT_FILE
