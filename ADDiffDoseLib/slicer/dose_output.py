"""Put a predicted dose into the scene the way SlicerRT marks dose, with its provenance.

SlicerRT recognises a dose volume by the node attribute ``DicomRtImport.DoseVolume`` = "1"
(``vtkSlicerRtCommon::IsDoseVolumeNode``, SlicerRt/SlicerRT ``SlicerRtCommon/vtkSlicerRtCommon.cxx``) and reads
the unit from the subject-hierarchy *study* above it (``DicomRtImport.DoseUnitName`` / ``DoseUnitValue``, read
with ``GetAttributeFromItemAncestor(..., GetDICOMLevelStudy())``). Its dose colour table is ``Dose_ColorTable``
(``Isodose/Logic/vtkSlicerIsodoseModuleLogic.cxx``, ``CreateDefaultDoseColorTable``); without SlicerRT we make a
look-alike. The uncertainty (std over samples) volume is *not* marked as dose.
"""

from __future__ import annotations

import json

import numpy as np

from .. import NOT_FOR_CLINICAL_USE
from ..errors import DoseError, ErrorCode
from ..geometry import Grid
from ..metrics.dose_stats import check_dose
from . import nodes

DOSE_VOLUME_ATTRIBUTE = "DicomRtImport.DoseVolume"
DOSE_UNIT_NAME_ATTRIBUTE = "DicomRtImport.DoseUnitName"
DOSE_UNIT_VALUE_ATTRIBUTE = "DicomRtImport.DoseUnitValue"
SLICERRT_DOSE_COLOR_TABLE = "Dose_ColorTable"
FALLBACK_DOSE_COLOR_TABLE = "ADDiffDose_DoseColorTable"
PROVENANCE_PREFIX = "ADDiffDose."
# highest target prescription (Gy) the dose was predicted for: isodose levels are % of it (issue 15.9)
PRESCRIPTION_ATTRIBUTE = PROVENANCE_PREFIX + "PrescriptionGy"
# provenance dict key -> node attribute suffix
PROVENANCE_KEYS = {"model": "Model", "model_sha256": "ModelSHA256", "seed": "Seed", "steps": "Steps",
                   "beams": "Beams", "samples": "Samples", "version": "Version"}


def _set_provenance(node, provenance: dict) -> None:
    for key, suffix in PROVENANCE_KEYS.items():
        if key in provenance and provenance[key] is not None:
            value = provenance[key]
            text = value if isinstance(value, str) else json.dumps(value)
            node.SetAttribute(PROVENANCE_PREFIX + suffix, text)
    node.SetAttribute(PROVENANCE_PREFIX + "NotForClinicalUse", NOT_FOR_CLINICAL_USE)


def provenance_of(node) -> dict[str, str]:
    """The ADDiffDose.* attributes of a node (suffix -> text)."""
    names = node.GetAttributeNames() or ()
    return {n[len(PROVENANCE_PREFIX):]: node.GetAttribute(n) for n in names if n.startswith(PROVENANCE_PREFIX)}


def dose_color_table(scene):
    """SlicerRT's Dose_ColorTable when present, else (made once) a blue-green-yellow-red look-alike."""
    for name in (SLICERRT_DOSE_COLOR_TABLE, FALLBACK_DOSE_COLOR_TABLE):
        node = scene.GetFirstNodeByName(name)
        if node is not None and node.IsA("vtkMRMLColorNode"):
            return node
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", FALLBACK_DOSE_COLOR_TABLE)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    table.SetAttribute("Category", "ADDiffDose")
    anchors = np.array([(0.0, 0.0, 0.0, 1.0), (0.35, 0.0, 1.0, 1.0), (0.55, 0.0, 1.0, 0.0),
                        (0.75, 1.0, 1.0, 0.0), (1.0, 1.0, 0.0, 0.0)])
    for i in range(256):
        t = i / 255.0
        rgb = [np.interp(t, anchors[:, 0], anchors[:, c]) for c in (1, 2, 3)]
        table.SetColor(i, f"{i}", *rgb, 1.0)
    table.SetSingletonTag(FALLBACK_DOSE_COLOR_TABLE)
    return table


def _set_study_unit(scene, node, reference_node) -> None:
    """Gy on the SH study above the dose (made under the reference CT's study, or a new one)."""
    anchor = reference_node if reference_node is not None else node
    study = nodes.ensure_study(scene, anchor)
    nodes.place_under(scene, node, study)
    sh = nodes.subject_hierarchy(scene)
    if not sh.GetItemAttribute(study, DOSE_UNIT_NAME_ATTRIBUTE):
        sh.SetItemAttribute(study, DOSE_UNIT_NAME_ATTRIBUTE, "Gy")
    if not sh.GetItemAttribute(study, DOSE_UNIT_VALUE_ATTRIBUTE):
        sh.SetItemAttribute(study, DOSE_UNIT_VALUE_ATTRIBUTE, "1.0")


