"""ADDiffDoseLib.slicer.nodes/roles on a real MRML scene (slicer-core): geometry, masks, tags, role table."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from slicer_helpers import new_scene, openkbp_case  # noqa: E402

from ADDiffDoseLib.case import Role  # noqa: E402
from ADDiffDoseLib.errors import GeometryError, InputError  # noqa: E402
from ADDiffDoseLib.geometry import Grid  # noqa: E402
from ADDiffDoseLib.slicer import nodes, roles  # noqa: E402


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return openkbp_case(openkbp_npz)


@pytest.fixture()
def scene():
    return new_scene()


def _ras_centroid(node, mask: np.ndarray) -> np.ndarray:
    """RAS centroid of a (k, j, i) mask through the node's own IJKToRAS."""
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    kji = np.argwhere(mask).mean(axis=0)
    return (nodes.numpy_matrix(m) @ np.array([kji[2], kji[1], kji[0], 1.0]))[:3]


def test_openkbp_case_anatomy_in_ras(scene, case):
    ct_node, seg_node = nodes.add_case_to_scene(scene, case)
    masks = {s.name: s.mask for s in nodes.export_segments(seg_node, nodes.grid_from_volume_node(ct_node))}
    right = _ras_centroid(ct_node, masks["Parotid_R"])
    left = _ras_centroid(ct_node, masks["Parotid_L"])
    stem = _ras_centroid(ct_node, masks["Brainstem"])
    assert right[0] > left[0] + 20  # RAS +x is the patient's right
    assert stem[2] > max(right[2], left[2])  # brainstem is superior to the parotids
    # mandible is anterior (RAS +y) of the spinal cord
    assert _ras_centroid(ct_node, masks["Bone_Mandible"])[1] > _ras_centroid(ct_node, masks["SpinalCord"])[1]


def test_case_round_trip_is_exact(scene, case):
    ct_node, seg_node = nodes.add_case_to_scene(scene, case)
    assert nodes.grid_from_volume_node(ct_node).same_as(case.grid, atol_mm=1e-6)
    np.testing.assert_array_equal(nodes.array_from_volume_node(ct_node), case.ct_hu)
    spec = {r.segment_id: (r.structure, Role(r.role), r.prescription_gy) for r in roles.default_roles(seg_node)}
    back = nodes.case_from_nodes(ct_node, seg_node, spec)
    assert set(back.structures) == set(case.structures)
    for key, s in case.structures.items():
        np.testing.assert_array_equal(back.structures[key].mask, s.mask, err_msg=key)
        assert back.structures[key].role == s.role
        assert back.structures[key].prescription_gy == s.prescription_gy
    # the PTVs overlap the External: one-by-one export kept those voxels in both
    assert (back.structures["PTV70"].mask & back.structures["External"].mask).sum() == case.structures["PTV70"].mask.sum()


def test_oblique_lps_geometry_round_trip(scene):
    """An asymmetric oblique grid: IJKToRAS = LPS->RAS of the grid's affine, voxel (i,j,k) lands where Grid says."""
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    grid = Grid((4, 5, 6), (3.0, 2.0, 1.5), (10.0, -20.0, 30.0), rot @ np.diag([1, -1, 1]) @ rot.T)
    array = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    node = nodes.add_volume_node(scene, array, grid, "oblique")
    back = nodes.grid_from_volume_node(node)
    assert back.same_as(grid, atol_mm=1e-9)
    lps = grid.index_to_lps([1, 2, 3])  # array index (k, j, i) = (1, 2, 3)
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ras = nodes.numpy_matrix(m) @ np.array([3, 2, 1, 1.0])
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-9)
    assert nodes.array_from_volume_node(node)[1, 2, 3] == array[1, 2, 3]


def test_linear_parent_transform_is_hardened_and_nonlinear_refused(scene):
    import vtk

    grid = Grid((3, 4, 5), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    node = nodes.add_volume_node(scene, np.zeros(grid.shape, np.float32), grid, "v")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 7.0)  # +7 mm RAS x = -7 mm LPS x
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(nodes.grid_from_volume_node(node).origin_lps, [-7.0, 0, 0])
    np.testing.assert_allclose(nodes.grid_from_volume_node(node, harden=False).origin_lps, [0, 0, 0])
    warp = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    transform.SetAndObserveTransformNodeID(warp.GetID())
    warp.SetAndObserveTransformFromParent(vtk.vtkGeneralTransform())
    bspline = vtk.vtkThinPlateSplineTransform()
    pts = vtk.vtkPoints()
    for p in ((0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)):
        pts.InsertNextPoint(p)
    pts2 = vtk.vtkPoints()
    for p in ((0, 0, 0), (11, 0, 0), (0, 10, 0), (0, 0, 10)):
        pts2.InsertNextPoint(p)
    bspline.SetSourceLandmarks(pts)
    bspline.SetTargetLandmarks(pts2)
    warp.SetAndObserveTransformFromParent(bspline)
    with pytest.raises(GeometryError, match="non-linear"):
        nodes.grid_from_volume_node(node)


def test_role_table_from_names_tags_and_edits(scene, case):
    masks = {"PTV_7000": case.structures["PTV70"].mask, "Parotid L": case.structures["Parotid_L"].mask,
             "BODY": case.structures["External"].mask, "z_ring": case.structures["PTV56"].mask}
    seg_node = nodes.add_segmentation_node(scene, masks, case.grid, "seg")
    rows = {r.segment_name: r for r in roles.default_roles(seg_node)}
    assert (rows["PTV_7000"].structure, rows["PTV_7000"].role, rows["PTV_7000"].prescription_gy) == ("PTV70", "target", 70.0)
    assert (rows["Parotid L"].structure, rows["Parotid L"].role) == ("Parotid_L", "oar")
    assert rows["BODY"].role == "external"
    assert rows["z_ring"].role == "other"
    edited = roles.edit_row(list(rows.values()), rows["z_ring"].segment_id, role="ignore")
    edited = roles.edit_row(edited, rows["PTV_7000"].segment_id, prescription_gy=66.0)
    assert roles.roles_from_json(roles.roles_to_json(edited)) == edited
    roles.write_roles_to_segments(seg_node, edited)
    again = {r.segment_name: r for r in roles.default_roles(seg_node)}  # tags win over names now
    assert again["PTV_7000"].prescription_gy == 66.0
    spec = roles.structures_spec(edited)
    assert rows["z_ring"].segment_id not in spec
    with pytest.raises(InputError, match="role must be"):
        roles.edit_row(edited, rows["BODY"].segment_id, role="organ")


def test_check_roles_requires_a_target_with_prescription():
    rows = [roles.RoleRow("a", "Cord", "SpinalCord", "oar")]
    with pytest.raises(InputError, match="no target"):
        roles.check_roles(rows)
    with pytest.raises(InputError, match="prescription"):
        roles.check_roles(rows + [roles.RoleRow("b", "PTV", "PTV", "target")])
    roles.check_roles(rows + [roles.RoleRow("b", "PTV", "PTV", "target", 60.0)])
