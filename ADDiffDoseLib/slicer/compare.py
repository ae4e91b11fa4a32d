"""Planned vs predicted dose in the scene: DVH overlay, metric and constraint tables, gamma, difference.

All numbers come from the library (:mod:`ADDiffDoseLib.metrics`); this module only turns them into
table, chart and volume nodes. The planned dose is resampled (trilinear) onto the predicted dose's
grid when the grids differ. A planned dose the user picked that is not marked as dose is marked first, so
SlicerRT computes a dose (not an intensity) histogram of it. Tables show the user's segment names, the
normalized name beside them; with DVH bands kept on the predicted dose (issue 16) the metric table gets the
predicted interval and whether the planned value lies inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry import resample_to_grid
from ..metrics.constraints import Constraint, check_constraints
from ..metrics.dvh import DVH, compute_dvh
from ..metrics.gamma import gamma_index
from . import bands as bands_mod
from . import dose_output, nodes, roles
from . import dvh as dvh_nodes

COMPARED_METRICS = ("D95%", "Dmean", "Dmax", "D0.1cc")
METRIC_TABLE_COLUMNS = ("Structure", "Normalized name", "Metric", "Predicted (Gy)", "Planned (Gy)",
                        "Difference (Gy)")
BAND_TABLE_COLUMNS = ("Predicted band lo (Gy)", "Predicted band hi (Gy)", "Planned inside band")
CONSTRAINT_TABLE_COLUMNS = ("Structure", "Normalized name", "Constraint", "Limit", "Predicted", "Predicted passes",
                            "Planned", "Planned passes")


@dataclass
class Comparison:
    """Nodes and numbers of one comparison. rows: one dict per (structure, metric); constraint_rows:
    one per constraint with both doses; gamma_pass_rate_pct: NaN when gamma was not asked for."""

    chart: object = None
    metrics_table: object = None
    constraints_table: object = None
    difference_node: object = None
    rows: list[dict] = field(default_factory=list)
    constraint_rows: list[dict] = field(default_factory=list)
    gamma_pass_rate_pct: float = float("nan")
    planned_dvhs: dict[str, DVH] = field(default_factory=dict)
    predicted_dvhs: dict[str, DVH] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # segment name -> why it has no DVH
    normalized: dict[str, str] = field(default_factory=dict)  # segment name -> normalized name
    planned_marked_as_dose: bool = False


def metric(d: DVH, name: str) -> float:
    """D95% / Dmean / Dmax / D0.1cc of a DVH, Gy."""
    return {"D95%": lambda: d.d_percent(95), "Dmean": lambda: d.mean_gy, "Dmax": lambda: d.max_gy,
            "D0.1cc": lambda: d.d_cc(0.1)}[name]()


def _text_table(scene, name: str, columns, rows: list[list]):
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for title in columns:
        table.AddColumn().SetName(title)
    for i, row in enumerate(rows):
        table.AddEmptyRow()
        for j, value in enumerate(row):
            table.SetCellText(i, j, f"{value:.3f}" if isinstance(value, float) else str(value))
    return table


def _metric_rows(planned: dict[str, DVH], predicted: dict[str, DVH], normalized: dict[str, str],
                 dose_bands: bands_mod.DoseBands | None = None) -> list[dict]:
    rows = []
    for key, p in predicted.items():
        if key not in planned:
            continue
        band_key = dose_bands.key_for(key, normalized.get(key)) if dose_bands is not None else None
        for m in COMPARED_METRICS:
            pred, plan = metric(p, m), metric(planned[key], m)
            row = {"structure": key, "normalized": normalized.get(key, key), "metric": m, "predicted_gy": pred,
                   "planned_gy": plan, "difference_gy": pred - plan}
            iv = dose_bands.intervals.get(band_key, {}).get(m) if band_key else None
            if iv is not None and np.isfinite(iv["lo"]) and np.isfinite(iv["hi"]):
                row.update(band_lo_gy=iv["lo"], band_hi_gy=iv["hi"], planned_inside=bool(iv["lo"] <= plan <= iv["hi"]))
            rows.append(row)
    return rows


def _metric_table_rows(rows: list[dict], with_bands: bool) -> list[list]:
    out = []
    for r in rows:
        cells = [r["structure"], r["normalized"], r["metric"], r["predicted_gy"], r["planned_gy"], r["difference_gy"]]
        if with_bands:
            inside = {True: "yes", False: "NO"}.get(r.get("planned_inside"), "")
            cells += [r.get("band_lo_gy", ""), r.get("band_hi_gy", ""), inside]
        out.append(cells)
    return out


def _constraint_rows(planned, predicted, constraints, normalized: dict[str, str]) -> list[dict]:
    pred_rows = check_constraints(predicted, constraints)
    plan_rows = {(r["structure"], r["metric"], r["constraint_structure"]): r for r in check_constraints(planned, constraints)}
    out = []
    for r in pred_rows:
        p = plan_rows.get((r["structure"], r["metric"], r["constraint_structure"]))
        out.append({"structure": r["structure"], "normalized": normalized.get(r["structure"], r["structure"]),
                    "constraint": f"{r['metric']} {r['comparator']} {r['limit']:g} {r['unit']}",
                    "limit": r["limit"], "predicted": r["value"], "predicted_passed": r["passed"],
                    "planned": p["value"] if p else float("nan"), "planned_passed": p["passed"] if p else None})
    return out


def _difference_node(scene, diff_gy, grid, name: str, reference_node):
    node = nodes.add_volume_node(scene, diff_gy.astype(np.float32), grid, name)
    node.SetAttribute("ADDiffDose.Difference", "predicted-planned Gy")  # not a dose: may be negative
    half = max(float(np.abs(diff_gy).max()), 1e-3)
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-half, half)
    nodes.place_under(scene, node, nodes.ensure_study(scene, reference_node))
    return node


def _chart(scene, out: Comparison, planned_node, predicted_node, seg_node, label: str) -> None:
    """Planned solid and predicted dashed DVH curves (and the predicted bands) in one chart."""
    plan_nodes = dvh_nodes.compute_dvh_nodes(scene, planned_node, seg_node, label=planned_node.GetName(), dashed=False)
    out.chart = plan_nodes.chart
    out.chart.SetName(f"{label} DVH")
    out.chart.SetTitle(f"{label}: planned solid, predicted dashed")
    dvh_nodes.compute_dvh_nodes(scene, predicted_node, seg_node, label=predicted_node.GetName(), dashed=True,
                                chart=out.chart)


def _tables(scene, out: Comparison, constraints, dose_bands, label: str) -> None:
    out.rows = _metric_rows(out.planned_dvhs, out.predicted_dvhs, out.normalized, dose_bands)
    with_bands = any("band_lo_gy" in r for r in out.rows)
    columns = METRIC_TABLE_COLUMNS + (BAND_TABLE_COLUMNS if with_bands else ())
    out.metrics_table = _text_table(scene, f"{label} metrics", columns, _metric_table_rows(out.rows, with_bands))
    out.constraint_rows = _constraint_rows(out.planned_dvhs, out.predicted_dvhs, constraints, out.normalized)
    out.constraints_table = _text_table(scene, f"{label} constraints", CONSTRAINT_TABLE_COLUMNS,
                                        [[r["structure"], r["normalized"], r["constraint"], r["limit"], r["predicted"],
                                          "yes" if r["predicted_passed"] else "NO", r["planned"],
                                          {True: "yes", False: "NO", None: "-"}[r["planned_passed"]]]
                                         for r in out.constraint_rows])


def compare_doses(scene, planned_node, predicted_node, seg_node, *, constraints: list[Constraint] | None = None,
                  gamma_criteria: tuple[float, float, float] | None = (3.0, 3.0, 10.0),
                  label: str | None = None) -> Comparison:
    """Compare two dose nodes over the segments of `seg_node`.

    gamma_criteria: (dose %, DTA mm, low-dose cutoff %) global gamma, planned as reference; None skips it.
    constraints: None = the library's default head-and-neck table.
    """
    label = label or f"{predicted_node.GetName()} vs {planned_node.GetName()}"
    grid = nodes.grid_from_volume_node(predicted_node)
    predicted = nodes.array_from_volume_node(predicted_node)
    planned_grid = nodes.grid_from_volume_node(planned_node)
    planned = nodes.array_from_volume_node(planned_node)
    if not planned_grid.same_as(grid):
        planned = np.maximum(resample_to_grid(planned, planned_grid, grid, order=1), 0)
    out = Comparison(planned_marked_as_dose=dose_output.mark_as_dose(scene, planned_node, predicted_node))
    _chart(scene, out, planned_node, predicted_node, seg_node, label)
    infos, out.skipped = dvh_nodes.overlapping_segments(seg_node, predicted_node)
    all_names = roles.normalized_names(seg_node)
    for info in infos:
        out.normalized[info.name] = all_names.get(info.segment_id, info.name)
        out.planned_dvhs[info.name] = compute_dvh(planned, info.mask, grid, mode="slicerrt", name=info.name)
        out.predicted_dvhs[info.name] = compute_dvh(predicted, info.mask, grid, mode="slicerrt", name=info.name)
    _tables(scene, out, constraints, bands_mod.bands_of(predicted_node), label)
    out.difference_node = _difference_node(scene, predicted - planned, grid, f"{label} difference", predicted_node)
    if gamma_criteria is not None:
        dose_pct, dta_mm, cutoff_pct = gamma_criteria
        result = gamma_index(planned, predicted, grid.spacing_mm, dose_pct, dta_mm, cutoff_pct)
        out.gamma_pass_rate_pct = result.pass_rate_pct
        out.difference_node.SetAttribute("ADDiffDose.GammaPassRatePct", f"{result.pass_rate_pct:.2f}")
        out.difference_node.SetAttribute("ADDiffDose.GammaCriteria", f"{dose_pct:g}%/{dta_mm:g}mm/{cutoff_pct:g}%")
    return out
