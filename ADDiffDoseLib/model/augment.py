"""Augmentation that keeps anatomy honest.

A left-right mirror (which swaps left/right organs and mirrors gantry angles: in the beam tokens
sin(gantry) changes sign; the beam-plate channel is mirrored with the volume, which is exactly the plate
of the mirrored beams), small translations, and rotations about the patient's long axis by a multiple of
the beam spacing for plans whose field set maps onto itself (OpenKBP's 9 equispaced coplanar fields:
40 deg x k, as the OpenKBP winner C3D used). A rotation turns the anatomy, the dose and the beam plate
together and adds the angle to every gantry token, so the rotated sample is the plate and the tokens of
the rotated patient treated with the rotated beams (tested against a plate built from scratch). No
superior-inferior flips and no rotations of other plans (pyRadPlan's own beams): the beams would no
longer match the dose.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .conditioning import CHANNELS

_PAROTID_R = CHANNELS.index("oar_Parotid_R")
_PAROTID_L = CHANNELS.index("oar_Parotid_L")
LR_DIM = 3  # (B, C, D0, D1, D2): array axis 1 (patient right -> left) is tensor dim 3
VOLUME_KEYS = ("channels", "dose", "body", "coarse")  # batch volumes that move with the anatomy (coarse: refine stage)
# Rotation about the long axis (array axis 2, inferior): turns array axes 0 (posterior) and 1 (patient left),
# tensor dims 2 and 3. Channels resampled by nearest neighbour (masks, prescription map, source flag) and
# the rest trilinearly; the CT is -1 (air) outside the body, so it is padded with -1.
_CT = CHANNELS.index("ct")
_SMOOTH_CHANNELS = (_CT, CHANNELS.index("beam_plate"))
_SOURCE = CHANNELS.index("source_pyradplan")
ROTATION_STEP_DEG = 40.0


def flip_channels_lr(channels: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> mirrored across the patient's sagittal plane, left/right organs swapped."""
    out = torch.flip(channels, dims=[LR_DIM])
    order = list(range(channels.shape[1]))
    order[_PAROTID_R], order[_PAROTID_L] = _PAROTID_L, _PAROTID_R
    return out[:, order]


def flip_tokens_lr(tokens: torch.Tensor) -> torch.Tensor:
    """Mirror the beam angles: gantry g -> 360 - g, couch c -> 360 - c (sin changes sign)."""
    out = tokens.clone()
    beam = out[..., 0] > 0.5
    out[..., 2] = torch.where(beam, -out[..., 2], out[..., 2])
    out[..., 4] = torch.where(beam, -out[..., 4], out[..., 4])
    return out


def augment_batch(batch: dict, generator: torch.Generator, max_shift: int = 8, p_flip: float = 0.5,
                  rotate: bool = False) -> dict:
    """Random left-right mirror (per sample), a random translation (same for a batch, by roll: the field of
    view has empty margins around the body, so wrapping moves only air) and, with `rotate`, a random
    symmetric rotation of clinical plans (random_symmetric_rotation)."""
    out = random_symmetric_rotation(batch, generator) if rotate else dict(batch)
    batch = out
    device = batch["channels"].device
    flip = torch.rand(batch["channels"].shape[0], generator=generator) < p_flip
    if flip.any():
        idx = flip.nonzero().flatten().to(device)
        for key in (k for k in VOLUME_KEYS if k in out):
            t = out[key].clone()
            t[idx] = flip_channels_lr(t[idx]) if key == "channels" else torch.flip(t[idx], dims=[LR_DIM])
            out[key] = t
        if "tokens" in out:
            t = out["tokens"].clone()
            t[idx] = flip_tokens_lr(t[idx])
            out["tokens"] = t
    if max_shift > 0:
        shifts = [int(s) for s in torch.randint(-max_shift, max_shift + 1, (3,), generator=generator)]
        for key in (k for k in VOLUME_KEYS if k in out):
            out[key] = torch.roll(out[key], shifts=shifts, dims=(2, 3, 4))
    return out


def beam_angles_from_tokens(tokens: torch.Tensor) -> list[tuple[float, float, float]]:
    """(gantry deg, couch deg, arc span deg) of each beam token of one sample ((T, TOKEN_DIM))."""
    out = []
    for t in tokens[tokens[:, 0] > 0.5]:
        gantry = math.degrees(math.atan2(float(t[2]), float(t[3]))) % 360.0
        couch = math.degrees(math.atan2(float(t[4]), float(t[5]))) % 360.0
        out.append((gantry, couch, float(t[10]) * 360.0))
    return out


