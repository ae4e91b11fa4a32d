"""DVH tables, plot series and a chart for a dose volume and a segmentation.

In 3D Slicer with SlicerRT the Dose Volume Histogram module's own logic computes them
(``vtkSlicerDoseVolumeHistogramModuleLogic::ComputeDvh``, SlicerRt/SlicerRT
``DoseVolumeHistogram/Logic/vtkSlicerDoseVolumeHistogramModuleLogic.cxx``; parameter node
``vtkMRMLDoseVolumeHistogramNode``, ``DoseVolumeHistogram/MRML/vtkMRMLDoseVolumeHistogramNode.cxx``).
Elsewhere the library's SlicerRT-compatible DVH (:func:`ADDiffDoseLib.metrics.dvh.compute_dvh`,
mode ``slicerrt``) fills the same kind of nodes: per structure a table with columns ``Dose`` (Gy) and
``Volume`` (%), a metrics table, plot series (predicted dashed, planned solid) in one chart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer  # 3D Slicer's module (or slicer-core's); never this package

from ..errors import DoseError, ErrorCode
from ..metrics.dvh import DVH, compute_dvh
from . import nodes

DVH_TABLE_ATTRIBUTE = "DoseVolumeHistogram.DVH"  # what SlicerRT puts on its DVH tables
METRIC_COLUMNS = ("Structure", "Volume (cc)", "Mean dose (Gy)", "Min dose (Gy)", "Max dose (Gy)",
                  "D95% (Gy)", "D0.1cc (Gy)")


@dataclass
class DvhNodes:
    """What one DVH computation added: per segment name its table and plot series, the metrics table,
    the chart, and (library path) the DVH objects themselves."""

    tables: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    metrics_table: object = None
    chart: object = None
    dvhs: dict[str, DVH] = field(default_factory=dict)
    engine: str = "library"


def slicerrt_available() -> bool:
    """True inside a Slicer that has SlicerRT's Dose Volume Histogram module."""
    modules = getattr(slicer, "modules", None)
    return modules is not None and hasattr(modules, "dosevolumehistogram")


def new_chart(scene, name: str = "ADDiffDose DVH"):
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(name)
    chart.SetXAxisTitle("Dose [Gy]")
    chart.SetYAxisTitle("Fractional volume [%]")
    return chart


def _add_series(scene, chart, table, label: str, color, dashed: bool):
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", label)
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName("Dose")
    series.SetYColumnName("Volume")
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
    series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash if dashed
                        else slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
    series.SetColor(*color)
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return series


def dvh_table_node(scene, dvh: DVH, name: str):
    """A table with SlicerRT's DVH layout: Dose (Gy), Volume (% of the structure)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    slicer.util.updateTableFromArray(table, [np.asarray(dvh.dose_bins_gy, float), np.asarray(dvh.volume_pct, float)],
                                     ["Dose", "Volume"])
    table.SetColumnUnitLabel("Dose", "Gy")
    table.SetColumnUnitLabel("Volume", "%")
    table.SetAttribute(DVH_TABLE_ATTRIBUTE, "1")
    table.SetAttribute("DoseVolumeHistogram.StructureName", dvh.name)
    return table


def metrics_table_node(scene, dvhs: dict[str, DVH], name: str):
    """One row per structure: volume, mean/min/max, D95%, D0.1cc (library definitions)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table.RemoveAllColumns()
    columns = [table.AddColumn() for _ in METRIC_COLUMNS]
    for col, title in zip(columns, METRIC_COLUMNS):
        col.SetName(title)
    # first column is text; the vtkStringArray default of AddColumn suits every column for display
    for row_index, (key, d) in enumerate(dvhs.items()):
        table.AddEmptyRow()
        values = [key, d.volume_cc, d.mean_gy, d.min_gy, d.max_gy, d.d_percent(95), d.d_cc(0.1)]
        for col_index, value in enumerate(values):
            table.SetCellText(row_index, col_index, value if isinstance(value, str) else f"{value:.4f}")
    return table


