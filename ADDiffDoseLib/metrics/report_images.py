"""Figures of the HTML report (matplotlib Figure + Agg canvas, no pyplot), returned as base64 PNG data URIs.

Slices are shown in the radiological convention with the direction letters from the grid geometry (LPS):
axial and coronal: patient Right on the image left; axial: Anterior on top; coronal/sagittal: Superior on top;
sagittal: Anterior on the left. :func:`panel_arrays` gives the exact 2D arrays that are drawn (testable before
PNG encoding); :func:`dose_figure` paints a dose as a colour wash over the CT with isodose lines in % of the
prescription; :func:`maps_figure` draws a difference or gamma map; :func:`dvh_figure` the DVH with its bands.
"""

from __future__ import annotations

import base64
import io

import matplotlib
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless (Agg canvas)
from matplotlib.lines import Line2D

from ..geometry import Grid

# plane -> (fixed LPS axis, vertical LPS axis, +1 if that coordinate grows downwards, horizontal LPS axis,
#           (top, bottom, left, right) letters). LPS axes: 0 = x (+Left), 1 = y (+Posterior), 2 = z (+Superior).
PLANES = {
    "axial": (2, 1, +1, 0, ("A", "P", "R", "L")),
    "coronal": (1, 2, -1, 0, ("S", "I", "R", "L")),
    "sagittal": (0, 2, -1, 1, ("S", "I", "A", "P")),
}
#: CT underlay window (HU): soft tissue, so the body outline and bone read clearly under the colour layer.
CT_WINDOW_HU = (-400.0, 600.0)
CROP_MARGIN_VOXELS = 4
#: Isodose lines (% of the highest prescription) and their colours; the dose wash starts at WASH_FROM_PCT.
ISODOSE_PCT = (50, 80, 90, 95, 100, 105)
ISODOSE_COLOURS = ("#1f4fff", "#00c0ff", "#00d000", "#ffd700", "#ff7f00", "#e00000")
WASH_FROM_PCT = 10.0
WASH_ALPHA = 0.45


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
    index[ax[fixed]] = int(np.clip(round(float(centre_index[ax[fixed]])), 0, volume.shape[ax[fixed]] - 1))
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


def _crop_box(body_2d: np.ndarray | None) -> tuple[slice, slice]:
    """Rows/columns of the body's bounding box plus a margin (everything when there is no body)."""
    if body_2d is None or not body_2d.any():
        return slice(None), slice(None)
    rows, cols = np.nonzero(body_2d)
    m = CROP_MARGIN_VOXELS
    return (slice(max(rows.min() - m, 0), rows.max() + m + 1), slice(max(cols.min() - m, 0), cols.max() + m + 1))


def panel_arrays(layers: dict, grid: Grid, centre, plane: str) -> dict:
    """The 2D arrays one panel draws: every non-None volume of `layers` (value, ct, target, ...) sliced through
    `centre` (array index) on `plane`, oriented for display (:data:`PLANES`) and cropped to layers['body'].

    Returns {name: 2D array, 'extent': (left, right, bottom, top) mm, 'letters': (top, bottom, left, right)}."""
    img, extent, letters = oriented_slice(layers["value"], grid, centre, plane)
    body = layers.get("body")
    rows, cols = _crop_box(oriented_slice(body, grid, centre, plane)[0] if body is not None else None)
    px_w, px_h = extent[1] / img.shape[1], extent[3] / img.shape[0]
    out = {name: oriented_slice(vol, grid, centre, plane)[0][rows, cols]
           for name, vol in layers.items() if vol is not None}
    shape = out["value"].shape
    out["extent"] = (0.0, px_w * shape[1], 0.0, px_h * shape[0])
    out["letters"] = letters
    return out


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _decorate(axis, arrays: dict, grid: Grid, centre, plane: str, title: str | None = None) -> None:
    """Target outline (green), title with the slice position, direction letters on the four sides."""
    ext = arrays["extent"]
    t = arrays.get("target")
    if t is not None and t.any() and not t.all():
        axis.contour(t.astype(np.float32), levels=[0.5], colors="lime", linewidths=1.0, linestyles="dotted",
                     extent=ext, origin="upper")
    fixed = PLANES[plane][0]
    where = float(grid.index_to_lps(np.asarray(centre, dtype=float))[fixed])
    axis.set_title(title or f"{plane} ({'xyz'[fixed]} = {where:.1f} mm)", fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])
    top, bottom, left, right = arrays["letters"]
    for text, xy in ((top, (0.5, 0.97)), (bottom, (0.5, 0.03)), (left, (0.03, 0.5)), (right, (0.97, 0.5))):
        axis.text(*xy, text, transform=axis.transAxes, ha="center", va="center", color="k", fontsize=10,
                  fontweight="bold", bbox={"facecolor": "white", "alpha": 0.8, "pad": 1, "edgecolor": "none"})


