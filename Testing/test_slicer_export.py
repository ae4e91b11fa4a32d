"""Dose node -> DICOM RT Dose through the library's writer, on a real MRML scene (slicer-core)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from slicer_helpers import new_scene, openkbp_case  # noqa: E402

from ADDiffDoseLib.errors import ADDiffDoseError, DoseError, GeometryError  # noqa: E402
from ADDiffDoseLib.geometry import resample_to_grid  # noqa: E402
from ADDiffDoseLib.io.dicom import read_dicom  # noqa: E402
from ADDiffDoseLib.slicer import dose_output, nodes  # noqa: E402
from ADDiffDoseLib.slicer.export import export_dose_rtdose  # noqa: E402

PROVENANCE = {"model": "heuristic", "model_sha256": "cd" * 32, "seed": 5, "steps": 4,
              "beams": [{"gantry_deg": 0.0, "energy_mv": 6.0}, {"gantry_deg": 90.0, "energy_mv": 6.0}]}
STUDY = {"0020,000D": "1.2.826.0.1.3680043.8.498.1", "0020,0052": "1.2.826.0.1.3680043.8.498.2",
         "0010,0020": "PT201", "0010,0010": "Test^Patient"}


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return openkbp_case(openkbp_npz)


def _corners(grid) -> np.ndarray:
    """LPS mm of the 8 corner voxel centres, sorted (independent of the array axis order)."""
    n = np.asarray(grid.shape) - 1
    pts = np.array([grid.index_to_lps(np.array([a, b, c]) * n) for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    return pts[np.lexsort(pts.T[::-1])]


def _scene_with_dose(case):
    scene = new_scene()
    ct_node, seg_node = nodes.add_case_to_scene(scene, case)
    dose = dose_output.add_dose_node(scene, case.dose_gy, case.grid, "pred", reference_node=ct_node,
                                     provenance=PROVENANCE, prescription_gy=70.0)
    return scene, ct_node, dose


def test_export_writes_rtdose_that_reads_back(case, tmp_path):
    scene, ct_node, dose = _scene_with_dose(case)
    ct_node.SetAttribute("DICOM.instanceUIDs", "1.2.3.4 1.2.3.5")
    lookup = lambda uid, tag: STUDY.get(tag, "") if uid == "1.2.3.4" else ""  # noqa: E731 (slicer.dicomDatabase)
    out, warnings = export_dose_rtdose(dose, tmp_path / "RD.dcm", reference_node=ct_node, instance_value=lookup)
    assert warnings == []
    ds = pydicom.dcmread(out)
    assert ds.Modality == "RTDOSE" and ds.DoseUnits == "GY" and ds.BitsAllocated == 16
    assert ds.StudyInstanceUID == STUDY["0020,000D"] and ds.FrameOfReferenceUID == STUDY["0020,0052"]
    assert ds.PatientID == "PT201" and "NOT FOR CLINICAL USE" in ds.SeriesDescription
    assert "heuristic" in ds.ImageComments and "cd" * 32 in ds.ImageComments
    plan = pydicom.dcmread(tmp_path / "RD_rtplan.dcm")  # the minimal plan with the prediction's beams
    assert [float(b.ControlPointSequence[0].GantryAngle) for b in plan.BeamSequence] == [0.0, 90.0]
    back = read_dicom(tmp_path)  # written axially (slices along z): same voxel centres, reordered axes
    assert np.allclose(_corners(back.grid), _corners(case.grid), atol=1e-3)
    on_case_grid = resample_to_grid(back.dose_gy, back.grid, case.grid, order=1)
    assert np.abs(on_case_grid - case.dose_gy).max() <= float(ds.DoseGridScaling) * 0.51 + 1e-4


def test_export_hardens_a_parent_transform(case, tmp_path):
    import vtk

    scene, _, dose = _scene_with_dose(case)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)  # +10 mm RAS x = 10 mm towards the patient's right = -10 mm LPS x
    transform.SetMatrixTransformToParent(shift)
    dose.SetAndObserveTransformNodeID(transform.GetID())
    out, warnings = export_dose_rtdose(dose, tmp_path / "RD.dcm")
    assert warnings  # no DICOM identity: new UIDs, said so
    written = read_dicom(out)
    assert np.allclose(_corners(written.grid), _corners(case.grid) + [-10.0, 0.0, 0.0], atol=1e-3)
    warp = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")  # a non-linear parent is refused
    transform.SetAndObserveTransformNodeID(warp.GetID())
    spline = vtk.vtkThinPlateSplineTransform()
    points = vtk.vtkPoints()
    for xyz in ((0, 0, 0), (100, 0, 0), (0, 100, 0), (0, 0, 100)):
        points.InsertNextPoint(*xyz)
    moved = vtk.vtkPoints()
    for xyz in ((0, 0, 0), (110, 0, 0), (0, 100, 0), (0, 0, 100)):
        moved.InsertNextPoint(*xyz)
    spline.SetSourceLandmarks(points)
    spline.SetTargetLandmarks(moved)
    warp.SetAndObserveTransformFromParent(spline)
    with pytest.raises(GeometryError):
        export_dose_rtdose(dose, tmp_path / "RD2.dcm")


def test_export_refuses_non_dose_and_negative(case, tmp_path):
    scene, ct_node, dose = _scene_with_dose(case)
    with pytest.raises(DoseError):
        export_dose_rtdose(ct_node, tmp_path / "ct.dcm")
    arr = nodes.array_from_volume_node(dose)
    arr[0, 0, 0] = -5.0
    nodes.update_volume_node(dose, arr, case.grid)
    with pytest.raises(ADDiffDoseError) as err:
        export_dose_rtdose(dose, tmp_path / "neg.dcm")
    assert err.value.code.value == "E204"
    assert not (tmp_path / "neg.dcm").exists()
