"""The U-Net's full-resolution refiner: grown from a trained coarse net, starts as the identity, trains only
its own weights at full resolution, and gives a learned per-voxel error scale."""

from __future__ import annotations

import pytest
import torch

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.augment import flip_channels_lr
from ADDiffDoseLib.model.data import case_tensors
from ADDiffDoseLib.model.resolution import predict_full_resolution
from ADDiffDoseLib.model.train import TrainConfig, init_model, train
from ADDiffDoseLib.model.unet import UNet3D, UNetConfig
from ADDiffDoseLib.model.weights import load_checkpoint, save_checkpoint

COARSE = {"widths": [4, 8, 16], "resolution_factor": 2}
REFINER = {"refiner_widths": [4, 8]}


@pytest.fixture(scope="module")
def sample(openkbp_npz):
    return case_tensors(read_openkbp_npz(openkbp_npz))


@pytest.fixture()
def coarse_checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(UNet3D(UNetConfig.from_dict(COARSE)).eval(), tmp_path / "coarse")


def test_grown_model_keeps_the_coarse_weights_and_starts_as_identity(coarse_checkpoint, sample):
    coarse = load_checkpoint(coarse_checkpoint)
    grown = init_model(TrainConfig(family="unet", init_from=str(coarse_checkpoint), model=REFINER)).eval()
    assert grown.refiner is not None and grown.handles_resolution
    for name, p in coarse.state_dict().items():
        assert torch.equal(p, grown.state_dict()[name])
    x = sample["channels"][None]
    with torch.no_grad():
        half = coarse(torch.nn.functional.avg_pool3d(x, 2))  # the coarse net's raw output, upsampled, clamped
        before = torch.nn.functional.interpolate(half, size=x.shape[2:], mode="trilinear").clamp(min=0)
        after, std = predict_full_resolution(grown, x, None, None)
    assert after.shape == before.shape == (1, 1, 128, 128, 128)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)  # zero-initialised head: coarse + 0
    assert float(std.min()) > 0  # the learned scale gives a std even from one pass


def test_refine_stage_trains_only_the_refiner(coarse_checkpoint, sample):
    grown = init_model(TrainConfig(family="unet", init_from=str(coarse_checkpoint), model=REFINER))
    names = {id(p) for p in grown.trainable_parameters("refine")}
    assert names == {id(p) for p in grown.refiner.parameters()}
    assert not names & {id(p) for p in grown.trainable_parameters("unet")}
    prepared = grown.add_stage_inputs(sample, "refine")
    assert prepared["coarse"].shape == sample["dose"].shape
    crop = (slice(None), slice(32, 64), slice(32, 64), slice(32, 64))
    batch = {k: prepared[k][crop][None].float() if k != "body" else prepared[k][crop][None]
             for k in ("channels", "dose", "body", "coarse")}
    opt = torch.optim.Adam(grown.trainable_parameters("refine"), lr=3e-3)
    frozen = {k: v.clone() for k, v in grown.state_dict().items() if not k.startswith("refiner.")}
    first = None
    for _ in range(20):
        loss, logs = grown.compute_loss(batch, "refine")
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
    assert float(loss) < first and "scale_nll" in logs
    for k, v in frozen.items():
        assert torch.equal(v, grown.state_dict()[k])


def test_refine_stage_runs_through_train_and_round_trips(coarse_checkpoint, data_dir, tmp_path, sample):
    cfg = TrainConfig(family="unet", stage="refine", init_from=str(coarse_checkpoint), model=REFINER,
                      data_root=str(data_dir), include_pyradplan=False, max_cases=1, crop=32, max_steps=2,
                      eval_every=2, eval_cases=1, warmup_steps=1, out_dir=str(tmp_path / "run"))
    summary = train(cfg, progress=False)
    assert summary["steps"] == 2 and summary["best_selection_mae_gy"] < 80
    model = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert model.config.refiner_widths == (4, 8)
    again = load_checkpoint(save_checkpoint(model, tmp_path / "copy"))
    x = sample["channels"][None]
    with torch.no_grad():
        assert torch.equal(model.predict(x, samples=2)[0], again.predict(x, samples=2)[0])


