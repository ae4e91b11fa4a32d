"""Training loop: loss goes down on real cases, checkpoints round-trip and resume, DDP keeps ranks in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.io.openkbp import read_openkbp_npz
from ADDiffDoseLib.model.data import case_tensors, list_cases, model_selection_ids, stack_samples
from ADDiffDoseLib.model.train import TrainConfig, random_crop, train
from ADDiffDoseLib.model.unet import UNet3D, UNetConfig
from ADDiffDoseLib.model.weights import load_checkpoint, load_model, save_checkpoint

TINY = {"widths": [4, 8, 16]}


def test_model_selection_subset_is_fixed_and_excluded(data_dir):
    ids = model_selection_ids()
    assert len(ids) == 20 and len(set(ids)) == 20
    refs = list_cases(data_dir, "train")
    train_anatomies = {r.anatomy_path.stem for r in refs if not r.selection}
    assert not train_anatomies & set(ids)  # pyRadPlan plans on a selection anatomy are held out too
    assert {r.anatomy_path.stem for r in refs if r.selection} <= set(ids)


def test_few_steps_lower_the_loss_on_real_cases(openkbp_train):
    torch.manual_seed(0)
    cases = [read_openkbp_npz(openkbp_train / f"pt_{i}.npz") for i in (1, 2)]
    gen = torch.Generator().manual_seed(0)
    batch = stack_samples(random_crop([case_tensors(c) for c in cases], 32, gen))
    model = UNet3D(UNetConfig.from_dict(TINY))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        loss, logs = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss)
    assert float(loss) < 0.7 * first
    assert logs["mae_body_gy"] > 0


def test_train_writes_safetensors_and_resumes(data_dir, tmp_path):
    cfg = TrainConfig(family="unet", stage="unet", model=TINY, data_root=str(data_dir), include_pyradplan=True,
                      max_cases=2, crop=32, max_steps=4, eval_every=2, eval_cases=1, warmup_steps=1,
                      out_dir=str(tmp_path / "run"))
    summary = train(cfg, progress=False)
    assert summary["steps"] == 4
    run = tmp_path / "run"
    assert (run / "best.safetensors").is_file() and (run / "last_optimizer.safetensors").is_file()
    assert not list(run.glob("*.pt")) and not list(run.glob("*.pkl"))
    assert summary["best_selection_mae_gy"] < 80
    cfg.max_steps = 6
    again = train(cfg, progress=False)
    assert again["steps"] == 6 and len(again["history"]) == 1  # resumed at 4, evaluated at 6 only
    model = load_checkpoint(run / "best.safetensors")
    assert model.record["step"] in (2, 4, 6)


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path, openkbp_npz):
    model = UNet3D(UNetConfig.from_dict(TINY)).eval()
    x = case_tensors(read_openkbp_npz(openkbp_npz))["channels"][None, :, 32:64, 32:64, 32:64]
    path = save_checkpoint(model, tmp_path / "m", {"note": "test"})
    again = load_checkpoint(path)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert json.loads((tmp_path / "m.json").read_text())["family"] == "unet"


def test_pickled_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    with pytest.raises(ModelError) as err:
        load_model(str(bad))
    assert err.value.code.value == "E105"
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(bad.read_bytes())
    (tmp_path / "model.json").write_text(json.dumps({"family": "unet", "config": TINY}))
    with pytest.raises(ModelError):
        load_model(str(disguised))


def test_torchrun_gloo_two_ranks_hold_identical_weights(data_dir, tmp_path):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(json.dumps({"family": "unet", "stage": "unet", "model": TINY, "data_root": str(data_dir),
                               "max_cases": 2, "crop": 32, "max_steps": 3, "eval_every": 100, "eval_cases": 0,
                               "warmup_steps": 1, "out_dir": str(tmp_path / "run"), "device": "cpu"}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "ADDiffDoseLib.cli.main", "train", "--config", str(cfg)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    sums = summary["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
