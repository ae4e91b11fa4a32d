"""A self-contained, printable HTML report for physicists (PNG figures base64-embedded; no files beside it).

Order, per case: header (case, model, date, "Not for clinical use"); dose images (predicted dose as a colour wash
over the CT with isodose lines in % of the highest prescription, legend in % and Gy, axial / coronal / sagittal
through the centre of mass of the highest-prescription target, the reference beside it); the difference map and
the gamma 3 %/3 mm map; the metrics table (names in words with units); the DVH with its bands and a per-structure
DVH metrics table (names as read, interval columns when bands exist, inside / outside against the reference);
the beams (the prediction's when known); the constraints with the margin to the limit. Provenance closes the
document. Without a reference dose (:func:`~.evaluate.evaluate_prediction`) the sections that need one (difference,
gamma, agreement metrics, reference inside / outside) are omitted with a one-line note. Figures: report_images.py.
"""

from __future__ import annotations

import datetime
import html
import math
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm

from .. import NOT_FOR_CLINICAL_USE, __version__
from ..case import Beam, Case, Role
from ..io.atomic import write_text_atomic
from .evaluate import HEADLINE_KEYS, Evaluation
from .intervals import structure_metrics
from .report_images import (ISODOSE_COLOURS, PLANES, _panel, dose_figure, isodose_legend_labels,
                             dvh_figure, maps_figure, oriented_slice, panel_arrays)

__all__ = ["PLANES", "_panel", "oriented_slice", "panel_arrays", "case_section", "render_report", "write_report"]

#: Pass/fail colouring of gamma pass rates (%), for orientation only: AAPM TG-218's universal tolerance is 95 %
#: (3 %/2 mm, global, 10 % cut-off) and its action limit 90 %; we apply 95 % to 3 %/3 mm and 90 % to 2 %/2 mm.
METRIC_TOLERANCES = {"gamma_3mm3pct": 95.0, "gamma_2mm2pct": 90.0}
GAMMA_SHOWN_MAX = 2.0
#: The one line that replaces every section needing a reference dose (difference, gamma, agreement metrics,
#: reference in the interval) in a report of a prediction alone.
NO_REFERENCE_NOTE = ("No reference dose: the difference and gamma maps, the agreement metrics and the reference "
                     "inside / outside the interval are omitted.")

#: Metric keys of :func:`~.evaluate.evaluate_case` -> what the report shows (words and unit).
METRIC_LABELS = {
    "dose_score": "OpenKBP dose score: mean absolute dose error (Gy)",
    "dvh_score": "OpenKBP DVH score: mean absolute DVH metric error (Gy)",
    "gdphmm_mae": "GDP-HMM mean absolute dose error (Gy)",
    "mae_body": "Mean absolute dose error in the body (Gy)",
    "dice": "Isodose Dice at 50 % of prescription",
    "dice_mean": "Isodose Dice, mean over 10-100 % of prescription",
    "gamma_3mm3pct": "Gamma 3 %/3 mm pass rate (%)",
    "gamma_2mm2pct": "Gamma 2 %/2 mm pass rate (%)",
    "cord_dmax_error": "Spinal cord maximum dose error (Gy)",
    "prescription_gy": "Highest prescription (Gy)",
}
#: DVH metric names (intervals.py, constraints.py) -> words with units.
DVH_METRIC_LABELS = {
    "Dmean": "Mean dose (Gy)",
    "Dmax": "Maximum dose, point (Gy)",
    "D99%": "D99%, dose to 99 % of volume (Gy)",
    "D95%": "D95%, dose to 95 % of volume (Gy)",
    "D1%": "Near-maximum dose, D1% (Gy)",
    "D0.1cc": "D0.1cc, hottest 0.1 cc (Gy)",
    "D2cc": "D2cc, hottest 2 cc (Gy)",
    "V95%Rx": "V95%, volume at 95 % of Rx (%)",
}


def metric_label(key: str) -> str:
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    if key.startswith("dice_") and key[5:].isdigit():
        return f"Isodose Dice at {int(key[5:])} % of prescription"
    return DVH_METRIC_LABELS.get(key, key.replace("_", " "))


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, (float, np.floating)):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def _e(text) -> str:
    return html.escape(str(text))


