"""A self-contained HTML evaluation report (PNG figures base64-embedded; matplotlib Agg, no files beside it).

Per case: prediction provenance, metric table (gamma pass rates and the constraint count coloured pass green /
fail red against :data:`METRIC_TOLERANCES`), constraint table (pass green / fail red), DVH overlay (reference
solid, prediction dashed), dose-difference and gamma maps on axial, coronal and sagittal slices through the target
centre, over the CT (soft-tissue window), cropped to the body, with the main target outlined in green.
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
from matplotlib.colors import Normalize, TwoSlopeNorm
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


#: CT underlay window (HU): soft tissue, so the body outline and bone read clearly under the colour layer.
CT_WINDOW_HU = (-400.0, 600.0)
CROP_MARGIN_VOXELS = 4


def _crop_box(body_2d: np.ndarray | None) -> tuple[slice, slice]:
    """Rows/columns of the body's bounding box plus a margin (everything when there is no body)."""
    if body_2d is None or not body_2d.any():
        return slice(None), slice(None)
    rows, cols = np.nonzero(body_2d)
    m = CROP_MARGIN_VOXELS
    return (slice(max(rows.min() - m, 0), rows.max() + m + 1), slice(max(cols.min() - m, 0), cols.max() + m + 1))


def _panel(axis, plane: str, layers: dict, grid: Grid, centre, cmap, norm, label_slice: bool = True):
    """One oriented slice: CT underlay (if any), colour layer (NaN transparent), target outline, letters."""
    img, extent, (top, bottom, left, right) = oriented_slice(layers["value"], grid, centre, plane)
    body = layers.get("body")
    rows, cols = _crop_box(oriented_slice(body, grid, centre, plane)[0] if body is not None else None)
    px_w, px_h = extent[1] / img.shape[1], extent[3] / img.shape[0]
    img = img[rows, cols]
    ext = (0.0, px_w * img.shape[1], 0.0, px_h * img.shape[0])
    if layers.get("ct") is not None:
        ct = oriented_slice(layers["ct"], grid, centre, plane)[0][rows, cols]
        axis.imshow(ct, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], extent=ext, origin="upper",
                    interpolation="nearest")
    im = axis.imshow(np.ma.masked_invalid(img), cmap=cmap, norm=norm, extent=ext, origin="upper",
                     interpolation="nearest", alpha=0.8 if layers.get("ct") is not None else 1.0)
    target = layers.get("target")
    if target is not None:
        t = oriented_slice(target, grid, centre, plane)[0][rows, cols]
        if t.any() and not t.all():
            axis.contour(t.astype(np.float32), levels=[0.5], colors="lime", linewidths=1.2, extent=ext,
                         origin="upper")
    fixed = PLANES[plane][0]
    where = float(grid.index_to_lps(np.asarray(centre, dtype=float))[fixed])
    axis.set_title(f"{plane} ({'xyz'[fixed]} = {where:.1f} mm)" if label_slice else plane)
    axis.set_xticks([])
    axis.set_yticks([])
    for text, xy in ((top, (0.5, 0.97)), (bottom, (0.5, 0.03)), (left, (0.03, 0.5)), (right, (0.97, 0.5))):
        axis.text(*xy, text, transform=axis.transAxes, ha="center", va="center", color="k", fontsize=11,
                  fontweight="bold", bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "edgecolor": "none"})
    return im


def _maps_figure(volume: np.ndarray, grid: Grid, centre, title: str, cmap: str, norm, *, ct=None, body=None,
                 target=None, colorbar_label: str = "") -> str:
    """Axial, coronal and sagittal slices of `volume` (NaN = not shown) through `centre` (array index),
    cropped to the body, over the CT, with the target outlined in green."""
    fig = Figure(figsize=(13, 4.6))
    axes = fig.subplots(1, 3)
    layers = {"value": volume, "ct": ct, "body": body, "target": target}
    for axis, plane in zip(axes, PLANES):
        im = _panel(axis, plane, layers, grid, centre, cmap, norm)
    bar = fig.colorbar(im, ax=axes, shrink=0.85)
    bar.set_label(colorbar_label)
    fig.suptitle(title)
    return _png(fig)


