"""NRRD/NIfTI volumes and Slicer segmentations: round trips checked in patient coordinates."""

import json

import nibabel
import nrrd
import numpy as np
import pytest
import slicerio

from ADDiffDoseLib.case import Role
from ADDiffDoseLib.errors import ErrorCode, GeometryError, InputError, OutputError
from ADDiffDoseLib.geometry import Grid
from ADDiffDoseLib.io import read_case
from ADDiffDoseLib.io.nrrd import (read_addiffdose_fields, read_nrrd_case, read_segmentation, read_volume,
                                   write_dose_nrrd, write_segmentation_nrrd, write_volume_nrrd)
from ADDiffDoseLib.io.openkbp import read_openkbp_npz


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return read_openkbp_npz(openkbp_npz)


def _centroid_lps(grid, mask):
    return grid.index_to_lps(np.argwhere(mask).mean(axis=0))


def test_case_round_trip_keeps_positions(case, tmp_path):
    write_volume_nrrd(tmp_path / "ct.nrrd", case.ct_hu.astype(np.int16), case.grid)
    write_segmentation_nrrd(tmp_path / "Segmentation.seg.nrrd", case)
    write_dose_nrrd(tmp_path / "dose.nrrd", case.dose_gy, case.grid, {"model": "test"})
    back = read_nrrd_case(tmp_path / "ct.nrrd", tmp_path / "Segmentation.seg.nrrd", tmp_path / "dose.nrrd")
    assert back.grid.same_as(case.grid)
    np.testing.assert_array_equal(back.ct_hu, case.ct_hu)
    np.testing.assert_array_equal(back.dose_gy, case.dose_gy)
    for key, s in case.structures.items():
        b = back.structures[key]
        assert (b.role, b.prescription_gy, b.original_name) == (s.role, s.prescription_gy, s.original_name)
        np.testing.assert_allclose(_centroid_lps(back.grid, b.mask), _centroid_lps(case.grid, s.mask), atol=1e-6)
    # the same folder through format detection
    assert read_case(tmp_path).structures.keys() == case.structures.keys()


def test_written_header_geometry_independently(case, tmp_path):
    """Read the files with pynrrd/slicerio only (ijk + header) and compare LPS centroids: catches a
    mirror or transpose that a symmetric writer/reader pair would hide."""
    write_volume_nrrd(tmp_path / "ct.nrrd", case.ct_hu.astype(np.int16), case.grid)
    data, header = nrrd.read(str(tmp_path / "ct.nrrd"))  # Fortran order: (i, j, k)
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_array_equal(data, case.ct_hu.transpose(2, 1, 0))
    write_segmentation_nrrd(tmp_path / "s.seg.nrrd", case)
    seg = slicerio.read_segmentation(str(tmp_path / "s.seg.nrrd"))
    m = seg["ijkToLPS"]
    for key in ("Parotid_L", "Parotid_R", "Brainstem", "SpinalCord"):
        ijk = np.argwhere(slicerio.segment_mask(seg, key)).mean(axis=0)
        lps = (m @ np.append(ijk, 1))[:3]
        np.testing.assert_allclose(lps, _centroid_lps(case.grid, case.structures[key].mask), atol=1e-6)
    # anatomy sanity in the written frame: left parotid at larger x
    left = (m @ np.append(np.argwhere(slicerio.segment_mask(seg, "Parotid_L")).mean(0), 1))[0]
    right = (m @ np.append(np.argwhere(slicerio.segment_mask(seg, "Parotid_R")).mean(0), 1))[0]
    assert left > right


def test_overlapping_segments_use_layers(case, tmp_path):
    write_segmentation_nrrd(tmp_path / "s.seg.nrrd", case)
    seg = slicerio.read_segmentation(str(tmp_path / "s.seg.nrrd"))
    assert seg["voxels"].ndim == 4  # PTVs overlap organs and the body
    assert {s["id"] for s in seg["segments"]} == set(case.structures)  # the name is the name as read
    assert {s["name"] for s in seg["segments"]} == {s.original_name for s in case.structures.values()}
    for key, s in case.structures.items():
        np.testing.assert_array_equal(slicerio.segment_mask(seg, key).transpose(2, 1, 0), s.mask)
    with pytest.raises(OutputError) as e:
        write_segmentation_nrrd(tmp_path / "s.seg.nrrd", case)
    assert e.value.code == ErrorCode.OUTPUT_EXISTS


