"""Model inputs on real OpenKBP anatomy: where one beam's plate enters (IEC 61217 gantry, couch and patient
position), any number of beams, VMAT arcs, plan tokens, and cases whose grid is not the model grid.

The beam-plate geometry is checked against a projection written here from first principles (a point source
SAD_MM from the isocentre along :func:`beam_entry_direction_lps`, targets projected onto the isocentre plane),
not against the implementation's own BEV axes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import maximum_filter, minimum_filter
from scipy.spatial import cKDTree

from ADDiffDoseLib.case import Beam, Role, equispaced_beams
from ADDiffDoseLib.errors import ErrorCode, InputError
from ADDiffDoseLib.geometry import Grid, resample_to_grid
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.conditioning import (
    CHANNELS,
    MAX_TOKENS,
    MODEL_SHAPE,
    OPENKBP_DIRECTION,
    SAD_MM,
    TOKEN_DIM,
    beam_entry_direction_lps,
    beam_plate,
    build_inputs,
    plan_tokens,
    target_union,
)


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return read_openkbp_npz(openkbp_npz)


@pytest.fixture(scope="module")
def iso(case):
    """Isocentre snapped to a voxel centre, so that voxels +-d along an axis are at equal distances."""
    idx = np.round(case.grid.lps_to_index(case.isocenter_lps())).astype(int)
    return idx, case.grid.index_to_lps(idx)


def _plate(case, iso_lps, beams, position="HFS") -> np.ndarray:
    mask = torch.from_numpy(target_union(case))
    return beam_plate(mask, case.grid, tuple(beams), iso_lps, position).numpy()


def _line(plate, idx, axis):
    """Values along array `axis` through voxel `idx` (1D)."""
    sl = list(idx)
    sl[axis] = slice(None)
    return plate[tuple(sl)]


def _hotter_side(plate, idx, axis, distances=range(3, 25)) -> int:
    """+1 if the plate is larger at idx + d than at idx - d along `axis` for every d (inside the field), -1 if
    smaller for every d, 0 otherwise."""
    line = _line(plate, idx, axis)
    c = idx[axis]
    plus = np.array([line[c + d] for d in distances])
    minus = np.array([line[c - d] for d in distances])
    assert (plus > 0).all() and (minus > 0).all(), "these points should lie in the field"
    if (plus > minus).all():
        return 1
    if (plus < minus).all():
        return -1
    return 0


# --- where the beam enters ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "gantry, couch, position, expected",
    [
        (0, 0, "HFS", (0, -1, 0)),  # anterior
        (90, 0, "HFS", (1, 0, 0)),  # patient's left
        (180, 0, "HFS", (0, 1, 0)),  # posterior
        (270, 0, "HFS", (-1, 0, 0)),  # patient's right
        (90, 0, "FFS", (-1, 0, 0)),  # feet first: left/right mirrored
        (0, 0, "HFP", (0, 1, 0)),  # prone: the source above is at the patient's back
        (90, 0, "HFP", (-1, 0, 0)),
        # IEC 61217 couch: positive = counter-clockwise seen from above. At couch 90 the couch foot (the
        # patient's feet, HFS) has swung from the observer (-Yf) to +Xf, where the gantry-90 source is.
        (90, 90, "HFS", (0, 0, -1)),
        (90, 270, "HFS", (0, 0, 1)),
        (0, 90, "HFS", (0, -1, 0)),  # gantry 0 is on the couch's rotation axis: unchanged
    ],
)
def test_beam_entry_direction_iec61217(gantry, couch, position, expected):
    np.testing.assert_allclose(beam_entry_direction_lps(gantry, couch, position), expected, atol=1e-9)


@pytest.mark.parametrize(
    "gantry, couch, position, axis, side",
    [
        (90, 0, "HFS", 1, +1),  # axis 1 increases to the patient's left: left side hotter
        (90, 0, "FFS", 1, -1),  # feet first: the same gantry enters from the patient's right
        (270, 0, "HFS", 1, -1),
        (0, 0, "HFS", 0, -1),  # axis 0 increases posterior: anterior side hotter
        (180, 0, "HFS", 0, +1),
        (90, 90, "HFS", 2, +1),  # axis 2 increases inferior: couch 90 puts the gantry-90 source at the feet
        (90, 270, "HFS", 2, -1),
    ],
)
def test_single_beam_plate_is_hotter_on_its_entry_side(case, iso, gantry, couch, position, axis, side):
    """Inverse-square weighting: at equal distances from the isocentre, the entry side is hotter."""
    idx, iso_lps = iso
    plate = _plate(case, iso_lps, [Beam(gantry, couch)], position)
    assert _hotter_side(plate, idx, axis) == side


@pytest.mark.parametrize("gantry, couch, position", [(90, 0, "HFS"), (0, 0, "HFS"), (90, 0, "FFS"), (40, 30, "HFS")])
def test_plate_covers_exactly_the_divergent_projection_of_the_targets(case, iso, gantry, couch, position):
    """Projected from a point source onto the isocentre plane, a voxel in the plate lies within the margin
    (5 mm + BEV pixels) of a projected target voxel, and a voxel outside it lies beyond the margin."""
    idx, iso_lps = iso
    plate = _plate(case, iso_lps, [Beam(gantry, couch)], position)
    s = beam_entry_direction_lps(gantry, couch, position)

    def projected(points_lps):
        p = points_lps - iso_lps
        t = p @ s
        return (p - t[:, None] * s) * (SAD_MM / (SAD_MM - t))[:, None]

    target_idx = np.argwhere(target_union(case))
    tree = cKDTree(projected(case.grid.index_to_lps(target_idx)))
    rng = np.random.default_rng(0)
    sample = rng.integers(0, 128, size=(60000, 3))
    dist, _ = tree.query(projected(case.grid.index_to_lps(sample)))
    inside = plate[tuple(sample.T)] > 0
    assert inside.sum() > 1000 and (~inside).sum() > 1000
    assert dist[inside].max() < 5.0 + 2 * 2.5 + 4.0  # margin + BEV rounding + gap closing (voxel 5.4 mm)
    assert dist[~inside].min() > 2.0
    # far outside the field (anterior/posterior for a lateral beam, and so on) it is exactly zero
    assert (plate[tuple(sample[dist > 40].T)] == 0).all()


def test_plate_far_lateral_outside_the_field_is_zero(case, iso):
    idx, iso_lps = iso
    plate = _plate(case, iso_lps, [Beam(90)])
    ant_post = _line(plate, idx, 0)
    assert ant_post[idx[0]] > 0
    assert (ant_post[: idx[0] - 35] == 0).all() and (ant_post[idx[0] + 35:] == 0).all()


# --- any number of beams, arcs --------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 9, 24])
def test_any_number_of_beams_gives_about_one_at_the_isocentre(case, iso, n):
    idx, iso_lps = iso
    plate = _plate(case, iso_lps, equispaced_beams(n, start_deg=10.0))
    assert np.isfinite(plate).all() and plate.min() >= 0 and plate.max() <= 2.0
    assert plate[tuple(idx)] == pytest.approx(1.0, abs=0.02)  # inverse-square factor 1, every beam covers it
    target = target_union(case)
    assert plate[target].mean() == pytest.approx(1.0, abs=0.1)


def test_no_beams_gives_an_empty_plate(case, iso):
    assert not _plate(case, iso[1], []).any()


def test_vmat_arc_gives_a_smooth_plate(case, iso):
    idx, iso_lps = iso
    arc = Beam(181, technique="VMAT", arc_gantry_deg=tuple(np.arange(181, 181 + 358, 2.0)))
    arc_plate = _plate(case, iso_lps, [arc])
    static = _plate(case, iso_lps, [Beam(90)])
    # all around the target in the isocentre slice: irradiated from every side, no stripes of zeros
    ij = np.argwhere(np.ones(case.grid.shape[:2], bool))
    near = np.linalg.norm(case.grid.index_to_lps(np.c_[ij, np.full(len(ij), idx[2])]) - iso_lps, axis=1) < 40
    ring = tuple(ij[near].T) + (idx[2],)
    assert (arc_plate[ring] > 0.2).all()
    step_arc = max(np.abs(np.diff(arc_plate, axis=a)).max() for a in (0, 1))
    step_static = max(np.abs(np.diff(static, axis=a)).max() for a in (0, 1))
    assert step_static > 0.5  # one field: a sharp edge
    assert step_arc < 0.25 * step_static
    assert arc_plate[tuple(idx)] == pytest.approx(1.0, abs=0.02)


# --- tokens ---------------------------------------------------------------------------------------
def test_plan_tokens_one_global_plus_one_per_beam(case):
    beams = (Beam(0), Beam(90, couch_deg=30, energy_mv=10), Beam(200, technique="3D-CRT"))
    tokens, mask = plan_tokens(case, beams, "openkbp-clinical")
    assert tokens.shape == (MAX_TOKENS, TOKEN_DIM) and mask.dtype == torch.bool
    assert mask.tolist() == [True] * 4 + [False] * (MAX_TOKENS - 4)
    assert not tokens[~mask].any()
    g = tokens[0]
    assert g[0] == 0 and g[1] == 1 and g[2] == pytest.approx(0.3) and g[3] == pytest.approx(1.0)  # 70 / 70
    for t, b in zip(tokens[1:4], beams):
        assert t[0] == 1 and t[1] == 0
        assert t[2] == pytest.approx(math.sin(math.radians(b.gantry_deg)), abs=1e-6)
        assert t[3] == pytest.approx(math.cos(math.radians(b.gantry_deg)), abs=1e-6)
        assert t[4] == pytest.approx(math.sin(math.radians(b.couch_deg)), abs=1e-6)
        assert t[5] == pytest.approx(math.cos(math.radians(b.couch_deg)), abs=1e-6)
        assert t[6] == pytest.approx(b.energy_mv / 10)
        assert t[7:10].sum() == 1
    assert tokens[2, 6] == pytest.approx(1.0) and tokens[3, 9] == 1  # 10 MV; 3D-CRT one-hot


@pytest.mark.parametrize("start, step, n, mid, span", [
    (181, 2, 180, 0, 358),  # clockwise through 0
    (179, -2, 180, 0, 358),  # counter-clockwise through 0
    (0, 2, 91, 90, 180),
    (180, -2, 91, 90, 180),  # counter-clockwise: its middle is 90, not 270
])
def test_arc_token_holds_the_arc_middle_and_span_in_either_direction(case, start, step, n, mid, span):
    angles = tuple(float(a % 360) for a in start + step * np.arange(n))
    arc = Beam(angles[0], technique="VMAT", arc_gantry_deg=angles)
    tokens, mask = plan_tokens(case, (arc,), "pyradplan")
    t = tokens[1]
    assert mask[:3].tolist() == [True, True, False]
    assert t[2] == pytest.approx(math.sin(math.radians(mid)), abs=1e-5)
    assert t[3] == pytest.approx(math.cos(math.radians(mid)), abs=1e-5)
    assert t[10] == pytest.approx(span / 360.0, abs=1e-5)
    assert t[8] == 1  # VMAT one-hot


# --- a case that is not on the model grid ---------------------------------------------------------
@pytest.fixture(scope="module")
def axial_case(case):
    """The OpenKBP case resampled onto a DICOM-like axial grid (axes z, y, x), non-cubic spacing and shape."""
    iso = case.isocenter_lps()
    spacing = np.array([4.0, 3.0, 3.5])
    shape = (70, 96, 90)
    direction = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)  # columns: axis 0 -> +z, 1 -> +y, 2 -> +x
    origin = iso - direction @ ((np.array(shape) - 1) / 2 * spacing)
    grid = Grid(shape, spacing, origin, direction)
    structures = {k: replace(s, mask=resample_to_grid(s.mask, case.grid, grid, order=0))
                  for k, s in case.structures.items()}
    ct = resample_to_grid(case.ct_hu, case.grid, grid, order=1, fill=-1000.0)
    return case.replace(grid=grid, ct_hu=ct, structures=structures, dose_gy=None)


def test_build_inputs_off_model_grid_maps_back_onto_the_exact_input_grid(axial_case):
    inputs = build_inputs(axial_case)
    assert not inputs.native
    assert inputs.channels.shape == (len(CHANNELS), *MODEL_SHAPE)
    assert inputs.model_grid.shape == MODEL_SHAPE
    np.testing.assert_allclose(inputs.model_grid.direction, OPENKBP_DIRECTION)
    # voxel size along each model axis = the case spacing along the same patient axis (y 3.0, x 3.5, z 4.0)
    np.testing.assert_allclose(inputs.model_grid.spacing_mm, [3.0, 3.5, 4.0])
    back = inputs.to_case_grid(inputs.channels[1].numpy() * 70.0)
    assert back.shape == axial_case.grid.shape
    rx = axial_case.target_prescription_map()
    # same place: the targets come back where they were (a transpose or mirror would scatter them)
    interior = (rx > 0) & (maximum_filter(rx, 3) == minimum_filter(rx, 3))  # away from level boundaries
    assert np.isclose(back, rx, atol=1.0)[interior].mean() > 0.97
    ptv70 = axial_case.structures["PTV70"].mask
    centre_case = axial_case.grid.index_to_lps(np.argwhere(ptv70).mean(0))
    on_model = inputs.channels[1].numpy() * 70.0 > 69.0
    centre_model = inputs.model_grid.index_to_lps(np.argwhere(on_model).mean(0))
    np.testing.assert_allclose(centre_model, centre_case, atol=4.0)
    # the beam plate follows the targets on the model grid too
    plate = inputs.channels[10].numpy()
    assert plate[on_model].mean() == pytest.approx(1.0, abs=0.1)


def test_no_target_is_e203(case):
    no_target = case.replace(structures={k: s for k, s in case.structures.items() if s.role != Role.TARGET})
    with pytest.raises(InputError) as err:
        build_inputs(no_target)
    assert err.value.code == ErrorCode.NO_TARGET and "E203" in str(err.value)
    empty = {k: (replace(s, mask=np.zeros_like(s.mask)) if s.role == Role.TARGET else s)
             for k, s in case.structures.items()}
    with pytest.raises(InputError) as err:
        build_inputs(case.replace(structures=empty))
    assert err.value.code == ErrorCode.NO_TARGET