def _dvh_figure(ev: Evaluation, title: str, labels: dict[str, str] | None = None) -> str:
    fig = Figure(figsize=(9, 5.5))
    axis = fig.subplots()
    colours = matplotlib.colormaps["tab20"]
    for i, (key, ref) in enumerate(ev.ref_dvhs.items()):
        colour = colours(i % 20)
        axis.plot(ref.dose_bins_gy, ref.volume_pct, "-", color=colour, label=(labels or {}).get(key, key))
        pred = ev.pred_dvhs.get(key)
        if pred is not None:
            axis.plot(pred.dose_bins_gy, pred.volume_pct, "--", color=colour)
        curve = ((ev.bands or {}).get("structures", {}).get(key) or {}).get("curve")
        if curve:  # issue 16: the 90 % DVH band of the prediction
            axis.fill_between(curve["dose_gy"], curve["lo_pct"], curve["hi_pct"], color=colour, alpha=0.18, lw=0)
    axis.set_xlabel("Dose [Gy]")
    axis.set_ylabel("Volume [%]")
    axis.set_ylim(0, 101)
    axis.set_xlim(left=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2, loc="upper right")
    axis.set_title(f"{title}: reference solid, prediction dashed" + (", 90 % band shaded" if ev.bands else ""))
    return _png(fig)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.3f}"
    return html.escape(str(value))


#: Pass/fail colouring of gamma pass rates (%), for orientation only: AAPM TG-218's universal tolerance is 95 %
#: (3 %/2 mm, global, 10 % cut-off) and its action limit 90 %; we apply 95 % to 3 %/3 mm and 90 % to 2 %/2 mm.
METRIC_TOLERANCES = {"gamma_3mm3pct": 95.0, "gamma_2mm2pct": 90.0}
GAMMA_SHOWN_MAX = 2.0


def _metric_rows(metrics: dict) -> list[str]:
    keys = [k for k in HEADLINE_KEYS if k in metrics]
    dice_levels = [k for k in metrics if k.startswith("dice_") and k[5:].isdigit()]
    keys += sorted(dice_levels, key=lambda k: int(k[5:]))
    rows = []
    for k in keys:
        value, limit = metrics[k], METRIC_TOLERANCES.get(k)
        if limit is not None and isinstance(value, (int, float)) and math.isfinite(value):
            ok = value >= limit
            rows.append(f'<tr><td>{html.escape(k)}</td><td class="{"pass" if ok else "fail"}">{_fmt(value)} '
                        f'({"pass" if ok else "FAIL"})</td><td>&ge; {limit:g} %</td></tr>')
        else:
            rows.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(value)}</td><td></td></tr>")
    passed = _constraints_passed(metrics)
    if passed is not None:
        n_ok, n = passed
        cls = "pass" if n_ok == n else "fail"
        rows.append(f'<tr><td>constraints met (prediction)</td><td class="{cls}">{n_ok} / {n}</td>'
                    f"<td>all</td></tr>")
    return rows


def _constraints_passed(metrics: dict) -> tuple[int, int] | None:
    rows = (metrics.get("constraints") or {}).get("pred") or []
    return (sum(bool(r["passed"]) for r in rows), len(rows)) if rows else None


def _metric_table(metrics: dict) -> str:
    rows = "".join(_metric_rows(metrics))
    return f"<table><tr><th>metric</th><th>value</th><th>tolerance</th></tr>{rows}</table>"


def _provenance_table(prov: dict | None) -> str:
    if not prov:
        return ""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in prov.items())
    return f"<table><tr><th>prediction provenance</th><th></th></tr>{rows}</table>"


def _constraint_table(metrics: dict, labels: dict[str, str] | None = None) -> str:
    c = metrics.get("constraints") or {}
    pred = {(r["structure"], r["metric"]): r for r in c.get("pred", [])}
    rows = []
    for r in c.get("ref", []):
        p = pred.get((r["structure"], r["metric"]))
        cells = [html.escape((labels or {}).get(r["structure"], r["structure"])), html.escape(f"{r['metric']} {r['comparator']} {r['limit']:g} {r['unit']}")]
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


def _main_target(case: Case):
    """Mask of the highest-prescription non-empty target, or None."""
    return next((s.mask for s in case.targets.values() if not s.is_empty), None)


