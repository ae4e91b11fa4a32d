"""Isodose display for a dose volume, in % of the prescription with a legend in Gy (issue 15.9).

Levels default to 50/80/90/95/100/105 % of the highest prescription stored on the dose node
(:data:`.dose_output.PRESCRIPTION_ATTRIBUTE`); without one, SlicerRT's absolute default 5..30 Gy. A legend table
``<dose>_IsodoseLegend`` (Level, % of prescription, Dose (Gy), Color) sits under the dose.

With SlicerRT: its Isodose logic (``vtkSlicerIsodoseModuleLogic::CreateIsodoseSurfaces`` with a
``vtkMRMLIsodoseNode``; SlicerRt/SlicerRT ``Isodose/Logic/vtkSlicerIsodoseModuleLogic.cxx`` and
``Isodose/MRML/vtkMRMLIsodoseNode.cxx``) makes one model node; we keep one parameter node per dose and return
the model it holds (``GetIsosurfacesModelNode``: SlicerRT names a new model with GenerateUniqueName, ~790, so a
lookup by name finds a stale one). Without it: a segmentation with one segment per level (voxels with
dose >= level), lines in 2D and (after "Show 3D") surfaces in 3D, usable for DVH and Boolean operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import slicer  # 3D Slicer's module (or slicer-core's); never this package

from ..errors import DoseError, ErrorCode, InputError
from . import dose_output, nodes

DEFAULT_LEVEL_PERCENTS = (50.0, 80.0, 90.0, 95.0, 100.0, 105.0)
# SlicerRT's clinical colours of relative isodoses (vtkSlicerIsodoseModuleLogic.cxx, GetRelativeIsodoseColorTable
# and the relative branch of SetNumberOfIsodoseLevels): 80 purple, 90 blue, 100 yellow, 105 orange, 110 red.
# SlicerRT has no 50 % or 95 % entry: 50 % cyan and 95 % green are ours, placed between its neighbours.
CLINICAL_COLORS = {50.0: (0.0, 1.0, 1.0), 80.0: (108 / 255, 0.0, 208 / 255), 90.0: (0.0, 147 / 255, 221 / 255),
                   95.0: (0.0, 0.8, 0.0), 100.0: (1.0, 1.0, 0.0), 105.0: (1.0, 0.5, 0.0), 110.0: (1.0, 0.0, 0.0)}
# SlicerRT's absolute default table (GetDefaultIsodoseColorTable; Isodose/Resources/Isodose_ColorTable.ctbl)
ABSOLUTE_COLORS = {5.0: (0.0, 1.0, 0.0), 10.0: (0.5, 1.0, 0.0), 15.0: (1.0, 1.0, 0.0), 20.0: (1.0, 0.66, 0.0),
                   25.0: (1.0, 0.33, 0.0), 30.0: (1.0, 0.0, 0.0)}
DEFAULT_LEVELS_GY = tuple(ABSOLUTE_COLORS)
LEGEND_COLUMNS = ("Level", "% of prescription", "Dose (Gy)", "Color")
PARAMETERS_ROLE = "ADDiffDoseIsodoseParameters"  # dose node -> its one SlicerRT isodose parameter node
LEGEND_ROLE = "ADDiffDoseIsodoseLegend"  # dose node -> its legend table
SEGMENTATION_ROLE = "ADDiffDoseIsodoseSegmentation"  # dose node -> its fallback isodose segmentation


@dataclass(frozen=True)
class IsodoseLevel:
    """One isodose: dose in Gy, % of the prescription (None without one), RGB in 0..1."""

    dose_gy: float
    percent: float | None
    color: tuple[float, float, float]

    @property
    def label(self) -> str:
        return f"{self.percent:g} %" if self.percent is not None else f"{self.dose_gy:g} Gy"


def isodose_available() -> bool:
    modules = getattr(slicer, "modules", None)
    return modules is not None and hasattr(modules, "isodose")


def _level_color(i: int, n: int) -> tuple[float, float, float]:
    t = i / max(n - 1, 1)  # blue -> green -> yellow -> red, for levels SlicerRT has no colour for
    anchors = np.array([(0.0, 0.0, 0.0, 1.0), (0.4, 0.0, 0.8, 0.2), (0.7, 1.0, 0.9, 0.0), (1.0, 1.0, 0.0, 0.0)])
    return tuple(float(np.interp(t, anchors[:, 0], anchors[:, c])) for c in (1, 2, 3))


def _color(i: int, n: int, percent: float | None, dose_gy: float) -> tuple[float, float, float]:
    table, key = (CLINICAL_COLORS, percent) if percent is not None else (ABSOLUTE_COLORS, dose_gy)
    match = next((c for k, c in table.items() if abs(k - key) < 1e-6), None)
    return tuple(float(v) for v in match) if match else _level_color(i, n)


def isodose_levels(levels_gy=None, prescription_gy: float | None = None, levels_pct=None) -> list[IsodoseLevel]:
    """Levels sorted by dose: levels_gy as given, else levels_pct (default 50..105 %) of the prescription, else
    SlicerRT's 5..30 Gy. Raises InputError for non-positive levels or % levels without a prescription."""
    rx = float(prescription_gy) if prescription_gy else None
    if levels_gy:
        pairs = [(float(v), 100.0 * float(v) / rx if rx else None) for v in levels_gy]
    elif rx:
        pairs = [(round(float(p) * rx / 100.0, 4), float(p)) for p in (levels_pct or DEFAULT_LEVEL_PERCENTS)]
    elif levels_pct:
        raise InputError("isodose levels in % need a prescription (none is stored on the dose node)",
                         code=ErrorCode.MISSING_FIELD)
    else:
        pairs = [(v, None) for v in DEFAULT_LEVELS_GY]
    pairs.sort()
    if not pairs or pairs[0][0] <= 0:
        raise InputError(f"isodose levels must be positive, got {levels_gy or levels_pct!r}",
                         code=ErrorCode.INVALID_VALUE)
    return [IsodoseLevel(gy, pct, _color(i, len(pairs), pct, gy)) for i, (gy, pct) in enumerate(pairs)]


