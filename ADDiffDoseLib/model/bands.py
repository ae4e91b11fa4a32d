"""DVH bands and an interval for each DVH metric from K coherent dose samples (issue 16).

A voxel-wise std says nothing about DVH metrics by itself: a DVH metric sums over a whole structure, and
independent voxel noise averages away there. The samples here are coherent instead: the predicted dose plus
its per-voxel error scale (the U-Net's flip spread combined with its learned Laplace error head,
``Prediction.dose_std_gy``) times a smooth Gaussian random field of unit variance whose covariance is
``exp(-r^2 / (2 corr_mm^2))`` (a few cm: an error of a predicted dose is a misplaced fall-off or a hot/cold
region, not salt-and-pepper noise):

    sample_k = max(0, dose + scale * field_k)          k = 1..K, fields seeded (numpy Generator or int)

Per structure, :func:`dvh_bands` gives the 5/50/95 % band of the cumulative DVH at each dose bin and, per
DVH metric (D99 / D95 / D1 / Dmean / V95%Rx for targets; Dmean / D0.1cc / D2cc / D1 for OARs), the sample
median and the nominal 90 % interval [q05, q95]. The metrics are the library's own (``metrics.dvh.DVH``).

Calibration: the interval of a metric of family f (``target``, ``oar_mean``, ``oar_max``) is widened about
the median by a factor s_f, ``lo = med - s_f (med - q05)``, ``hi = med + s_f (q95 - med)``; the factors are
fitted on the model-selection subset (``scripts/calibrate_bands.py``) and read from the model's
``band_scales`` (its config, else its record; default 1 = the raw sample interval). The DVH curve band of a
target uses s_target, of an OAR s_oar_mean.
"""

from __future__ import annotations

import numpy as np

from ..case import Case, Role
from ..errors import ErrorCode, InputError
from ..metrics.dose_stats import bounding_box
from ..metrics.dvh import NATIVE_BIN_GY, compute_dvh
from ..metrics.intervals import (FAMILIES, OAR_METRICS, TARGET_METRICS, band_coverage,  # noqa: F401 (re-exported)
                                 metric_family, reference_in_bands, structure_metrics)

INTERVAL = 0.90  # nominal coverage of the metric intervals (5 % and 95 % sample quantiles)
DEFAULT_CORR_MM = 30.0
DEFAULT_K = 8


def banded_structures(case: Case) -> dict:
    """Targets and OARs of `case` with at least one voxel (key -> Structure)."""
    return {k: s for k, s in case.structures.items() if s.role in (Role.TARGET, Role.OAR) and not s.is_empty}


def _rng(generator) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None or isinstance(generator, (int, np.integer)):
        return np.random.default_rng(0 if generator is None else int(generator))
    raise InputError(f"generator must be a numpy Generator or an int seed, got {type(generator).__name__}",
                     code=ErrorCode.INVALID_VALUE)


def gaussian_random_fields(shape, K: int, generator, corr_mm: float, spacing) -> np.ndarray:
    """(K, *shape) float32 smooth Gaussian fields, unit variance, covariance exp(-r^2 / (2 corr_mm^2)).

    White noise is drawn on a grid ~corr_mm/2 coarse, filtered with sigma corr_mm/sqrt(2) (filtering white
    noise with sigma s gives a Gaussian covariance of sigma sqrt(2) s), trilinearly upsampled and
    normalized to unit variance on the coarse grid (milliseconds per 128^3 field instead of seconds at full resolution).
    """
    import torch
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    if K < 1:
        raise InputError(f"K must be >= 1, got {K}", code=ErrorCode.INVALID_VALUE)
    if not corr_mm > 0:
        raise InputError(f"corr_mm must be > 0, got {corr_mm}", code=ErrorCode.INVALID_VALUE)
    rng = _rng(generator)
    shape = tuple(int(s) for s in shape)
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    step = np.maximum(1, np.round(corr_mm / 2.0 / spacing)).astype(int)  # coarse step per axis, voxels
    coarse = tuple(int(np.ceil(n / s)) + 1 for n, s in zip(shape, step))
    sigma = corr_mm / np.sqrt(2.0) / (spacing * step)  # in coarse voxels
    smooth = np.empty((K,) + coarse, dtype=np.float32)
    for k in range(K):
        field_k = gaussian_filter(rng.standard_normal(coarse), sigma, mode="wrap", truncate=3.0)
        smooth[k] = (field_k - field_k.mean()) / max(float(field_k.std()), 1e-12)
    # coarse node j sits at fine index j * step: upsample all K at once, crop to the volume
    up_size = tuple((c - 1) * s + 1 for c, s in zip(coarse, step))
    fine = F.interpolate(torch.from_numpy(smooth)[None], size=up_size, mode="trilinear", align_corners=True)[0]
    out = np.ascontiguousarray(fine[:, : shape[0], : shape[1], : shape[2]].numpy())
    return out


