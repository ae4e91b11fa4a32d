"""Whether reference DVH metrics lie inside predicted intervals (issue 16), and the metric definitions they use.

The intervals come from ``model/bands.py`` (K coherent dose samples) as a plain dict, usually read from the
``<prediction>_bands.json`` that ``addiffdose predict --samples K`` writes beside its dose. Families:
``target`` (D99 / D95 / D1 / Dmean / V95%Rx of targets), ``oar_mean`` (OAR Dmean), ``oar_max`` (OAR D0.1cc /
D2cc / D1). Every metric is the library's own (:class:`~ADDiffDoseLib.metrics.dvh.DVH`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..case import Case, Role
from ..errors import ErrorCode, InputError
from .dose_stats import bounding_box
from .dvh import DVH, compute_dvh

FAMILIES = ("target", "oar_mean", "oar_max")
TARGET_METRICS = ("D99%", "D95%", "D1%", "Dmean", "V95%Rx")
OAR_METRICS = ("Dmean", "D0.1cc", "D2cc", "D1%")


def metric_family(role: Role | str, metric: str) -> str:
    role = Role(role)
    if role == Role.TARGET:
        return "target"
    return "oar_mean" if metric == "Dmean" else "oar_max"


def structure_metrics(dvh: DVH, role: Role | str, prescription_gy: float | None = None) -> dict[str, float]:
    """The banded DVH metrics of one structure (Gy; V95%Rx in % of the structure), from the DVH's own methods."""
    if Role(role) == Role.TARGET:
        out = {"D99%": dvh.d_percent(99), "D95%": dvh.d_percent(95), "D1%": dvh.d_percent(1), "Dmean": dvh.mean_gy}
        if prescription_gy:
            out["V95%Rx"] = dvh.v_gy(0.95 * prescription_gy, "%")
        return out
    return {"Dmean": dvh.mean_gy, "D0.1cc": dvh.d_cc(0.1), "D2cc": dvh.d_cc(2.0), "D1%": dvh.d_percent(1)}


def reference_in_bands(case: Case, bands: dict, reference_gy: np.ndarray | None = None) -> list[dict]:
    """One row per (structure, metric): the reference dose's metric and whether it lies inside [lo, hi]."""
    ref = case.dose_gy if reference_gy is None else reference_gy
    if ref is None:
        raise InputError(f"case {case.name!r} has no reference dose", code=ErrorCode.MISSING_FIELD)
    rows = []
    for key, entry in bands["structures"].items():
        s = case.structures.get(key)
        if s is None or s.is_empty:
            continue
        box = bounding_box(s.mask)
        sub_grid = case.grid.with_shape(tuple(b.stop - b.start for b in box), [b.start for b in box])
        ref_m = structure_metrics(compute_dvh(np.asarray(ref)[box], s.mask[box], sub_grid, name=key),
                                  s.role, s.prescription_gy)
        for m, iv in entry["metrics"].items():
            r = ref_m.get(m)
            if r is None or not np.isfinite(r) or iv.get("lo") is None or iv.get("hi") is None:
                continue
            rows.append({"structure": key, "metric": m, "family": iv["family"], "reference": float(r),
                         "lo": iv["lo"], "hi": iv["hi"], "median": iv["median"],
                         "inside": bool(iv["lo"] <= r <= iv["hi"])})
    return rows


def band_coverage(rows: list[dict]) -> dict:
    """Share of reference metrics inside their interval and mean width (Gy metrics), overall and per family."""
    out = {}
    for name in ("all",) + FAMILIES:
        group = [r for r in rows if name == "all" or r["family"] == name]
        gy = [r["hi"] - r["lo"] for r in group if not r["metric"].startswith("V")]
        suffix = "" if name == "all" else "_" + name
        out["band_coverage" + suffix] = float(np.mean([r["inside"] for r in group])) if group else float("nan")
        out["band_width_gy" + suffix] = float(np.mean(gy)) if gy else float("nan")
    return out


def bands_file_for(prediction_path) -> Path | None:
    """The ``<stem>_bands.json`` beside a prediction file (stem before the first dot), or None."""
    p = Path(prediction_path)
    candidate = p.with_name(p.name.split(".")[0] + "_bands.json")
    return candidate if p.is_file() and candidate.is_file() else None


def read_bands(path) -> dict:
    try:
        bands = json.loads(Path(path).read_text())
        bands["structures"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a DVH bands file: {exc}", path=path, code=ErrorCode.INVALID_VALUE) from exc
    return bands


def interval_check(case: Case, bands: dict, reference_gy: np.ndarray | None = None) -> dict:
    """{rows: reference_in_bands(...), band_coverage..., band_width_gy...}: the JSON-ready check."""
    rows = reference_in_bands(case, bands, reference_gy)
    return {"rows": rows, **band_coverage(rows)}
