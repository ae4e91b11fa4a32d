"""Volume and segmentation nodes <-> numpy arrays and :class:`~ADDiffDoseLib.case.Case`.

Geometry is exact: a node's IJKToRAS matrix is ``Grid.ijk_to_ras_matrix()`` (LPS -> RAS negates x and
y; oblique directions are kept). Arrays are (k, j, i) as ``slicer.util.arrayFromVolume`` returns them.
Segments are exported one at a time onto the reference grid, so overlapping segments keep every voxel.
Parent transforms are hardened into the copies we read when linear, refused otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer  # 3D Slicer's module (or slicer-core's); never this package
import vtk
from vtk.util import numpy_support

from ..case import Case, Plan, Role, Structure
from ..errors import ErrorCode, GeometryError, InputError
from ..geometry import Grid

SEGMENT_ROLE_TAG = "ADDiffDose.Role"
SEGMENT_RX_TAG = "ADDiffDose.PrescriptionGy"
SEGMENT_STRUCTURE_TAG = "ADDiffDose.Structure"


# --- matrices -------------------------------------------------------------------------------
def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """4x4 numpy -> vtkMatrix4x4."""
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """vtkMatrix4x4 -> 4x4 float64 numpy."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _node_label(node) -> str:
    return f"{node.GetClassName()} '{node.GetName()}'"


def world_transform(node) -> np.ndarray:
    """4x4 node-to-world (RAS) matrix of the node's parent transforms; identity if none.

    Raises GeometryError for a non-linear (warping) transform: it cannot be hardened into a grid.
    """
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise GeometryError(
            f"{_node_label(node)} is under the non-linear transform '{parent.GetName()}'; "
            "harden it (Data module > right-click > Harden transform) before predicting")
    m = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(m)
    return numpy_matrix(m)


# --- volumes --------------------------------------------------------------------------------
def set_volume_geometry(node, grid: Grid) -> None:
    """Give a volume node the exact IJKToRAS of `grid` (spacing, origin, oblique directions)."""
    node.SetIJKToRASMatrix(vtk_matrix(grid.ijk_to_ras_matrix()))


def volume_shape(node) -> tuple[int, int, int]:
    """(k, j, i) array shape of a volume node's image data."""
    image = node.GetImageData()
    if image is None:
        raise InputError(f"{_node_label(node)} has no image data", code=ErrorCode.MISSING_FIELD)
    return tuple(int(d) for d in image.GetDimensions()[::-1])


def grid_from_volume_node(node, harden: bool = True) -> Grid:
    """The node's voxel grid in LPS; with `harden`, its linear parent transforms are applied."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ijk_to_ras = numpy_matrix(m)
    if harden:
        ijk_to_ras = world_transform(node) @ ijk_to_ras
    try:
        return Grid.from_ijk_to_ras(volume_shape(node), ijk_to_ras)
    except GeometryError as exc:  # sheared or mirrored-by-scale transforms
        raise GeometryError(f"{_node_label(node)}: {exc.message}") from exc


def array_from_volume_node(node, dtype=np.float32) -> np.ndarray:
    """A (k, j, i) copy of the node's voxels (the VTK-owned view is not kept)."""
    if node.GetImageData() is None:
        raise InputError(f"{_node_label(node)} has no image data", code=ErrorCode.MISSING_FIELD)
    return np.array(slicer.util.arrayFromVolume(node), dtype=dtype, copy=True)


def update_volume_node(node, array: np.ndarray, grid: Grid) -> None:
    """Fill `node` with `array` ((k, j, i), on `grid`) and the grid's geometry."""
    grid.check_array(array, f"array for {_node_label(node)}")
    set_volume_geometry(node, grid)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))