def test_segmentation_on_sub_region_maps_to_reference(case, tmp_path):
    offset = (30, 40, 20)
    sub = case.grid.with_shape((60, 50, 70), offset_index=offset)
    cord = case.structures["SpinalCord"].mask
    crop = cord[30:90, 40:90, 20:90]
    seg = slicerio.create_segmentation(sub.size_ijk, sub.ijk_to_lps_matrix())
    slicerio.add_segment(seg, crop.transpose(2, 1, 0), {"id": "s1", "name": "Spinal Cord"})
    slicerio.add_segment(seg, np.ones(sub.size_ijk, bool), {"id": "s2", "name": "BODY"})
    slicerio.write_segmentation(str(tmp_path / "sub.seg.nrrd"), seg)
    out = read_segmentation(tmp_path / "sub.seg.nrrd", reference_grid=case.grid)
    assert out["SpinalCord"].role == Role.OAR and out["External"].role == Role.EXTERNAL
    expected = np.zeros(case.grid.shape, bool)
    expected[30:90, 40:90, 20:90] = crop
    np.testing.assert_array_equal(out["SpinalCord"].mask, expected)
    assert out["External"].mask.sum() == 60 * 50 * 70


def test_ras_nrrd_is_converted(tmp_path):
    g = Grid((4, 5, 6), [3.0, 2.0, 1.0], [10.0, -20.0, 30.0], np.eye(3))
    a = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    m = g.ijk_to_ras_matrix()
    header = {"space": "right-anterior-superior", "space directions": m[:3, :3].T, "space origin": m[:3, 3],
              "kinds": ["domain"] * 3}
    nrrd.write(str(tmp_path / "ras.nrrd"), a, header, index_order="C")
    arr, grid, _ = read_volume(tmp_path / "ras.nrrd")
    assert grid.same_as(g)
    np.testing.assert_array_equal(arr, a)


def test_nifti_ras_affine_is_converted(case, tmp_path):
    img = nibabel.Nifti1Image(case.ct_hu.transpose(2, 1, 0), case.grid.ijk_to_ras_matrix())
    nibabel.save(img, str(tmp_path / "ct.nii.gz"))
    arr, grid, _ = read_volume(tmp_path / "ct.nii.gz")
    assert grid.same_as(case.grid, atol_mm=1e-3)
    np.testing.assert_array_equal(arr, case.ct_hu)
    # the same file seen through detection, checked by an organ position
    c = read_case(tmp_path / "ct.nii.gz")
    np.testing.assert_allclose(c.grid.index_to_lps([0, 0, 0]), case.grid.origin_lps, atol=1e-3)


def test_dose_header_has_provenance_and_notice(case, tmp_path):
    write_dose_nrrd(tmp_path / "d.nrrd", case.dose_gy, case.grid, {"model": "m1"})
    _, header = nrrd.read(str(tmp_path / "d.nrrd"))
    assert "NOT FOR CLINICAL USE" in header["ADDiffDose_notice"] and header["ADDiffDose_model"] == "m1"


def test_dose_header_keeps_the_beams_for_reports(case, tmp_path):
    """Structured provenance (the beams) is JSON in the header, so SimpleITK shows it and reports read it back."""
    import SimpleITK as sitk

    from ADDiffDoseLib.metrics.loading import prediction_beams, prediction_provenance

    beams = [{"gantry_deg": 20.0, "couch_deg": 0.0, "energy_mv": 6.0, "technique": "IMRT"},
             {"gantry_deg": 340.0, "couch_deg": 10.0, "energy_mv": 10.0, "technique": "IMRT"}]
    write_dose_nrrd(tmp_path / "d.nrrd", case.dose_gy, case.grid, {"model": "m1", "beams": beams, "seed": 3})
    fields = read_addiffdose_fields(tmp_path / "d.nrrd")
    assert fields["beams"] == beams and fields["model"] == "m1" and fields["seed"] == "3"
    assert prediction_beams(tmp_path / "d.nrrd") == tuple(beams)
    assert "340" in prediction_provenance(tmp_path / "d.nrrd")["beams"]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp_path / "d.nrrd"))
    reader.ReadImageInformation()
    assert json.loads(reader.GetMetaData("ADDiffDose_beams")) == beams
    # files written before the fields were JSON held the Python repr: still read, and only as literals
    header = nrrd.read_header(str(tmp_path / "d.nrrd"))
    header["ADDiffDose_beams"] = repr(beams)
    header["ADDiffDose_model"] = "[__import__('os')]"
    nrrd.write(str(tmp_path / "old.nrrd"), case.dose_gy, header, index_order="C")
    old = read_addiffdose_fields(tmp_path / "old.nrrd")
    assert old["beams"] == beams and old["model"] == "[__import__('os')]"
    (tmp_path / "bad.nrrd").write_bytes(b"garbage")
    with pytest.raises(InputError) as e:
        read_addiffdose_fields(tmp_path / "bad.nrrd")
    assert e.value.code == ErrorCode.CORRUPT_FILE and prediction_beams(tmp_path / "bad.nrrd") is None