def symmetric_rotations(tokens: torch.Tensor, step_deg: float = ROTATION_STEP_DEG, tol_deg: float = 1.0) -> list[int]:
    """The k (0 included) for which turning every gantry angle by k x step maps the plan's field set onto
    itself: static coplanar beams only (couch 0, no arcs). [0] for any other plan."""
    beams = beam_angles_from_tokens(tokens)
    if not beams or any(min(c, 360 - c) > tol_deg or span > 0 for _, c, span in beams):
        return [0]
    angles = [g for g, _, _ in beams]

    def close(a, b):
        d = abs(a - b) % 360.0
        return min(d, 360.0 - d) <= tol_deg

    ks = [0]
    for k in range(1, int(round(360.0 / step_deg))):
        turned = [(g + k * step_deg) % 360.0 for g in angles]
        if all(any(close(t, g) for g in angles) for t in turned):
            ks.append(k)
    return ks


def rotate_tokens(tokens: torch.Tensor, degrees: float) -> torch.Tensor:
    """Every beam token's gantry angle + `degrees` (the global token and couch unchanged)."""
    out = tokens.clone()
    beam = out[..., 0] > 0.5
    a = math.radians(degrees)
    s, c = tokens[..., 2].clone(), tokens[..., 3].clone()  # copies: out's columns change below
    out[..., 2] = torch.where(beam, s * math.cos(a) + c * math.sin(a), s)
    out[..., 3] = torch.where(beam, c * math.cos(a) - s * math.sin(a), c)
    return out


def _rotation_grid(volume: torch.Tensor, degrees: float) -> torch.Tensor:
    """Sampling grid that turns a (B, C, D0, D1, D2) volume about the centre of its (D0, D1) plane by
    `degrees` (a gantry rotation of the same angle: see test_model_augment). Voxels are taken square in
    that plane (OpenKBP's in-plane pixels are)."""
    a = math.radians(degrees)
    # affine_grid's coordinates are (x, y, z) = (D2, D1, D0); output voxel p samples the input at theta @ p
    theta = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                          [0.0, math.cos(a), math.sin(a), 0.0],
                          [0.0, -math.sin(a), math.cos(a), 0.0]], dtype=torch.float32)
    theta = theta[None].expand(volume.shape[0], 3, 4).to(volume.device)
    return F.affine_grid(theta, list(volume.shape), align_corners=False)


def rotate_volume(volume: torch.Tensor, degrees: float, mode: str = "bilinear", fill: float = 0.0) -> torch.Tensor:
    """(B, C, D0, D1, D2) turned about the long axis; `fill` outside the field of view."""
    if degrees % 360.0 == 0.0:
        return volume
    grid = _rotation_grid(volume, degrees)
    x = volume.float() - fill
    out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill
    return out.to(volume.dtype)


def rotate_channels(channels: torch.Tensor, degrees: float) -> torch.Tensor:
    """Input channels turned about the long axis: masks by nearest neighbour, CT / beam plate smoothly."""
    if degrees % 360.0 == 0.0:
        return channels
    out = rotate_volume(channels, degrees, mode="nearest")
    for c in _SMOOTH_CHANNELS:
        out[:, c:c + 1] = rotate_volume(channels[:, c:c + 1], degrees, fill=-1.0 if c == _CT else 0.0)
    return out


def rotate_sample_batch(batch: dict, index: int, degrees: float) -> dict:
    """Sample `index` of a batch turned by `degrees`: volumes, body and tokens (a new dict)."""
    out = dict(batch)
    for key in (k for k in VOLUME_KEYS if k in out):
        t = out[key].clone()
        one = t[index:index + 1]
        if key == "channels":
            t[index:index + 1] = rotate_channels(one, degrees)
        elif key == "body":
            t[index:index + 1] = rotate_volume(one.float(), degrees, mode="nearest") > 0.5
        else:
            t[index:index + 1] = rotate_volume(one, degrees).clamp(min=0)
        out[key] = t
    if "tokens" in out:
        t = out["tokens"].clone()
        t[index] = rotate_tokens(t[index], degrees)
        out["tokens"] = t
    return out


def random_symmetric_rotation(batch: dict, generator: torch.Generator, step_deg: float = ROTATION_STEP_DEG) -> dict:
    """Each clinical sample whose field set is symmetric turned by a random k x step (k = 0 included);
    pyRadPlan samples (source flag set) keep their own beams and are not turned."""
    if "tokens" not in batch:
        return batch
    out = batch
    for i in range(batch["channels"].shape[0]):
        if float(batch["channels"][i, _SOURCE].max()) > 0.5:
            continue
        ks = symmetric_rotations(batch["tokens"][i], step_deg)
        k = ks[int(torch.randint(len(ks), (1,), generator=generator))]
        if k:
            out = rotate_sample_batch(out, i, k * step_deg)
    return out
