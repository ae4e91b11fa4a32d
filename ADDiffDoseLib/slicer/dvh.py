"""DVH tables, plot series and a chart for a dose volume and a segmentation.

In 3D Slicer with SlicerRT the Dose Volume Histogram module's own logic computes them
(``vtkSlicerDoseVolumeHistogramModuleLogic::ComputeDvh``, SlicerRt/SlicerRT@df6ef69
``DoseVolumeHistogram/Logic/vtkSlicerDoseVolumeHistogramModuleLogic.cxx``; parameter node
``vtkMRMLDoseVolumeHistogramNode``, ``DoseVolumeHistogram/MRML/vtkMRMLDoseVolumeHistogramNode.cxx``).
Elsewhere the library's SlicerRT-compatible DVH (:func:`ADDiffDoseLib.metrics.dvh.compute_dvh`,
mode ``slicerrt``) fills the same kind of nodes: per structure a table with columns ``Dose`` (Gy) and
``Volume`` (%), a metrics table, plot series (predicted dashed, planned solid) in one chart.

Both engines compute only the segments that overlap the dose; the others are listed in
``DvhNodes.skipped`` with the reason (SlicerRT's ComputeDvh stops at the first such segment otherwise).
Tables and series carry the user's segment names; the normalized (model) name is a second column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer  # 3D Slicer's module (or slicer-core's); never this package
import vtk
from vtk.util import numpy_support

from ..errors import DoseError, ErrorCode, GeometryError
from ..metrics.dvh import DVH, compute_dvh
from . import bands as bands_mod
from . import nodes, roles

DVH_TABLE_ATTRIBUTE = "DoseVolumeHistogram.DVH"  # what SlicerRT puts on its DVH tables
# vtkMRMLDoseVolumeHistogramNode::DVH_ATTRIBUTE_PREFIX (.cxx ~47): metrics-table reference roles are
# prefix + doseNodeID + "_" + segmentationNodeID + "_" + segmentID (AssembleDvhNodeReference, ~343-357)
SLICERRT_ROLE_PREFIX = "DoseVolumeHistogram."
LEGACY_ROLE_PREFIX = "DVH"  # what this module looked for before issue 15; harmless: only DVH tables pass
SEGMENT_ID_ATTRIBUTE = SLICERRT_ROLE_PREFIX + "SegmentID"  # logic .cxx DVH_SEGMENT_ID_ATTRIBUTE_NAME
TABLE_ROW_ATTRIBUTE = SLICERRT_ROLE_PREFIX + "TableRow"  # logic .cxx DVH_TABLE_ROW_ATTRIBUTE_NAME
X_COLUMNS = ("Dose", "Intensity")  # SlicerRT names it "Intensity" for volumes not marked as dose (logic ~765)
NORMALIZED_COLUMN = "Normalized name"
METRIC_COLUMNS = ("Structure", NORMALIZED_COLUMN, "Volume (cc)", "Mean dose (Gy)", "Min dose (Gy)",
                  "Max dose (Gy)", "D95% (Gy)", "D0.1cc (Gy)")
NO_OVERLAP = "does not overlap the dose volume"
EMPTY = "empty segment"


@dataclass
class DvhNodes:
    """What one DVH computation added: per segment name its table and plot series, the metrics table,
    the chart, (library path) the DVH objects, the segments skipped (name -> reason), the normalized
    name of each segment and, with bands, per segment name its (lower, upper) band series."""

    tables: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    metrics_table: object = None
    chart: object = None
    dvhs: dict[str, DVH] = field(default_factory=dict)
    engine: str = "library"
    skipped: dict[str, str] = field(default_factory=dict)
    normalized: dict[str, str] = field(default_factory=dict)
    band_series: dict = field(default_factory=dict)

    def skipped_text(self) -> str:
        """'Skipped: Lens_L (does not overlap the dose volume)', or '' when none was skipped."""
        return "" if not self.skipped else "Skipped: " + "; ".join(f"{k} ({v})" for k, v in self.skipped.items())


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


def x_column(table) -> str:
    """The DVH table's dose axis: "Dose", or "Intensity" for a volume SlicerRT did not see as dose."""
    for name in X_COLUMNS:
        if table.GetTable().GetColumnByName(name) is not None:
            return name
    raise DoseError(f"DVH table '{table.GetName()}' has neither a 'Dose' nor an 'Intensity' column",
                    code=ErrorCode.MISSING_FIELD)


