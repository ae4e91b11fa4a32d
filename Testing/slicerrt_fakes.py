"""Stand-ins for SlicerRT's DVH and Isodose logic, built on real slicer-core MRML nodes (SlicerRT itself cannot be
installed here). They write what SlicerRT writes, as its source writes it (SlicerRt/SlicerRT@df6ef69, lines
approximate at that commit; function names are the anchor):

- ``DoseVolumeHistogram/MRML/vtkMRMLDoseVolumeHistogramNode.cxx``: DVH_ATTRIBUTE_PREFIX "DoseVolumeHistogram."
  (~47); the metrics table "DvhMetrics" made on demand with GenerateUniqueName (GetMetricsTableNode);
  AssembleDvhNodeReference = prefix + doseID + "_" + segmentationID + "_" + segmentID (~343-357).
- ``DoseVolumeHistogram/Logic/vtkSlicerDoseVolumeHistogramModuleLogic.cxx``: ComputeDvh over the selected (or
  all) segments, returning the first segment's error string at once (~439); "Dose volume and the structure do not
  overlap" when the stencil holds no voxel (~604); the DVH table "<segmentID>_DvhTable" (GenerateUniqueName),
  attributes DoseVolumeHistogram.DVH / .SegmentID / .TableRow, referenced from the metrics table by the
  assembled role (~620, 653); metrics columns Show, Structure, Volume name, Volume (cc), Mean/Min/Max dose
  (InitializeMetricsTable); the x column "Dose" or, for a volume not marked as dose, "Intensity" with 100 samples
  from the structure's min to max (~765).
- ``Isodose/MRML/vtkMRMLIsodoseNode.cxx``: roles doseVolumeRef, isosurfacesModelRef; the colour table hangs on the
  dose node ("colorTableRef"). ``Isodose/Logic/vtkSlicerIsodoseModuleLogic.cxx``: SetupColorTableNodeForDose
  VolumeNode ("<dose>_IsodoseColorTable", once per dose), SetNumberOfIsodoseLevels, CreateIsodoseSurfaces -> bool
  (False without a dose, image data or SH item for the dose), the model "<dose>_IsodoseLevels" named with
  GenerateUniqueName (~790) and kept in the parameter node, scalars "isolevels", DicomRtImport.IsodoseModel=1.

The numbers of a dose DVH are the library's ``slicerrt`` mode, which matches SlicerRT to 1e-14 % (issue 15).
"""

from __future__ import annotations

import types

import numpy as np
import slicer
import vtk

from ADDiffDoseLib.metrics.dvh import compute_dvh
from ADDiffDoseLib.slicer import nodes

PREFIX = "DoseVolumeHistogram."
DO_NOT_OVERLAP = "Dose volume and the structure do not overlap"


class FakeDoseVolumeHistogramNode(slicer.vtkMRMLScriptedModuleNode):
    """vtkMRMLDoseVolumeHistogramNode: references and the on-demand metrics table and chart."""

    def __init__(self):
        self.segment_selection = []

    def SetAndObserveDoseVolumeNode(self, node):
        self.SetNodeReferenceID("doseVolumeRef", node.GetID() if node else None)

    def GetDoseVolumeNode(self):
        return self.GetNodeReference("doseVolumeRef")

    def SetAndObserveSegmentationNode(self, node):
        self.SetNodeReferenceID("segmentationRef", node.GetID() if node else None)

    def GetSegmentationNode(self):
        return self.GetNodeReference("segmentationRef")

    def SetSelectedSegmentIDs(self, ids):  # std::vector<std::string> -> a Python list
        self.segment_selection = [str(i) for i in ids]

    def GetMetricsTableNode(self):
        table = self.GetNodeReference("dvhMetricsTableRef")
        if table is None:
            scene = self.GetScene()
            table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName("DvhMetrics"))
            self.SetNodeReferenceID("dvhMetricsTableRef", table.GetID())
        return table

    def GetChartNode(self):
        chart = self.GetNodeReference("chartRef")
        if chart is None:
            scene = self.GetScene()
            chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName("DvhChart"))
            self.SetNodeReferenceID("chartRef", chart.GetID())
        return chart

    def AssembleDvhNodeReference(self, segment_id):
        return f"{PREFIX}{self.GetDoseVolumeNode().GetID()}_{self.GetSegmentationNode().GetID()}_{segment_id}"


