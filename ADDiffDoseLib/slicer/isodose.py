"""Isodose display for a dose volume.

With SlicerRT: its Isodose logic (``vtkSlicerIsodoseModuleLogic::CreateIsodoseSurfaces`` with a
``vtkMRMLIsodoseNode``; SlicerRt/SlicerRT ``Isodose/Logic/vtkSlicerIsodoseModuleLogic.cxx`` and
``Isodose/MRML/vtkMRMLIsodoseNode.h``) makes one model node ``<dose>_IsodoseLevels``.
Without it: a segmentation node with one segment per level (voxels with dose >= level), which shows
as lines in 2D and (after "Show 3D") surfaces in 3D, and is usable for DVH and Boolean operations.
"""

from __future__ import annotations

import numpy as np
import slicer  # 3D Slicer's module (or slicer-core's); never this package

from ..errors import ErrorCode, InputError
from . import nodes

# fractions of the prescription shown by default (SlicerRT's default table is 5..30 Gy absolute)
DEFAULT_LEVEL_FRACTIONS = (0.3, 0.5, 0.8, 0.95, 1.0, 1.07)
DEFAULT_LEVELS_GY = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0)  # Isodose/Resources/Isodose_ColorTable.ctbl


def isodose_available() -> bool:
    modules = getattr(slicer, "modules", None)
    return modules is not None and hasattr(modules, "isodose")


def default_levels_gy(prescription_gy: float | None) -> list[float]:
    if prescription_gy:
        return [round(f * float(prescription_gy), 2) for f in DEFAULT_LEVEL_FRACTIONS]
    return list(DEFAULT_LEVELS_GY)


def _level_color(i: int, n: int) -> tuple[float, float, float]:
    t = i / max(n - 1, 1)  # blue -> green -> yellow -> red, like dose colour washes
    anchors = np.array([(0.0, 0.0, 0.0, 1.0), (0.4, 0.0, 0.8, 0.2), (0.7, 1.0, 0.9, 0.0), (1.0, 1.0, 0.0, 0.0)])
    return tuple(float(np.interp(t, anchors[:, 0], anchors[:, c])) for c in (1, 2, 3))


def isodose_segmentation(scene, dose_node, levels_gy, name: str | None = None):
    """Segmentation node with a segment 'NN Gy' per level (dose >= level), on the dose grid."""
    levels = sorted(float(v) for v in levels_gy)
    if not levels or levels[0] <= 0:
        raise InputError(f"isodose levels must be positive Gy values, got {levels_gy!r}", code=ErrorCode.INVALID_VALUE)
    grid = nodes.grid_from_volume_node(dose_node)
    dose = nodes.array_from_volume_node(dose_node)
    masks = {f"{v:g} Gy": dose >= v for v in levels}
    colors = {key: _level_color(i, len(levels)) for i, key in enumerate(masks)}
    seg = nodes.add_segmentation_node(scene, masks, grid, name or f"{dose_node.GetName()}_Isodose", colors,
                                      reference_node=dose_node)
    seg.SetAttribute("ADDiffDose.IsodoseLevelsGy", ",".join(f"{v:g}" for v in levels))
    display = seg.GetDisplayNode()
    display.SetAllSegmentsOpacity2DFill(0.0)  # lines only in slices, like isodose lines
    display.SetAllSegmentsOpacity2DOutline(1.0)
    dose_item = nodes.subject_hierarchy(scene).GetItemByDataNode(dose_node)
    if dose_item:
        nodes.place_under(scene, seg, dose_item)
    return seg


def slicerrt_isodose(scene, dose_node, levels_gy):
    """SlicerRT: isodose parameter node + CreateIsodoseSurfaces; returns the isodose model node."""
    logic = slicer.modules.isodose.logic()
    parameters = slicer.vtkMRMLIsodoseNode()
    scene.AddNode(parameters)
    parameters.SetAndObserveDoseVolumeNode(dose_node)
    logic.SetupColorTableNodeForDoseVolumeNode(dose_node)
    levels = sorted(float(v) for v in levels_gy)
    logic.SetNumberOfIsodoseLevels(parameters, len(levels))
    table = parameters.GetColorTableNode()
    for i, v in enumerate(levels):
        r, g, b = _level_color(i, len(levels))
        table.SetColor(i, f"{v:g}", r, g, b, 1.0)
    logic.CreateIsodoseSurfaces(parameters)
    return scene.GetFirstNodeByName(f"{dose_node.GetName()}_IsodoseLevels")


def create_isodose(scene, dose_node, levels_gy=None, prescription_gy: float | None = None,
                   use_slicerrt: bool | None = None):
    """Isodose display for `dose_node`: SlicerRT's model when available, else a segmentation."""
    levels = list(levels_gy) if levels_gy else default_levels_gy(prescription_gy)
    use_slicerrt = isodose_available() if use_slicerrt is None else use_slicerrt
    if use_slicerrt:
        return slicerrt_isodose(scene, dose_node, levels)
    return isodose_segmentation(scene, dose_node, levels)
