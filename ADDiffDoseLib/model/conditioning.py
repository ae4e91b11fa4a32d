"""Model inputs: the anatomy / beam channels and the plan-parameter tokens, built once from a Case.

Reused by training, prediction and the Slicer module, so every path sees identical inputs.

Model grid: 128^3 voxels in OpenKBP orientation (array axis 0 -> posterior, 1 -> patient left,
2 -> inferior) at the case's own voxel size (clamped to 1.5-6 mm). OpenKBP cases already are such a
grid and are used as they are; anything else is resampled onto one centred on the body (or targets),
and predictions are resampled back onto the exact input grid (:meth:`ModelInputs.to_case_grid`).

Channels (all float32, (C, 128, 128, 128)):
  0 CT, HU clipped to [-1024, 1500] / 1000
  1 target prescription map / 70 Gy (overlaps -> highest prescription)
  2..8 OAR masks in ``OAR_ORDER``
  9 body
  10 beam plate (divergent projection of the targets, inverse-square weighted, mean over beam angles)
  11 data-source flag (1 = pyRadPlan physical plan style, 0 = clinical)

Tokens (T, TOKEN_DIM): one global token, then one per beam (VMAT arc = one token with its span).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..case import Beam, Case, Role
from ..errors import ErrorCode, InputError
from ..geometry import Grid, resample_to_grid

MODEL_SHAPE = (128, 128, 128)
OPENKBP_DIRECTION = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # columns: axes 0, 1, 2
DOSE_SCALE_GY = 70.0  # network dose units: dose / 70 Gy
SAD_MM = 1000.0

# canonical organ names in channel order; each entry lists the names that count as that organ
OAR_ORDER = ("Brainstem", "SpinalCord", "Parotid_R", "Parotid_L", "Esophagus", "Larynx", "Mandible")
OAR_ALIASES = {
    "Brainstem": ("brainstem",),
    "SpinalCord": ("spinalcord",),
    "Parotid_R": ("parotid_r", "rightparotid"),
    "Parotid_L": ("parotid_l", "leftparotid"),
    "Esophagus": ("esophagus",),
    "Larynx": ("larynx",),
    "Mandible": ("mandible", "bone_mandible"),
}
CHANNELS = ("ct", "target_rx", *(f"oar_{n}" for n in OAR_ORDER), "body", "beam_plate", "source_pyradplan")
N_CHANNELS = len(CHANNELS)

SOURCES = ("openkbp-clinical", "pyradplan")
TOKEN_DIM = 14
MAX_TOKENS = 1 + 24

# IEC 61217: patient LPS -> patient-support (Xs, Ys, Zs) for each position (rows). Xs to the right of an
# observer at the couch foot facing the gantry, Ys toward the gantry, Zs up.
POSITION_TO_SUPPORT = {
    "HFS": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float),
    "FFS": np.array([[-1, 0, 0], [0, 0, -1], [0, -1, 0]], float),
    "HFP": np.array([[-1, 0, 0], [0, 0, 1], [0, 1, 0]], float),
    "FFP": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float),
}


@dataclass
class ModelInputs:
    """Everything a network needs for one case, on the model grid.

    channels: (C, 128, 128, 128) float32; tokens: (T, TOKEN_DIM) float32 with token_mask (T,) bool;
    model_grid: where the channels live; case_grid: the input's grid (for mapping the output back).
    """

    channels: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor
    model_grid: Grid
    case_grid: Grid
    native: bool

    def to_case_grid(self, dose_model_gy: np.ndarray) -> np.ndarray:
        """(128,128,128) dose on the model grid -> the case's exact grid (trilinear)."""
        if self.native:
            return np.asarray(dose_model_gy, dtype=np.float32)
        return resample_to_grid(np.asarray(dose_model_gy, np.float32), self.model_grid, self.case_grid, order=1)


# --- structures ---------------------------------------------------------------------------------
def _canonical(name: str) -> str:
    return name.replace(" ", "").replace("-", "_").lower()


