#!/usr/bin/env bash
# One prepared GPU session (device tool): train the U-Net and the two diffusion stages side by side on
# one GPU from the packed training set, then bring back half-precision release weights and the logs.
#   run from the repository root; needs packed/train.zip (`addiffdose pack`) and, on a machine without
#   pydicom/pynrrd, their wheels in .whl/. OUT (default out/gpu) receives at most 6 files.
# Minutes per job: UNET_MIN, VAE_MIN, DEN_MIN (defaults 6.5 / 2.5 / 3.0).
# Back on the CPU: fit each returned model's target-coverage prior before release
#   (python scripts/fit_coverage_prior.py OUT/unet.safetensors --data ../shared/data --write; same for diffusion).
set -u
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20 OMP_NUM_THREADS=4
RUNS=${RUNS:-/tmp/runs}; rm -rf "$RUNS"; mkdir -p "$RUNS"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
T=python3; M="-m ADDiffDoseLib.cli.main"
$T $M train --config ADDiffDoseLib/configs/unet_gpu.yaml --no-resume --set max_minutes=${UNET_MIN:-6.5} \
  --set out_dir=$RUNS/unet ${EXTRA:-} > "$RUNS/unet.log" 2>&1 &
UNET=$!
( $T $M train --config ADDiffDoseLib/configs/diffusion_vae_gpu.yaml --no-resume --set max_minutes=${VAE_MIN:-2.5} \
    --set out_dir=$RUNS/vae ${EXTRA:-} &&
  $T $M train --config ADDiffDoseLib/configs/diffusion_denoiser_gpu.yaml --no-resume --set max_minutes=${DEN_MIN:-3.0} \
    --set init_from=$RUNS/vae/best.safetensors --set out_dir=$RUNS/den ${EXTRA:-} ) > "$RUNS/diffusion.log" 2>&1 &
DIFF=$!
while kill -0 $UNET 2>/dev/null || kill -0 $DIFF 2>/dev/null; do
  sleep 30; date +%T; tail -c 300 "$RUNS/unet.log" | tr '\r' '\n' | tail -1; tail -c 300 "$RUNS/diffusion.log" | tr '\r' '\n' | tail -1
done
wait
python3 - "$RUNS" "$OUT" <<'PY'
import sys
from pathlib import Path
from ADDiffDoseLib.model.weights import load_checkpoint, save_checkpoint
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
for name, stem in (("unet", runs / "unet" / "best"), ("diffusion", runs / "den" / "best"), ("diffusion", runs / "vae" / "best")):
    if stem.with_suffix(".safetensors").exists() and not (out / f"{name}.safetensors").exists():
        m = load_checkpoint(stem.with_suffix(".safetensors"))
        save_checkpoint(m, out / name, m.record, half=True)
        print("saved", name, "from", stem, m.record.get("step"), m.record.get("selection_mae_gy"))
PY
tar czf "$OUT/logs.tgz" -C "$RUNS" --exclude='*.safetensors' . 2>/dev/null
ls -la "$OUT"