def default_levels_gy(prescription_gy: float | None) -> list[float]:
    return [level.dose_gy for level in isodose_levels(prescription_gy=prescription_gy)]


# --- nodes kept once per dose ---------------------------------------------------------------------
def _under_dose(scene, node, dose_node) -> None:
    dose_item = nodes.subject_hierarchy(scene).GetItemByDataNode(dose_node)
    if dose_item:
        nodes.place_under(scene, node, dose_item)


def legend_table(scene, dose_node, levels: list[IsodoseLevel], prescription_gy: float | None):
    """The dose's ``<dose>_IsodoseLegend`` table (made once, refilled): Level, % of prescription, Dose (Gy), Color."""
    table = dose_node.GetNodeReference(LEGEND_ROLE)
    if table is None:
        name = scene.GenerateUniqueName(f"{dose_node.GetName()}_IsodoseLegend")
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        dose_node.SetNodeReferenceID(LEGEND_ROLE, table.GetID())
        _under_dose(scene, table, dose_node)
    table.RemoveAllColumns()
    for title in LEGEND_COLUMNS:
        table.AddColumn().SetName(title)
    for r, level in enumerate(levels):
        table.AddEmptyRow()
        hex_color = "#" + "".join(f"{int(round(255 * c)):02x}" for c in level.color)
        pct = "" if level.percent is None else f"{level.percent:g}"
        for c, text in enumerate((level.label, pct, f"{level.dose_gy:g}", hex_color)):
            table.SetCellText(r, c, text)
    table.SetAttribute(dose_output.PRESCRIPTION_ATTRIBUTE, f"{prescription_gy:g}" if prescription_gy else "")
    return table


def isodose_segmentation(scene, dose_node, levels: list[IsodoseLevel], name: str | None = None):
    """Segmentation with a segment per level (dose >= level) on the dose grid; replaces the dose's previous one."""
    old = dose_node.GetNodeReference(SEGMENTATION_ROLE)
    if old is not None:
        scene.RemoveNode(old)
    grid = nodes.grid_from_volume_node(dose_node)
    dose = nodes.array_from_volume_node(dose_node)
    keys = [f"{lv.label} ({lv.dose_gy:g} Gy)" if lv.percent is not None else lv.label for lv in levels]
    masks = {k: dose >= lv.dose_gy for k, lv in zip(keys, levels)}
    seg = nodes.add_segmentation_node(scene, masks, grid, name or f"{dose_node.GetName()}_Isodose",
                                      {k: lv.color for k, lv in zip(keys, levels)}, reference_node=dose_node)
    seg.SetAttribute("ADDiffDose.IsodoseLevelsGy", ",".join(f"{lv.dose_gy:g}" for lv in levels))
    display = seg.GetDisplayNode()
    display.SetAllSegmentsOpacity2DFill(0.0)  # lines only in slices, like isodose lines
    display.SetAllSegmentsOpacity2DOutline(1.0)
    dose_node.SetNodeReferenceID(SEGMENTATION_ROLE, seg.GetID())
    _under_dose(scene, seg, dose_node)
    return seg


