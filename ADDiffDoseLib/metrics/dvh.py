"""Cumulative dose-volume histograms and the D/V metrics read from them.

One definition each (used everywhere in the library; both modes apply them to their own voxels):

* ``D_x%``  = the minimum dose received by the hottest x % of the structure: with the N voxel doses sorted
  descending, the dose of voxel number ``ceil(x/100 * N)`` (at least 1). D100% = min, D0% -> max.
* ``D_xcc`` = the same with ``ceil(x / voxel_volume_cc)`` voxels (capped at N): e.g. D0.1cc is the minimum dose of
  the hottest 0.1 cc.
* ``V_xGy`` = the volume (cc or % of the structure) whose dose is >= x Gy.
* mean / min / max: over the voxels (sub-voxels in SlicerRT mode) inside the structure.

Two modes:

* ``native``: the structure's own voxels, dose sampled at their centres (dose resampled trilinearly onto the
  structure grid if the grids differ). The curve has bins every 0.1 Gy from 0 to the structure's max.
* ``slicerrt``: what SlicerRT's Dose Volume Histogram module computes (SlicerRt/SlicerRT@df6ef69cfeaa
  ``DoseVolumeHistogram/Logic/vtkSlicerDoseVolumeHistogramModuleLogic.cxx``, ``ComputeDvh``): the dose grid is
  oversampled x2 keeping its outer corners (sub-voxel centres at +-1/4 of a voxel,
  ``vtkCalculateOversamplingFactor::ApplyOversamplingOnImageGeometry``), the dose is interpolated trilinearly,
  labelmaps are resampled nearest-neighbour, and the curve has a fixed first row (0 Gy, 100 %) followed by bins
  ``0.1 + 0.2 i`` Gy up to the max of the whole dose volume (``StartValue`` 0.1, ``StepSize`` 0.2,
  ``numSamples = ceil((maxDose - 0.1)/0.2) + 1``); each row is the % of sub-voxels with dose >= the bin
  (vtkImageAccumulate floors (v - origin)/spacing). Volume cc = sub-voxel count x sub-voxel volume.

End-capping (``end_cap``, :mod:`.end_caps`): ``full`` (default) counts the first and last contoured slice as full
slabs, ``half`` as half slabs. Dmax: ``max_gy`` is the point maximum (voxel / sub-voxel centres); ``d_cc(0.03)``
(row ``d0.03cc_gy``) is the volume-based maximum that some planning systems and protocols report instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..case import Case
from ..errors import DoseError, ErrorCode, InputError
from ..geometry import Grid, resample_to_grid, voxels_inside
from .dose_stats import bounding_box, check_dose, dose_at_hottest_count, hottest_count
from .end_caps import between_end_planes, check_end_cap, drop_outer_subslices, end_planes, half_capped_doses

MODES = ("native", "slicerrt")
#: Structures smaller than this (cc) get a warning: their DVH depends on the voxel size and the convention.
SMALL_STRUCTURE_CC = 1.0
NATIVE_BIN_GY = 0.1
SLICERRT_START_GY = 0.1  # vtkSlicerDoseVolumeHistogramModuleLogic: StartValue
SLICERRT_STEP_GY = 0.2  # ... StepSize
SLICERRT_OVERSAMPLING = 2  # ... default oversampling factor (AutomaticOversampling off)


@dataclass(frozen=True, eq=False)
class DVH:
    """A cumulative DVH of one structure.

    dose_bins_gy: (B,) curve doses; volume_pct / volume_cc_curve: (B,) share/volume with dose >= bin;
    volume_cc: structure volume; sorted_dose_gy: (N,) voxel (sub-voxel) doses sorted descending;
    voxel_volume_cc: volume of one of those entries (native with end_cap 'half': half a voxel, interior voxels
    entered twice and end-slice voxels once, so every count-based metric weighs the end slices 1/2);
    end_cap: 'full' or 'half' (see :mod:`.end_caps`).
    """

    name: str
    mode: str
    dose_bins_gy: np.ndarray
    volume_pct: np.ndarray
    volume_cc_curve: np.ndarray
    volume_cc: float
    mean_gy: float
    min_gy: float
    max_gy: float
    voxel_volume_cc: float
    sorted_dose_gy: np.ndarray = field(repr=False)
    warnings: tuple[str, ...] = ()  # partly outside the dose grid, under SMALL_STRUCTURE_CC
    end_cap: str = "full"

    @property
    def n_voxels(self) -> int:
        """Entries of sorted_dose_gy (voxels, sub-voxels, or half voxels: see the class docstring)."""
        return int(self.sorted_dose_gy.size)

    def d_percent(self, percent: float) -> float:
        """D_x%: minimum dose (Gy) of the hottest `percent` % of the volume (see module docstring)."""
        if not 0 <= percent <= 100:
            raise InputError(f"volume percent must be in [0, 100], got {percent}", code=ErrorCode.INVALID_VALUE)
        return dose_at_hottest_count(self.sorted_dose_gy, hottest_count(percent / 100.0 * self.n_voxels, 1.0))

    def d_cc(self, volume_cc: float) -> float:
        """D_xcc: minimum dose (Gy) of the hottest `volume_cc` cc (all voxels if the structure is smaller)."""
        if volume_cc < 0:
            raise InputError(f"volume must be >= 0 cc, got {volume_cc}", code=ErrorCode.INVALID_VALUE)
        return dose_at_hottest_count(self.sorted_dose_gy, hottest_count(volume_cc, self.voxel_volume_cc))

    def v_gy(self, dose_gy: float, unit: str = "%") -> float:
        """V_xGy: volume with dose >= `dose_gy`, in '%' of the structure or 'cc'."""
        if self.n_voxels == 0:
            return float("nan")
        # sorted descending: count of entries >= dose via searchsorted on the negated (ascending) array
        count = int(np.searchsorted(-self.sorted_dose_gy, -dose_gy, side="right"))
        if unit == "%":
            return 100.0 * count / self.n_voxels
        if unit == "cc":
            return count * self.voxel_volume_cc
        raise InputError(f"unit must be '%' or 'cc', got {unit!r}", code=ErrorCode.INVALID_VALUE)

    def to_dict(self, curve: bool = False) -> dict:
        out = {"structure": self.name, "mode": self.mode, "end_cap": self.end_cap, "volume_cc": self.volume_cc,
               "mean_gy": self.mean_gy, "min_gy": self.min_gy, "max_gy": self.max_gy, "d0.03cc_gy": self.d_cc(0.03)}
        if curve:
            out["dose_gy"] = self.dose_bins_gy.tolist()
            out["volume_pct"] = self.volume_pct.tolist()
        return out


def _curve(sorted_desc: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """% of voxels with dose >= each bin (sorted_desc sorted descending)."""
    if sorted_desc.size == 0:
        return np.full(bins.shape, np.nan)
    counts = np.searchsorted(-sorted_desc, -bins, side="right")
    return 100.0 * counts / sorted_desc.size


def _make(name: str, mode: str, doses: np.ndarray, voxel_cc: float, bins: np.ndarray, volume_pct=None,
          end_cap: str = "full") -> DVH:
    doses = np.sort(np.asarray(doses, dtype=np.float64))[::-1]
    n = doses.size
    pct = _curve(doses, bins) if volume_pct is None else volume_pct
    stats = (float(doses.mean()), float(doses[-1]), float(doses[0])) if n else (float("nan"),) * 3
    return DVH(name, mode, bins, pct, pct / 100.0 * n * voxel_cc, n * voxel_cc, *stats, voxel_cc, doses,
               end_cap=end_cap)


# --- SlicerRT oversampling ---------------------------------------------------------------------------
def oversampled_grid(grid: Grid, factor: int = SLICERRT_OVERSAMPLING) -> Grid:
    """The grid SlicerRT computes on: same outer corners, spacing/factor, so sub-voxel centres sit at
    index (m + 0.5)/factor - 0.5 of the original (+-1/4 voxel for factor 2)."""
    shape = tuple(n * factor for n in grid.shape)
    first = np.full(3, (0.5 / factor) - 0.5)
    return Grid(shape, grid.spacing_mm / factor, grid.index_to_lps(first), grid.direction)


def _upsample2_linear(a: np.ndarray, axis: int) -> np.ndarray:
    """x2 along `axis`, linear at index i -+ 1/4 with edge clamping (vtkImageReslice's half-voxel border)."""
    a = np.moveaxis(a, axis, 0)
    prev = np.concatenate([a[:1], a[:-1]], axis=0)
    nxt = np.concatenate([a[1:], a[-1:]], axis=0)
    out = np.empty((2 * a.shape[0],) + a.shape[1:], dtype=np.float32)
    out[0::2] = 0.75 * a + 0.25 * prev
    out[1::2] = 0.75 * a + 0.25 * nxt
    return np.moveaxis(out, 0, axis)


def _slicerrt_doses(dose: np.ndarray, mask_on_dose: np.ndarray, end_cap: str = "full") -> np.ndarray:
    """Doses of the x2 sub-voxels of `mask_on_dose` (mask already on the dose grid, nearest = repeat)."""
    box = bounding_box(mask_on_dose, pad=1)
    if box is None:
        return np.zeros(0)
    sub = dose[box].astype(np.float32)
    for axis in range(3):
        sub = _upsample2_linear(sub, axis)
    # padding voxels taken from the real volume are true neighbours; at the volume edge the clamp applies
    m = mask_on_dose[box]
    m = m.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    if end_cap == "half":
        m = drop_outer_subslices(m, *end_planes(mask_on_dose), box[0].start)
    return sub[m]


def _slicerrt_bins(volume_max_gy: float) -> np.ndarray:
    n = int(np.ceil((volume_max_gy - SLICERRT_START_GY) / SLICERRT_STEP_GY)) + 1
    return SLICERRT_START_GY + SLICERRT_STEP_GY * np.arange(max(n, 1))


# --- public ------------------------------------------------------------------------------------------
def compute_dvh(
    dose_gy: np.ndarray,
    mask: np.ndarray,
    grid: Grid,
    mode: str = "native",
    *,
    dose_grid: Grid | None = None,
    name: str = "",
    end_cap: str = "full",
) -> DVH:
    """DVH of `mask` (bool, on `grid`) under `dose_gy` (Gy, on `dose_grid`, default `grid`).

    native: if the grids differ the dose is resampled trilinearly onto `grid`.
    slicerrt: the mask is brought onto the x2-oversampled dose grid (nearest), as SlicerRT does.
    end_cap: 'full' or 'half' slabs for the first and last slice (axis 0 of `grid`), see :mod:`.end_caps`.
    The DVH's `warnings` say when the structure lies partly outside the dose grid or is under SMALL_STRUCTURE_CC.
    Raises DoseError (E204) for negative dose, InputError (E205) for an unknown end_cap.
    """
    dvh = _compute(dose_gy, mask, grid, mode, dose_grid, name, check_end_cap(end_cap))
    found = []
    total_cc = float(np.count_nonzero(mask)) * grid.voxel_volume_cc
    if dose_grid is not None and not dose_grid.same_as(grid):
        inside_cc = voxels_inside(np.asarray(mask, bool), grid, dose_grid) * grid.voxel_volume_cc
        if inside_cc < total_cc:
            found.append(f"structure {name!r} lies partly outside the dose grid: {inside_cc:.1f} of {total_cc:.1f} "
                         "cc inside (no dose outside)")
    if 0 < total_cc < SMALL_STRUCTURE_CC:
        found.append(f"structure {name!r} is {total_cc:.2f} cc (< {SMALL_STRUCTURE_CC:g} cc): its DVH depends on "
                     "the voxel size and the DVH convention")
    return replace(dvh, warnings=tuple(found)) if found else dvh


def _compute(dose_gy, mask, grid, mode, dose_grid, name, end_cap) -> DVH:
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}", code=ErrorCode.INVALID_VALUE)
    dose_grid = dose_grid or grid
    dose = check_dose(dose_gy)
    dose_grid.check_array(dose, "dose")
    grid.check_array(mask, f"structure {name!r}")
    mask = np.asarray(mask, dtype=bool)
    if mode == "native":
        if not dose_grid.same_as(grid):
            dose = resample_to_grid(dose.astype(np.float32), dose_grid, grid, order=1)
        box = bounding_box(mask)
        voxel_cc = grid.voxel_volume_cc
        if box is None:
            doses = np.zeros(0)
        elif end_cap == "half":
            doses, voxel_cc = half_capped_doses(dose[box], mask[box]), voxel_cc / 2
        else:
            doses = dose[box][mask[box]]
        top = float(doses.max()) if doses.size else 0.0
        bins = NATIVE_BIN_GY * np.arange(int(np.ceil(top / NATIVE_BIN_GY - 1e-9)) + 1)
        return _make(name, mode, doses, voxel_cc, bins, end_cap=end_cap)
    # slicerrt
    if dose_grid.same_as(grid):
        doses = _slicerrt_doses(dose, mask, end_cap)
    else:
        fine = oversampled_grid(dose_grid)
        fine_mask = resample_to_grid(mask, grid, fine, order=0)
        box = bounding_box(fine_mask)
        planes = end_planes(mask)
        if box is not None and end_cap == "half" and planes is not None:
            fine_mask[box] &= between_end_planes(fine, box, grid, *planes)
            box = bounding_box(fine_mask)
        if box is None:
            doses = np.zeros(0)
        else:  # dose on the fine grid, only where needed
            coarse_box = bounding_box(fine_mask.reshape(dose.shape[0], 2, dose.shape[1], 2, dose.shape[2], 2)
                                      .any(axis=(1, 3, 5)), pad=1)
            sub = dose[coarse_box].astype(np.float32)
            for axis in range(3):
                sub = _upsample2_linear(sub, axis)
            offset = [2 * s.start for s in coarse_box]
            local = tuple(slice(b.start - o, b.stop - o) for b, o in zip(box, offset))
            doses = sub[local][fine_mask[box]]
    voxel_cc = dose_grid.voxel_volume_cc / SLICERRT_OVERSAMPLING**3
    bins = _slicerrt_bins(float(dose.max()) if dose.size else 0.0)
    pct = _curve(np.sort(doses)[::-1], bins)
    bins = np.concatenate([[0.0], bins])
    pct = np.concatenate([[100.0], pct])
    return _make(name, mode, doses, voxel_cc, bins, volume_pct=pct, end_cap=end_cap)


