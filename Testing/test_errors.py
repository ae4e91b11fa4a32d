"""Every error code the readers, names and writers raise, triggered for real, with its one-line form.

Codes raised elsewhere and tested there: FRAME_OF_REFERENCE (DICOM), MODEL_NOT_FOUND, HASH_MISMATCH,
INCOMPATIBLE_MODEL (model), CANCELLED (runtime), INVALID_CONFIG also by model configs.
"""

import pickle
import sys

import numpy as np
import pytest

from ADDiffDoseLib.case import Case, Plan
from ADDiffDoseLib.errors import ADDiffDoseError, ErrorCode, InputError
from ADDiffDoseLib.geometry import Grid
from ADDiffDoseLib.io import read_case, write_dose
from ADDiffDoseLib.io.atomic import write_text_atomic
from ADDiffDoseLib.names import load_name_mapping

GRID = Grid((2, 3, 4), [1, 1, 1], [0, 0, 0], np.eye(3))


def _file(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _ambiguous(tmp_path):
    import nrrd

    for n in ("ct.nrrd", "image.nrrd"):
        nrrd.write(str(tmp_path / n), np.zeros((2, 2, 2), np.float32))
    read_case(tmp_path)


def _unsafe(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("should never run",))

    p = tmp_path / "x.npz"
    np.savez_compressed(p, {"img": Boom()})
    read_case(p)


def _dependency(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ADDiffDoseLib.io.dicom", None)  # import fails as if not installed
    read_case(_file(tmp_path, "a.dcm", b"\0" * 128 + b"DICM"))


def _write_failed(tmp_path):
    blocker = _file(tmp_path, "file", b"x")
    write_text_atomic(blocker / "sub" / "out.txt", "x")


TRIGGERS = {
    ErrorCode.FILE_NOT_FOUND: lambda t, m: read_case(t / "missing.npz"),
    ErrorCode.UNSUPPORTED_FORMAT: lambda t, m: read_case(_file(t, "a.txt", b"hello")),
    ErrorCode.CORRUPT_FILE: lambda t, m: read_case(_file(t, "a.npz", b"PK\x03\x04 broken")),
    ErrorCode.MISSING_FIELD: lambda t, m: read_case(_npz(t, possible_dose_mask=np.zeros(1, np.uint8))),
    ErrorCode.UNSAFE_CONTENT: lambda t, m: _unsafe(t),
    ErrorCode.AMBIGUOUS_INPUT: lambda t, m: _ambiguous(t),
    ErrorCode.INVALID_GEOMETRY: lambda t, m: Grid((2, 2, 2), [1, -1, 1], [0, 0, 0], np.eye(3)),
    ErrorCode.GRID_MISMATCH: lambda t, m: Case("c", GRID, ct_hu=np.zeros((4, 3, 2))),
    ErrorCode.NO_TARGET: lambda t, m: Case("c", GRID).isocenter_lps(),
    ErrorCode.NEGATIVE_DOSE: lambda t, m: Case("c", GRID, dose_gy=np.full(GRID.shape, -1.0)),
    ErrorCode.INVALID_VALUE: lambda t, m: Plan(fractions=-3),
    ErrorCode.OUTPUT_EXISTS: lambda t, m: write_text_atomic(_file(t, "o.txt", b"x"), "y"),
    ErrorCode.WRITE_FAILED: lambda t, m: _write_failed(t),
    ErrorCode.INVALID_CONFIG: lambda t, m: load_name_mapping(_file(t, "m.json", b"[1, 2]")),
    ErrorCode.DEPENDENCY_MISSING: lambda t, m: _dependency(t, m),
}


def _npz(tmp_path, **arrays):
    p = tmp_path / "pt.npz"
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("code", list(TRIGGERS), ids=lambda c: f"{c.value}-{c.name}")
def test_code_is_raised(code, tmp_path, monkeypatch):
    with pytest.raises(ADDiffDoseError) as e:
        TRIGGERS[code](tmp_path, monkeypatch)
    assert e.value.code == code
    assert str(e.value).startswith(code.value)


def test_message_names_the_file(tmp_path):
    with pytest.raises(InputError) as e:
        read_case(tmp_path / "pt_9.npz")
    assert str(e.value) == f"E101 {tmp_path / 'pt_9.npz'}: no such file or folder"


def test_errors_survive_pickling_for_workers():
    err = InputError("bad", path="/x", code=ErrorCode.CORRUPT_FILE)
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.code, back.path, str(back)) == (InputError, err.code, err.path, str(err))


def test_write_dose_unknown_extension(tmp_path):
    case = Case("c", GRID)
    with pytest.raises(ADDiffDoseError) as e:
        write_dose(tmp_path / "d.xyz", case, np.zeros(GRID.shape))
    assert e.value.code == ErrorCode.UNSUPPORTED_FORMAT
