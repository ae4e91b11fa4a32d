"""Third-party check: dicompyler-core computes the same DVH from our rewritten RT Dose as from the original."""

from __future__ import annotations

import shutil

import pydicom
import pydicom.dicomio
import pytest

from ADDiffDoseLib.io.dicom import read_dicom, write_rtdose

pydicom.dicomio.read_file = pydicom.dcmread  # dicompyler-core 0.5.6 imports the pydicom 2 name
from dicompylercore import dvhcalc  # noqa: E402  (installed with the dev environment)


def test_rewritten_rtdose_gives_same_dvh(breast_dir, tmp_path):
    case = read_dicom(breast_dir)
    out = tmp_path / "rd.dcm"
    write_rtdose(out, case, case.dose_gy)  # 16-bit, references the original plan
    shutil.copy(breast_dir / "rtss.dcm", tmp_path / "rtss.dcm")
    for roi in (5, 9):  # Heart, Tumor Bed
        ref = dvhcalc.get_dvh(str(breast_dir / "rtss.dcm"), str(breast_dir / "rtdose.dcm"), roi)
        ours = dvhcalc.get_dvh(str(tmp_path / "rtss.dcm"), str(out), roi)
        assert ours.volume == pytest.approx(ref.volume, rel=0.005)
        assert ours.mean == pytest.approx(ref.mean, rel=0.005)
        assert ours.max == pytest.approx(ref.max, rel=0.005)