def coherent_samples(dose: np.ndarray, scale: np.ndarray, K: int = DEFAULT_K, generator=0,
                     corr_mm: float = DEFAULT_CORR_MM, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(K, *dose.shape) float32 dose samples: max(0, dose + scale * field_k) with smooth unit fields.

    dose, scale: Gy arrays of one shape (scale = the per-voxel error std, 0 where no error is expected, e.g.
    outside the body); generator: numpy Generator or int seed (same seed, same samples); corr_mm: correlation
    length (sigma of the Gaussian covariance); spacing: voxel size along the array axes (mm).
    """
    dose = np.asarray(dose, dtype=np.float32)
    scale = np.asarray(scale, dtype=np.float32)
    if dose.shape != scale.shape or dose.ndim != 3:
        raise InputError(f"dose {dose.shape} and scale {scale.shape} must be one 3D shape",
                         code=ErrorCode.GRID_MISMATCH)
    if np.any(scale < 0) or not np.all(np.isfinite(scale)):
        raise InputError("scale must be finite and >= 0", code=ErrorCode.INVALID_VALUE)
    fields = gaussian_random_fields(dose.shape, K, generator, corr_mm, spacing)
    fields *= scale[None]
    fields += dose[None]
    return np.maximum(fields, 0, out=fields)


def apply_priors_to_samples(case: Case, samples: np.ndarray, model) -> np.ndarray:
    """The model's target-coverage prior applied to each sample (in place), as predict_case applies it to the
    dose: without it the noise lowers every target's D99/D95 below the (prior-lifted) point dose."""
    from .postprocess import apply_coverage_prior, coverage_parameters

    level, strength = coverage_parameters(model)
    if strength > 0:
        for k in range(samples.shape[0]):
            samples[k] = apply_coverage_prior(case, samples[k], level, strength)
    return samples


def band_center_of(model) -> str:
    """'median' or 'point' from a model's record (``band_center``, chosen with the factors); default median."""
    return str(getattr(model, "record", {}).get("band_center", "median"))


def band_sample_count(model, K: int) -> int:
    """Coherent samples to draw: at least as many as the factors were calibrated with (record ``band_fit.K``),
    since the 5/95 % quantiles of fewer samples are narrower (K = 4 covered 74 % instead of 86 % on validation)."""
    fitted = (getattr(model, "record", {}).get("band_fit") or {}).get("K")
    return max(int(K), int(fitted)) if fitted and getattr(model, "record", {}).get("band_scales") else int(K)


def band_scales_of(model) -> dict[str, float]:
    """Per-family factors from a model's ``band_scales`` (config attribute, else record); 1 where absent."""
    raw = getattr(getattr(model, "config", None), "band_scales", None)
    raw = raw or getattr(model, "record", {}).get("band_scales")
    out = {f: 1.0 for f in FAMILIES}
    for k, v in dict(raw or {}).items():
        if k not in FAMILIES or not (0 < float(v) < 100):
            raise InputError(f"band_scales must map {FAMILIES} to factors in (0, 100), got {raw}",
                             code=ErrorCode.INVALID_CONFIG)
        out[k] = float(v)
    return out


def _widen(med, q_lo, q_hi, s):
    return med - s * (med - q_lo), med + s * (q_hi - med)


def dvh_bands(case: Case, samples: np.ndarray, *, band_scales: dict | None = None, point_dose: np.ndarray | None = None,
              curves: bool = True, center: str = "median") -> dict:
    """Per structure: the DVH band (5/50/95 % of volume at each 0.1 Gy bin) and per metric its interval.

    samples: (K, *case.grid.shape) dose samples (Gy); band_scales: family -> factor (default 1);
    point_dose: the prediction itself, whose metric is reported as ``value`` beside the interval;
    center: "median" (interval about the sample median) or "point" (the same spread about ``value``: the noise
    biases min/max-like metrics, D99 down and D1 up, while the point prediction is unbiased by it).
    Returns {"K", "interval", "band_scales", "structures": {key: {"role", "prescription_gy", "metrics":
    {metric: {"family", "lo", "hi", "median", "value"?}}, "curve": {"dose_gy", "lo_pct", "median_pct",
    "hi_pct"}}}}.
    """
    samples = np.asarray(samples)
    if samples.ndim != 4 or samples.shape[1:] != tuple(case.grid.shape):
        raise InputError(f"samples must be (K, {case.grid.shape}), got {samples.shape}", code=ErrorCode.GRID_MISMATCH)
    K = samples.shape[0]
    if center not in ("median", "point") or (center == "point" and point_dose is None):
        raise InputError(f"center must be 'median' or 'point' (with point_dose), got {center!r}",
                         code=ErrorCode.INVALID_VALUE)
    scales = {f: 1.0 for f in FAMILIES} | {k: float(v) for k, v in (band_scales or {}).items()}
    q = ((1 - INTERVAL) / 2, 0.5, (1 + INTERVAL) / 2)
    out = {}
    for key, s in banded_structures(case).items():
        box = bounding_box(s.mask)
        sub_grid = case.grid.with_shape(tuple(b.stop - b.start for b in box), [b.start for b in box])
        mask = s.mask[box]
        dvhs = [compute_dvh(samples[k][box], mask, sub_grid, name=key) for k in range(K)]
        values = [structure_metrics(d, s.role, s.prescription_gy) for d in dvhs]
        point = None
        if point_dose is not None:
            point = structure_metrics(compute_dvh(np.asarray(point_dose)[box], mask, sub_grid, name=key),
                                      s.role, s.prescription_gy)
        metrics = {}
        for m in values[0]:
            fam = metric_family(s.role, m)
            lo_q, med, hi_q = np.quantile([v[m] for v in values], q)
            lo, hi = _widen(med, lo_q, hi_q, scales[fam])
            if center == "point":
                lo, hi = lo - med + point[m], hi - med + point[m]
                if np.isnan(point[m]):  # e.g. V95%Rx of an unprescribed target is absent
                    lo, hi = np.nan, np.nan
            if m.startswith("V"):
                lo, hi = max(lo, 0.0), min(hi, 100.0)
            else:
                lo = max(lo, 0.0)
            metrics[m] = {"family": fam, "lo": float(lo), "hi": float(hi), "median": float(med)}
            if point is not None:
                metrics[m]["value"] = float(point[m])
        entry = {"role": s.role.value, "prescription_gy": s.prescription_gy, "metrics": metrics}
        if curves:
            top = max(d.max_gy for d in dvhs)
            bins = NATIVE_BIN_GY * np.arange(int(np.ceil(top / NATIVE_BIN_GY - 1e-9)) + 1)
            pct = np.stack([100.0 * np.searchsorted(-d.sorted_dose_gy, -bins, side="right") / d.n_voxels
                            for d in dvhs])
            lo_c, med_c, hi_c = np.quantile(pct, q, axis=0)
            lo_c, hi_c = _widen(med_c, lo_c, hi_c, scales["target" if s.role == Role.TARGET else "oar_mean"])
            entry["curve"] = {"dose_gy": np.round(bins, 4).tolist(),
                              "lo_pct": np.clip(lo_c, 0, 100).round(3).tolist(),
                              "median_pct": med_c.round(3).tolist(),
                              "hi_pct": np.clip(hi_c, 0, 100).round(3).tolist()}
        out[key] = entry
    return {"K": int(K), "interval": INTERVAL, "band_scales": scales, "center": center, "structures": out}


def bands_rows(bands: dict) -> list[dict]:
    """Flat rows (structure, role, metric, family, value, median, lo, hi) for CSV output."""
    rows = []
    for key, entry in bands["structures"].items():
        for m, iv in entry["metrics"].items():
            rows.append({"structure": key, "role": entry["role"], "metric": m, "family": iv["family"],
                         "value": iv.get("value", ""), "median": iv["median"], "lo": iv["lo"], "hi": iv["hi"]})
    return rows


def add_bands(case: Case, pred, model="default", K: int = DEFAULT_K, *, seed: int = 0,
              corr_mm: float = DEFAULT_CORR_MM, coverage_prior: bool = True):
    """Put the DVH bands of a Prediction that has an error map (dose_std_gy) into ``pred.bands``: K coherent
    samples (at least the calibration's K) around its dose, through the model's coverage prior, factors/center
    from the model's record."""
    from .predict import _cached_model

    if pred.dose_std_gy is None:
        raise InputError("bands need a prediction with an error map (samples >= 2)", code=ErrorCode.INVALID_VALUE)
    if K < 2:
        raise InputError(f"bands need K >= 2 samples, got {K}", code=ErrorCode.INVALID_VALUE)
    net = _cached_model(model or "default")[0] if isinstance(model, str) or model is None else model
    K = band_sample_count(net, K)  # cheap: the network ran once; only the smooth fields and DVHs scale with K
    samples = coherent_samples(pred.dose_gy, pred.dose_std_gy, K, seed, corr_mm, case.grid.spacing_mm)
    if coverage_prior and pred.provenance.get("coverage_prior"):
        apply_priors_to_samples(case, samples, net)
    bands = dvh_bands(case, samples, band_scales=band_scales_of(net), point_dose=pred.dose_gy,
                      center=band_center_of(net))
    bands.update(corr_mm=corr_mm, seed=int(seed), case=case.name, notice=pred.provenance.get("notice"))
    pred.bands = bands
    pred.provenance["bands"] = {"K": K, "corr_mm": corr_mm, "band_scales": bands["band_scales"],
                                "center": bands["center"]}
    return pred


def predict_bands(case: Case, model="default", K: int = DEFAULT_K, *, seed: int = 0,
                  corr_mm: float = DEFAULT_CORR_MM, **predict_kwargs):
    """predict_case with the error map (samples = K >= 2: flip-averaged dose + std for the U-Net), then
    :func:`add_bands`. Returns the Prediction with ``bands`` set."""
    from .predict import predict_case

    if K < 2:
        raise InputError(f"bands need K >= 2 samples, got {K}", code=ErrorCode.INVALID_VALUE)
    pred = predict_case(case, model, samples=K, seed=seed, **predict_kwargs)
    return add_bands(case, pred, model, K, seed=seed, corr_mm=corr_mm,
                     coverage_prior=predict_kwargs.get("coverage_prior", True))


BAND_CSV_COLUMNS = ("structure", "role", "metric", "family", "value", "median", "lo", "hi")


def bands_paths(out_path) -> tuple:
    """<output stem>_bands.json and .csv beside a dose output (stem before the first dot, like _std.nrrd)."""
    from pathlib import Path

    out_path = Path(out_path)
    stem = out_path.name.split(".")[0]
    return out_path.with_name(stem + "_bands.json"), out_path.with_name(stem + "_bands.csv")


def write_bands(out_path, bands: dict, overwrite: bool = False) -> tuple:
    """Write the bands JSON (curves + intervals) and a CSV of lo/hi per structure x metric; returns the paths."""
    import csv
    import io
    import json

    from ..io.atomic import write_text_atomic

    json_path, csv_path = bands_paths(out_path)
    from ..metrics.evaluate import to_jsonable

    write_text_atomic(json_path, json.dumps(to_jsonable(bands), indent=1, allow_nan=False) + "\n", overwrite=overwrite)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=BAND_CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in bands_rows(bands):
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomic(csv_path, buf.getvalue(), overwrite=overwrite)
    return json_path, csv_path
