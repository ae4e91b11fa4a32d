"""A self-contained HTML evaluation report (PNG figures base64-embedded; matplotlib Agg, no files beside it).

Per case: metric table, constraint table (pass green / fail red), DVH overlay (reference solid, prediction
dashed), dose-difference and gamma maps on axial, coronal and sagittal slices through the target centre.
Slices are shown in the radiological convention with the direction letters from the grid geometry (LPS):
axial and coronal: patient Right on the image left; axial: Anterior on top; coronal/sagittal: Superior on top;
sagittal: Anterior on the left.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless (Agg canvas)

from .. import NOT_FOR_CLINICAL_USE, __version__
from ..case import Case
from ..geometry import Grid
from ..io.atomic import write_text_atomic
from .evaluate import HEADLINE_KEYS, Evaluation

# plane -> (fixed LPS axis, vertical LPS axis, +1 if that coordinate grows downwards, horizontal LPS axis,
#           (top, bottom, left, right) letters). LPS axes: 0 = x (+Left), 1 = y (+Posterior), 2 = z (+Superior).
PLANES = {
    "axial": (2, 1, +1, 0, ("A", "P", "R", "L")),
    "coronal": (1, 2, -1, 0, ("S", "I", "R", "L")),
    "sagittal": (0, 2, -1, 1, ("S", "I", "A", "P")),
}


def _array_axis_of(grid: Grid) -> tuple[list[int], list[float]]:
    """For each LPS axis: the array axis closest to it and the sign of that alignment."""
    axes, signs = [], []
    for lps in range(3):
        a = int(np.argmax(np.abs(grid.direction[lps, :])))
        axes.append(a)
        signs.append(float(np.sign(grid.direction[lps, a])))
    return axes, signs


def oriented_slice(volume: np.ndarray, grid: Grid, centre_index, plane: str):
    """2D slice of `volume` through `centre_index` (array-axis order) for display.

    Returns (image, extent_mm, letters): rows top->bottom and columns left->right follow :data:`PLANES`;
    extent (left, right, bottom, top) in mm for imshow; letters (top, bottom, left, right).
    """
    fixed, vert, vert_down, horiz, letters = PLANES[plane]
    ax, sign = _array_axis_of(grid)
    index = [slice(None)] * 3
    index[ax[fixed]] = int(round(centre_index[ax[fixed]]))
    img = volume[tuple(index)]
    remaining = [a for a in range(3) if a != ax[fixed]]
    if remaining.index(ax[vert]) != 0:
        img = img.T
    if sign[vert] * vert_down < 0:
        img = img[::-1, :]
    if sign[horiz] < 0:
        img = img[:, ::-1]
    h_mm = grid.spacing_mm[ax[horiz]] * img.shape[1]
    v_mm = grid.spacing_mm[ax[vert]] * img.shape[0]
    return img, (0.0, h_mm, 0.0, v_mm), letters


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _target_centre(case: Case) -> np.ndarray:
    for s in case.targets.values():
        if not s.is_empty:
            return np.argwhere(s.mask).mean(axis=0)
    if case.dose_gy is not None and case.dose_gy.max() > 0:
        return np.argwhere(case.dose_gy >= 0.5 * case.dose_gy.max()).mean(axis=0)
    return (np.asarray(case.grid.shape) - 1) / 2.0


def _maps_figure(volume: np.ndarray, grid: Grid, centre, title: str, cmap: str, vmin: float, vmax: float) -> str:
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    for axis, plane in zip(axes, PLANES):
        img, extent, (top, bottom, left, right) = oriented_slice(volume, grid, centre, plane)
        im = axis.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, origin="upper", interpolation="nearest")
        axis.set_title(plane)
        axis.set_xticks([])
        axis.set_yticks([])
        for text, xy in ((top, (0.5, 0.98)), (bottom, (0.5, 0.02)), (left, (0.02, 0.5)), (right, (0.98, 0.5))):
            axis.text(*xy, text, transform=axis.transAxes, ha="center", va="center", color="k", fontsize=11,
                      fontweight="bold", bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "edgecolor": "none"})
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title)
    return _png(fig)


def _dvh_figure(ev: Evaluation, title: str) -> str:
    fig = Figure(figsize=(9, 5.5))
    axis = fig.subplots()
    colours = matplotlib.colormaps["tab20"]
    for i, (key, ref) in enumerate(ev.ref_dvhs.items()):
        colour = colours(i % 20)
        axis.plot(ref.dose_bins_gy, ref.volume_pct, "-", color=colour, label=key)
        pred = ev.pred_dvhs.get(key)
        if pred is not None:
            axis.plot(pred.dose_bins_gy, pred.volume_pct, "--", color=colour)
    axis.set_xlabel("Dose [Gy]")
    axis.set_ylabel("Volume [%]")
    axis.set_ylim(0, 101)
    axis.set_xlim(left=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2, loc="upper right")
    axis.set_title(f"{title}: reference solid, prediction dashed")
    return _png(fig)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.3f}"
    return html.escape(str(value))


def _metric_table(metrics: dict) -> str:
    keys = [k for k in HEADLINE_KEYS if k in metrics]
    keys += sorted(k for k in metrics if k.startswith("dice_") and k != "dice_mean")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(metrics[k])}</td></tr>" for k in keys)
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def _constraint_table(metrics: dict) -> str:
    c = metrics.get("constraints") or {}
    pred = {(r["structure"], r["metric"]): r for r in c.get("pred", [])}
    rows = []
    for r in c.get("ref", []):
        p = pred.get((r["structure"], r["metric"]))
        cells = [html.escape(r["structure"]), html.escape(f"{r['metric']} {r['comparator']} {r['limit']:g} {r['unit']}")]
        for x in (r, p):
            if x is None:
                cells.append("<td>-</td>")
                continue
            cls = "pass" if x["passed"] else "fail"
            cells.append(f'<td class="{cls}">{x["value"]:.2f} ({"pass" if x["passed"] else "FAIL"})</td>')
        rows.append(f"<tr><td>{cells[0]}</td><td>{cells[1]}</td>{cells[2]}{cells[3]}</tr>")
    if not rows:
        return "<p>No constraint applies to these structures.</p>"
    return ("<table><tr><th>structure</th><th>constraint</th><th>reference</th><th>prediction</th></tr>"
            + "".join(rows) + "</table>")


CSS = """body{font-family:sans-serif;margin:2em;max-width:1300px} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #999;padding:3px 8px;text-align:left} .pass{background:#c8f0c8} .fail{background:#f5b5b5}
.warn{color:#b00;font-weight:bold;font-size:1.2em} img{max-width:100%}"""


def case_section(ev: Evaluation, ref_case: Case) -> str:
    """HTML of one case: tables and three embedded figures (two if gamma was not computed)."""
    name = html.escape(ref_case.name)
    centre = _target_centre(ref_case)
    diff = ev.pred_dose_gy.astype(np.float32) - ev.ref_dose_gy.astype(np.float32)
    lim = float(max(np.percentile(np.abs(diff), 99.5), 1.0))
    parts = [f"<h2>Case {name}</h2>", _metric_table(ev.metrics), "<h3>Dose constraints</h3>",
             _constraint_table(ev.metrics), "<h3>DVH</h3>", f'<img alt="DVH {name}" src="{_dvh_figure(ev, name)}">',
             "<h3>Dose difference (prediction - reference)</h3>",
             f'<img alt="dose difference {name}" src="'
             f'{_maps_figure(diff, ref_case.grid, centre, "prediction - reference [Gy]", "RdBu_r", -lim, lim)}">']
    if ev.gamma_3mm3pct is not None:
        g = np.nan_to_num(ev.gamma_3mm3pct.gamma, nan=0.0)
        parts += ["<h3>Gamma 3%/3mm (global, 10% cutoff)</h3>",
                  f'<img alt="gamma {name}" src="{_maps_figure(g, ref_case.grid, centre, "gamma", "magma", 0, 2)}">']
    return "\n".join(parts)


def render_report(sections: list[str], provenance: dict | None = None, summary: dict | None = None,
                  title: str = "ADDiffDose evaluation report") -> str:
    """The whole HTML document from case sections, a provenance dict and an optional mean-metric summary."""
    prov = {"software": f"ADDiffDose {__version__}", **(provenance or {})}
    prov_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in prov.items())
    summary_html = ""
    if summary:
        summary_html = "<h2>Mean over cases</h2>" + _metric_table(summary)
    warn = f'<p class="warn">{html.escape(NOT_FOR_CLINICAL_USE)}. NOT FOR CLINICAL USE.</p>'
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{warn}"
            f"<h2>Provenance</h2><table>{prov_rows}</table>{summary_html}{''.join(sections)}{warn}</body></html>")


def write_report(path: str | Path, evaluations: list[tuple[Evaluation, Case]], provenance: dict | None = None,
                 summary: dict | None = None, overwrite: bool = False) -> Path:
    """Write the report for (evaluation, reference case) pairs atomically; returns the path."""
    sections = [case_section(ev, case) for ev, case in evaluations]
    return write_text_atomic(path, render_report(sections, provenance, summary), overwrite=overwrite)