def add_volume_node(scene, array: np.ndarray, grid: Grid, name: str,
                    class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in `scene` holding `array` on `grid` (display nodes created)."""
    node = scene.AddNewNodeByClass(class_name, name)
    update_volume_node(node, array, grid)
    node.CreateDefaultDisplayNodes()
    return node


# --- segmentations --------------------------------------------------------------------------
def _oriented_image(mask: np.ndarray, grid: Grid):
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*grid.size_ijk)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.astype(np.uint8).ravel(), deep=True))
    image.SetImageToWorldMatrix(vtk_matrix(grid.ijk_to_ras_matrix()))
    return image


def _reference_image(grid: Grid):
    """Geometry-only oriented image (no voxels) describing `grid` in world RAS."""
    image = slicer.vtkOrientedImageData()
    nk, nj, ni = grid.shape
    image.SetExtent(0, ni - 1, 0, nj - 1, 0, nk - 1)
    image.SetImageToWorldMatrix(vtk_matrix(grid.ijk_to_ras_matrix()))
    return image


def segment_ids(seg_node) -> list[str]:
    segmentation = seg_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def _ensure_labelmaps(seg_node) -> None:
    """Segmentations loaded from RTSTRUCT hold planar contours: rasterise them once (as Slicer does)."""
    segmentation = seg_node.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segmentation.GetNumberOfSegments() and not segmentation.ContainsRepresentation(name):
        if not segmentation.CreateRepresentation(name):
            raise InputError(f"{_node_label(seg_node)}: cannot make binary labelmaps of its segments")


def segment_mask(seg_node, segment_id: str, grid: Grid) -> np.ndarray:
    """(k, j, i) bool mask of one segment on `grid` (world RAS, parent transforms applied).

    Nearest-neighbour resampling; voxels of `grid` outside the segment's labelmap are False.
    """
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    labelmap = slicer.vtkOrientedImageData()
    if not logic.GetSegmentBinaryLabelmapRepresentation(seg_node, segment_id, labelmap):
        raise InputError(f"{_node_label(seg_node)}: segment {segment_id!r} has no binary labelmap")
    world_transform(seg_node)  # refuses non-linear parents
    if seg_node.GetParentTransformNode() is not None:
        logic.ApplyParentTransformToOrientedImageData(seg_node, labelmap)
    out = slicer.vtkOrientedImageData()
    scalars = labelmap.GetPointData().GetScalars()
    if scalars is None or labelmap.IsEmpty():
        return np.zeros(grid.shape, dtype=bool)
    # padImage False: the output keeps the grid's extent; True grows it to cover a segment lying partly or
    # wholly outside the grid, and the reshape below then fails (issue 15.2: an outside segment aborted the DVH)
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, _reference_image(grid), out, False, False)
    if out.GetPointData().GetScalars() is None:
        return np.zeros(grid.shape, dtype=bool)
    return numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(grid.shape) > 0


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as found: its ID, display name, RGB colour in 0-1 and its mask on the grid asked for."""

    segment_id: str
    name: str
    color_rgb: tuple[float, float, float]
    mask: np.ndarray


def export_segments(seg_node, grid: Grid, ids: list[str] | None = None) -> list[SegmentInfo]:
    """Every (or the listed) segment, exported ONE BY ONE onto `grid` so overlaps survive."""
    _ensure_labelmaps(seg_node)
    segmentation = seg_node.GetSegmentation()
    out = []
    for sid in ids if ids is not None else segment_ids(seg_node):
        segment = segmentation.GetSegment(sid)
        if segment is None:
            raise InputError(f"{_node_label(seg_node)} has no segment {sid!r}", code=ErrorCode.MISSING_FIELD)
        out.append(SegmentInfo(sid, segment.GetName(), tuple(segment.GetColor()), segment_mask(seg_node, sid, grid)))
    return out


def add_segmentation_node(scene, masks: dict[str, np.ndarray], grid: Grid, name: str,
                          colors: dict[str, tuple] | None = None, reference_node=None):
    """A new segmentation node with one binary-labelmap segment per mask (overlaps allowed)."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    if reference_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    for key, mask in masks.items():
        grid.check_array(mask, f"mask {key!r}")
        color = (colors or {}).get(key) or _default_color(len(segment_ids(node)))
        node.AddSegmentFromBinaryLabelmapRepresentation(_oriented_image(mask, grid), key, list(color))
    return node


def _default_color(index: int) -> tuple[float, float, float]:
    palette = ((0.9, 0.2, 0.2), (0.2, 0.6, 0.9), (0.2, 0.8, 0.3), (0.95, 0.75, 0.1), (0.7, 0.3, 0.8),
               (0.1, 0.75, 0.75), (0.95, 0.5, 0.2), (0.6, 0.6, 0.6), (0.9, 0.45, 0.7), (0.5, 0.35, 0.2))
    return palette[index % len(palette)]


def tag_segment(seg_node, segment_id: str, structure: str, role: Role | str, prescription_gy: float | None) -> None:
    """Store a segment's role and prescription as segment tags (saved with the scene and .seg.nrrd)."""
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    segment.SetTag(SEGMENT_STRUCTURE_TAG, structure)
    segment.SetTag(SEGMENT_ROLE_TAG, Role(role).value)
    segment.SetTag(SEGMENT_RX_TAG, "" if prescription_gy is None else f"{float(prescription_gy):g}")


def read_segment_tags(seg_node, segment_id: str) -> dict[str, str]:
    """The ADDiffDose tags of a segment ('' where unset)."""
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    out = {}
    for tag in (SEGMENT_STRUCTURE_TAG, SEGMENT_ROLE_TAG, SEGMENT_RX_TAG):
        value = ""
        if segment is not None:
            holder = vtk.reference("")
            if segment.GetTag(tag, holder):
                value = str(holder)
        out[tag] = value
    return out


# --- subject hierarchy ----------------------------------------------------------------------
def subject_hierarchy(scene):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def study_item_of(scene, node) -> int:
    """SH study item above `node`, or 0 when the node is not under a study."""
    sh = subject_hierarchy(scene)
    item = sh.GetItemByDataNode(node)
    if not item:
        return 0
    return sh.GetItemAncestorAtLevel(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy())


def ensure_study(scene, node, patient_name: str = "ADDiffDose patient", study_name: str = "ADDiffDose study") -> int:
    """The study item holding `node`; made (patient > study > node) when the node has none."""
    study = study_item_of(scene, node)
    if study:
        return study
    sh = subject_hierarchy(scene)
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), patient_name)
    study = sh.CreateStudyItem(patient, study_name)
    place_under(scene, node, study)
    return study


