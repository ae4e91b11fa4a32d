"""DICOM-RT reading on the real sets in ../shared/data/dicom-rt (facts from its README)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ADDiffDoseLib.case import Role
from ADDiffDoseLib.errors import ErrorCode, GeometryError, InputError
from ADDiffDoseLib.io.dicom import list_dicom_series, read_dicom


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def tg119_case(tg119_dir):
    return read_dicom(tg119_dir)


@pytest.fixture(scope="module")
def breast_case(breast_dir):
    return read_dicom(breast_dir)


def test_tg119_masks_match_phantom(tg119_case, tg119_dir):
    truth = np.load(tg119_dir / "masks.npz")
    shape = tuple(truth["shape"])
    assert tg119_case.grid.shape == shape == (129, 167, 167)
    voxel_cc = tg119_case.grid.voxel_volume_cc
    expected_cc = {"Core": 29.700, "OuterTarget": 167.805, "BODY": 13539.060}
    contour_cc = {"Core": 21.600, "OuterTarget": 142.571, "BODY": 13137.109}  # README: sum of contour areas x 2.5 mm
    by_original = {s.original_name: s for s in tg119_case.structures.values()}
    for roi, cc in expected_cc.items():
        mask = np.unpackbits(truth[roi])[: np.prod(shape)].reshape(shape).astype(bool)
        s = by_original[roi]
        assert _dice(s.mask, mask) >= 0.98
        assert s.mask.sum() * voxel_cc == pytest.approx(cc, rel=0.01)
        # the on-contour-is-inside rule gives voxel volumes above the polygon-area volumes
        assert s.mask.sum() * voxel_cc > contour_cc[roi]
    assert by_original["BODY"].role == Role.EXTERNAL
    assert by_original["OuterTarget"].role == Role.TARGET
    assert by_original["Core"].role == Role.OAR


def test_tg119_ct_geometry_and_hu(tg119_case):
    g = tg119_case.grid
    assert np.allclose(g.spacing_mm, [2.5, 3.0, 3.0])
    assert np.allclose(g.origin_lps, [-250, -250, -160])
    assert np.allclose(g.index_to_lps([128, 166, 166]), [248, 248, 160])
    assert tg119_case.ct_hu.min() == -1000 and tg119_case.ct_hu.max() == 1040  # uint16 with intercept -1024
    assert tg119_case.patient_position == "HFS"
    assert tg119_case.plan.beams == () and tg119_case.dose_gy is None


def test_breast_plan_facts(breast_case):
    beams = breast_case.plan.beams
    assert [round(b.gantry_deg) for b in beams] == [327, 0, 56, 150]
    assert [b.energy_mv for b in beams] == [10, 6, 6, 10]
    assert all(b.technique == "IMRT" for b in beams)
    assert all(min(b.couch_deg, 360 - b.couch_deg) < 1e-6 for b in beams)  # 8.5e-10 deg tolerated
    assert breast_case.plan.fractions == 7
    assert breast_case.metadata["prescription_gy"] == pytest.approx(14.0)
    assert np.allclose(breast_case.plan.isocenter_lps, [72.530, -304.345, -9.309], atol=1e-3)
    assert breast_case.patient_position == "HFS"
    assert any("Areola" in w for w in breast_case.warnings)
    # the plan prescription goes to the outermost target type present (CTV: Borders, Tumor Bed)
    rx = {s.original_name: s.prescription_gy for s in breast_case.structures.values() if s.role == Role.TARGET}
    assert rx["Tumor Bed"] == pytest.approx(14.0) and rx["Borders"] == pytest.approx(14.0)


def test_breast_dose_facts(breast_case, breast_dir):
    ds = pydicom.dcmread(breast_dir / "rtdose.dcm", stop_before_pixels=True)
    assert ds.BitsAllocated == 32 and float(ds.DoseGridScaling) == pytest.approx(1.4e-5)
    g = breast_case.grid
    assert g.shape == (98, 129, 194) and np.allclose(g.spacing_mm, [3, 2.5, 2.5])  # case grid = dose grid
    assert breast_case.ct_hu is None
    dose = breast_case.dose_gy
    assert dose.max() == pytest.approx(14.680764, abs=1e-5)
    peak = np.unravel_index(np.argmax(dose), dose.shape)
    assert tuple(int(v) for v in peak) == (32, 51, 137)
    assert np.allclose(g.index_to_lps(peak), [113.85, -291.74, -26.44], atol=0.01)
    assert dose[97].max() == pytest.approx(0.0072, abs=1e-4) and dose[0].max() == pytest.approx(0.139, abs=1e-3)


def test_breast_structures_holes_and_planes(breast_case):
    by_original = {s.original_name: s for s in breast_case.structures.values()}
    assert "Areola" not in by_original
    assert by_original["BODY"].role == Role.EXTERNAL
    lung = by_original["Lt Lung"].mask
    body = by_original["BODY"].mask
    assert lung.any() and (lung & ~body).sum() < 0.01 * lung.sum()
    # contours at z with 2 decimals land on the 4-decimal dose planes: all 98 body planes filled
    assert body.any(axis=(1, 2)).sum() == 98
    # XOR: a lung with 77 holes has fewer voxels than the union of its outer contours would give
    assert not any("not on an image plane" in w for w in breast_case.warnings)


def test_single_ct_file_reads(breast_dir):
    case = read_dicom(breast_dir / "ct.0.dcm")
    assert case.grid.shape == (1, 512, 512)
    assert np.allclose(case.grid.origin_lps, [-275, -524, 168.5593])
    assert case.ct_hu.min() == -1000 and case.ct_hu.max() == 1457
    assert case.grid.spacing_mm[0] == pytest.approx(3.0)  # SliceThickness


def test_list_series_and_ambiguity(tmp_path, breast_dir, tg119_dir):
    shutil.copytree(breast_dir, tmp_path / "breast")
    shutil.copytree(tg119_dir / "ct", tmp_path / "tg119")
    series = list_dicom_series(tmp_path)
    assert {s.modality for s in series} == {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"} and len(series) == 5
    with pytest.raises(InputError) as err:
        read_dicom(tmp_path)
    assert err.value.code == ErrorCode.AMBIGUOUS_INPUT
    tg = next(s for s in series if s.modality == "CT" and len(s.files) == 129)
    assert read_dicom(tmp_path, series_uid=tg.series_uid).grid.shape == (129, 167, 167)


def _copy_slices(tg119_dir, dest, n=6):
    dest.mkdir()
    files = sorted((tg119_dir / "ct").glob("*.dcm"))[40:40 + n]
    return [Path(shutil.copy(f, dest / f.name)) for f in files]


def _edit(path, **changes):
    ds = pydicom.dcmread(path)
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.save_as(path)


def test_missing_slice_refused(tmp_path, tg119_dir):
    files = _copy_slices(tg119_dir, tmp_path / "ct")
    sorted(files)[3].unlink()
    with pytest.raises(GeometryError, match="uneven slice spacing or missing slices"):
        read_dicom(tmp_path / "ct")


def test_gantry_tilt_refused(tmp_path, tg119_dir):
    files = _copy_slices(tg119_dir, tmp_path / "ct")
    for n, f in enumerate(sorted(files)):
        ds = pydicom.dcmread(f)
        ipp = [float(v) for v in ds.ImagePositionPatient]
        _edit(f, ImagePositionPatient=[ipp[0], ipp[1] + 0.5 * n, ipp[2]])  # y shifts with z: tilted stack
    with pytest.raises(GeometryError, match="gantry tilt"):
        read_dicom(tmp_path / "ct")


def test_non_orthogonal_orientation_refused(tmp_path, tg119_dir):
    files = _copy_slices(tg119_dir, tmp_path / "ct")
    for f in files:
        _edit(f, ImageOrientationPatient=[1, 0, 0, 0.2, 0.98, 0])
    with pytest.raises(GeometryError, match="orthonormal"):
        read_dicom(tmp_path / "ct")


def test_mixed_series_refused(tmp_path, tg119_dir):
    files = _copy_slices(tg119_dir, tmp_path / "ct")
    _edit(files[2], PixelSpacing=[2.0, 2.0])
    with pytest.raises(GeometryError, match="mixed series"):
        read_dicom(tmp_path / "ct")


def test_contours_in_other_frame_refused(tmp_path, tg119_dir):
    shutil.copytree(tg119_dir, tmp_path / "tg", ignore=shutil.ignore_patterns("*.npz"))
    ds = pydicom.dcmread(tmp_path / "tg" / "rtss.dcm")
    ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = "1.2.3.4"
    ds.save_as(tmp_path / "tg" / "rtss.dcm")
    with pytest.raises(GeometryError) as err:
        read_dicom(tmp_path / "tg")
    assert err.value.code == ErrorCode.FRAME_OF_REFERENCE


def test_absurd_rows_refused_before_allocation(tmp_path, tg119_dir):
    files = _copy_slices(tg119_dir, tmp_path / "ct", n=2)
    for f in files:
        _edit(f, Rows=65535, Columns=65535)
    with pytest.raises(InputError):
        read_dicom(tmp_path / "ct")


def _dose_variant(tmp_path, breast_dir, **changes):
    folder = tmp_path / "b"
    shutil.copytree(breast_dir, folder)
    _edit(folder / "rtdose.dcm", **changes)
    return folder


def test_relative_dose_needs_prescription(tmp_path, breast_dir):
    folder = _dose_variant(tmp_path, breast_dir, DoseUnits="RELATIVE")
    # the plan's prescription (14 Gy) is there, so RELATIVE converts as percent of it
    case = read_dicom(folder)
    assert case.dose_gy.max() == pytest.approx(14.680764 * 14 / 100, rel=1e-5)
    (folder / "rtplan.dcm").unlink()
    with pytest.raises(InputError, match="RELATIVE"):
        read_dicom(folder)
    assert read_dicom(folder, prescription_gy=20).dose_gy.max() == pytest.approx(14.680764 * 0.2, rel=1e-5)


def test_fraction_dose_times_fractions(tmp_path, breast_dir):
    """A FRACTION dose is multiplied by the plan's fractions (7); as the breast dose is really a PLAN dose, the
    result (103 Gy for a 14 Gy prescription) is flagged, naming how it was obtained. Without the RT Plan the
    number of fractions must be given."""
    folder = _dose_variant(tmp_path, breast_dir, DoseSummationType="FRACTION")
    case = read_dicom(folder)
    assert case.dose_gy.max() == pytest.approx(7 * 14.680764, rel=1e-5)
    (w,) = [w for w in case.warnings if w.startswith("implausible dose")]
    assert "102.8 Gy exceeds 1.5 x the highest prescription (14 Gy)" in w
    assert "DoseSummationType FRACTION, DoseGridScaling 1.4e-05, x 7 fractions (RT Plan)" in w
    (folder / "rtplan.dcm").unlink()
    with pytest.raises(InputError, match="number of fractions is unknown .*--fractions N") as err:
        read_dicom(folder)
    assert err.value.code == ErrorCode.MISSING_FIELD
    case = read_dicom(folder, fractions=1)
    assert case.dose_gy.max() == pytest.approx(14.680764, rel=1e-5)
    assert not any(w.startswith("implausible") for w in case.warnings)  # 14.7 Gy, no prescription: < 100 Gy


def test_implausible_dose_grid_scaling_flagged(tmp_path, breast_dir, breast_case):
    assert not any(w.startswith("implausible") for w in breast_case.warnings)
    case = read_dicom(_dose_variant(tmp_path, breast_dir, DoseGridScaling="0.0094"))  # 9,857 Gy
    (w,) = [w for w in case.warnings if w.startswith("implausible dose")]
    assert "maximum 9857 Gy exceeds 1.5 x the highest prescription (14 Gy)" in w
    assert "DoseSummationType PLAN, DoseGridScaling 0.0094" in w


def test_absolute_frame_offsets(tmp_path, breast_dir):
    offsets = [f"{-122.4407 + 3 * k:.4f}" for k in range(98)]
    case = read_dicom(_dose_variant(tmp_path, breast_dir, GridFrameOffsetVector=offsets))
    assert case.grid.shape == (98, 129, 194) and case.grid.origin_lps[2] == pytest.approx(-122.4407)
    assert case.dose_gy.max() == pytest.approx(14.680764, abs=1e-5)


def _reorder_frames(path, order, offsets):
    """Rewrite an RTDOSE with its frames in `order`, ImagePositionPatient at the new first frame and
    GridFrameOffsetVector `offsets` (as GammaPlan writes decreasing offsets)."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array[order]
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ipp[0], ipp[1], -122.4407 + 3 * int(order[0])]
    ds.GridFrameOffsetVector = [f"{v:.4f}" for v in offsets]
    ds.save_as(path)


