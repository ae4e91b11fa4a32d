"""Side-by-side benchmark of dose models on cases with a reference dose.

For each model and case: read -> predict -> write (the whole path a user waits for) with its wall time and
peak resident memory, then every metric of :mod:`ADDiffDoseLib.metrics.evaluate`. Paired per-case
differences against the first model come with a 95 % t-interval. The beam-sensitivity check predicts
pyRadPlan plans (anatomies not trained on) with their true beams and with every beam rotated by 20 deg.
The uncertainty check correlates the K-sample std with the absolute error (Spearman, body voxels) and
compares it with a dose-gradient heuristic.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..case import Beam
from ..io.detect import read_case, write_dose
from ..metrics.evaluate import evaluate_case, mean_metrics
from .predict import predict_case

T_975 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile_975(dof: int) -> float:
    if dof <= 0:
        return float("nan")
    keys = sorted(T_975)
    for k in keys:
        if dof <= k:
            return T_975[k]
    return 1.96


def paired_difference(a: list[float], b: list[float]) -> dict:
    """Mean of (b - a) over cases with both finite, with a 95 % t-interval."""
    d = np.array([y - x for x, y in zip(a, b) if np.isfinite(x) and np.isfinite(y)], dtype=float)
    if len(d) == 0:
        return {"n": 0, "mean": float("nan"), "ci95": [float("nan"), float("nan")]}
    half = t_quantile_975(len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"n": int(len(d)), "mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)]}


class PeakMemory:
    """Peak resident set size (bytes) of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def run_case(model: str, path: Path, *, steps, samples, seed, device, gamma: bool, data_root=None,
             beams: tuple[Beam, ...] | None = None) -> dict:
    """Predict one case end to end (read -> predict -> write) and evaluate it against its reference dose."""
    with PeakMemory() as mem, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        case = read_case(path, data_root=data_root)
        pred = predict_case(case, model, steps=steps, samples=samples, seed=seed, device=device, beams=beams)
        extra = {"dose_std": pred.dose_std_gy} if pred.dose_std_gy is not None else None
        write_dose(Path(tmp) / "dose.npz", case, pred.dose_gy, extra=extra, provenance=pred.provenance)
        seconds = time.perf_counter() - t0
    metrics = evaluate_case(pred.dose_gy, case, gamma=gamma)
    metrics.update(seconds=seconds, peak_memory_gb=mem.peak / 1e9, device=pred.provenance["device"])
    if pred.dose_std_gy is not None:
        body = case.body_mask if case.body_mask is not None else np.ones(case.grid.shape, bool)
        err = np.abs(pred.dose_gy - case.dose_gy)[body]
        grad = np.linalg.norm(np.stack(np.gradient(pred.dose_gy, *case.grid.spacing_mm)), axis=0)[body]
        metrics["uncertainty_spearman"] = spearman(pred.dose_std_gy[body], err)
        metrics["gradient_spearman"] = spearman(grad, err)
        from .bands import add_bands, band_coverage, reference_in_bands  # issue 16: DVH-metric intervals

        add_bands(case, pred, model, samples, seed=seed)
        metrics.update(band_coverage(reference_in_bands(case, pred.bands)))
    return metrics


def _rotated(beams: tuple[Beam, ...], degrees: float) -> tuple[Beam, ...]:
    return tuple(replace(b, gantry_deg=(b.gantry_deg + degrees) % 360,
                         arc_gantry_deg=tuple((a + degrees) % 360 for a in b.arc_gantry_deg) if b.arc_gantry_deg else None)
                 for b in beams)


def beam_sensitivity(model: str, plan_paths: list[Path], data_root, *, steps, seed, device, degrees=20.0,
                     progress=None) -> dict:
    """MAE in the body (Gy) of predictions with the true beams vs the beams rotated by `degrees`."""
    true_mae, rot_mae = [], []
    for i, path in enumerate(plan_paths):
        case = read_case(path, data_root=data_root)
        body = case.body_mask
        for beams, out in ((case.plan.beams, true_mae), (_rotated(case.plan.beams, degrees), rot_mae)):
            pred = predict_case(case, model, steps=steps, seed=seed, device=device, beams=beams)
            out.append(float(np.abs(pred.dose_gy - case.dose_gy)[body].mean()))
        if progress:
            progress(i + 1, len(plan_paths))
    return {"plans": len(plan_paths), "degrees": degrees, "mae_true_beams": float(np.mean(true_mae)),
            "mae_rotated_beams": float(np.mean(rot_mae)), "rotated_minus_true": paired_difference(true_mae, rot_mae),
            "per_plan": {"true": true_mae, "rotated": rot_mae}}


def summarize(per_model: dict[str, list[dict]]) -> dict:
    """Means per model and paired differences (model - first model) of the headline scores."""
    names = list(per_model)
    out = {"means": {m: mean_metrics(rows) for m, rows in per_model.items()}, "paired_vs_" + names[0]: {}}
    for m in names[1:]:
        out["paired_vs_" + names[0]][m] = {
            key: paired_difference([r.get(key, np.nan) for r in per_model[names[0]]], [r.get(key, np.nan) for r in per_model[m]])
            for key in ("dose_score", "dvh_score", "gdphmm_mae", "gamma_3mm3pct", "cord_dmax_error")
        }
    return out