DEFAULT_TABLE_METRICS = ("D0.1cc", "D2%", "D50%", "D95%", "D98%")


def dvh_warnings(dvhs: dict[str, DVH], case: Case | None = None) -> list[str]:
    """The DVHs' warnings, naming each structure as read (from `case`) rather than by its normalized name."""
    out = []
    for key, d in dvhs.items():
        s = case.structures.get(key) if case is not None else None
        out += [w.replace(f"structure {key!r}", f"structure {s.original_name!r}") if s else w for w in d.warnings]
    return out


def dvh_row(dvh: DVH, role: str = "", prescription_gy: float | None = None, original_name: str | None = None) -> dict:
    """A flat table row: the structure's name as read (`original_name`, default the DVH's name) and its normalized
    name, the convention (mode, end_cap), volume, mean/min/max (max = point maximum), D0.03cc (volume-based
    maximum), D0.1cc, D2/50/95/98 %, and V95%Rx for targets."""
    row = {"structure": original_name or dvh.name, "normalized_name": dvh.name, "role": role, "mode": dvh.mode,
           "end_cap": dvh.end_cap, "volume_cc": dvh.volume_cc,
           "mean_gy": dvh.mean_gy, "min_gy": dvh.min_gy, "max_gy": dvh.max_gy, "d0.03cc_gy": dvh.d_cc(0.03),
           "d0.1cc_gy": dvh.d_cc(0.1), "d2pct_gy": dvh.d_percent(2), "d50pct_gy": dvh.d_percent(50),
           "d95pct_gy": dvh.d_percent(95), "d98pct_gy": dvh.d_percent(98)}
    if prescription_gy:
        row["prescription_gy"] = prescription_gy
        row["v95pct_rx_pct"] = dvh.v_gy(0.95 * prescription_gy, "%")
    return row