def find_oar_masks(case: Case) -> dict[str, np.ndarray]:
    """OAR_ORDER name -> mask for the organs present (matched on normalized and original names)."""
    found: dict[str, np.ndarray] = {}
    for s in case.structures.values():
        if s.role != Role.OAR:
            continue
        keys = {_canonical(s.name), _canonical(s.original_name or s.name)}
        for organ, aliases in OAR_ALIASES.items():
            if keys & set(aliases):
                found[organ] = found[organ] | s.mask if organ in found else s.mask
    return found


def target_union(case: Case) -> np.ndarray:
    union = np.zeros(case.grid.shape, dtype=bool)
    for s in case.targets.values():
        union |= s.mask
    return union


def require_target(case: Case) -> None:
    if not any(s.prescription_gy and s.mask.any() for s in case.targets.values()):
        raise InputError(
            f"case {case.name!r} has no target with a prescription and voxels: mark a target "
            "(e.g. PTV70 or --rx PTV=70) to predict a dose",
            path=case.metadata.get("path"),
            code=ErrorCode.NO_TARGET,
        )


# --- model grid ---------------------------------------------------------------------------------
def is_model_grid(grid: Grid) -> bool:
    return grid.shape == MODEL_SHAPE and np.allclose(grid.direction, OPENKBP_DIRECTION, atol=1e-6)


def model_grid_for(case: Case) -> Grid:
    """The 128^3 OpenKBP-oriented grid used for `case` (the case grid itself when it already is one)."""
    if is_model_grid(case.grid):
        return case.grid
    # voxel size along each model axis = the case's spacing along the closest case axis
    align = np.abs(case.grid.direction.T @ OPENKBP_DIRECTION)  # [case axis, model axis]
    spacing = np.clip(case.grid.spacing_mm[np.argmax(align, axis=0)], 1.5, 6.0)
    region = case.body_mask
    if region is None or not region.any():
        region = target_union(case)
    if not region.any():
        region = np.ones(case.grid.shape, bool)
    idx = np.argwhere(region)
    centre_lps = case.grid.index_to_lps((idx.min(0) + idx.max(0)) / 2.0)
    half = (np.asarray(MODEL_SHAPE) - 1) / 2.0 * spacing
    origin = centre_lps - OPENKBP_DIRECTION @ half
    return Grid(MODEL_SHAPE, spacing, origin, OPENKBP_DIRECTION)


