"""Damaged DICOM files: only ADDiffDoseError escapes, quickly."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ADDiffDoseLib.errors import ADDiffDoseError
from ADDiffDoseLib.io.dicom import read_dicom

FILES = ["breast/rtplan.dcm", "breast/rtss.dcm", "breast/ct.0.dcm", "tg119/ct/ct.060.dcm", "tg119/rtss.dcm"]
TAGS = ["Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "BitsAllocated",
        "StructureSetROISequence", "ROIContourSequence", "BeamSequence", "FractionGroupSequence", "SOPClassUID",
        "SeriesInstanceUID", "Modality", "PixelData", "RescaleSlope"]


@pytest.fixture(scope="module")
def originals(dicom_dir):
    return {name: (dicom_dir / name).read_bytes() for name in FILES}


def _try_read(path: Path) -> None:
    try:
        read_dicom(path)
    except ADDiffDoseError:
        pass


@settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(FILES), mode=st.sampled_from(["truncate", "flip", "delete", "absurd"]),
       pos=st.floats(0.0, 1.0), value=st.integers(0, 255), tag=st.sampled_from(TAGS))
def test_damaged_files_raise_only_library_errors(originals, which, mode, pos, value, tag):
    data = originals[which]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.dcm"
        if mode == "truncate":
            path.write_bytes(data[: int(pos * len(data))])
        elif mode == "flip":
            i = min(int(pos * len(data)), len(data) - 1)
            path.write_bytes(data[:i] + bytes([value]) + data[i + 1:])
        else:
            path.write_bytes(data)
            ds = pydicom.dcmread(path)
            if mode == "delete" and tag in ds:
                delattr(ds, tag)
            elif mode == "absurd" and "Rows" in ds:
                ds.Rows, ds.Columns = 65535, 65535
            ds.save_as(path)
        _try_read(path)