@pytest.mark.parametrize("form", ["decreasing relative", "decreasing absolute", "shuffled relative"])
def test_frames_in_any_order(tmp_path, breast_dir, breast_case, form):
    """GridFrameOffsetVector decreasing (GammaPlan) or shuffled, relative or absolute: the same dose in space."""
    folder = tmp_path / "b"
    shutil.copytree(breast_dir, folder)
    order = np.arange(98)[::-1] if form.startswith("decreasing") else np.random.default_rng(0).permutation(98)
    z = -122.4407 + 3.0 * order
    offsets = z if "absolute" in form else z - z[0]
    _reorder_frames(folder / "rtdose.dcm", order, offsets)
    case = read_dicom(folder)
    assert case.grid.same_as(breast_case.grid)
    np.testing.assert_array_equal(case.dose_gy, breast_case.dose_gy)
    assert tuple(int(v) for v in np.unravel_index(np.argmax(case.dose_gy), case.dose_gy.shape)) == (32, 51, 137)
    # the lone RT Dose read as a file, too (drawn on its own grid)
    assert read_dicom(folder / "rtdose.dcm").grid.same_as(breast_case.grid)


def test_dose_resampled_onto_ct_grid(tmp_path, tg119_dir, breast_dir):
    """A dose whose grid differs from the CT's is resampled trilinearly onto the CT grid."""
    from ADDiffDoseLib.geometry import Grid
    from ADDiffDoseLib.case import Case
    from ADDiffDoseLib.io.dicom.writer_common import StudyContext
    from ADDiffDoseLib.io.dicom import write_rtdose

    ct_case = read_dicom(tg119_dir)
    folder = tmp_path / "s"
    shutil.copytree(tg119_dir, folder, ignore=shutil.ignore_patterns("*.npz"))
    # a coarse dose grid (6 mm, 5 mm slices) whose dose is linear in x: trilinear reproduces it exactly
    coarse = Grid((70, 90, 90), (5.0, 6.0, 6.0), (-262.0, -262.0, -172.0), np.eye(3)[:, ::-1])
    x = coarse.voxel_centres_lps()[..., 0]
    dose_case = Case("d", coarse, metadata={"StudyInstanceUID": ct_case.metadata["StudyInstanceUID"],
                                            "FrameOfReferenceUID": ct_case.metadata["FrameOfReferenceUID"]})
    write_rtdose(folder / "rd.dcm", dose_case, (x + 300.0) / 10.0, bits=32)
    case = read_dicom(folder)
    assert case.grid.same_as(ct_case.grid)
    xs = case.grid.voxel_centres_lps()[..., 0]
    assert np.allclose(case.dose_gy, (xs + 300.0) / 10.0, atol=1e-3)