# --- beam plate ---------------------------------------------------------------------------------
def beam_source_axes(gantry_deg: float, couch_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors in patient-support coordinates: w (isocentre -> source), u and v (BEV axes)."""
    g, c = math.radians(gantry_deg), math.radians(couch_deg)
    w_f = np.array([math.sin(g), 0.0, math.cos(g)])  # gantry 0: source above; 90: at +Xf
    u_f = np.array([math.cos(g), 0.0, -math.sin(g)])
    v_f = np.array([0.0, 1.0, 0.0])
    # couch angle theta rotates the support about Zf: fixed = Rz(theta) @ support
    rz = np.array([[math.cos(c), -math.sin(c), 0.0], [math.sin(c), math.cos(c), 0.0], [0.0, 0.0, 1.0]])
    return rz.T @ w_f, rz.T @ u_f, rz.T @ v_f


def beam_entry_direction_lps(gantry_deg: float, couch_deg: float = 0.0, position: str = "HFS") -> np.ndarray:
    """Unit vector in LPS from the isocentre toward the source (where the beam enters from)."""
    w, _, _ = beam_source_axes(gantry_deg, couch_deg)
    return POSITION_TO_SUPPORT[position].T @ w


def _beam_angles(beams: tuple[Beam, ...]) -> list[tuple[float, float, float]]:
    """(gantry, couch, weight) per irradiation direction; each beam (or arc) weighs 1 in total."""
    out = []
    for b in beams:
        angles = b.gantry_angles_deg
        if len(angles) > 36:  # arcs: every few control points is plenty for a mask
            angles = angles[:: math.ceil(len(angles) / 36)]
        out += [(a, b.couch_deg, 1.0 / len(angles)) for a in angles]
    return out


def beam_plate(
    target_mask: torch.Tensor,
    grid: Grid,
    beams: tuple[Beam, ...],
    isocenter_lps: np.ndarray,
    position: str = "HFS",
    *,
    margin_mm: float = 5.0,
    bev_pixel_mm: float = 2.5,
) -> torch.Tensor:
    """Beam plate after GDP-HMM: per beam, the voxels inside the divergent projection of the targets
    from a source SAD_MM from the isocentre, weighted by (SAD / distance to source)^2; mean over beams.

    target_mask: (n0, n1, n2) bool tensor on `grid` (any device). Returns float32, same shape/device.
    """
    device = target_mask.device
    if position not in POSITION_TO_SUPPORT:
        raise InputError(f"beam geometry for patient position {position!r} is not supported", code=ErrorCode.INVALID_VALUE)
    angles = _beam_angles(beams)
    out = torch.zeros(grid.shape, dtype=torch.float32, device=device)
    if not angles or not bool(target_mask.any()):
        return out
    # voxel centres relative to the isocentre, in patient-support coordinates (float32, (N, 3))
    to_support = torch.as_tensor(POSITION_TO_SUPPORT[position] @ (grid.direction * grid.spacing_mm), dtype=torch.float32, device=device)
    offset = torch.as_tensor(POSITION_TO_SUPPORT[position] @ (grid.origin_lps - isocenter_lps), dtype=torch.float32, device=device)
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in grid.shape]
    idx = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    points = idx @ to_support.T + offset
    target_points = points[target_mask.reshape(-1)]
    half_extent = 400.0
    n_pix = int(2 * half_extent / bev_pixel_mm)
    gap = 0.75 * float(grid.spacing_mm.max())
    r_close = max(1, math.ceil(gap / bev_pixel_mm))
    r_margin = max(0, round(margin_mm / bev_pixel_mm))
    for gantry, couch, weight in angles:
        w, u, v = (torch.as_tensor(a, dtype=torch.float32, device=device) for a in beam_source_axes(gantry, couch))
        def project(p):
            dist = SAD_MM - p @ w  # distance from the source along the central axis
            scale = SAD_MM / dist.clamp(min=1.0)
            return (p @ u) * scale, (p @ v) * scale, dist
        tu, tv, _ = project(target_points)
        bev = torch.zeros(n_pix * n_pix, dtype=torch.float32, device=device)
        # pixel i covers [i, i + 1) * bev_pixel_mm - half_extent: its centre is where grid_sample
        # (align_corners=False) reads it, so the field is not shifted by half a pixel
        iu = ((tu + half_extent) / bev_pixel_mm).floor().long().clamp(0, n_pix - 1)
        iv = ((tv + half_extent) / bev_pixel_mm).floor().long().clamp(0, n_pix - 1)
        bev[iv * n_pix + iu] = 1.0
        bev = bev.view(1, 1, n_pix, n_pix)
        bev = F.max_pool2d(bev, 2 * (r_close + r_margin) + 1, stride=1, padding=r_close + r_margin)
        bev = -F.max_pool2d(-bev, 2 * r_close + 1, stride=1, padding=r_close)  # closing: fill gaps, keep margin
        pu, pv, dist = project(points)
        sample_at = torch.stack([pu / half_extent, pv / half_extent], dim=-1).view(1, 1, -1, 2)
        inside = F.grid_sample(bev, sample_at, mode="bilinear", align_corners=False).view(-1)
        weight_sq = ((SAD_MM / dist.clamp(min=1.0)) ** 2).clamp(max=2.0) * (dist > 0)  # bounded far from the isocentre
        out += (weight * inside * weight_sq).view(grid.shape)
    return out / max(1, len(beams))


# --- tokens -------------------------------------------------------------------------------------
def arc_span_and_middle(angles: tuple[float, ...]) -> tuple[float, float]:
    """(span, middle angle) in degrees of an arc's control-point gantry angles, either rotation direction
    (the first step's sign tells clockwise from counter-clockwise); (0, angle) for a static beam."""
    if len(angles) < 2:
        return 0.0, float(angles[0])
    clockwise = (angles[1] - angles[0]) % 360.0 < 180.0
    span = ((angles[-1] - angles[0]) if clockwise else (angles[0] - angles[-1])) % 360.0
    return span, (angles[0] + (span if clockwise else -span) / 2) % 360.0


def plan_tokens(case: Case, beams: tuple[Beam, ...], source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(MAX_TOKENS, TOKEN_DIM) tokens and (MAX_TOKENS,) mask: one global token, then one per beam."""
    tokens = torch.zeros(MAX_TOKENS, TOKEN_DIM)
    mask = torch.zeros(MAX_TOKENS, dtype=torch.bool)
    rx = [s.prescription_gy for s in case.targets.values() if s.prescription_gy]
    g = torch.zeros(TOKEN_DIM)
    g[1] = 1.0
    g[2] = len(beams) / 10.0
    g[3] = (max(rx) if rx else 0.0) / DOSE_SCALE_GY
    g[4] = (min(rx) if rx else 0.0) / DOSE_SCALE_GY
    g[5] = (case.plan.fractions or 30) / 35.0
    g[6] = len(rx) / 3.0
    g[7 + (SOURCES.index(source) if source in SOURCES else 2)] = 1.0
    g[10] = 1.0 if case.plan.site == "head-and-neck" else 0.0
    tokens[0], mask[0] = g, True
    for i, b in enumerate(beams[: MAX_TOKENS - 1], start=1):
        span, mid_deg = arc_span_and_middle(b.gantry_angles_deg)
        mid = math.radians(mid_deg)
        t = torch.zeros(TOKEN_DIM)
        t[0] = 1.0
        t[2], t[3] = math.sin(mid), math.cos(mid)
        t[4], t[5] = math.sin(math.radians(b.couch_deg)), math.cos(math.radians(b.couch_deg))
        t[6] = b.energy_mv / 10.0
        t[7 + ("IMRT", "VMAT", "3D-CRT").index(b.technique)] = 1.0
        t[10] = span / 360.0
        tokens[i], mask[i] = t, True
    return tokens, mask


# --- assembly -----------------------------------------------------------------------------------
def _on_model_grid(array: np.ndarray, case: Case, grid: Grid, order: int, fill: float = 0.0) -> np.ndarray:
    if grid is case.grid:
        return array
    return resample_to_grid(array, case.grid, grid, order=order, fill=fill)


def build_inputs(case: Case, beams: tuple[Beam, ...] | None = None, source: str | None = None,
                 device: str | torch.device = "cpu") -> ModelInputs:
    """Channels and tokens for `case` (beams default to the case's plan; source to plan.source)."""
    require_target(case)
    beams = tuple(beams) if beams is not None else case.plan.beams
    if not beams:
        raise InputError(f"case {case.name!r} has no beams: give gantry angles (e.g. --gantry 0,40,...)",
                         code=ErrorCode.MISSING_FIELD)
    source = source or case.plan.source
    grid = model_grid_for(case)
    ch = torch.zeros((N_CHANNELS, *MODEL_SHAPE), dtype=torch.float32)
    ct = case.ct_hu if case.ct_hu is not None else np.full(case.grid.shape, -1000.0, np.float32)
    body = case.body_mask
    if body is None:
        body = ct > -400
    # CT only inside the body: the couch and what lies outside the scan differ between sources
    ct = np.where(body, ct, np.float32(-1000.0))
    ch[0] = torch.from_numpy(np.clip(_on_model_grid(ct, case, grid, 1, -1000.0), -1024, 1500) / 1000.0)
    ch[1] = torch.from_numpy(_on_model_grid(case.target_prescription_map(), case, grid, 0) / DOSE_SCALE_GY)
    oars = find_oar_masks(case)
    for k, organ in enumerate(OAR_ORDER):
        if organ in oars:
            ch[2 + k] = torch.from_numpy(_on_model_grid(oars[organ], case, grid, 0).astype(np.float32))
    ch[9] = torch.from_numpy(_on_model_grid(body, case, grid, 0).astype(np.float32))
    iso = case.isocenter_lps()
    targets = ch[1] > 0
    ch[10] = beam_plate(targets.to(device), grid, beams, iso, case.patient_position).cpu()
    ch[11] = 1.0 if source == "pyradplan" else 0.0
    tokens, token_mask = plan_tokens(case, beams, source)
    return ModelInputs(ch, tokens, token_mask, grid, case.grid, grid is case.grid)