def test_nrrd_errors(tmp_path):
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "none.nrrd")
    assert e.value.code == ErrorCode.FILE_NOT_FOUND
    (tmp_path / "bad.nrrd").write_bytes(b"garbage")
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "bad.nrrd")
    assert e.value.code == ErrorCode.CORRUPT_FILE
    nrrd.write(str(tmp_path / "2d.nrrd"), np.zeros((4, 5), np.float32))
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "2d.nrrd")
    assert e.value.code == ErrorCode.UNSUPPORTED_FORMAT
    header = {"space": "left-posterior-superior", "space directions": np.eye(3) * [1, 0, 1],
              "space origin": np.zeros(3), "kinds": ["domain"] * 3}
    nrrd.write(str(tmp_path / "flat.nrrd"), np.zeros((2, 2, 2), np.float32), header)
    with pytest.raises(GeometryError) as e:
        read_volume(tmp_path / "flat.nrrd")
    assert e.value.code == ErrorCode.INVALID_GEOMETRY
    (tmp_path / "two").mkdir()
    for n in ("ct.nrrd", "image.nrrd"):
        nrrd.write(str(tmp_path / "two" / n), np.zeros((2, 2, 2), np.float32))
    with pytest.raises(InputError) as e:
        read_case(tmp_path / "two")
    assert e.value.code == ErrorCode.AMBIGUOUS_INPUT


def test_itk_reads_every_nrrd_we_write(case, tmp_path):
    """SimpleITK (what Slicer uses) opens the CT, dose, uncertainty and segmentation files with the same geometry
    and values; the dose unit is a key-value field, not NRRD's per-axis `units` (which made ITK refuse the file)."""
    from ADDiffDoseLib.io.nrrd import DOSE_UNIT_FIELD, write_dose_std_nrrd
    from nrrd_helpers import assert_itk_volume, itk_segments

    write_volume_nrrd(tmp_path / "ct.nrrd", case.ct_hu.astype(np.int16), case.grid)
    assert_itk_volume(tmp_path / "ct.nrrd", case.ct_hu, case.grid)
    write_dose_nrrd(tmp_path / "dose.nrrd", case.dose_gy, case.grid, {"model": "m1", "warnings": ["a", "b"]})
    meta = assert_itk_volume(tmp_path / "dose.nrrd", case.dose_gy, case.grid)
    assert meta[DOSE_UNIT_FIELD] == "Gy" and meta["ADDiffDose_model"] == "m1"
    assert "NOT FOR CLINICAL USE" in meta["ADDiffDose_notice"]
    _, header = nrrd.read(str(tmp_path / "dose.nrrd"))
    assert "units" not in header and header[DOSE_UNIT_FIELD] == "Gy"
    write_dose_std_nrrd(tmp_path / "std.nrrd", case.dose_gy * 0.1, case.grid, "std")
    assert assert_itk_volume(tmp_path / "std.nrrd", case.dose_gy * np.float32(0.1), case.grid)[DOSE_UNIT_FIELD] == "Gy"
    write_segmentation_nrrd(tmp_path / "s.seg.nrrd", case)
    masks = itk_segments(tmp_path / "s.seg.nrrd", case.grid)  # by segment name: the names as read
    assert set(masks) == {s.original_name for s in case.structures.values()}
    for s in case.structures.values():
        np.testing.assert_array_equal(masks[s.original_name], s.mask)
