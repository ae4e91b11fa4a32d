"""predict_case on real OpenKBP cases: output grid and masking, provenance, seeds, samples, D95 normalization,
training-envelope warnings, device fallback and missing targets. Models come from a manifest written here
(never the bundled one) or are small random-weight networks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ADDiffDoseLib.case import Beam, Role
from ADDiffDoseLib.errors import ErrorCode, InputError
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model import predict as predict_mod
from ADDiffDoseLib.model.predict import envelope_warnings, predict_case, resolve_device
from ADDiffDoseLib.model.weights import ModelEntry
from model_helpers import tiny_diffusion_model, use_models_folder, write_heuristic_manifest


ENVELOPE = {"sites": ["head-and-neck"], "techniques": ["IMRT"], "energies_mv": [6.0], "beam_counts": [5, 9],
            "coplanar_only": True, "spacing_mm": [2.0, 6.0]}


@pytest.fixture
def models_env(tmp_path, monkeypatch):
    bundled = write_heuristic_manifest(tmp_path / "bundled", envelope=ENVELOPE)
    use_models_folder(monkeypatch, bundled, tmp_path / "home")
    yield bundled
    predict_mod._cached_model.cache_clear()


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return read_openkbp_npz(openkbp_npz)


@pytest.fixture(scope="module")
def tiny_diffusion():
    return tiny_diffusion_model()


def test_heuristic_prediction_on_the_case_grid(models_env, case):
    pred = predict_case(case, "heuristic", device="cpu")
    assert pred.dose_gy.shape == case.grid.shape and pred.dose_gy.dtype == np.float32
    assert np.isfinite(pred.dose_gy).all() and pred.dose_gy.min() >= 0
    assert not pred.dose_gy[~case.body_mask].any()
    assert pred.dose_std_gy is None
    ptv70 = case.structures["PTV70"].mask
    assert np.median(pred.dose_gy[ptv70]) == pytest.approx(70.0, abs=0.5)
    p = pred.provenance
    for key in ("model", "seed", "steps", "samples", "beams", "notice", "family", "device", "model_sha256"):
        assert key in p
    assert p["model"] == "heuristic" and p["family"] == "heuristic" and p["samples"] == 1
    assert "NOT FOR CLINICAL USE" in p["notice"]
    assert len(p["beams"]) == len(case.plan.beams) == 9
    assert pred.warnings == []  # 9 coplanar 6 MV IMRT fields on a 3-5 mm grid: inside the envelope


def test_same_seed_same_dose_other_seed_other_dose(case, tiny_diffusion):
    a = predict_case(case, tiny_diffusion, seed=3, device="cpu")
    b = predict_case(case, tiny_diffusion, seed=3, device="cpu")
    c = predict_case(case, tiny_diffusion, seed=4, device="cpu")
    assert a.dose_gy.shape == case.grid.shape
    assert np.array_equal(a.dose_gy, b.dose_gy)
    assert np.abs(a.dose_gy - c.dose_gy).max() > 1e-3
    assert a.provenance["seed"] == 3 and a.provenance["steps"] == 2 and a.provenance["family"] == "diffusion"
    assert not a.dose_gy[~case.body_mask].any()


def test_samples_give_a_std_map(case, tiny_diffusion):
    one = predict_case(case, tiny_diffusion, samples=1, device="cpu")
    four = predict_case(case, tiny_diffusion, samples=4, device="cpu")
    assert one.dose_std_gy is None
    std = four.dose_std_gy
    assert std is not None and std.shape == case.grid.shape and std.dtype == np.float32
    assert np.isfinite(std).all() and std.min() >= 0 and std.max() > 0
    assert not std[~case.body_mask].any()
    assert four.provenance["samples"] == 4


def test_normalize_d95_sets_the_highest_target_to_its_prescription(case, tiny_diffusion):
    raw = predict_case(case, tiny_diffusion, samples=2, device="cpu")
    norm = predict_case(case, tiny_diffusion, samples=2, device="cpu", normalize_d95=True)
    ptv70 = case.structures["PTV70"].mask
    assert abs(np.percentile(raw.dose_gy[ptv70], 5) - 70.0) > 1.0  # a random network is not at 70 Gy already
    assert np.percentile(norm.dose_gy[ptv70], 5) == pytest.approx(70.0, rel=0.005)
    factor = np.percentile(norm.dose_gy[ptv70], 5) / np.percentile(raw.dose_gy[ptv70], 5)
    np.testing.assert_allclose(norm.dose_gy, raw.dose_gy * factor, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(norm.dose_std_gy, raw.dose_std_gy * factor, rtol=1e-4, atol=1e-4)
    assert norm.provenance["normalized_d95"] is True


def test_envelope_warnings_name_what_is_outside(case):
    entry = ModelEntry(name="m", family="unet", config_file="m.json", supported_envelope=ENVELOPE)
    inside = tuple(Beam(g) for g in range(0, 360, 60))
    assert envelope_warnings(case, inside, entry) == []
    assert envelope_warnings(case, inside, None) == []  # no entry: nothing known, nothing said
    vmat = inside[:5] + (Beam(0, technique="VMAT", arc_gantry_deg=tuple(range(0, 360, 10))),)
    assert any("technique" in w and "VMAT" in w for w in envelope_warnings(case, vmat, entry))
    high = inside[:5] + (Beam(30, energy_mv=10),)
    assert any("10.0" in w and "MV" in w for w in envelope_warnings(case, high, entry))
    couch = inside[:5] + (Beam(30, couch_deg=270),)
    assert any("couch" in w for w in envelope_warnings(case, couch, entry))
    assert any("beams" in w for w in envelope_warnings(case, inside[:2], entry))
    assert any("site" in w for w in envelope_warnings(case.replace(plan=replace(case.plan, site="prostate")),
                                                      inside, entry))


def test_prediction_carries_envelope_warnings(models_env, case):
    beams = (Beam(0, technique="VMAT", arc_gantry_deg=tuple(range(0, 360, 10))), Beam(90, energy_mv=10),
             Beam(180, couch_deg=20), Beam(200), Beam(300))
    pred = predict_case(case, "default", beams=beams, device="cpu")
    text = " | ".join(pred.warnings)
    assert "VMAT" in text and "10.0" in text and "couch" in text
    assert len(pred.provenance["beams"]) == 5


def test_cuda_request_without_cuda_falls_back_to_cpu(models_env, case):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    warnings: list[str] = []
    assert resolve_device("cuda", warnings) == torch.device("cpu")
    assert warnings and "CUDA" in warnings[0]
    pred = predict_case(case, "heuristic", device="cuda")
    assert pred.provenance["device"] == "cpu"
    assert any("CUDA" in w for w in pred.warnings)
    with pytest.raises(InputError) as err:
        resolve_device("tpu", [])
    assert err.value.code == ErrorCode.INVALID_VALUE


def test_case_without_target_is_e203(models_env, case):
    no_target = case.replace(structures={k: s for k, s in case.structures.items() if s.role != Role.TARGET})
    with pytest.raises(InputError) as err:
        predict_case(no_target, "heuristic", device="cpu")
    assert err.value.code == ErrorCode.NO_TARGET
    with pytest.raises(InputError) as err:
        predict_case(case, "heuristic", samples=0)
    assert err.value.code == ErrorCode.INVALID_VALUE
