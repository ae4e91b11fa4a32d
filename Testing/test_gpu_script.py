"""The prepared GPU script (scripts/gpu_unet_fullres.sh) runs end to end on the CPU with a tiny net, so its
first run on a GPU is not its first run: it trains, prints the step time, and brings back float16 weights
that load, the learning curve and the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ADDiffDoseLib.model.weights import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_gpu_unet_script_runs_on_the_cpu_with_a_tiny_config(data_dir, tmp_path):
    out, run = tmp_path / "out", tmp_path / "run"
    extra = " ".join([
        '--set model={"widths":[4,8,16],"tta_flip":true}', "--set packed=null", f"--set data_root={data_dir}",
        "--set include_pyradplan=false", "--set max_cases=2", "--set crop=32", "--set batch_size=1",
        "--set max_steps=3", "--set eval_every=3", "--set eval_cases=1", "--set device=cpu",
        "--set warmup_steps=1", "--set num_threads=1"])
    env = {**os.environ, "OUT": str(out), "RUN": str(run), "MINUTES": "3", "EXTRA": extra,
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": "0"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_unet_fullres.sh")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "trainer exit 0" in result.stdout and ("s/step" in result.stdout or "step/s" in result.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["curve.jsonl", "train.log", "unet_fullres.json",
                                                      "unet_fullres.safetensors"]
    model = load_checkpoint(out / "unet_fullres.safetensors")
    assert model.config.widths == (4, 8, 16) and model.config.tta_flip and model.config.resolution_factor == 1
    assert model.record["step"] == 3
    curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
    assert curve[-1]["step"] == 3 and curve[-1]["selection_dvh_score"] > 0