def compute_dvh_nodes(scene, dose_node, seg_node, *, label: str | None = None, dashed: bool = False,
                      chart=None, segment_ids: list[str] | None = None, use_slicerrt: bool | None = None) -> DvhNodes:
    """DVHs of (all or the listed) segments under `dose_node`, as table/series/chart nodes.

    label: prefix for node names (default: the dose node's name); dashed: predicted-dose style;
    chart: an existing chart to add the series to (overlay), else a new one.
    """
    label = label or dose_node.GetName()
    use_slicerrt = slicerrt_available() if use_slicerrt is None else use_slicerrt
    if use_slicerrt:
        return _slicerrt_dvh(scene, dose_node, seg_node, label, dashed, chart)
    dose_grid = nodes.grid_from_volume_node(dose_node)
    dose = nodes.array_from_volume_node(dose_node)
    if dose.size and float(dose.min()) < 0:
        raise DoseError(f"dose volume '{dose_node.GetName()}' is negative; DVH needs dose >= 0",
                        code=ErrorCode.NEGATIVE_DOSE)
    out = DvhNodes(chart=chart or new_chart(scene, f"{label} DVH"))
    for info in nodes.export_segments(seg_node, dose_grid, segment_ids):
        if not info.mask.any():
            continue
        d = compute_dvh(dose, info.mask, dose_grid, mode="slicerrt", name=info.name)
        out.dvhs[info.name] = d
        out.tables[info.name] = dvh_table_node(scene, d, f"{label}_{info.name}_DvhTable")
        out.series[info.name] = _add_series(scene, out.chart, out.tables[info.name], f"{info.name} ({label})",
                                            info.color_rgb, dashed)
    out.metrics_table = metrics_table_node(scene, out.dvhs, f"{label}_DvhMetrics")
    return out


def _slicerrt_dvh(scene, dose_node, seg_node, label: str, dashed: bool, chart) -> DvhNodes:
    """SlicerRT's own computation (only inside Slicer with SlicerRT)."""
    logic = slicer.modules.dosevolumehistogram.logic()
    parameters = slicer.vtkMRMLDoseVolumeHistogramNode()
    parameters.SetName(f"{label}_DvhParameters")
    scene.AddNode(parameters)
    parameters.SetAndObserveDoseVolumeNode(dose_node)
    parameters.SetAndObserveSegmentationNode(seg_node)
    error = logic.ComputeDvh(parameters)
    if error:
        raise DoseError(f"SlicerRT DVH failed: {error}", code=ErrorCode.INVALID_VALUE)
    metrics = parameters.GetMetricsTableNode()
    out = DvhNodes(metrics_table=metrics, chart=chart or new_chart(scene, f"{label} DVH"), engine="slicerrt")
    segmentation = seg_node.GetSegmentation()
    # the DVH tables are referenced from the metrics table by roles "DVH_<dose>_<seg>_<segmentID>"
    # (vtkMRMLDoseVolumeHistogramNode::AssembleDvhNodeReference / GetDvhTableNodes)
    for n in range(metrics.GetNumberOfNodeReferenceRoles()):
        role = metrics.GetNthNodeReferenceRole(n)
        table = metrics.GetNodeReference(role)
        if table is None or not table.IsA("vtkMRMLTableNode") or not role.startswith("DVH"):
            continue
        sid = role.rsplit(seg_node.GetID() + "_", 1)[-1]
        segment = segmentation.GetSegment(sid)
        name = segment.GetName() if segment is not None else table.GetName()
        out.tables[name] = table
        color = segment.GetColor() if segment is not None else (0.5, 0.5, 0.5)
        out.series[name] = _add_series(scene, out.chart, table, f"{name} ({label})", color, dashed)
    return out


def table_arrays(table) -> tuple[np.ndarray, np.ndarray]:
    """(dose_gy, volume_pct) columns of a DVH table node."""
    return (np.asarray(slicer.util.arrayFromTableColumn(table, "Dose"), float),
            np.asarray(slicer.util.arrayFromTableColumn(table, "Volume"), float))
