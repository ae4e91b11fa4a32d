"""Planned vs predicted dose in the scene: DVH overlay, metric and constraint tables, gamma, difference.

All numbers come from the library (:mod:`ADDiffDoseLib.metrics`); this module only turns them into
table, chart and volume nodes. The planned dose is resampled (trilinear) onto the predicted dose's
grid when the grids differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..geometry import resample_to_grid
from ..metrics.constraints import Constraint, check_constraints
from ..metrics.dvh import DVH, compute_dvh
from ..metrics.gamma import gamma_index
from . import dvh as dvh_nodes
from . import nodes

COMPARED_METRICS = ("D95%", "Dmean", "Dmax", "D0.1cc")
METRIC_TABLE_COLUMNS = ("Structure", "Metric", "Predicted (Gy)", "Planned (Gy)", "Difference (Gy)")
CONSTRAINT_TABLE_COLUMNS = ("Structure", "Constraint", "Limit", "Predicted", "Predicted passes",
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


def _metric_rows(planned: dict[str, DVH], predicted: dict[str, DVH]) -> list[dict]:
    rows = []
    for key, p in predicted.items():
        if key not in planned:
            continue
        for m in COMPARED_METRICS:
            pred, plan = metric(p, m), metric(planned[key], m)
            rows.append({"structure": key, "metric": m, "predicted_gy": pred, "planned_gy": plan,
                         "difference_gy": pred - plan})
    return rows


def _constraint_rows(planned, predicted, constraints) -> list[dict]:
    pred_rows = check_constraints(predicted, constraints)
    plan_rows = {(r["structure"], r["metric"], r["constraint_structure"]): r for r in check_constraints(planned, constraints)}
    out = []
    for r in pred_rows:
        p = plan_rows.get((r["structure"], r["metric"], r["constraint_structure"]))
        out.append({"structure": r["structure"], "constraint": f"{r['metric']} {r['comparator']} {r['limit']:g} {r['unit']}",
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
    out = Comparison()
    plan_nodes = dvh_nodes.compute_dvh_nodes(scene, planned_node, seg_node, label=planned_node.GetName(), dashed=False)
    out.chart = plan_nodes.chart
    out.chart.SetName(f"{label} DVH")
    out.chart.SetTitle(f"{label}: planned solid, predicted dashed")
    dvh_nodes.compute_dvh_nodes(scene, predicted_node, seg_node, label=predicted_node.GetName(), dashed=True,
                                chart=out.chart)
    for info in nodes.export_segments(seg_node, grid):
        if info.mask.any():
            out.planned_dvhs[info.name] = compute_dvh(planned, info.mask, grid, mode="slicerrt", name=info.name)
            out.predicted_dvhs[info.name] = compute_dvh(predicted, info.mask, grid, mode="slicerrt", name=info.name)
    out.rows = _metric_rows(out.planned_dvhs, out.predicted_dvhs)
    out.metrics_table = _text_table(scene, f"{label} metrics", METRIC_TABLE_COLUMNS,
                                    [[r["structure"], r["metric"], r["predicted_gy"], r["planned_gy"], r["difference_gy"]]
                                     for r in out.rows])
    out.constraint_rows = _constraint_rows(out.planned_dvhs, out.predicted_dvhs, constraints)
    out.constraints_table = _text_table(scene, f"{label} constraints", CONSTRAINT_TABLE_COLUMNS,
                                        [[r["structure"], r["constraint"], r["limit"], r["predicted"],
                                          "yes" if r["predicted_passed"] else "NO", r["planned"],
                                          {True: "yes", False: "NO", None: "-"}[r["planned_passed"]]]
                                         for r in out.constraint_rows])
    out.difference_node = _difference_node(scene, predicted - planned, grid, f"{label} difference", predicted_node)
    if gamma_criteria is not None:
        dose_pct, dta_mm, cutoff_pct = gamma_criteria
        result = gamma_index(planned, predicted, grid.spacing_mm, dose_pct, dta_mm, cutoff_pct)
        out.gamma_pass_rate_pct = result.pass_rate_pct
        out.difference_node.SetAttribute("ADDiffDose.GammaPassRatePct", f"{result.pass_rate_pct:.2f}")
        out.difference_node.SetAttribute("ADDiffDose.GammaCriteria", f"{dose_pct:g}%/{dta_mm:g}mm/{cutoff_pct:g}%")
    return out