def _dvh_name_table(ev: Evaluation, ref_case: Case) -> str:
    """Reference and predicted Dmean / Dmax (point) / D0.03cc per structure, named as read with the normalized name
    beside it, under a line naming the DVH convention."""
    rows = []
    for key, ref in ev.ref_dvhs.items():
        s, pred = ref_case.structures.get(key), ev.pred_dvhs.get(key)
        cells = [s.original_name if s else key, key, f"{ref.volume_cc:.2f}"]
        cells += [f"{v:.2f}" for v in (ref.mean_gy, ref.max_gy, ref.d_cc(0.03))]
        cells += [f"{v:.2f}" for v in (pred.mean_gy, pred.max_gy, pred.d_cc(0.03))] if pred else ["-"] * 3
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = ("structure (as read)", "normalized", "cc", "ref Dmean", "ref Dmax", "ref D0.03cc", "pred Dmean",
            "pred Dmax", "pred D0.03cc")
    conv = ev.metrics.get("dvh_convention") or {}
    note = (f"<p>DVH convention: mode {html.escape(str(conv.get('mode', 'native')))}, end cap "
            f"{html.escape(str(conv.get('end_cap', 'full')))}; Dmax = point maximum, D0.03cc = volume-based.</p>")
    return note + "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def case_section(ev: Evaluation, ref_case: Case) -> str:
    """HTML of one case: tables and three embedded figures (two if gamma was not computed)."""
    name = html.escape(ref_case.name)
    centre = _target_centre(ref_case)
    body = ref_case.body_mask
    diff = ev.pred_dose_gy.astype(np.float32) - ev.ref_dose_gy.astype(np.float32)
    inside = diff[body] if body is not None and body.any() else diff
    lim = float(max(np.percentile(np.abs(inside), 99.5), 1.0))
    if body is not None and body.any():
        diff = np.where(body, diff, np.nan)  # outside the body: CT only
    target = _main_target(ref_case)
    labels = {k: s.label for k, s in ref_case.structures.items()}
    shared = {"ct": ref_case.ct_hu, "body": body, "target": target}
    diff_png = _maps_figure(diff, ref_case.grid, centre, "prediction - reference [Gy] (green: target outline)",
                            "RdBu_r", Normalize(-lim, lim), colorbar_label="Gy", **shared)
    warnings = "".join(f"<li>{html.escape(str(w))}</li>" for w in ev.metrics.get("warnings") or [])
    parts = [f"<h2>Case {name}</h2>", f'<ul class="warn">{warnings}</ul>' if warnings else "",
             _provenance_table(ev.metrics.get("provenance")), _metric_table(ev.metrics),
             "<h3>Dose constraints</h3>", _constraint_table(ev.metrics, labels), "<h3>DVH</h3>",
             f'<img alt="DVH {name}" src="{_dvh_figure(ev, name, labels)}">',
             _dvh_name_table(ev, ref_case),
             "<h3>Dose difference (prediction - reference)</h3>",
             f'<img alt="dose difference {name}" src="{diff_png}">']
    if ev.gamma_3mm3pct is not None:
        g = np.asarray(ev.gamma_3mm3pct.gamma, dtype=np.float32)  # NaN below the low-dose cut-off: not shown
        rate = ev.metrics.get("gamma_3mm3pct")
        title = "gamma 3%/3mm (blue <= 1 passes, red > 1 fails; blank: below the 10% cut-off)"
        if isinstance(rate, float) and math.isfinite(rate):
            title += f", pass rate {rate:.1f}%"
        gamma_png = _maps_figure(np.minimum(g, GAMMA_SHOWN_MAX), ref_case.grid, centre, title, "coolwarm",
                                 TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=GAMMA_SHOWN_MAX), colorbar_label="gamma",
                                 **shared)
        parts += ["<h3>Gamma 3%/3mm (global, 10% cutoff)</h3>", f'<img alt="gamma {name}" src="{gamma_png}">']
    return "\n".join(parts)


def render_report(sections: list[str], provenance: dict | None = None, summary: dict | None = None,
                  title: str = "ADDiffDose evaluation report") -> str:
    """The whole HTML document from case sections, a provenance dict and an optional mean-metric summary."""
    prov = {"software": f"ADDiffDose {__version__}", **(provenance or {})}
    prov_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in prov.items())
    summary_html = ""
    if summary:
        summary_html = "<h2>Mean over cases</h2>" + _metric_table(summary)
    warn = f'<p class="warn">{html.escape(NOT_FOR_CLINICAL_USE)}.</p>'
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{warn}"
            f"<h2>Provenance</h2><table>{prov_rows}</table>{summary_html}{''.join(sections)}{warn}</body></html>")


def write_report(path: str | Path, evaluations: list[tuple[Evaluation, Case]], provenance: dict | None = None,
                 summary: dict | None = None, overwrite: bool = False) -> Path:
    """Write the report for (evaluation, reference case) pairs atomically; returns the path."""
    sections = [case_section(ev, case) for ev, case in evaluations]
    return write_text_atomic(path, render_report(sections, provenance, summary), overwrite=overwrite)
