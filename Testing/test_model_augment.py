"""Left-right augmentation is physically honest: mirroring the inputs equals building the inputs of the
mirrored patient treated with the mirrored beams (gantry g -> 360 - g, couch c -> 360 - c)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ADDiffDoseLib.case import Beam
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.augment import augment_batch, flip_channels_lr, flip_tokens_lr
from ADDiffDoseLib.model.conditioning import CHANNELS, build_inputs, plan_tokens

P_R, P_L = CHANNELS.index("oar_Parotid_R"), CHANNELS.index("oar_Parotid_L")
PLATE = CHANNELS.index("beam_plate")
BEAMS = (Beam(0), Beam(50), Beam(110, couch_deg=20), Beam(200, energy_mv=10),
         Beam(300, technique="VMAT", arc_gantry_deg=tuple(range(300, 360, 4))))


def mirrored_beams(beams):
    return tuple(replace(b, gantry_deg=-b.gantry_deg, couch_deg=-b.couch_deg,
                         arc_gantry_deg=tuple(-a for a in b.arc_gantry_deg) if b.arc_gantry_deg else None)
                 for b in beams)


def test_flip_channels_mirrors_axis1_and_swaps_parotids():
    x = torch.randn(2, len(CHANNELS), 4, 6, 5, generator=torch.Generator().manual_seed(0))
    y = flip_channels_lr(x)
    assert torch.equal(y[:, P_R], torch.flip(x[:, P_L], dims=[2]))  # (B, C, D0, D1, D2): axis 1 is dim 3 of x
    assert torch.equal(y[:, P_L], torch.flip(x[:, P_R], dims=[2]))
    others = [c for c in range(len(CHANNELS)) if c not in (P_R, P_L)]
    assert torch.equal(y[:, others], torch.flip(x[:, others], dims=[3]))
    assert torch.equal(flip_channels_lr(y), x)


def test_flip_tokens_negates_sin_gantry_and_couch_of_beam_tokens_only(openkbp_npz):
    case = read_openkbp_npz(openkbp_npz)
    tokens, mask = plan_tokens(case, BEAMS, "openkbp-clinical")
    flipped = flip_tokens_lr(tokens)
    assert torch.equal(flipped[0], tokens[0])  # the global token (its slot 2 is the beam count) is untouched
    beam = mask.clone()
    beam[0] = False
    assert torch.equal(flipped[beam][:, 2], -tokens[beam][:, 2])
    assert torch.equal(flipped[beam][:, 4], -tokens[beam][:, 4])
    keep = [i for i in range(tokens.shape[1]) if i not in (2, 4)]
    assert torch.equal(flipped[:, keep], tokens[:, keep])
    assert torch.equal(flip_tokens_lr(flipped), tokens)
    # and it is what the mirrored beams give (arcs included: their middle angle mirrors too)
    expected, _ = plan_tokens(case, mirrored_beams(BEAMS), "openkbp-clinical")
    torch.testing.assert_close(flipped, expected, atol=1e-5, rtol=0)


def _mirrored_case(case):
    """The patient mirrored across the sagittal plane: OpenKBP axis 1 is LPS x and the grid is centred on
    x = 0, so flipping axis 1 maps x -> -x on the same grid; left and right parotids swap names."""
    swap = {"Parotid_R": "Parotid_L", "Parotid_L": "Parotid_R", "RightParotid": "LeftParotid",
            "LeftParotid": "RightParotid"}
    structures = {}
    for key, s in case.structures.items():
        name = swap.get(key, key)
        structures[name] = replace(s, name=name, mask=np.flip(s.mask, axis=1).copy(),
                                   original_name=swap.get(s.original_name, s.original_name))
    return case.replace(ct_hu=np.flip(case.ct_hu, axis=1).copy(), structures=structures,
                        dose_gy=np.flip(case.dose_gy, axis=1).copy())


def test_mirrored_patient_with_mirrored_beams_gives_the_mirrored_inputs(openkbp_npz):
    case = read_openkbp_npz(openkbp_npz)
    assert {"Parotid_R", "Parotid_L"} <= set(case.structures)
    np.testing.assert_allclose(case.grid.index_to_lps([0, 63.5, 0])[0], 0.0, atol=1e-6)  # centred on x = 0
    mirror = _mirrored_case(case)
    iso, iso_m = case.isocenter_lps(), mirror.isocenter_lps()
    np.testing.assert_allclose(iso_m, iso * [-1, 1, 1], atol=1e-6)
    a = build_inputs(case, beams=BEAMS)
    b = build_inputs(mirror, beams=mirrored_beams(BEAMS))
    flipped = flip_channels_lr(a.channels[None])[0]
    exact = [c for c in range(len(CHANNELS)) if c != PLATE]
    assert torch.equal(b.channels[exact], flipped[exact])
    assert b.channels[P_R].any()  # the parotids really are there and swapped
    # the plate is rasterized in the beam's eye view: equal up to float rounding (a BEV pixel grid shifted by
    # half a pixel broke this symmetry at ~1 % of the voxels)
    diff = (b.channels[PLATE] - flipped[PLATE]).abs()
    assert float(diff.mean()) < 1e-5
    assert float((diff > 1e-3).float().mean()) < 1e-5
    assert float(flipped[PLATE].abs().sum()) > 1e4  # not trivially empty
    torch.testing.assert_close(b.tokens, flip_tokens_lr(a.tokens), atol=1e-5, rtol=0)


def test_augment_batch_flips_dose_body_channels_and_tokens_together():
    gen = torch.Generator().manual_seed(0)
    ch = torch.randn(4, len(CHANNELS), 8, 8, 8, generator=gen)
    dose = torch.rand(4, 1, 8, 8, 8, generator=gen)
    body = dose > 0.3
    tokens = torch.zeros(4, 3, 14)
    tokens[:, 1:, 0] = 1.0
    tokens[:, :, 2] = 0.5
    batch = {"channels": ch, "dose": dose, "body": body, "tokens": tokens}
    out = augment_batch(batch, torch.Generator().manual_seed(1), max_shift=0, p_flip=0.5)
    flipped = [bool(not torch.equal(out["dose"][i], dose[i])) for i in range(4)]
    assert 0 < sum(flipped) < 4  # this seed flips some and not others
    for i, f in enumerate(flipped):
        if f:
            assert torch.equal(out["dose"][i], torch.flip(dose[i], dims=[2]))
            assert torch.equal(out["body"][i], torch.flip(body[i], dims=[2]))
            assert torch.equal(out["channels"][i], flip_channels_lr(ch[i:i + 1])[0])
            assert out["tokens"][i, 1, 2] == -0.5 and out["tokens"][i, 0, 2] == 0.5
        else:
            assert torch.equal(out["channels"][i], ch[i]) and torch.equal(out["tokens"][i], tokens[i])


# --- rotations about the long axis (issue 13) ------------------------------------------------------
def _rotated_case(case, degrees):
    """The patient turned about the long axis: every structure mask and the CT resampled by rotate_volume."""
    from ADDiffDoseLib.model.augment import rotate_volume

    def turn(a, mode, fill=0.0):
        return rotate_volume(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None], degrees,
                             mode=mode, fill=fill)[0, 0].numpy()
    structures = {k: replace(s, mask=turn(s.mask, "nearest") > 0.5) for k, s in case.structures.items()}
    return case.replace(structures=structures, ct_hu=turn(case.ct_hu, "bilinear", -1000.0))


def test_rotated_input_gives_the_plate_of_the_rotated_patient_with_rotated_beams(openkbp_npz):
    """rotate(plate(patient, beam g)) = plate(rotate(patient), beam g + 40): a single oblique beam, so a wrong
    sense of rotation (g - 40) or a transposed plane would fail."""
    from ADDiffDoseLib.model.augment import rotate_channels, rotate_tokens

    case = read_openkbp_npz(openkbp_npz)
    beams = (Beam(30.0),)
    turned = rotate_channels(build_inputs(case, beams=beams).channels[None], 40.0)[0]
    moved = _rotated_case(case, 40.0)
    right = build_inputs(moved, beams=(Beam(70.0),))
    wrong = build_inputs(moved, beams=(Beam(350.0),))
    err_right = float((turned[PLATE] - right.channels[PLATE]).abs().mean())
    err_wrong = float((turned[PLATE] - wrong.channels[PLATE]).abs().mean())
    scale = float(right.channels[PLATE].abs().mean())
    assert err_right < 0.08 * scale < err_wrong  # interpolation leaves a few % at the field edges
    # the masks move with it, by nearest neighbour (still 0/1), and the CT is air (-1) where it came from outside
    target = CHANNELS.index("target_rx")
    assert torch.equal(turned[target] > 0, right.channels[target] > 0) or \
        float(((turned[target] > 0) != (right.channels[target] > 0)).float().mean()) < 1e-3
    assert set(torch.unique(turned[CHANNELS.index("body")]).tolist()) <= {0.0, 1.0}
    assert float(turned[CHANNELS.index("ct")].min()) >= -1.0 - 1e-6
    # tokens: the rotated beams' tokens
    tok = rotate_tokens(build_inputs(case, beams=beams).tokens, 40.0)
    torch.testing.assert_close(tok, right.tokens, atol=1e-5, rtol=0)


def test_only_symmetric_coplanar_field_sets_are_rotated(openkbp_npz):
    from ADDiffDoseLib.model.augment import symmetric_rotations

    case = read_openkbp_npz(openkbp_npz)
    nine = build_inputs(case)  # OpenKBP: 9 equispaced coplanar fields, 0, 40, ..., 320
    assert [round(b.gantry_deg) for b in case.plan.beams] == list(range(0, 360, 40))
    assert symmetric_rotations(nine.tokens) == list(range(9))
    assert symmetric_rotations(build_inputs(case, beams=BEAMS).tokens) == [0]  # couch, arc, uneven
    four = tuple(Beam(g) for g in (0, 90, 180, 270))
    assert symmetric_rotations(build_inputs(case, beams=four).tokens) == [0]  # 90 deg is no multiple of 40
    couch = tuple(Beam(g, couch_deg=10) for g in range(0, 360, 40))
    assert symmetric_rotations(build_inputs(case, beams=couch).tokens) == [0]


def test_augment_rotates_clinical_plans_and_keeps_pyradplan_beams(openkbp_npz):
    from ADDiffDoseLib.model.augment import rotate_sample_batch

    case = read_openkbp_npz(openkbp_npz)
    inp = build_inputs(case)
    ch = torch.nn.functional.avg_pool3d(inp.channels[None], 4)  # 32^3 keeps the test quick
    pyr = ch.clone()
    pyr[:, CHANNELS.index("source_pyradplan")] = 1.0
    dose = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {"channels": torch.cat([ch, pyr]), "dose": dose, "body": dose > 0.5,
             "tokens": torch.stack([inp.tokens, inp.tokens])}
    turned_any = False
    for seed in range(6):
        out = augment_batch(batch, torch.Generator().manual_seed(seed), max_shift=0, p_flip=0.0, rotate=True)
        assert torch.equal(out["channels"][1], batch["channels"][1])  # pyRadPlan: never turned
        assert torch.equal(out["tokens"][1], batch["tokens"][1])
        if not torch.equal(out["dose"][0], dose[0]):
            turned_any = True
            # the turn of a symmetric plan keeps its field set: same beam angles, in another order
            from ADDiffDoseLib.model.augment import beam_angles_from_tokens
            got = sorted(round(g) % 360 for g, _, _ in beam_angles_from_tokens(out["tokens"][0]))
            assert got == list(range(0, 360, 40))
    assert turned_any
    # and a turn by 40 then by -40 returns the masks (nearest neighbour, away from the rim)
    there = rotate_sample_batch(batch, 0, 40.0)
    back = rotate_sample_batch(there, 0, -40.0)
    body = CHANNELS.index("body")
    assert float((back["channels"][0, body] != batch["channels"][0, body]).float().mean()) < 0.02
