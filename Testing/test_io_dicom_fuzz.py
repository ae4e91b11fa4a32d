"""Damaged DICOM files: only ADDiffDoseError escapes, quickly.

Two levels: single damaged files read alone, and damaged files inside a copy of a whole study folder (the TG-119
CT series + RTSTRUCT; the breast RTDOSE + RTPLAN + RTSTRUCT + CT slice), so that series assembly, contour
rasterization and dose pixel decoding run on the damaged data too.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ADDiffDoseLib.errors import ADDiffDoseError
from ADDiffDoseLib.io.dicom import read_dicom

FILES = ["breast/rtplan.dcm", "breast/rtss.dcm", "breast/ct.0.dcm", "tg119/ct/ct.060.dcm", "tg119/rtss.dcm"]
TAGS = ["Rows", "Columns", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "BitsAllocated",
        "StructureSetROISequence", "ROIContourSequence", "BeamSequence", "FractionGroupSequence", "SOPClassUID",
        "SeriesInstanceUID", "Modality", "PixelData", "RescaleSlope", "FrameOfReferenceUID", "ContourSequence",
        "GridFrameOffsetVector", "DoseGridScaling", "NumberOfFrames", "DoseUnits", "DoseSummationType",
        "ReferencedROINumber", "SliceThickness", "PatientSetupSequence", "DoseReferenceSequence"]
#: CPU seconds one read of a damaged study may take (the undamaged trimmed breast study takes about 1 s).
MAX_SECONDS = 20.0
#: Breast ROIs kept in the study copy: small ones, one without contours (Areola), one with several contours.
BREAST_ROIS = ("Areola", "Borders", "Nodes", "Scar", "Tumor Bed")


@pytest.fixture(scope="module")
def originals(dicom_dir):
    return {name: (dicom_dir / name).read_bytes() for name in FILES}


def _mutate_bytes(data: bytes, mode: str, pos: float, value: int) -> bytes:
    i = min(int(pos * len(data)), len(data) - 1)
    if mode == "truncate":
        return data[: int(pos * len(data))]
    return data[:i] + bytes([value]) + data[i + 1:]  # flip


def _mutate_dataset(ds: pydicom.Dataset, mode: str, tag: str, pos: float, value: int) -> None:
    """Delete a tag (anywhere, also inside sequences), set absurd sizes, or scramble contour / offset values."""
    if mode == "delete":
        for item in [ds, *(x for elem in ds.iterall() if elem.VR == "SQ" for x in elem.value)]:
            if tag in item:
                delattr(item, tag)
                break
    elif mode == "absurd":
        for keyword, big in (("Rows", 65535), ("Columns", 65535), ("NumberOfFrames", 10**6)):
            if keyword in ds:
                setattr(ds, keyword, big)
    elif mode == "values":
        for item in (x for elem in ds.iterall() if elem.VR == "SQ" for x in elem.value):
            if "ContourData" in item:
                pts = [float(v) for v in item.ContourData]
                k = min(int(pos * len(pts)), len(pts) - 1)
                pts[k] = (1e12, -1e12, 0.0, 1e-30)[value % 4]
                item.ContourData = pts[: len(pts) - (value % 2)]  # sometimes not a multiple of 3
                break
        if "GridFrameOffsetVector" in ds:
            offsets = [float(v) for v in ds.GridFrameOffsetVector]
            offsets[min(int(pos * len(offsets)), len(offsets) - 1)] = (1e9, -5.0, 0.0, 3.0)[value % 4]
            ds.GridFrameOffsetVector = offsets
        if "DoseGridScaling" in ds:
            ds.DoseGridScaling = (-1.0, 0.0, 1e30, 1.4e-5)[value % 4]


def _read_expecting_only_library_errors(path: Path) -> None:
    start = time.process_time()  # CPU seconds: robust to a busy machine
    try:
        case = read_dicom(path)
    except ADDiffDoseError:
        pass
    else:  # accepted despite the damage: then the case must be consistent
        for s in case.structures.values():
            assert s.mask.shape == case.grid.shape
        if case.dose_gy is not None:
            assert case.dose_gy.shape == case.grid.shape and np.all(np.isfinite(case.dose_gy))
    assert time.process_time() - start < MAX_SECONDS


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(FILES), mode=st.sampled_from(["truncate", "flip", "delete", "absurd"]),
       pos=st.floats(0.0, 1.0), value=st.integers(0, 255), tag=st.sampled_from(TAGS))
def test_damaged_files_raise_only_library_errors(originals, which, mode, pos, value, tag):
    data = originals[which]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.dcm"
        if mode in ("truncate", "flip"):
            path.write_bytes(_mutate_bytes(data, mode, pos, value))
        else:
            path.write_bytes(data)
            ds = pydicom.dcmread(path)
            _mutate_dataset(ds, mode, tag, pos, value)
            ds.save_as(path)
        _read_expecting_only_library_errors(path)


@pytest.fixture(scope="module")
def studies(dicom_dir, tmp_path_factory):
    """Copies of both study folders (breast RTSTRUCT trimmed to a few small ROIs to keep each read short)."""
    root = tmp_path_factory.mktemp("studies")
    shutil.copytree(dicom_dir / "tg119", root / "tg119", ignore=shutil.ignore_patterns("*.npz"))
    (root / "breast").mkdir()
    for name in ("ct.0.dcm", "rtdose.dcm", "rtplan.dcm"):
        shutil.copy(dicom_dir / "breast" / name, root / "breast" / name)
    rs = pydicom.dcmread(dicom_dir / "breast" / "rtss.dcm")
    keep = {int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName in BREAST_ROIS}
    rs.StructureSetROISequence = [r for r in rs.StructureSetROISequence if int(r.ROINumber) in keep]
    rs.ROIContourSequence = [r for r in rs.ROIContourSequence if int(r.ReferencedROINumber) in keep]
    rs.RTROIObservationsSequence = [r for r in rs.RTROIObservationsSequence if int(r.ReferencedROINumber) in keep]
    rs.save_as(root / "breast" / "rtss.dcm")
    files = {"tg119/rtss.dcm", "tg119/ct/ct.001.dcm", "tg119/ct/ct.065.dcm", "tg119/ct/ct.129.dcm",
             "breast/rtdose.dcm", "breast/rtplan.dcm", "breast/rtss.dcm"}
    return root, {f: (root / f).read_bytes() for f in sorted(files)}


def test_study_copies_read(studies):
    root, _ = studies
    tg = read_dicom(root / "tg119")
    assert tg.grid.shape == (129, 167, 167) and tg.structures["Core"].mask.sum() > 1000
    br = read_dicom(root / "breast")
    assert br.dose_gy.max() == pytest.approx(14.68, abs=0.01) and "Scar" in br.structures
    assert any("Areola" in w for w in br.warnings)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["tg119/rtss.dcm", "tg119/ct/ct.001.dcm", "tg119/ct/ct.065.dcm", "tg119/ct/ct.129.dcm",
                              "breast/rtdose.dcm", "breast/rtplan.dcm", "breast/rtss.dcm"]),
       mode=st.sampled_from(["truncate", "flip", "delete", "absurd", "values"]),
       pos=st.floats(0.0, 1.0), value=st.integers(0, 255), tag=st.sampled_from(TAGS))
def test_damaged_file_inside_a_study_raises_only_library_errors(studies, which, mode, pos, value, tag):
    root, originals = studies
    target = root / which
    data = originals[which]
    try:
        if mode in ("truncate", "flip"):
            target.write_bytes(_mutate_bytes(data, mode, pos, value))
        else:
            ds = pydicom.dcmread(target)
            _mutate_dataset(ds, mode, tag, pos, value)
            ds.save_as(target)
        _read_expecting_only_library_errors(root / which.split("/")[0])
    finally:
        target.write_bytes(data)
