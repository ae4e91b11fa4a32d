"""DVH bands (issue 16) in the scene: per structure a table (Dose, Lower, Median, Upper in %) drawn as two dashed
series, the 5 % and 95 % curves of the band, in the structure's colour; per metric the interval [lo, hi].

Slicer's plot charts draw lines, not filled areas, so the band is its two edges. ``bands`` is the dict of
:func:`ADDiffDoseLib.model.bands.dvh_bands` (the ``<output>_bands.json`` that ``addiffdose predict --samples K``
writes). :func:`attach_bands` keeps it with the predicted dose node as table nodes (saved with the scene):
the dose node references one band table per structure and one interval table, so every later DVH chart or
comparison of that dose finds them (:func:`bands_of`). The band keys are the structure names the worker got;
the tables carry the user's segment name beside them (issue 15.10).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer  # 3D Slicer's module (or slicer-core's); never this package

from . import nodes

BAND_TABLE_ATTRIBUTE = "ADDiffDose.DVHBand"
SEGMENT_NAME_ATTRIBUTE = "ADDiffDose.SegmentName"
STRUCTURE_ATTRIBUTE = "ADDiffDose.Structure"
BAND_TABLE_ROLE = "ADDiffDoseBandTable"  # dose node -> band tables (one per structure)
BAND_INTERVALS_ROLE = "ADDiffDoseBandIntervals"  # dose node -> the interval table
INTERVAL_COLUMNS = ("Segment", "Normalized name", "Metric", "Family", "Value", "Median", "Lo", "Hi", "Unit")
BAND_LINE_WIDTH = 1  # thinner than the DVH curves (plot series default 2): the edges frame the dashed curve


@dataclass
class DoseBands:
    """The bands kept with one dose node. curves: segment name -> band table node; intervals: segment name ->
    metric -> {"lo", "hi", "value", "median"} (Gy, V metrics %); structures: segment name -> normalized name."""

    curves: dict = field(default_factory=dict)
    intervals: dict[str, dict[str, dict]] = field(default_factory=dict)
    structures: dict[str, str] = field(default_factory=dict)
    intervals_table: object = None

    def key_for(self, segment_name: str, structure: str | None = None) -> str | None:
        """The band entry of a segment: same user name, else same normalized structure name."""
        if segment_name in self.structures:
            return segment_name
        for key, normalized in self.structures.items():
            if structure and normalized == structure:
                return key
        return None

    def metrics(self) -> list[str]:
        """Every banded metric, in first-seen order (targets: D99% D95% D1% Dmean V95%Rx; OARs: Dmean D0.1cc ...)."""
        return list(dict.fromkeys(m for per in self.intervals.values() for m in per))


def metric_unit(metric: str) -> str:
    return "%" if metric.startswith("V") else "Gy"


def band_table_node(scene, name: str, curve: dict):
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    cols = [np.asarray(curve[k], float) for k in ("dose_gy", "lo_pct", "median_pct", "hi_pct")]
    slicer.util.updateTableFromArray(table, cols, ["Dose", "Lower", "Median", "Upper"])
    table.SetColumnUnitLabel("Dose", "Gy")
    for c in ("Lower", "Median", "Upper"):
        table.SetColumnUnitLabel(c, "%")
    table.SetAttribute(BAND_TABLE_ATTRIBUTE, "1")
    return table


def add_band_edges(scene, chart, table, label: str, color) -> tuple:
    """Two dashed, thin series (Lower, Upper) of a band table on `chart`, in `color` (r, g, b 0..1)."""
    pair = []
    for column in ("Lower", "Upper"):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{label} band {column.lower()}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("Dose")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
        series.SetLineWidth(BAND_LINE_WIDTH)
        series.SetColor(*(color or (0.5, 0.5, 0.5)))
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        pair.append(series)
    return tuple(pair)


def add_band_series(scene, chart, bands: dict, *, label: str = "band", colors: dict | None = None) -> dict:
    """Add the 5/95 % band edges of every structure with a curve in a bands dict to `chart`; returns
    {structure: (table, lower series, upper series)}. colors: structure -> (r, g, b) in 0..1 (default grey)."""
    out = {}
    for key, entry in bands.get("structures", {}).items():
        curve = entry.get("curve")
        if not curve or not curve.get("dose_gy"):
            continue
        table = band_table_node(scene, f"{label}_{key}_DvhBand", curve)
        out[key] = (table, *add_band_edges(scene, chart, table, f"{key} {label}", (colors or {}).get(key)))
    return out


def _interval_rows(bands: dict, names: dict[str, str]) -> list[list[str]]:
    rows = []
    for key, entry in bands.get("structures", {}).items():
        for metric, iv in entry.get("metrics", {}).items():
            cells = [iv.get(k) for k in ("value", "median", "lo", "hi")]
            rows.append([names.get(key, key), key, metric, str(iv.get("family", "")),
                         *("" if v is None or not np.isfinite(v) else f"{float(v):.4f}" for v in cells),
                         metric_unit(metric)])
    return rows


def _text_table(scene, name: str, columns, rows):
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for title in columns:
        table.AddColumn().SetName(title)
    for i, row in enumerate(rows):
        table.AddEmptyRow()
        for j, text in enumerate(row):
            table.SetCellText(i, j, text)
    return table


def attach_bands(scene, dose_node, bands: dict, segment_names: dict[str, str] | None = None) -> DoseBands:
    """Keep `bands` with `dose_node` as table nodes under it in the Data tree; returns what :func:`bands_of` reads.

    segment_names: band key (structure name sent to the worker) -> the user's segment name; default the key.
    """
    names = dict(segment_names or {})
    dose_item = nodes.subject_hierarchy(scene).GetItemByDataNode(dose_node)
    for key, entry in bands.get("structures", {}).items():
        curve = entry.get("curve")
        if not curve or not curve.get("dose_gy"):
            continue
        table = band_table_node(scene, scene.GenerateUniqueName(f"{dose_node.GetName()}_{names.get(key, key)}_DvhBand"),
                                curve)
        table.SetAttribute(SEGMENT_NAME_ATTRIBUTE, names.get(key, key))
        table.SetAttribute(STRUCTURE_ATTRIBUTE, key)
        dose_node.AddNodeReferenceID(BAND_TABLE_ROLE, table.GetID())
        if dose_item:
            nodes.place_under(scene, table, dose_item)
    intervals = _text_table(scene, scene.GenerateUniqueName(f"{dose_node.GetName()}_DvhBandIntervals"),
                            INTERVAL_COLUMNS, _interval_rows(bands, names))
    intervals.SetAttribute(BAND_TABLE_ATTRIBUTE, "intervals")
    intervals.SetAttribute("ADDiffDose.BandInterval", f"{float(bands.get('interval', 0.9)):g}")
    dose_node.SetNodeReferenceID(BAND_INTERVALS_ROLE, intervals.GetID())
    if dose_item:
        nodes.place_under(scene, intervals, dose_item)
    return bands_of(dose_node)


def detach_bands(scene, dose_node) -> None:
    """Remove the band tables kept with `dose_node` (from the scene and its references)."""
    tables = [dose_node.GetNthNodeReference(BAND_TABLE_ROLE, i)
              for i in range(dose_node.GetNumberOfNodeReferences(BAND_TABLE_ROLE))]
    tables.append(dose_node.GetNodeReference(BAND_INTERVALS_ROLE))
    dose_node.RemoveNodeReferenceIDs(BAND_TABLE_ROLE)
    dose_node.RemoveNodeReferenceIDs(BAND_INTERVALS_ROLE)
    for table in tables:
        if table is not None and scene.IsNodePresent(table):
            scene.RemoveNode(table)


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def bands_of(dose_node) -> DoseBands | None:
    """The bands :func:`attach_bands` kept with `dose_node` (None when it has none)."""
    if dose_node is None or (not dose_node.GetNumberOfNodeReferences(BAND_TABLE_ROLE)
                             and dose_node.GetNodeReference(BAND_INTERVALS_ROLE) is None):
        return None
    out = DoseBands()
    for i in range(dose_node.GetNumberOfNodeReferences(BAND_TABLE_ROLE)):
        table = dose_node.GetNthNodeReference(BAND_TABLE_ROLE, i)
        if table is not None:
            name = table.GetAttribute(SEGMENT_NAME_ATTRIBUTE) or table.GetName()
            out.curves[name] = table
            out.structures[name] = table.GetAttribute(STRUCTURE_ATTRIBUTE) or name
    table = dose_node.GetNodeReference(BAND_INTERVALS_ROLE)
    out.intervals_table = table
    for r in range(table.GetNumberOfRows() if table is not None else 0):
        name, structure, metric = (table.GetCellText(r, c) for c in range(3))
        out.structures.setdefault(name, structure)
        out.intervals.setdefault(name, {})[metric] = {
            k: _float(table.GetCellText(r, c)) for k, c in (("value", 4), ("median", 5), ("lo", 6), ("hi", 7))}
    return out


def interval_column_titles(metrics: list[str]) -> list[str]:
    """"Band lo D95% (Gy)", "Band hi D95% (Gy)", ...: never starting "D<digit>", which SlicerRT's ComputeDMetrics
    deletes from its metrics table (vtkSlicerDoseVolumeHistogramModuleLogic.cxx, IsDMetricName)."""
    return [f"Band {side} {m} ({metric_unit(m)})" for m in metrics for side in ("lo", "hi")]


def interval_cells(dose_bands: DoseBands | None, key: str | None, metrics: list[str]) -> list[str]:
    """lo/hi texts of one band entry for `metrics` ('' where the structure has no such interval)."""
    per = (dose_bands.intervals.get(key, {}) if dose_bands is not None and key else {})
    cells = []
    for m in metrics:
        iv = per.get(m, {})
        cells += ["" if not np.isfinite(iv.get(k, float("nan"))) else f"{iv[k]:.4f}" for k in ("lo", "hi")]
    return cells
