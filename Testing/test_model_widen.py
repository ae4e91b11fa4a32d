"""Widening a trained U-Net keeps its dose on a real case, its new channels learn from the first step, and
scripts/widen_unet.py writes the widened checkpoint (from a run's moving average on request) without
overwriting anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.conditioning import build_inputs
from ADDiffDoseLib.model.predict import predict_case
from ADDiffDoseLib.model.unet import UNet3D, UNetConfig
from ADDiffDoseLib.model.weights import load_checkpoint, save_checkpoint
from ADDiffDoseLib.model.widen import widen_unet
from diffusion_helpers import randomize_zero_params

NARROW, WIDE = (4, 8, 16), (6, 12, 20)


@pytest.fixture(scope="module")
def case(openkbp_npz):
    return read_openkbp_npz(openkbp_npz)


def _trained_like(seed: int = 0) -> UNet3D:
    """A small U-Net with an error-head refiner and non-trivial weights everywhere (the refiner's zero head too)."""
    torch.manual_seed(seed)
    model = UNet3D(UNetConfig(widths=NARROW, resolution_factor=2, refiner_widths=(4, 8), tta_flip=True,
                              refiner_corrects_dose=False))
    randomize_zero_params(model, seed)
    for m in model.modules():  # norm affines away from (1, 0), so copying them is tested
        if isinstance(m, torch.nn.InstanceNorm3d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


def test_widened_unet_predicts_the_same_dose_on_a_real_case(case):
    narrow = _trained_like()
    wide = widen_unet(narrow, WIDE, generator=torch.Generator().manual_seed(1)).eval()
    assert tuple(wide.config.widths) == WIDE and wide.head.weight.shape[1] == WIDE[0]
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    before = predict_case(case, narrow, device="cpu", samples=2)
    after = predict_case(case, wide, device="cpu", samples=2)
    assert before.dose_gy.max() > 1.0  # a real dose, so equality means something
    np.testing.assert_allclose(after.dose_gy, before.dose_gy, atol=1e-3)
    np.testing.assert_allclose(after.dose_std_gy, before.dose_std_gy, atol=1e-3)  # the error head is kept
    # the new channels are live: the widened net's features differ from zero-padded copies of the old ones
    channels = torch.nn.functional.avg_pool3d(build_inputs(case).channels[None], 2)
    with torch.no_grad():
        stem = wide.stem(channels)
    assert stem[:, NARROW[0]:].abs().mean() > 0.1


def test_new_channels_learn_from_the_first_step(case):
    wide = widen_unet(_trained_like(), WIDE).train()
    inputs = build_inputs(case)
    channels = torch.nn.functional.avg_pool3d(inputs.channels[None], 2)
    dose = torch.nn.functional.avg_pool3d(torch.from_numpy(case.dose_gy[None, None] / 70.0).float(), 2)
    loss = (wide(channels) - dose).abs().mean()
    loss.backward()
    # outgoing weights of the new stem channels (zero at the start) get a gradient, so they will move
    assert wide.head.weight.grad[:, NARROW[0]:].abs().sum() > 0
    assert torch.count_nonzero(wide.head.weight[:, NARROW[0]:]) == 0


def test_narrowing_or_a_different_depth_is_refused():
    narrow = _trained_like()
    with pytest.raises(ModelError):
        widen_unet(narrow, (4, 6, 16))
    with pytest.raises(ModelError):
        widen_unet(narrow, (8, 16, 32, 64))


def _script():
    path = Path(__file__).parents[1] / "scripts" / "widen_unet.py"
    spec = importlib.util.spec_from_file_location("widen_unet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_widen_script_uses_a_runs_moving_average_and_never_overwrites(case, tmp_path):
    from safetensors.torch import save_file

    script = _script()
    raw, average = _trained_like(0), _trained_like(1)
    run = tmp_path / "run"
    run.mkdir()
    last = save_checkpoint(raw, run / "last", {"step": 7})
    save_file({f"ema.{k}": v.contiguous() for k, v in average.state_dict().items() if v.is_floating_point()},
              str(run / "last_optimizer.safetensors"))
    out = tmp_path / "wide"
    assert script.main([str(last), "--average", "--widths", ",".join(map(str, WIDE)), "-o", str(out)]) == 0
    wide = load_checkpoint(out.with_suffix(".safetensors")).eval()
    assert tuple(wide.config.widths) == WIDE and wide.record["weights"] == "average"
    assert wide.record["widened_from"] == list(NARROW) and wide.record["step"] == 7
    expected = predict_case(case, average, device="cpu").dose_gy
    np.testing.assert_allclose(predict_case(case, wide, device="cpu").dose_gy, expected, atol=1e-3)
    assert np.abs(predict_case(case, raw, device="cpu").dose_gy - expected).max() > 0.1  # not the raw weights
    assert script.main([str(last), "--widths", ",".join(map(str, WIDE)), "-o", str(out)]) == 2
    # --average needs a run's saved state beside the checkpoint
    assert script.main([str(out.with_suffix(".safetensors")), "--average", "--widths", "8,16,24",
                        "-o", str(tmp_path / "again")]) == 2