def _strip_file_meta(src, dst):
    """Write `src` as a bare dataset: no 128-byte preamble, no 'DICM', no File Meta header (a Monaco 5.11 export)."""
    from pydicom.dataset import FileMetaDataset

    ds = pydicom.dcmread(src)
    ds.preamble, ds.file_meta = None, FileMetaDataset()
    pydicom.dcmwrite(dst, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert Path(dst).read_bytes()[:2] == b"\x08\x00"  # starts with the first element
    return dst


def test_files_without_preamble_or_file_meta(tmp_path, breast_dir, breast_case):
    """The breast study with every file stripped of its File Meta header (some without a .dcm suffix) reads
    as the original, in a folder scan and one file at a time, with a warning."""
    from ADDiffDoseLib.io import read_case

    folder = tmp_path / "monaco"
    folder.mkdir()
    for name in ("ct.0.dcm", "rtss.dcm", "rtplan.dcm"):
        _strip_file_meta(breast_dir / name, folder / name)
    _strip_file_meta(breast_dir / "rtdose.dcm", folder / "RD1")  # no suffix: found by its first bytes
    case = read_case(folder)
    np.testing.assert_array_equal(case.dose_gy, breast_case.dose_gy)
    assert case.grid.same_as(breast_case.grid) and case.plan.fractions == 7
    assert {k: int(s.mask.sum()) for k, s in case.structures.items()} == \
        {k: int(s.mask.sum()) for k, s in breast_case.structures.items()}
    assert any("without preamble / File Meta header" in w for w in case.warnings)
    np.testing.assert_array_equal(read_case(folder / "RD1").dose_gy, breast_case.dose_gy)
    assert read_case(folder / "ct.0.dcm").ct_hu.max() == 1457


def test_pydicom_rtstruct_without_file_meta(tmp_path):
    """pydicom's own rtstruct.dcm has neither preamble nor File Meta header: it is scanned and its ROIs read."""
    import pydicom.data

    from ADDiffDoseLib.io.dicom.rtstruct import parse_rois
    from ADDiffDoseLib.io.dicom.pixels import read_full

    path = Path(pydicom.data.get_testdata_file("rtstruct.dcm"))
    assert path.read_bytes()[128:132] != b"DICM"
    series = list_dicom_series(path)
    assert [(s.modality, len(s.files), s.files[0].file_meta) for s in series] == [("RTSTRUCT", 1, False)]
    rois = parse_rois(read_full(path), None, path)
    assert "patient" in {r.name for r in rois}
    with pytest.raises(InputError, match="no CT series and no RT Dose"):  # right: nothing defines a grid
        read_dicom(path)


def test_bare_datasets_that_are_not_ours_refused(tmp_path, tg119_dir):
    ct = _strip_file_meta(tg119_dir / "ct" / "ct.050.dcm", tmp_path / "ct.dcm")
    ds = pydicom.dcmread(ct, force=True)
    del ds.ImagePositionPatient
    pydicom.dcmwrite(tmp_path / "noipp.dcm", ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    with pytest.raises(InputError, match="CT without File Meta header lacks ImagePositionPatient") as err:
        read_dicom(tmp_path / "noipp.dcm")
    assert err.value.code == ErrorCode.UNSUPPORTED_FORMAT
    ds = pydicom.dcmread(ct, force=True)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR
    pydicom.dcmwrite(tmp_path / "mr.dcm", ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    with pytest.raises(InputError, match=r"E102 .*mr.dcm: not a DICOM file .*SOP Class UID \(1.2.840.10008.5.1.4.1.1.4\)"):
        read_dicom(tmp_path / "mr.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"\x08\x00" + bytes(range(256)) * 4)
    with pytest.raises(InputError) as err:
        read_dicom(tmp_path / "junk.dcm")
    assert err.value.code == ErrorCode.UNSUPPORTED_FORMAT
    # in a folder, such files are skipped and the good one is read
    shutil.copy(ct, tmp_path / "good.dcm")
    (tmp_path / "ct.dcm").unlink()
    assert [len(s.files) for s in list_dicom_series(tmp_path)] == [1]


def _compressed(src, dst, syntax, **changes):
    ds = pydicom.dcmread(src)
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.compress(syntax)
    ds.save_as(dst)
    return dst


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_ct_reads_the_same_values(tmp_path, breast_dir, syntax):
    import pydicom.uid

    ts = getattr(pydicom.uid, syntax)
    path = _compressed(breast_dir / "ct.0.dcm", tmp_path / "ct.dcm", ts)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ts
    np.testing.assert_array_equal(read_dicom(path).ct_hu, read_dicom(breast_dir / "ct.0.dcm").ct_hu)


def test_rle_rtdose_reads(tmp_path, breast_dir, breast_case):
    """A 16-bit RLE RT Dose (pydicom encodes RLE up to 16 bits): the breast dose to within its new scaling."""
    ds = pydicom.dcmread(breast_dir / "rtdose.dcm")
    stored = (ds.pixel_array // 32).astype(np.uint16)
    ds.PixelData, ds.BitsAllocated, ds.BitsStored, ds.HighBit = stored.tobytes(), 16, 16, 15
    ds.DoseGridScaling = f"{1.4e-5 * 32:.6g}"
    ds.save_as(tmp_path / "rd16.dcm")
    path = _compressed(tmp_path / "rd16.dcm", tmp_path / "rd.dcm", pydicom.uid.RLELossless)
    case = read_dicom(path)
    assert np.abs(case.dose_gy - breast_case.dose_gy).max() <= 32 * 1.4e-5


def test_missing_decoder_names_the_package(tmp_path, breast_dir, monkeypatch):
    from pydicom.pixels import get_decoder

    path = _compressed(breast_dir / "ct.0.dcm", tmp_path / "ct.dcm", pydicom.uid.JPEG2000Lossless)
    monkeypatch.setattr(type(get_decoder(pydicom.uid.JPEG2000Lossless)), "is_available", property(lambda self: False))
    with pytest.raises(InputError, match="install pylibjpeg pylibjpeg-openjpeg") as err:
        read_dicom(path)
    assert err.value.code == ErrorCode.DEPENDENCY_MISSING and "JPEG 2000" in str(err.value)


def _relabel_implicit(src, dst):
    """A CT slice written in explicit VR whose File Meta says implicit VR (seen in real exports): pydicom reads it,
    warning 'Expected implicit VR, but found explicit VR'."""
    raw = Path(src).read_bytes()
    explicit, implicit = b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2\x00\x00\x00"  # same length, padded
    assert raw.count(explicit) == 1
    Path(dst).write_bytes(raw.replace(explicit, implicit))
    return dst


def test_pydicom_warnings_become_case_warnings(tmp_path, tg119_dir):
    import warnings as pywarnings

    folder = tmp_path / "ct"
    for f in _copy_slices(tg119_dir, tmp_path / "src", n=3):
        folder.mkdir(exist_ok=True)
        _relabel_implicit(f, folder / f.name)
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("error")  # none may escape the reader
        case = read_dicom(folder)
    np.testing.assert_array_equal(case.ct_hu, read_dicom(tg119_dir).ct_hu[40:43])
    found = [w for w in case.warnings if "Expected implicit VR, but found explicit VR" in w]
    assert len(found) == 1 and found[0].startswith("pydicom: ") and "\n" not in found[0]


def test_undecodable_element_is_one_error(tmp_path, tg119_dir):
    raw = (tg119_dir / "ct" / "ct.050.dcm").read_bytes()
    at = raw.find(b"\x20\x00\x32\x00DS")  # ImagePositionPatient with an unknown VR
    (tmp_path / "ct.dcm").write_bytes(raw[:at + 4] + b"ZZ" + raw[at + 6:])
    with pytest.raises(InputError, match=r"E103 .*ct.dcm: unreadable DICOM header: Unknown Value Representation 'ZZ' in tag \(0020,0032\)"):
        read_dicom(tmp_path / "ct.dcm")