def _display(node, scene, prescription_gy: float | None, max_gy: float) -> None:
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(dose_color_table(scene).GetID())
    top = max(float(prescription_gy or 0) * 1.1, max_gy, 1e-3)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, top)  # never below 0 Gy
    # like SlicerRT's RTDOSE import: hide the zero-dose region so the CT shows through
    display.SetApplyThreshold(1)
    display.SetLowerThreshold(0.05 * float(prescription_gy) if prescription_gy else 0.01 * top)
    display.SetUpperThreshold(max(top, max_gy) * 10.0)


def add_dose_node(scene, dose_gy: np.ndarray, grid: Grid, name: str, *, reference_node=None,
                  provenance: dict | None = None, prescription_gy: float | None = None, node=None):
    """A scalar volume holding `dose_gy` ((k, j, i) float32 Gy on `grid`) marked as SlicerRT dose.

    Negative values below -1e-3 Gy raise DoseError; tiny negatives from interpolation are clipped to 0.
    `node`: an existing scalar volume to overwrite (its SH place is kept when it has one).
    """
    dose = np.asarray(dose_gy, dtype=np.float32)
    if dose.size and float(np.nanmin(dose)) < -1e-3:
        raise DoseError(f"predicted dose {name!r} is negative (min {float(dose.min()):.3g} Gy)",
                        code=ErrorCode.NEGATIVE_DOSE)
    dose = check_dose(np.maximum(dose, 0), what=f"dose {name!r}")
    if node is None:
        node = nodes.add_volume_node(scene, dose, grid, name)
    else:
        node.SetName(name)
        nodes.update_volume_node(node, dose, grid)
    node.SetAttribute(DOSE_VOLUME_ATTRIBUTE, "1")
    _set_provenance(node, provenance or {})
    if prescription_gy:
        node.SetAttribute(PRESCRIPTION_ATTRIBUTE, f"{float(prescription_gy):g}")
    _display(node, scene, prescription_gy, float(dose.max()) if dose.size else 0.0)
    _set_study_unit(scene, node, reference_node)
    request_owner_plugin_search(scene, node)
    return node


def request_owner_plugin_search(scene, node) -> bool:
    """Ask Slicer's subject-hierarchy plugins to choose the node's owner plugin again.

    The owner plugin (the RT-dose icon and menu of SlicerRT's dose plugin) is chosen when the item is made
    (Slicer/Slicer ``Modules/Loadable/SubjectHierarchy/Widgets/qSlicerSubjectHierarchyPluginLogic.cxx``
    ~222-289), i.e. before we set ``DicomRtImport.DoseVolume``; ``RequestOwnerPluginSearch``
    (``Libs/MRML/Core/vtkMRMLSubjectHierarchyNode.cxx`` ~2596) invokes
    ``SubjectHierarchyItemOwnerPluginSearchRequested`` so the plugin logic looks again. False on builds
    without the method.
    """
    sh = nodes.subject_hierarchy(scene)
    if sh is None or not hasattr(sh, "RequestOwnerPluginSearch"):
        return False
    sh.RequestOwnerPluginSearch(node)
    return True


def mark_as_dose(scene, node, reference_node=None) -> bool:
    """Mark a volume the user picked as a planned dose the way SlicerRT's RTDOSE import does (attribute,
    Gy on its study, owner plugin searched again); True when it was not marked before.

    Unmarked, SlicerRT treats it as an image: its DVH table's x column is ``Intensity``, not ``Dose``
    (``DoseVolumeHistogram/Logic/vtkSlicerDoseVolumeHistogramModuleLogic.cxx`` ~765), and the chart reads
    "Intensity Volume Histogram". A node without a study goes under the reference node's study.
    """
    if is_dose_node(node):
        return False
    node.SetAttribute(DOSE_VOLUME_ATTRIBUTE, "1")
    anchor = node if nodes.study_item_of(scene, node) else reference_node
    if anchor is not None:
        _set_study_unit(scene, node, anchor)
    request_owner_plugin_search(scene, node)
    return True


def prescription_of(node) -> float | None:
    """The prescription (Gy) stored on a dose node by :func:`add_dose_node`, or None."""
    text = node.GetAttribute(PRESCRIPTION_ATTRIBUTE) if node is not None else None
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value and value > 0 else None


def add_uncertainty_node(scene, std_gy: np.ndarray, grid: Grid, name: str, *, reference_node=None,
                         provenance: dict | None = None):
    """The per-voxel std over samples (Gy). Deliberately NOT marked as dose (DVH must not offer it)."""
    node = nodes.add_volume_node(scene, np.asarray(std_gy, dtype=np.float32), grid, name)
    node.SetAttribute(PROVENANCE_PREFIX + "Uncertainty", "std_gy")
    _set_provenance(node, provenance or {})
    anchor = reference_node if reference_node is not None else node
    nodes.place_under(scene, node, nodes.ensure_study(scene, anchor))
    return node


def is_dose_node(node) -> bool:
    """What SlicerRT's IsDoseVolumeNode checks."""
    return node is not None and node.GetAttribute(DOSE_VOLUME_ATTRIBUTE) == "1"
