"""3D global gamma index (Low et al., Med Phys 25:656, 1998), vectorised with NumPy.

For each reference voxel r with ref(r) >= cutoff (default 10 % of the normalisation dose):
    gamma(r) = min over positions e of sqrt(|e - r|^2 / DTA^2 + (eval(e) - ref(r))^2 / dD^2),
dD = dose_percent % of the normalisation (global; default the reference maximum).

The positions e are r + a fixed set of offsets: a lattice aligned with the voxel grid whose step along axis a is
spacing_a / F_a with F_a = ceil(spacing_a / (DTA / interp_fraction)), restricted to |offset| <= DTA * max_gamma.
eval(e) is trilinear interpolation of the evaluated dose (outside its grid: ignored). Offsets are processed in
shells of increasing distance; a voxel stops being searched once its best gamma is below the next shell's distance
term, which keeps most voxels to a few dozen look-ups. Voxels whose gamma exceeds max_gamma report max_gamma.
Agreement with pymedphys.gamma is checked in Testing/test_metrics_gamma.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dose_stats import check_dose, check_same_shape


@dataclass(frozen=True, eq=False)
class GammaResult:
    """gamma: (n0, n1, n2) float32, NaN where not evaluated (below the cutoff); pass_rate_pct: % of evaluated
    voxels with gamma <= 1; n_evaluated: their count; settings: the criteria used."""

    gamma: np.ndarray
    pass_rate_pct: float
    n_evaluated: int
    settings: dict


def _lattice_offsets(spacing_mm: np.ndarray, radius_mm: float, target_step_mm: float):
    """(M, 3) offsets in voxel-index units and (M,) distances in mm, sorted by distance."""
    factors = np.maximum(1, np.ceil(spacing_mm / target_step_mm - 1e-9)).astype(int)
    step_mm = spacing_mm / factors
    n_max = np.floor(radius_mm / step_mm + 1e-9).astype(int)
    axes = [np.arange(-n, n + 1) for n in n_max]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    mm = grid * step_mm
    dist = np.sqrt((mm**2).sum(axis=1))
    keep = dist <= radius_mm + 1e-9
    grid, dist = grid[keep], dist[keep]
    order = np.argsort(dist, kind="stable")
    return grid[order] / factors, dist[order]


def _corner_terms(offset_idx: np.ndarray, strides: np.ndarray):
    """Flat-index shifts and weights of the trilinear corners for one constant offset (zero weights dropped)."""
    base = np.floor(offset_idx + 1e-9).astype(int)
    frac = np.clip(offset_idx - base, 0.0, 1.0)
    shifts, weights = [], []
    for corner in np.ndindex(2, 2, 2):
        c = np.array(corner)
        w = float(np.prod(np.where(c == 1, frac, 1.0 - frac)))
        if w > 1e-9:
            shifts.append(int(((base + c) * strides).sum()))
            weights.append(w)
    return shifts, weights


def gamma_index(
    reference_gy: np.ndarray,
    evaluated_gy: np.ndarray,
    spacing_mm,
    dose_percent: float = 3.0,
    distance_mm: float = 3.0,
    lower_cutoff_percent: float = 10.0,
    *,
    max_gamma: float = 2.0,
    interp_fraction: float = 5.0,
    normalisation_gy: float | None = None,
) -> GammaResult:
    """Global 3D gamma of `evaluated_gy` against `reference_gy` (same grid, spacing per array axis in mm)."""
    if max_gamma <= 1.0:
        raise ValueError(f"max_gamma must be > 1 so that failing voxels stay failing, got {max_gamma}")
    ref = check_dose(reference_gy, "reference dose").astype(np.float32, copy=False)
    ev = check_dose(evaluated_gy, "evaluated dose").astype(np.float32, copy=False)
    check_same_shape(ref, ev, "reference dose", "evaluated dose")
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    norm = float(ref.max()) if normalisation_gy is None else float(normalisation_gy)
    settings = {"dose_percent": dose_percent, "distance_mm": distance_mm, "lower_cutoff_percent": lower_cutoff_percent,
                "max_gamma": max_gamma, "interp_fraction": interp_fraction, "normalisation_gy": norm, "global": True}
    gamma = np.full(ref.shape, np.nan, dtype=np.float32)
    points = ref >= lower_cutoff_percent / 100.0 * norm if norm > 0 else np.zeros(ref.shape, bool)
    n_points = int(points.sum())
    if n_points == 0:
        return GammaResult(gamma, float("nan"), 0, settings)
    dd = dose_percent / 100.0 * norm
    radius = distance_mm * max_gamma
    offsets, dists = _lattice_offsets(spacing, radius, distance_mm / interp_fraction)

    # pad the evaluated dose with NaN so every offset stays inside the array (NaN = outside the grid, ignored)
    pad = (np.ceil(radius / spacing).astype(int) + 1)
    ev_pad = np.pad(ev, [(p, p) for p in pad], mode="constant", constant_values=np.nan).ravel()
    padded_shape = np.array(ref.shape) + 2 * pad
    strides = np.array([padded_shape[1] * padded_shape[2], padded_shape[2], 1])
    pts_idx = np.argwhere(points)
    flat = ((pts_idx + pad) * strides).sum(axis=1)
    ref_pts = ref[points] / dd
    ev_scaled = ev_pad / dd

    best2 = np.full(n_points, np.inf, dtype=np.float32)
    active = np.arange(n_points)
    dist2 = (dists / distance_mm) ** 2
    i = 0
    n_off = len(dists)
    while i < n_off and active.size:
        j = i
        while j < n_off and abs(dists[j] - dists[i]) < 1e-6:  # one shell = one distance
            j += 1
        a_flat = flat[active]
        a_ref = ref_pts[active]
        shell_best = best2[active]
        for k in range(i, j):
            shifts, weights = _corner_terms(offsets[k], strides)
            value = weights[0] * ev_scaled[a_flat + shifts[0]]
            for s, w in zip(shifts[1:], weights[1:]):
                value += w * ev_scaled[a_flat + s]
            g2 = dist2[k] + (value - a_ref) ** 2
            np.fmin(shell_best, g2, out=shell_best)
        best2[active] = shell_best
        next_d2 = dist2[j] if j < n_off else np.inf
        active = active[shell_best > next_d2]
        i = j
    g = np.sqrt(best2)
    g = np.minimum(g, max_gamma)
    gamma[points] = g
    pass_rate = 100.0 * float(np.count_nonzero(g <= 1.0)) / n_points
    return GammaResult(gamma, pass_rate, n_points, settings)