def _ct(axis, arrays: dict) -> None:
    if arrays.get("ct") is not None:
        axis.imshow(arrays["ct"], cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], extent=arrays["extent"],
                    origin="upper", interpolation="nearest")
    else:
        axis.set_facecolor("black")


def _panel(axis, plane: str, layers: dict, grid: Grid, centre, cmap, norm, label_slice: bool = True):
    """One oriented slice: CT underlay (if any), colour layer (NaN transparent), target outline, letters."""
    arrays = panel_arrays(layers, grid, centre, plane)
    _ct(axis, arrays)
    im = axis.imshow(np.ma.masked_invalid(arrays["value"]), cmap=cmap, norm=norm, extent=arrays["extent"],
                     origin="upper", interpolation="nearest", alpha=0.8 if arrays.get("ct") is not None else 1.0)
    _decorate(axis, arrays, grid, centre, plane, None if label_slice else plane)
    return im


def maps_figure(volume: np.ndarray, grid: Grid, centre, title: str, cmap: str, norm, *, ct=None, body=None,
                target=None, colorbar_label: str = "") -> str:
    """Axial, coronal and sagittal slices of `volume` (NaN = not shown) through `centre` (array index),
    cropped to the body, over the CT, with the target outlined in green."""
    fig = Figure(figsize=(13, 4.6))
    axes = fig.subplots(1, 3)
    layers = {"value": volume, "ct": ct, "body": body, "target": target}
    for axis, plane in zip(axes, PLANES):
        im = _panel(axis, plane, layers, grid, centre, cmap, norm)
    bar = fig.colorbar(im, ax=list(axes), shrink=0.85)
    bar.set_label(colorbar_label)
    fig.suptitle(title)
    return _png(fig)


def _dose_panel(axis, arrays: dict, grid: Grid, centre, plane: str, rx_gy: float, norm, title: str):
    """CT grey, dose wash above WASH_FROM_PCT % of rx (alpha-blended), isodose lines at ISODOSE_PCT."""
    _ct(axis, arrays)
    dose = arrays["value"]
    wash = np.ma.masked_less(dose, WASH_FROM_PCT / 100.0 * rx_gy)
    im = axis.imshow(wash, cmap="jet", norm=norm, extent=arrays["extent"], origin="upper", interpolation="nearest",
                     alpha=WASH_ALPHA)
    levels = [p / 100.0 * rx_gy for p in ISODOSE_PCT]
    present = [(lv, c) for lv, c in zip(levels, ISODOSE_COLOURS) if dose.min() < lv < dose.max()]
    if present:
        axis.contour(dose, levels=[lv for lv, _ in present], colors=[c for _, c in present], linewidths=1.4,
                     extent=arrays["extent"], origin="upper")
    _decorate(axis, arrays, grid, centre, plane, title)
    return im