def _add_series(scene, chart, table, label: str, color, dashed: bool):
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", label)
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName(x_column(table))
    series.SetYColumnName("Volume")
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
    series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash if dashed
                        else slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
    series.SetColor(*color)
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return series


def dvh_table_node(scene, dvh: DVH, name: str, normalized: str | None = None):
    """A table with SlicerRT's DVH layout: Dose (Gy), Volume (% of the structure)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    slicer.util.updateTableFromArray(table, [np.asarray(dvh.dose_bins_gy, float), np.asarray(dvh.volume_pct, float)],
                                     ["Dose", "Volume"])
    table.SetColumnUnitLabel("Dose", "Gy")
    table.SetColumnUnitLabel("Volume", "%")
    table.SetAttribute(DVH_TABLE_ATTRIBUTE, "1")
    table.SetAttribute("DoseVolumeHistogram.StructureName", dvh.name)
    if normalized:
        table.SetAttribute(bands_mod.STRUCTURE_ATTRIBUTE, normalized)
    return table


def metrics_table_node(scene, dvhs: dict[str, DVH], name: str, normalized: dict[str, str] | None = None,
                       dose_bands: bands_mod.DoseBands | None = None):
    """One row per structure (user's name, normalized name): volume, mean/min/max, D95%, D0.1cc (library
    definitions) and, with bands, the lo/hi of every banded metric."""
    normalized = normalized or {}
    band_metrics = dose_bands.metrics() if dose_bands is not None else []
    titles = list(METRIC_COLUMNS) + bands_mod.interval_column_titles(band_metrics)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table.RemoveAllColumns()
    for title in titles:  # vtkStringArray columns (AddColumn's default) display every value
        table.AddColumn().SetName(title)
    for row_index, (key, d) in enumerate(dvhs.items()):
        table.AddEmptyRow()
        values = [key, normalized.get(key, key), d.volume_cc, d.mean_gy, d.min_gy, d.max_gy, d.d_percent(95),
                  d.d_cc(0.1)]
        band_key = dose_bands.key_for(key, normalized.get(key)) if dose_bands is not None else None
        cells = [v if isinstance(v, str) else f"{v:.4f}" for v in values]
        for col_index, text in enumerate(cells + bands_mod.interval_cells(dose_bands, band_key, band_metrics)):
            table.SetCellText(row_index, col_index, text)
    return table


# --- which segments overlap the dose ------------------------------------------------------------
def _labelmap_is_empty(seg_node, segment_id: str) -> bool:
    image = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(seg_node, segment_id, image)
    scalars = image.GetPointData().GetScalars()
    return scalars is None or image.IsEmpty() or not numpy_support.vtk_to_numpy(scalars).any()


def overlapping_segments(seg_node, dose_node, segment_ids: list[str] | None = None):
    """(SegmentInfo list on the dose grid of the segments with voxels inside it, {name: reason} of the others)."""
    infos = nodes.export_segments(seg_node, nodes.grid_from_volume_node(dose_node), segment_ids)
    kept, skipped = [], {}
    for info in infos:
        if info.mask.any():
            kept.append(info)
        else:
            skipped[info.name] = EMPTY if _labelmap_is_empty(seg_node, info.segment_id) else NO_OVERLAP
    return kept, skipped


def _none_overlap(seg_node, dose_node, skipped: dict[str, str]) -> GeometryError:
    reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "it has no segments"
    return GeometryError(f"no segment of '{seg_node.GetName()}' overlaps the dose '{dose_node.GetName()}' ({reasons})",
                         code=ErrorCode.GRID_MISMATCH)


# --- the two engines ------------------------------------------------------------------------------
def compute_dvh_nodes(scene, dose_node, seg_node, *, label: str | None = None, dashed: bool = False,
                      chart=None, segment_ids: list[str] | None = None, use_slicerrt: bool | None = None,
                      dose_bands: bands_mod.DoseBands | None = None) -> DvhNodes:
    """DVHs of (all or the listed) segments under `dose_node`, as table/series/chart nodes.

    label: prefix for node names (default: the dose node's name); dashed: predicted-dose style;
    chart: an existing chart to add the series to (overlay), else a new one; dose_bands: DVH bands to
    draw and tabulate (default: those kept with the dose node, :func:`bands.bands_of`).
    Segments that do not overlap the dose are skipped (``DvhNodes.skipped``); none overlapping raises E202.
    """
    label = label or dose_node.GetName()
    dose_bands = bands_mod.bands_of(dose_node) if dose_bands is None else dose_bands
    use_slicerrt = slicerrt_available() if use_slicerrt is None else use_slicerrt
    dose = nodes.array_from_volume_node(dose_node)
    if dose.size and float(dose.min()) < 0:
        raise DoseError(f"dose volume '{dose_node.GetName()}' is negative; DVH needs dose >= 0",
                        code=ErrorCode.NEGATIVE_DOSE)
    infos, skipped = overlapping_segments(seg_node, dose_node, segment_ids)
    if not infos:
        raise _none_overlap(seg_node, dose_node, skipped)
    all_names = roles.normalized_names(seg_node)
    out = DvhNodes(chart=chart or new_chart(scene, f"{label} DVH"), skipped=skipped,
                   normalized={i.name: all_names.get(i.segment_id, i.name) for i in infos})
    if use_slicerrt:
        _slicerrt_dvh(scene, dose_node, seg_node, infos, out)
    else:
        _library_dvh(scene, dose_node, dose, infos, label, out, dose_bands)
    for info in infos:
        if info.name in out.tables:
            out.series[info.name] = _add_series(scene, out.chart, out.tables[info.name], f"{info.name} ({label})",
                                                info.color_rgb, dashed)
    _add_bands(scene, out, infos, dose_bands)
    return out


def _library_dvh(scene, dose_node, dose, infos, label: str, out: DvhNodes, dose_bands) -> None:
    grid = nodes.grid_from_volume_node(dose_node)
    for info in infos:
        d = compute_dvh(dose, info.mask, grid, mode="slicerrt", name=info.name)
        out.dvhs[info.name] = d
        out.tables[info.name] = dvh_table_node(scene, d, f"{label}_{info.name}_DvhTable", out.normalized[info.name])
    out.metrics_table = metrics_table_node(scene, out.dvhs, f"{label}_DvhMetrics", out.normalized, dose_bands)


def _add_bands(scene, out: DvhNodes, infos, dose_bands) -> None:
    """Band edges of the segments that have a band, in the segment's colour."""
    if dose_bands is None:
        return
    for info in infos:
        key = dose_bands.key_for(info.name, out.normalized.get(info.name))
        if key in dose_bands.curves and info.name in out.tables:
            out.band_series[info.name] = bands_mod.add_band_edges(scene, out.chart, dose_bands.curves[key],
                                                                  info.name, info.color_rgb)


# --- SlicerRT -------------------------------------------------------------------------------------
def _new_slicerrt_parameters(scene, dose_node, seg_node):
    parameters = slicer.vtkMRMLDoseVolumeHistogramNode()
    parameters.SetName(scene.GenerateUniqueName(f"{dose_node.GetName()}_DvhParameters"))
    scene.AddNode(parameters)
    parameters.SetAndObserveDoseVolumeNode(dose_node)
    parameters.SetAndObserveSegmentationNode(seg_node)
    return parameters


def _select(parameters, segment_ids: list[str]) -> bool:
    """SetSelectedSegmentIDs (std::vector<std::string>, a list in Python); False if this build cannot."""
    try:
        parameters.SetSelectedSegmentIDs(list(segment_ids))
    except (TypeError, AttributeError):
        return False
    return True


def slicerrt_dvh_tables(metrics_table, dose_node, seg_node) -> dict:
    """segment ID -> DVH table node referenced from SlicerRT's metrics table.

    Roles start with "DoseVolumeHistogram." (vtkMRMLDoseVolumeHistogramNode::GetDvhTableNodes keeps those);
    the segment ID is the table's DoseVolumeHistogram.SegmentID attribute, else the role's tail.
    """
    prefix = f"{SLICERRT_ROLE_PREFIX}{dose_node.GetID()}_{seg_node.GetID()}_"
    segmentation = seg_node.GetSegmentation()
    out = {}
    for n in range(metrics_table.GetNumberOfNodeReferenceRoles()):
        role = metrics_table.GetNthNodeReferenceRole(n)
        if not role.startswith((SLICERRT_ROLE_PREFIX, LEGACY_ROLE_PREFIX)):
            continue
        table = metrics_table.GetNodeReference(role)
        if table is None or not table.IsA("vtkMRMLTableNode"):
            continue
        sid = table.GetAttribute(SEGMENT_ID_ATTRIBUTE) or (
            role[len(prefix):] if role.startswith(prefix) else role.rsplit(seg_node.GetID() + "_", 1)[-1])
        if segmentation.GetSegment(sid) is not None:
            out[sid] = table
    return out


def _run_slicerrt(logic, parameters, ids: list[str], names: dict[str, str], skipped: dict[str, str]) -> None:
    """ComputeDvh on `ids`; it returns at the first failing segment (logic .cxx ~439), so on an error the
    segments without a table are computed one by one and the failing ones reported in `skipped`."""
    if not _select(parameters, ids):
        error = logic.ComputeDvh(parameters)  # old wrapping: all segments at once, nothing to fall back on
        if error:
            raise DoseError(f"SlicerRT DVH failed: {error}", code=ErrorCode.EXTERNAL_FAILED)
        return
    if not logic.ComputeDvh(parameters):
        return
    done = slicerrt_dvh_tables(parameters.GetMetricsTableNode(), parameters.GetDoseVolumeNode(),
                               parameters.GetSegmentationNode())
    for sid in (s for s in ids if s not in done):
        _select(parameters, [sid])
        error = logic.ComputeDvh(parameters)
        if error:
            skipped[names[sid]] = f"SlicerRT: {error}"


def _slicerrt_dvh(scene, dose_node, seg_node, infos, out: DvhNodes) -> None:
    """SlicerRT's own computation (only inside Slicer with SlicerRT) on the overlapping segments."""
    logic = slicer.modules.dosevolumehistogram.logic()
    parameters = _new_slicerrt_parameters(scene, dose_node, seg_node)
    names = {i.segment_id: i.name for i in infos}
    _run_slicerrt(logic, parameters, list(names), names, out.skipped)
    out.engine = "slicerrt"
    out.metrics_table = parameters.GetMetricsTableNode()
    for sid, table in slicerrt_dvh_tables(out.metrics_table, dose_node, seg_node).items():
        if sid in names:
            out.tables[names[sid]] = table
    if not out.tables:
        raise DoseError(f"SlicerRT computed no DVH for '{seg_node.GetName()}' on '{dose_node.GetName()}': "
                        + out.skipped_text(), code=ErrorCode.EXTERNAL_FAILED)
    _append_normalized_column(out.metrics_table, out)


def _append_normalized_column(metrics_table, out: DvhNodes) -> None:
    """The normalized name as one more column of SlicerRT's table, after its own (it addresses them by index:
    vtkMRMLDoseVolumeHistogramNode.h MetricColumn*; V/D metric columns are appended later, after ours)."""
    table = metrics_table.GetTable()
    if table.GetColumnByName(NORMALIZED_COLUMN) is None:
        column = vtk.vtkStringArray()
        column.SetName(NORMALIZED_COLUMN)
        column.SetNumberOfValues(table.GetNumberOfRows())
        table.AddColumn(column)
    column = table.GetColumnByName(NORMALIZED_COLUMN)
    structure = table.GetColumnByName("Structure")
    for name, dvh_table in out.tables.items():
        row = dvh_table.GetAttribute(TABLE_ROW_ATTRIBUTE)
        row = int(row) if row and row.isdigit() else next(
            (r for r in range(table.GetNumberOfRows()) if structure is not None and structure.GetValue(r) == name), -1)
        if 0 <= row < table.GetNumberOfRows():
            column.SetValue(row, out.normalized.get(name, name))
    metrics_table.Modified()


def table_arrays(table) -> tuple[np.ndarray, np.ndarray]:
    """(dose_gy, volume_pct) columns of a DVH table node (x column "Dose" or "Intensity")."""
    return (np.asarray(slicer.util.arrayFromTableColumn(table, x_column(table)), float),
            np.asarray(slicer.util.arrayFromTableColumn(table, "Volume"), float))