def isodose_parameter_node(scene, dose_node):
    """The one vtkMRMLIsodoseNode of this dose: referenced from the dose, else one observing it, else a new one."""
    node = dose_node.GetNodeReference(PARAMETERS_ROLE)
    if node is None:
        found = scene.GetNodesByClass("vtkMRMLIsodoseNode")
        for i in range(found.GetNumberOfItems()):
            candidate = found.GetItemAsObject(i)
            if candidate.GetDoseVolumeNode() is not None and candidate.GetDoseVolumeNode().GetID() == dose_node.GetID():
                node = candidate
                break
    if node is None:
        node = slicer.vtkMRMLIsodoseNode()
        node.SetName(scene.GenerateUniqueName(f"{dose_node.GetName()}_Isodose"))
        scene.AddNode(node)
        node.SetAndObserveDoseVolumeNode(dose_node)
    dose_node.SetNodeReferenceID(PARAMETERS_ROLE, node.GetID())
    return node


def _absolute_levels(parameters) -> None:
    """Colour names are Gy values: Gy units, no relative representation (newer SlicerRT only, hence hasattr)."""
    if hasattr(parameters, "SetRelativeRepresentationFlag"):
        parameters.SetRelativeRepresentationFlag(False)
    if hasattr(parameters, "SetDoseUnits") and hasattr(parameters, "Gy"):
        parameters.SetDoseUnits(parameters.Gy)


def slicerrt_isodose(scene, dose_node, levels: list[IsodoseLevel]):
    """SlicerRT: the dose's isodose parameter node + CreateIsodoseSurfaces; returns the model it holds."""
    logic = slicer.modules.isodose.logic()
    parameters = isodose_parameter_node(scene, dose_node)
    _absolute_levels(parameters)
    logic.SetupColorTableNodeForDoseVolumeNode(dose_node)
    logic.SetNumberOfIsodoseLevels(parameters, len(levels))
    table = parameters.GetColorTableNode()
    if table is None:
        raise DoseError(f"SlicerRT made no isodose colour table for '{dose_node.GetName()}'",
                        code=ErrorCode.EXTERNAL_FAILED)
    for i, level in enumerate(levels):
        table.SetColor(i, f"{level.dose_gy:.6g}", *level.color, 1.0)  # SlicerRT reads the level from the name
    if not logic.CreateIsodoseSurfaces(parameters):
        raise DoseError(f"SlicerRT could not create the isodose surfaces of '{dose_node.GetName()}' (see the "
                        "application log); is the dose in the Data tree and not empty?", code=ErrorCode.EXTERNAL_FAILED)
    model = parameters.GetIsosurfacesModelNode()
    if model is None:
        raise DoseError(f"SlicerRT reported isodose surfaces of '{dose_node.GetName()}' but keeps no model",
                        code=ErrorCode.EXTERNAL_FAILED)
    return model


def create_isodose(scene, dose_node, levels_gy=None, prescription_gy: float | None = None,
                   use_slicerrt: bool | None = None, levels_pct=None):
    """Isodose display for `dose_node` (SlicerRT's model when available, else a segmentation) and its legend.

    prescription_gy: default the one stored on the dose node; levels_pct: % of it (default 50..105 %).
    The legend table is :func:`legend_of` the dose node.
    """
    rx = prescription_gy or dose_output.prescription_of(dose_node)
    levels = isodose_levels(levels_gy, rx, levels_pct)
    use_slicerrt = isodose_available() if use_slicerrt is None else use_slicerrt
    make = slicerrt_isodose if use_slicerrt else isodose_segmentation
    node = make(scene, dose_node, levels)
    legend = legend_table(scene, dose_node, levels, rx)
    node.SetAttribute("ADDiffDose.IsodoseLegendID", legend.GetID())
    return node


def legend_of(dose_node):
    """The isodose legend table of a dose node (None before :func:`create_isodose`)."""
    return dose_node.GetNodeReference(LEGEND_ROLE)