def isodose_legend_labels(rx_gy: float) -> list[str]:
    """'105 % = 73.5 Gy', ... (highest level first), the legend of the isodose lines."""
    return [f"{p} % = {p / 100.0 * rx_gy:.1f} Gy" for p in reversed(ISODOSE_PCT)]


def dose_figure(doses: dict[str, np.ndarray], grid: Grid, centre, rx_gy: float, *, ct=None, body=None,
                target=None, rx_label: str = "prescription") -> str:
    """One row per plane (axial, coronal, sagittal), one column per dose (e.g. prediction, reference): the dose as
    a colour wash over the CT with isodose lines in % of `rx_gy`, legend listing % and Gy, a Gy colour bar."""
    n = len(doses)
    fig = Figure(figsize=(5.2 * n + 2.4, 14))
    axes = np.asarray(fig.subplots(3, n, squeeze=False))
    vmax = max(float(max(np.max(d) for d in doses.values())), 1.05 * rx_gy)
    norm = Normalize(0.0, vmax)
    im = None
    for col, (name, dose) in enumerate(doses.items()):
        for row, plane in enumerate(PLANES):
            arrays = panel_arrays({"value": dose, "ct": ct, "body": body, "target": target}, grid, centre, plane)
            fixed = PLANES[plane][0]
            where = float(grid.index_to_lps(np.asarray(centre, dtype=float))[fixed])
            im = _dose_panel(axes[row, col], arrays, grid, centre, plane, rx_gy, norm,
                             f"{name}: {plane} ({'xyz'[fixed]} = {where:.1f} mm)")
    bar = fig.colorbar(im, ax=list(axes.ravel()), shrink=0.5, pad=0.02, anchor=(0.0, 0.0))
    bar.set_label("dose (Gy)")
    handles = [Line2D([], [], color=c, lw=2) for c in reversed(ISODOSE_COLOURS)]
    handles.append(Line2D([], [], color="lime", lw=1, ls="dotted"))
    fig.legend(handles, isodose_legend_labels(rx_gy) + ["highest-prescription target"], loc="upper left",
               fontsize=10, title=f"isodose lines\n% of {rx_label} ({rx_gy:.1f} Gy)", bbox_to_anchor=(0.86, 0.98))
    return _png(fig)


def dvh_figure(ref_dvhs: dict, pred_dvhs: dict, bands: dict | None, title: str,
               labels: dict[str, str] | None = None) -> str:
    """DVH overlay: reference solid, prediction dashed, the prediction's 90 % band shaded (when there is one)."""
    fig = Figure(figsize=(9, 5.5))
    axis = fig.subplots()
    colours = matplotlib.colormaps["tab20"]
    keys = list(ref_dvhs) + [k for k in pred_dvhs if k not in ref_dvhs]
    for i, key in enumerate(keys):
        colour = colours(i % 20)
        ref, pred = ref_dvhs.get(key), pred_dvhs.get(key)
        label = (labels or {}).get(key, key)
        if ref is not None:
            axis.plot(ref.dose_bins_gy, ref.volume_pct, "-", color=colour, label=label)
        if pred is not None:
            axis.plot(pred.dose_bins_gy, pred.volume_pct, "--", color=colour, label=None if ref is not None else label)
        curve = ((bands or {}).get("structures", {}).get(key) or {}).get("curve")
        if curve:  # issue 16: the 90 % DVH band of the prediction
            axis.fill_between(curve["dose_gy"], curve["lo_pct"], curve["hi_pct"], color=colour, alpha=0.18, lw=0)
    axis.set_xlabel("Dose [Gy]")
    axis.set_ylabel("Volume [%]")
    axis.set_ylim(0, 101)
    axis.set_xlim(left=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2, loc="upper right")
    what = "reference solid, prediction dashed" if ref_dvhs else "prediction"
    axis.set_title(f"{title}: {what}" + (", 90 % band shaded" if bands else ""))
    return _png(fig)
