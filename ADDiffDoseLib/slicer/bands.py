"""DVH bands (issue 16) in a Slicer plot chart: per structure a table (Dose, Lower, Median, Upper in %) and two
dotted series, the 5 % and 95 % curves of the band, in the structure's colour.

Slicer's plot charts draw lines, not filled areas, so the band is its two edges. ``bands`` is the dict of
:func:`ADDiffDoseLib.model.bands.dvh_bands` (or the ``<output>_bands.json`` that ``addiffdose predict
--samples K`` writes); the series are added to an existing DVH chart (:func:`.dvh.new_chart`).
"""

from __future__ import annotations

import numpy as np
import slicer  # 3D Slicer's module (or slicer-core's); never this package

BAND_TABLE_ATTRIBUTE = "ADDiffDose.DVHBand"


def band_table_node(scene, name: str, curve: dict):
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    cols = [np.asarray(curve[k], float) for k in ("dose_gy", "lo_pct", "median_pct", "hi_pct")]
    slicer.util.updateTableFromArray(table, cols, ["Dose", "Lower", "Median", "Upper"])
    table.SetColumnUnitLabel("Dose", "Gy")
    for c in ("Lower", "Median", "Upper"):
        table.SetColumnUnitLabel(c, "%")
    table.SetAttribute(BAND_TABLE_ATTRIBUTE, "1")
    return table


def add_band_series(scene, chart, bands: dict, *, label: str = "band", colors: dict | None = None) -> dict:
    """Add the 5/95 % band edges of every structure with a curve to `chart`; returns {structure: (table,
    lower series, upper series)}. colors: structure -> (r, g, b) in 0..1 (default grey)."""
    out = {}
    for key, entry in bands.get("structures", {}).items():
        curve = entry.get("curve")
        if not curve or not curve.get("dose_gy"):
            continue
        table = band_table_node(scene, f"{label}_{key}_DvhBand", curve)
        pair = []
        for column in ("Lower", "Upper"):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{key} {label} {column.lower()}")
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("Dose")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDot)
            series.SetColor(*((colors or {}).get(key) or (0.5, 0.5, 0.5)))
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
            pair.append(series)
        out[key] = (table, *pair)
    return out
