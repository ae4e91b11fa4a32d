"""DiffusionDoseModel.predict / DiffusionDosePipeline: shapes, divisibility, seeded determinism, K samples
as one batch, std, body masking, config JSON and safetensors round trips."""

import json

import pytest
import torch
from diffusion_helpers import randomize_zero_params, random_inputs
from safetensors.torch import load_file, save_file

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.model.diffusion import DiffusionConfig, DiffusionDoseModel
from ADDiffDoseLib.model.vae import VAEConfig

SMALL = DiffusionConfig(vae=VAEConfig(widths=(4, 8, 16)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = DiffusionDoseModel(SMALL)
    randomize_zero_params(m)
    return m.eval()


@pytest.mark.parametrize("shape", [(32, 32, 32), (48, 32, 64)])
def test_predict_shapes_and_masking(model, shape):
    ch, tok, mask = random_inputs(2, shape)
    mean, std = model.predict(ch, tok, mask, steps=2, samples=1, generator=torch.Generator().manual_seed(0))
    assert mean.shape == std.shape == (2, 1, *shape)
    assert mean.dtype == torch.float32 and (mean >= 0).all()
    assert (mean[ch[:, 9:10] == 0] == 0).all()  # zero outside the body
    assert (std == 0).all()


def test_divisibility_error(model):
    ch, tok, mask = random_inputs(1, (32, 40, 32))
    with pytest.raises(ModelError, match="multiple of 16"):
        model.predict(ch, tok, mask, steps=1, samples=1, generator=torch.Generator())


def test_seed_determinism(model):
    ch, tok, mask = random_inputs(1, (32, 32, 32))
    run = lambda seed: model.predict(ch, tok, mask, steps=3, samples=2, generator=torch.Generator().manual_seed(seed))
    a, b, c = run(4), run(4), run(5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], c[0])


@pytest.mark.parametrize("steps", [1, 25])
def test_samples_run_as_one_batch_and_std(model, steps):
    ch, tok, mask = random_inputs(1, (32, 32, 32))
    batch_sizes = []
    hook = model.denoiser.register_forward_hook(lambda mod, args, out: batch_sizes.append(args[0].shape[0]))
    try:
        mean, std = model.predict(ch, tok, mask, steps=steps, samples=3, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert batch_sizes == [3] * steps
    body = ch[:, 9:10] > 0
    assert std[body].mean() > 0 and (std[~body] == 0).all()
    assert torch.isfinite(mean).all()


def test_config_json_round_trip():
    cfg = DiffusionConfig(prediction_type="epsilon", zero_terminal_snr=False, kl_weight=1e-6,
                          oar_limits=(("SpinalCord", "max", 45.0),))
    again = DiffusionConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.vae, VAEConfig)
    assert DiffusionConfig.from_dict({**cfg.to_dict(), "family": "diffusion"}) == cfg


@pytest.mark.parametrize("bad", [{"prediction_type": "sample"}, {"unknown_key": 1},
                                 {"prediction_type": "epsilon", "zero_terminal_snr": True},
                                 {"oar_limits": [["Heart", "max", 20.0]]}, {"timestep_spacing": "odd"}])
def test_bad_config_raises(bad):
    with pytest.raises(ModelError):
        DiffusionConfig.from_dict({**DiffusionConfig().to_dict(), **bad})


def test_safetensors_round_trip(model, tmp_path):
    model.latent_scale.fill_(0.75)
    model.latent_scale_calibrated.fill_(True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    (tmp_path / "m.json").write_text(json.dumps(model.config.to_dict()))
    clone = DiffusionDoseModel(DiffusionConfig.from_dict(json.loads((tmp_path / "m.json").read_text())))
    clone.load_state_dict(load_file(str(tmp_path / "m.safetensors")), strict=True)
    assert float(clone.latent_scale) == 0.75 and bool(clone.latent_scale_calibrated)
    ch, tok, mask = random_inputs(1, (32, 32, 32))
    a = model.predict(ch, tok, mask, steps=2, samples=2, generator=torch.Generator().manual_seed(9))
    b = clone.predict(ch, tok, mask, steps=2, samples=2, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_protocol(model):
    assert model.family == "diffusion" and model.stages == ("vae", "denoiser")
    vae_ids = {id(p) for p in model.vae.parameters()}
    assert {id(p) for p in model.trainable_parameters("vae")} == vae_ids
    assert not vae_ids & {id(p) for p in model.trainable_parameters("denoiser")}
    with pytest.raises(ModelError, match="stage"):
        model.trainable_parameters("unet")