def test_refiner_config_errors():
    with pytest.raises(ModelError) as err:
        UNet3D(UNetConfig(widths=(4, 8), refiner_widths=(4, 8)))  # needs a coarse (pooled) net below it
    assert err.value.code.value == "E401"
    with pytest.raises(ModelError):
        list(UNet3D(UNetConfig(widths=(4, 8))).trainable_parameters("refine"))


def test_body_fraction_crops_reach_beyond_the_targets(sample):
    from ADDiffDoseLib.model.train import random_crop

    gen = torch.Generator().manual_seed(0)
    target = sample["channels"][1] > 0

    def target_share(fraction):
        crops = [random_crop([{**sample, "target": target[None]}], 32, gen, fraction)[0] for _ in range(24)]
        return sum(bool(c["target"].any()) for c in crops) / len(crops)

    assert target_share(0.0) == 1.0  # every crop holds target voxels
    assert target_share(1.0) < 0.9  # centred anywhere in the body, some crops miss the targets


def test_error_head_mode_keeps_the_coarse_dose_and_learns_only_the_scale(coarse_checkpoint, sample):
    head = init_model(TrainConfig(family="unet", init_from=str(coarse_checkpoint),
                                  model={**REFINER, "refiner_corrects_dose": False}))
    torch.manual_seed(1)
    with torch.no_grad():  # random (non-zero) refiner outputs: the dose must still be the coarse one
        for p in head.refiner.parameters():
            p.add_(0.1 * torch.randn_like(p))
    head.eval()
    x = sample["channels"][None]
    with torch.no_grad():
        coarse = head.coarse_dose(x)
        one, _ = head.predict(x, samples=1)
        mean, std = head.predict(x, samples=2)
        flipped = torch.flip(head.coarse_dose(flip_channels_lr(x)), dims=[3])
    torch.testing.assert_close(one, coarse, atol=1e-6, rtol=0)
    torch.testing.assert_close(mean, (coarse + flipped) / 2, atol=1e-6, rtol=0)
    _, scale = head.refine(x, coarse)
    spread = (coarse - flipped).abs() / 2
    torch.testing.assert_close(std, torch.sqrt(spread**2 + 2 * scale**2), atol=1e-5, rtol=1e-4)
    assert float(std.std()) > 0  # a per-voxel map, not a constant
    prepared = head.add_stage_inputs(sample, "refine")
    crop = (slice(None), slice(32, 64), slice(32, 64), slice(32, 64))
    batch = {k: prepared[k][crop][None] if k == "body" else prepared[k][crop][None].float()
             for k in ("channels", "dose", "body", "coarse")}
    loss, logs = head.compute_loss(batch, "refine")
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for n, p in head.named_parameters()
               if not n.startswith("refiner."))
    assert "scale_nll" in logs


def test_noised_refiner_input_is_smooth_seeded_and_only_in_training():
    from ADDiffDoseLib.model.unet import smooth_noise

    like = torch.zeros(2, 1, 32, 32, 32)
    a = smooth_noise(like, torch.Generator().manual_seed(0))
    b = smooth_noise(like, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == like.shape
    assert abs(float(a[0].std()) - 1.0) < 1e-4 and not torch.equal(a[0], a[1])
    # smooth: neighbouring voxels are strongly correlated, unlike white noise
    corr = torch.corrcoef(torch.stack([a[:, :, :-1].flatten(), a[:, :, 1:].flatten()]))[0, 1]
    assert corr > 0.9
    torch.manual_seed(0)
    net = UNet3D(UNetConfig(widths=(4, 8, 16), resolution_factor=2, refiner_widths=(4, 8), refiner_input_noise=0.2))
    batch = {"channels": torch.rand(1, 12, 32, 32, 32), "coarse": torch.full((1, 1, 32, 32, 32), 0.5),
             "dose": torch.full((1, 1, 32, 32, 32), 0.5), "body": torch.ones(1, 1, 32, 32, 32, dtype=torch.bool)}
    net.train()
    seen = []
    original = net.refine
    net.refine = lambda ch, coarse: (seen.append(coarse.clone()), original(ch, coarse))[1]
    net.compute_loss(batch, "refine", generator=torch.Generator().manual_seed(1))
    assert float((seen[-1] - 0.5).abs().max()) > 0.01  # perturbed while training
    net.eval()
    net.compute_loss(batch, "refine", generator=torch.Generator().manual_seed(1))
    assert torch.equal(seen[-1], batch["coarse"])  # never at evaluation