class FakeDoseVolumeHistogramLogic:
    """vtkSlicerDoseVolumeHistogramModuleLogic::ComputeDvh as SlicerRT writes it (see the module docstring)."""

    def __init__(self):
        self.calls = []  # the selected segment IDs of each ComputeDvh call

    def ComputeDvh(self, parameters) -> str:
        seg_node, dose_node = parameters.GetSegmentationNode(), parameters.GetDoseVolumeNode()
        if seg_node is None or dose_node is None:
            return "Both segmentation node and dose volume node need to be set"
        ids = list(parameters.segment_selection) or nodes.segment_ids(seg_node)  # empty selection = all segments
        self.calls.append(ids)
        grid = nodes.grid_from_volume_node(dose_node)
        dose = nodes.array_from_volume_node(dose_node)
        for sid in ids:  # the first error is returned at once; earlier segments keep their tables (~439)
            mask = nodes.segment_mask(seg_node, sid, grid)
            if not mask.any():
                return DO_NOT_OVERLAP  # structureStat->GetVoxelCount() < 1 (~604)
            self._segment_table(parameters, sid, dose, mask, grid)
        return ""

    def _metrics_table(self, parameters):
        metrics = parameters.GetMetricsTableNode()
        if metrics.GetNumberOfColumns() == 0:  # InitializeMetricsTable
            metrics.AddColumn(vtk.vtkBitArray()).SetName("Show")
            unit = "dose (Gy)" if self._is_dose(parameters) else "intensity"
            for title in ("Structure", "Volume name", "Volume (cc)", f"Mean {unit}", f"Min {unit}", f"Max {unit}"):
                metrics.AddColumn().SetName(title)
        return metrics

    @staticmethod
    def _is_dose(parameters) -> bool:  # vtkSlicerRtCommon::IsDoseVolumeNode
        return parameters.GetDoseVolumeNode().GetAttribute("DicomRtImport.DoseVolume") == "1"

    def _segment_table(self, parameters, sid, dose, mask, grid):
        scene, metrics = parameters.GetScene(), self._metrics_table(parameters)
        role = parameters.AssembleDvhNodeReference(sid)
        table = metrics.GetNodeReference(role)
        if table is None:  # new DVH table + a metrics row (~620-653)
            table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(sid + "_DvhTable"))
            table.SetAttribute(PREFIX + "DVH", "1")
            table.SetAttribute(PREFIX + "TableRow", str(metrics.GetNumberOfRows()))
            metrics.AddEmptyRow()
            metrics.SetNodeReferenceID(role, table.GetID())
            table.SetNodeReferenceID("doseVolumeRef", parameters.GetDoseVolumeNode().GetID())
            table.SetNodeReferenceID("segmentationRef", parameters.GetSegmentationNode().GetID())
        table.SetAttribute(PREFIX + "SegmentID", sid)
        d = compute_dvh(dose, mask, grid, mode="slicerrt", name=sid)
        row = int(table.GetAttribute(PREFIX + "TableRow"))
        name = parameters.GetSegmentationNode().GetSegmentation().GetSegment(sid).GetName()
        for col, text in enumerate(["1", name, parameters.GetDoseVolumeNode().GetName(), f"{d.volume_cc:g}",
                                    f"{d.mean_gy:g}", f"{d.min_gy:g}", f"{d.max_gy:g}"]):
            metrics.SetCellText(row, col, text)
        if self._is_dose(parameters):
            x, volume = np.asarray(d.dose_bins_gy, float), np.asarray(d.volume_pct, float)
        else:  # ~765: startValue = rangeMin, 100 samples, % of voxels >= each value, (0, 100 %) first if start >= 0
            v = d.sorted_dose_gy
            x = np.linspace(float(v.min()), float(v.max()), 100)
            volume = np.array([100.0 * np.mean(v >= t) for t in x])
            if x[0] >= 0:
                x, volume = np.concatenate([[0.0], x]), np.concatenate([[100.0], volume])
        slicer.util.updateTableFromArray(table, [x, volume], ["Dose" if self._is_dose(parameters) else "Intensity",
                                                              "Volume"])


