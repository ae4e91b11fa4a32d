"""An ensemble of U-Nets is one model: its dose is the mean of its members' doses on a real case, it saves
and loads as one safetensors file, its priors apply after the average, and bad configs are refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.ensemble import DoseEnsemble, EnsembleConfig
from ADDiffDoseLib.model.postprocess import oar_scale_map
from ADDiffDoseLib.model.predict import predict_case
from ADDiffDoseLib.model.unet import UNet3D, UNetConfig
from ADDiffDoseLib.model.weights import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return read_openkbp_npz(openkbp_npz)


def _members():
    torch.manual_seed(0)
    a = UNet3D(UNetConfig(widths=(4, 8, 16), resolution_factor=2, tta_flip=True)).eval()
    b = UNet3D(UNetConfig(widths=(4, 8, 16), resolution_factor=2, tta_flip=True)).eval()
    return a, b


def test_ensemble_dose_is_the_mean_of_its_members(case, tmp_path):
    a, b = _members()
    ens = DoseEnsemble.of([a, b]).eval()
    da, db = (predict_case(case, m, device="cpu", coverage_prior=False, oar_prior=False).dose_gy for m in (a, b))
    assert np.abs(da - db).max() > 0.1  # the members differ, so the test can tell a mean from either one
    de = predict_case(case, ens, device="cpu").dose_gy
    np.testing.assert_allclose(de, (da + db) / 2, atol=2e-3)
    # one file, and it loads back to the same dose
    path = save_checkpoint(ens, tmp_path / "ens", half=False)
    again = load_checkpoint(path)
    assert again.family == "ensemble" and len(again.members) == 2
    np.testing.assert_allclose(predict_case(case, again, device="cpu").dose_gy, de, atol=1e-5)
    pred = predict_case(case, again, device="cpu", samples=2)
    assert pred.provenance["flip_averaged"] and pred.dose_std_gy is not None and pred.dose_std_gy.max() > 0


def test_ensemble_priors_apply_after_the_average(case):
    a, b = _members()
    ens = DoseEnsemble.of([a, b], oar_scales={"SpinalCord": 0.8}).eval()
    off = predict_case(case, ens, device="cpu", oar_prior=False)
    on = predict_case(case, ens, device="cpu")
    assert on.provenance["oar_prior"] == {"SpinalCord": 0.8}
    np.testing.assert_allclose(on.dose_gy, off.dose_gy * oar_scale_map(case, {"SpinalCord": 0.8}), atol=1e-4)


def test_bad_ensembles_are_refused():
    a, _ = _members()
    one = {"family": "unet", "config": a.config.to_dict()}
    with pytest.raises(ModelError):
        EnsembleConfig.from_dict({"members": [one]})
    with pytest.raises(ModelError):
        EnsembleConfig.from_dict({"members": [one, {"family": "heuristic", "config": {}}]})
    with pytest.raises(ModelError):
        EnsembleConfig.from_dict({"members": [one, one], "learning_rate": 1})
    cfg = EnsembleConfig.from_dict({"members": [one, one], "coverage_strength": 0.5})
    assert EnsembleConfig.from_dict(cfg.to_dict()) == dataclasses.replace(cfg)


def test_make_ensemble_script_neutralises_member_priors(case, tmp_path):
    """scripts/make_ensemble.py: one file whose members average the flip and leave the priors to the ensemble."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "make_ensemble.py"
    spec = importlib.util.spec_from_file_location("make_ensemble", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    a, b = _members()
    a.config = dataclasses.replace(a.config, tta_flip=False, coverage_strength=0.6, oar_scales={"SpinalCord": 0.9})
    paths = [save_checkpoint(m, tmp_path / n, {"seed": i}) for i, (n, m) in enumerate((("a", a), ("b", b)))]
    assert script.main([str(p) for p in paths] + ["-o", str(tmp_path / "ens")]) == 0
    ens = load_checkpoint(tmp_path / "ens.safetensors")
    assert ens.family == "ensemble" and len(ens.members) == 2
    for member in ens.members:
        assert member.config.tta_flip and member.config.coverage_strength == 0 and member.config.oar_scales == {}
    assert [m["record"]["seed"] for m in ens.record["members"]] == [0, 1]
    plain_a = dataclasses.replace(a.config, tta_flip=True, coverage_strength=0.0, oar_scales={})
    a.config = plain_a
    da, db = (predict_case(case, m, device="cpu", coverage_prior=False, oar_prior=False).dose_gy for m in (a, b))
    np.testing.assert_allclose(predict_case(case, ens, device="cpu").dose_gy, (da + db) / 2, atol=2e-3)
    assert script.main([str(p) for p in paths] + ["-o", str(tmp_path / "ens")]) == 2  # never overwrites