def _table(head: list[str], rows: list[str], cls: str = "") -> str:
    cls = f' class="{cls}"' if cls else ""
    return (f"<table{cls}><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _figure(src: str, alt: str, caption: str) -> str:
    return f'<figure><img alt="{_e(alt)}" src="{src}"><figcaption>{caption}</figcaption></figure>'


# ---------------------------------------------------------------- metrics


def _metric_rows(metrics: dict) -> list[str]:
    keys = [k for k in HEADLINE_KEYS if k in metrics and not (k == "dice" and "dice_50" in metrics)]
    dice_levels = [k for k in metrics if k.startswith("dice_") and k[5:].isdigit()]
    keys += sorted(dice_levels, key=lambda k: int(k[5:]))
    rows = []
    for k in keys:
        value, limit = metrics[k], METRIC_TOLERANCES.get(k)
        digits = 3 if k.startswith("dice") else 2
        name = _e(metric_label(k))
        if limit is not None and isinstance(value, (int, float)) and math.isfinite(value):
            ok = value >= limit
            rows.append(f'<tr><td>{name}</td><td class="{"pass" if ok else "fail"}">{_fmt(value, digits)} '
                        f'({"pass" if ok else "FAIL"})</td><td>&ge; {limit:g} %</td></tr>')
        else:
            rows.append(f"<tr><td>{name}</td><td>{_fmt(value, digits)}</td><td></td></tr>")
    passed = _constraints_passed(metrics)
    if passed is not None:
        n_ok, n = passed
        cls = "pass" if n_ok == n else "fail"
        rows.append(f'<tr><td>Dose constraints met by the prediction</td><td class="{cls}">{n_ok} / {n}</td>'
                    f"<td>all</td></tr>")
    cov = (metrics.get("intervals") or {}).get("band_coverage")
    if isinstance(cov, float) and math.isfinite(cov):
        rows.append(f"<tr><td>Reference DVH metrics inside the predicted 90 % interval (%)</td>"
                    f"<td>{100 * cov:.0f}</td><td></td></tr>")
    return rows


def _metric_table_no_reference(metrics: dict) -> str:
    """Without a reference only what the prediction alone says: constraints met and the prescription."""
    rows = []
    passed = _constraints_passed(metrics)
    if passed is not None:
        n_ok, n = passed
        rows.append(f'<tr><td>Dose constraints met by the prediction</td><td class="{"pass" if n_ok == n else "fail"}">'
                    f"{n_ok} / {n}</td><td>all</td></tr>")
    if metrics.get("prescription_gy"):
        rows.append(f"<tr><td>{_e(metric_label('prescription_gy'))}</td><td>{_fmt(metrics['prescription_gy'])}</td>"
                    "<td></td></tr>")
    note = '<p class="note">No reference dose: no agreement metrics (dose score, DVH score, Dice, gamma).</p>'
    return note + (_table(["Metric", "Value", "Tolerance"], rows, "metrics") if rows else "")


def _constraints_passed(metrics: dict) -> tuple[int, int] | None:
    rows = (metrics.get("constraints") or {}).get("pred") or []
    return (sum(bool(r["passed"]) for r in rows), len(rows)) if rows else None


def _metric_table(metrics: dict) -> str:
    return _table(["Metric", "Value", "Tolerance"], _metric_rows(metrics), "metrics")


# ---------------------------------------------------------------- structures


def _name_cell(case: Case, key: str) -> str:
    """The user's structure name as read, the normalized name beside it (smaller) when it differs."""
    s = case.structures.get(key)
    shown = s.original_name if s else key
    extra = f' <small class="norm">{_e(key)}</small>' if shown != key else ""
    return f"{_e(shown)}{extra}"


def _dvh_metric_table(ev: Evaluation, case: Case) -> str:
    """Per structure, the banded DVH metrics (intervals.py) plus the point maximum: reference, prediction,
    the interval [lo, hi] when bands exist and whether the reference lies inside it."""
    bands = (ev.bands or {}).get("structures", {})
    checked = {(r["structure"], r["metric"]): r for r in (ev.metrics.get("intervals") or {}).get("rows", [])}
    has_bands, has_ref = bool(bands), bool(ev.ref_dvhs)
    rows = []
    for key in list(ev.ref_dvhs) + [k for k in ev.pred_dvhs if k not in ev.ref_dvhs]:
        s = case.structures.get(key)
        role = s.role if s else Role.OAR
        rx = s.prescription_gy if s else None
        ref, pred = ev.ref_dvhs.get(key), ev.pred_dvhs.get(key)
        any_dvh = ref if ref is not None else pred
        names = list(structure_metrics(any_dvh, role, rx)) + ["Dmax"]
        values = {}
        for which, dvh in (("ref", ref), ("pred", pred)):
            if dvh is not None:
                values[which] = {**structure_metrics(dvh, role, rx), "Dmax": dvh.max_gy}
        for i, m in enumerate(names):
            cells = []
            if i == 0:
                span = f' rowspan="{len(names)}"'
                cells.append(f'<td{span} class="structure">{_name_cell(case, key)}<br><small>'
                             f"{any_dvh.volume_cc:.1f} cc</small></td>")
            cells.append(f"<td>{_e(DVH_METRIC_LABELS.get(m, m))}</td>")
            r = values.get("ref", {}).get(m)
            if has_ref:
                cells.append(f"<td>{_fmt(r)}</td>")
            cells.append(f"<td>{_fmt(values.get('pred', {}).get(m))}</td>")
            if has_bands:
                iv = (bands.get(key) or {}).get("metrics", {}).get(m) or {}
                lo, hi = iv.get("lo"), iv.get("hi")
                cells += [f"<td>{_fmt(lo)}</td>", f"<td>{_fmt(hi)}</td>"]
                if has_ref:
                    row = checked.get((key, m))
                    inside = row["inside"] if row else (
                        None if lo is None or hi is None or r is None or not math.isfinite(r) else lo <= r <= hi)
                    if inside is None:
                        cells.append("<td>-</td>")
                    else:
                        cells.append(f'<td class="{"pass" if inside else "fail"}">'
                                     f'{"inside" if inside else "outside"}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
    head = ["Structure (as read)", "DVH metric"] + (["Reference"] if has_ref else []) + ["Prediction"]
    if has_bands:
        head += ["90 % interval low", "90 % interval high"] + (["Reference in interval"] if has_ref else [])
    conv = ev.metrics.get("dvh_convention") or {}
    note = (f"<p class=\"note\">DVH convention: mode {_e(conv.get('mode', 'native'))}, end cap "
            f"{_e(conv.get('end_cap', 'full'))}; maximum dose = point maximum; D<i>x</i>cc = dose to the hottest "
            f"<i>x</i> cc.</p>")
    return note + _table(head, rows, "dvh")


# ---------------------------------------------------------------- beams, constraints, provenance


def _as_beam(b) -> Beam:
    return b if isinstance(b, Beam) else Beam(**{k: v for k, v in b.items() if k in Beam.__dataclass_fields__})


def _beam_table(case: Case, beams=None) -> str:
    """One row per beam: the prediction's (`beams`: Beam objects or their dicts, e.g. from our dose npz) when
    known, else the case's plan."""
    caption = "Beams of the prediction" if beams else "Beams of the plan"
    beams = [_as_beam(b) for b in (beams or case.plan.beams or ())]
    if not beams:
        return "<p>The plan lists no beams.</p>"
    rows = []
    for i, b in enumerate(beams, 1):
        gantry = f"{b.gantry_deg:.1f}"
        if b.arc_gantry_deg:
            arc = b.arc_gantry_deg
            gantry = f"{arc[0]:.1f} &rarr; {arc[-1]:.1f} (arc, {len(arc)} control points)"
        rows.append(f"<tr><td>{i}</td><td>{gantry}</td><td>{b.couch_deg:.1f}</td><td>{b.collimator_deg:.1f}</td>"
                    f"<td>{b.energy_mv:g} MV</td><td>{_e(b.technique)}</td></tr>")
    extra = f"<p class=\"note\">{case.plan.fractions} fractions.</p>" if case.plan.fractions else ""
    table = _table(["Beam", "Gantry (°)", "Couch (°)", "Collimator (°)", "Energy", "Technique"], rows, "beams")
    return table.replace("<thead>", f"<caption>{caption}</caption><thead>", 1) + extra


def _constraint_table(metrics: dict, case: Case) -> str:
    c = metrics.get("constraints") or {}
    ref = {(r["structure"], r["metric"], r["comparator"], r["limit"]): r for r in c.get("ref", [])}
    pred = {(r["structure"], r["metric"], r["comparator"], r["limit"]): r for r in c.get("pred", [])}
    has_ref = "ref" in c
    rows = []
    for k in list(ref) + [k for k in pred if k not in ref]:
        r0 = ref.get(k) or pred[k]
        unit = r0["unit"]
        cells = [f"<td>{_name_cell(case, r0['structure'])}</td>",
                 f"<td>{_e(r0['metric'])} {_e(r0['comparator'])} {r0['limit']:g} {_e(unit)}</td>"]
        for x in ((ref.get(k), pred.get(k)) if has_ref else (pred.get(k),)):
            if x is None:
                cells.append("<td>-</td><td>-</td>")
                continue
            cls = "pass" if x["passed"] else "fail"
            margin = x.get("margin")
            if margin is None:
                margin = x["limit"] - x["value"] if x["comparator"].startswith("<") else x["value"] - x["limit"]
            cells.append(f'<td class="{cls}">{x["value"]:.2f} {_e(unit)} ({"pass" if x["passed"] else "FAIL"})</td>'
                         f'<td class="{cls}">{margin:+.2f} {_e(unit)}</td>')
        cells.append(f"<td><small>{_e(r0.get('source') or '')}</small></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        return "<p>No constraint applies to these structures.</p>"
    note = ('<p class="note">Margin to the limit: positive = room left, negative = limit exceeded '
            "(limit - value for upper limits, value - limit for lower limits).</p>")
    head = ["Structure (as read)", "Constraint"] + (["Reference", "Margin (reference)"] if has_ref else [])
    return note + _table(head + ["Prediction", "Margin (prediction)", "Source"], rows, "constraints")


def _definition_list(items: dict) -> str:
    def text(v):
        if isinstance(v, dict):
            return "; ".join(f"{k}: {text(x)}" for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return ", ".join(text(x) for x in v)
        return str(v)

    return "<dl>" + "".join(f"<dt>{_e(str(k).replace('_', ' '))}</dt><dd>{_e(text(v))}</dd>"
                            for k, v in items.items() if v not in (None, "", [], {})) + "</dl>"


# ---------------------------------------------------------------- case section


def _target_centre(case: Case) -> np.ndarray:
    """Centre of mass (array index) of the highest-prescription non-empty target, else of the high dose."""
    for s in case.targets.values():
        if not s.is_empty:
            return np.argwhere(s.mask).mean(axis=0)
    if case.dose_gy is not None and case.dose_gy.max() > 0:
        return np.argwhere(case.dose_gy >= 0.5 * case.dose_gy.max()).mean(axis=0)
    return (np.asarray(case.grid.shape) - 1) / 2.0


def _main_target(case: Case):
    """(key, Structure) of the highest-prescription non-empty target, or (None, None)."""
    return next(((k, s) for k, s in case.targets.items() if not s.is_empty), (None, None))


def _isodose_key(rx_gy: float) -> str:
    """The isodose legend as text: a coloured swatch, % of the prescription and Gy per line."""
    items = "".join(f'<li><span class="swatch" style="background:{c}"></span>{_e(label)}</li>'
                    for c, label in zip(reversed(ISODOSE_COLOURS), isodose_legend_labels(rx_gy)))
    return f'<ul class="isodose" aria-label="isodose lines">{items}</ul>'


def _images(ev: Evaluation, case: Case) -> str:
    centre = _target_centre(case)
    body = case.body_mask
    key, target = _main_target(case)
    shared = {"ct": case.ct_hu, "body": body, "target": target.mask if target is not None else None}
    rx = case.max_prescription_gy
    rx_label = f"the highest prescription ({_e(key)})" if rx else "the reference maximum (no prescription known)"
    if not rx:
        rx = float(max(np.max(ev.ref_dose_gy) if ev.ref_dose_gy is not None else 0, np.max(ev.pred_dose_gy), 1.0))
    doses = {"prediction": ev.pred_dose_gy}
    if ev.ref_dose_gy is not None:
        doses["reference"] = ev.ref_dose_gy
    where = f"centre of mass of {_e(target.original_name)}" if target is not None else "the high-dose centre"
    parts = ["<h3>Dose</h3>", _figure(
        dose_figure(doses, case.grid, centre, rx, rx_label="Rx" if case.max_prescription_gy else "max", **shared),
        "dose", f"{' and '.join(doses)} dose (Gy) over the CT, shown above {10:g} % of {rx_label}, {rx:.1f} Gy; "
                f"isodose lines at 50 / 80 / 90 / 95 / 100 / 105 %; planes through the {where}; radiological "
                "convention (patient right on image left, anterior / superior up).") + _isodose_key(rx)]
    if ev.ref_dose_gy is None:
        return "\n".join(parts + [f'<p class="note no-reference">{_e(NO_REFERENCE_NOTE)}</p>'])
    diff = ev.pred_dose_gy.astype(np.float32) - ev.ref_dose_gy.astype(np.float32)
    inside = diff[body] if body is not None and body.any() else diff
    lim = float(max(np.percentile(np.abs(inside), 99.5), 1.0))
    if body is not None and body.any():
        diff = np.where(body, diff, np.nan)  # outside the body: CT only
    parts += ["<h3>Dose difference (prediction - reference)</h3>", _figure(
        maps_figure(diff, case.grid, centre, "prediction - reference (Gy)", "RdBu_r", Normalize(-lim, lim),
                    colorbar_label="Gy", **shared),
        "dose difference", "Red: prediction hotter than the reference, blue: colder (Gy, inside the body).")]
    if ev.gamma_3mm3pct is not None:
        g = np.asarray(ev.gamma_3mm3pct.gamma, dtype=np.float32)  # NaN below the low-dose cut-off: not shown
        rate = ev.metrics.get("gamma_3mm3pct")
        title = "gamma 3 %/3 mm"
        if isinstance(rate, float) and math.isfinite(rate):
            title += f", pass rate {rate:.1f} %"
        parts += ["<h3>Gamma 3 %/3 mm</h3>", _figure(
            maps_figure(np.minimum(g, GAMMA_SHOWN_MAX), case.grid, centre, title, "coolwarm",
                        TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=GAMMA_SHOWN_MAX), colorbar_label="gamma", **shared),
            "gamma", "Global gamma, 10 % low-dose cut-off: blue &le; 1 passes, red &gt; 1 fails; blank below the "
                     "cut-off.")]
    else:
        parts.append("<p>Gamma was not computed (evaluate without --no-gamma to add the gamma map).</p>")
    return "\n".join(parts)


def case_section(ev: Evaluation, ref_case: Case, model: str | None = None, date: str | None = None) -> str:
    """HTML of one case: header, dose images, metrics, DVH, beams, constraints (provenance: render_report)."""
    name = _e(ref_case.name)
    prov = ev.metrics.get("provenance") or {}
    model = model or prov.get("model")
    labels = {k: s.label for k, s in ref_case.structures.items()}
    has_ref = ev.ref_dose_gy is not None
    header = [f"<dt>Case</dt><dd>{name}</dd>", f"<dt>Model</dt><dd>{_e(model or 'unknown')}</dd>",
              f"<dt>Date</dt><dd>{_e(date or _now())}</dd>"]
    if ref_case.max_prescription_gy:
        header.append(f"<dt>Highest prescription</dt><dd>{ref_case.max_prescription_gy:.2f} Gy</dd>")
    warnings = "".join(f"<li>{_e(w)}</li>" for w in ev.metrics.get("warnings") or [])
    parts = [f'<section class="case"><h2>Case {name}</h2>', f'<dl class="header">{"".join(header)}</dl>',
             f'<p class="warn">{_e(NOT_FOR_CLINICAL_USE)}.</p>',
             f'<ul class="warn">{warnings}</ul>' if warnings else "",
             _images(ev, ref_case),
             "<h3>Metrics</h3>", _metric_table(ev.metrics) if has_ref else _metric_table_no_reference(ev.metrics),
             "<h3>DVH</h3>", _figure(dvh_figure(ev.ref_dvhs, ev.pred_dvhs, ev.bands, name, labels), "DVH",
                                     ("Reference solid, prediction dashed" if has_ref else "Prediction") + (
                                         "; the prediction's 90 % band shaded." if ev.bands else ".")),
             "<h3>DVH metrics per structure</h3>", _dvh_metric_table(ev, ref_case),
             "<h3>Beams</h3>", _beam_table(ref_case, ev.beams),
             "<h3>Dose constraints</h3>", _constraint_table(ev.metrics, ref_case), "</section>"]
    return "\n".join(p for p in parts if p)


def _now() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


CSS = """body{font-family:sans-serif;margin:2em;max-width:1300px;color:#111}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} td,th{border:1px solid #999;padding:3px 8px;
text-align:left;vertical-align:top} th{background:#eee} .pass{background:#c8f0c8} .fail{background:#f5b5b5}
.warn{color:#b00;font-weight:bold} small.norm{color:#666;font-size:.8em} .note{color:#444;font-size:.9em}
img{max-width:100%} figure{margin:.5em 0} figcaption{font-size:.9em;color:#333}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 1em;font-size:.92em} dt{font-weight:bold}
dd{margin:0} dl.header{font-size:1.05em}
ul.isodose{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1.2em;font-size:.9em}
.swatch{display:inline-block;width:1.6em;height:.35em;margin-right:.4em;vertical-align:middle}
@media print{body{margin:0;max-width:none;font-size:10pt} figure,table,dl,img,tr{page-break-inside:avoid;
break-inside:avoid} h2,h3{page-break-after:avoid;break-after:avoid} section.case+section.case{page-break-before:always}
.pass,.fail,th{-webkit-print-color-adjust:exact;print-color-adjust:exact}}"""


def render_report(sections: list[str], provenance: dict | None = None, summary: dict | None = None,
                  title: str = "ADDiffDose evaluation report", case_provenance: dict | None = None,
                  date: str | None = None) -> str:
    """The whole HTML document from case sections, a provenance dict (definition list at the end), an optional
    mean-metric summary and per-case provenance {case: dict}."""
    prov = {"software": f"ADDiffDose {__version__}", **(provenance or {})}
    summary_html = f"<h2>Mean over cases</h2>{_metric_table(summary)}" if summary else ""
    warn = f'<p class="warn">{_e(NOT_FOR_CLINICAL_USE)}.</p>'
    per_case = "".join(f"<h3>Case {_e(c)}</h3>{_definition_list(p)}" for c, p in (case_provenance or {}).items() if p)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>{warn}{summary_html}{''.join(sections)}"
            f'<section class="provenance"><h2>Provenance</h2>{_definition_list(prov)}{per_case}</section>'
            f"{warn}</body></html>")


def write_report(path: str | Path, evaluations: list[tuple[Evaluation, Case]], provenance: dict | None = None,
                 summary: dict | None = None, overwrite: bool = False) -> Path:
    """Write the report for (evaluation, reference case) pairs atomically; returns the path."""
    date = _now()
    model = (provenance or {}).get("model")
    sections = [case_section(ev, case, model=model, date=date) for ev, case in evaluations]
    case_prov = {case.name: ev.metrics.get("provenance") for ev, case in evaluations}
    return write_text_atomic(path, render_report(sections, provenance, summary, case_provenance=case_prov,
                                                 date=date), overwrite=overwrite)