def place_under(scene, node, parent_item: int) -> int:
    """Put `node`'s SH item under `parent_item` (creating the item if the Qt plugins did not)."""
    sh = subject_hierarchy(scene)
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, parent_item)
        return item
    return sh.CreateItem(parent_item, node)


# --- Case <-> nodes ---------------------------------------------------------------------------
def add_case_to_scene(scene, case: Case, name: str | None = None):
    """CT volume + segmentation (roles and prescriptions as segment tags) under one SH study.

    Returns (ct_node, segmentation_node); the CT is a scalar volume in HU.
    """
    name = name or case.name
    if case.ct_hu is None:
        raise InputError(f"case {case.name!r} has no CT", code=ErrorCode.MISSING_FIELD)
    ct_node = add_volume_node(scene, case.ct_hu, case.grid, f"{name}_CT")
    masks = {key: s.mask for key, s in case.structures.items()}
    colors = {key: s.color_rgb for key, s in case.structures.items() if s.color_rgb}
    seg_node = add_segmentation_node(scene, masks, case.grid, f"{name}_structures", colors, reference_node=ct_node)
    for sid, key in zip(segment_ids(seg_node), masks):
        s = case.structures[key]
        tag_segment(seg_node, sid, key, s.role, s.prescription_gy)
    study = ensure_study(scene, ct_node, patient_name=name, study_name=f"{name} study")
    place_under(scene, seg_node, study)
    return ct_node, seg_node


def case_from_nodes(ct_node, seg_node, structures: dict[str, tuple[str, Role, float | None]],
                    plan: Plan | None = None, name: str | None = None) -> Case:
    """A Case on the CT's grid (world geometry: linear parent transforms hardened).

    structures: segment ID -> (structure name, role, prescription Gy or None); segments not listed
    are left out. Masks are exported one by one onto the CT grid.
    """
    grid = grid_from_volume_node(ct_node)
    ct_hu = array_from_volume_node(ct_node)
    exported = export_segments(seg_node, grid, list(structures))
    out = {}
    for info in exported:
        key, role, rx = structures[info.segment_id]
        out[key] = Structure(key, info.mask, role=role, prescription_gy=rx if role == Role.TARGET else None,
                             original_name=info.name, color_rgb=info.color_rgb)
    return Case(name=name or ct_node.GetName(), grid=grid, ct_hu=ct_hu, structures=out,
                plan=plan or Plan(source="user"), metadata={"slicer_ct_node": ct_node.GetName()})