class FakeIsodoseNode(slicer.vtkMRMLScriptedModuleNode):
    """vtkMRMLIsodoseNode: dose and model references; the colour table hangs on the dose node."""

    def SetAndObserveDoseVolumeNode(self, node):
        self.SetNodeReferenceID("doseVolumeRef", node.GetID() if node else None)

    def GetDoseVolumeNode(self):
        return self.GetNodeReference("doseVolumeRef")

    def GetColorTableNode(self):
        dose = self.GetDoseVolumeNode()
        return dose.GetNodeReference("colorTableRef") if dose is not None else None

    def GetIsosurfacesModelNode(self):
        return self.GetNodeReference("isosurfacesModelRef")

    def SetAndObserveIsosurfacesModelNode(self, node):
        self.SetNodeReferenceID("isosurfacesModelRef", node.GetID() if node else None)


class FakeIsodoseLogic:
    """vtkSlicerIsodoseModuleLogic (see the module docstring). fail: make CreateIsodoseSurfaces return False."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.created = 0

    def SetupColorTableNodeForDoseVolumeNode(self, dose_node):
        table = dose_node.GetNodeReference("colorTableRef")
        if table is None:  # a copy of the default table, once per dose
            scene = dose_node.GetScene()
            table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", dose_node.GetName() + "_IsodoseColorTable")
            table.SetTypeToUser()
            table.SetNumberOfColors(6)
            for i, gy in enumerate((5, 10, 15, 20, 25, 30)):
                table.SetColor(i, str(gy), 0.0, 1.0, 0.0, 1.0)
            dose_node.SetNodeReferenceID("colorTableRef", table.GetID())
        return table

    def SetNumberOfIsodoseLevels(self, parameters, n):
        table = parameters.GetColorTableNode()
        if table is not None and n >= 1:
            table.SetNumberOfColors(n)
            table.GetLookupTable().SetTableRange(0, n - 1)

    def CreateIsodoseSurfaces(self, parameters) -> bool:
        dose = parameters.GetDoseVolumeNode()
        scene = parameters.GetScene()
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        if self.fail or dose is None or dose.GetImageData() is None or not sh.GetItemByDataNode(dose):
            return False
        table = parameters.GetColorTableNode()
        append = vtk.vtkAppendPolyData()
        for i in range(table.GetNumberOfColors()):
            cubes = vtk.vtkImageMarchingCubes()
            cubes.SetInputData(dose.GetImageData())
            cubes.SetValue(0, float(table.GetColorName(i)))
            cubes.Update()
            append.AddInputData(cubes.GetOutput())
        append.Update()
        model = parameters.GetIsosurfacesModelNode()
        if model is None:  # ~790: a new model with a unique name, kept in the parameter node
            model = scene.AddNewNodeByClass("vtkMRMLModelNode",
                                            scene.GenerateUniqueName(dose.GetName() + "_IsodoseLevels"))
            model.CreateDefaultDisplayNodes()
            parameters.SetAndObserveIsosurfacesModelNode(model)
        else:
            model.SetName(dose.GetName() + "_IsodoseLevels")
        model.SetAttribute("DicomRtImport.IsodoseModel", "1")
        model.SetAndObservePolyData(append.GetOutput())
        sh.CreateItem(sh.GetItemByDataNode(dose), model)  # under the dose in the Data tree
        self.created += 1
        return True


def install(monkeypatch, dvh_logic=None, isodose_logic=None):
    """Make `slicer` look like a Slicer with SlicerRT: slicer.modules.<module>.logic() and the node classes."""
    modules = types.SimpleNamespace()
    if dvh_logic is not None:
        modules.dosevolumehistogram = types.SimpleNamespace(logic=lambda: dvh_logic)
        monkeypatch.setattr(slicer, "vtkMRMLDoseVolumeHistogramNode", FakeDoseVolumeHistogramNode, raising=False)
    if isodose_logic is not None:
        modules.isodose = types.SimpleNamespace(logic=lambda: isodose_logic)
        monkeypatch.setattr(slicer, "vtkMRMLIsodoseNode", FakeIsodoseNode, raising=False)
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    return modules