def case_dvhs(case: Case, dose_gy: np.ndarray | None = None, mode: str = "native",
              *, dose_grid: Grid | None = None, end_cap: str = "full") -> dict[str, DVH]:
    """DVH of every non-empty structure of `case` under `dose_gy` (default: the case's own dose)."""
    dose = case.dose_gy if dose_gy is None else dose_gy
    if dose is None:
        raise DoseError(f"case {case.name!r} has no dose to compute DVHs from", code=ErrorCode.MISSING_FIELD)
    return {key: compute_dvh(dose, s.mask, case.grid, mode, dose_grid=dose_grid, name=key, end_cap=end_cap)
            for key, s in case.structures.items() if not s.is_empty}


def dvh_table(case: Case, dose_gy: np.ndarray | None = None, mode: str = "native",
              *, dose_grid: Grid | None = None, end_cap: str = "full") -> list[dict]:
    """One row (see :func:`dvh_row`) per non-empty structure of `case`."""
    dvhs = case_dvhs(case, dose_gy, mode, dose_grid=dose_grid, end_cap=end_cap)
    return [structure_row(d, case.structures[k]) for k, d in dvhs.items()]


def structure_row(dvh: DVH, structure) -> dict:
    """:func:`dvh_row` of a case's Structure (role, prescription, name as read)."""
    return dvh_row(dvh, structure.role.value, structure.prescription_gy, structure.original_name)
