#!/usr/bin/env bash
# One prepared GPU session (device tool, issue 13): the whole window on a full-resolution 128^3 U-Net (no
# diffusion stages), trained from the packed set with bf16 autocast; prints the step time in its first minute
# and brings back float16 weights, the learning curve and the log.
#   run from the repository root; needs packed/train.zip (`addiffdose pack --data ../shared/data`) and, on a
#   machine without pydicom/pynrrd/pyyaml, their wheels in .whl/. OUT receives unet_fullres.safetensors/.json,
#   curve.jsonl, train.log (4 files).
# Env: MINUTES (training minutes, default 8), CONFIG (default ADDiffDoseLib/configs/unet_gpu.yaml), EXTRA (more
#   `--set key=value` for the trainer; the test suite runs this script on the CPU with a tiny net this way).
# Back on the CPU: python scripts/fit_coverage_prior.py OUT/unet_fullres.safetensors --data ../shared/data --write,
#   python scripts/fit_oar_prior.py OUT/unet_fullres.safetensors --data ../shared/data --write, then benchmark on the
#   selection subset and validation, and release only if better (scripts/release_models.py).
set -u
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
RUN=${RUN:-/tmp/runs/unet_fullres}; rm -rf "$RUN"; mkdir -p "$RUN"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
START=$(date +%s)
# shellcheck disable=SC2086
$PY -m ADDiffDoseLib.cli.main train --config "${CONFIG:-ADDiffDoseLib/configs/unet_gpu.yaml}" --no-resume \
  --set max_minutes="${MINUTES:-8}" --set out_dir="$RUN" --set save_every_minutes=2 ${EXTRA:-} > "$RUN/train.log" 2>&1 &
PID=$!
SEEN=0
while kill -0 $PID 2>/dev/null; do
  sleep 5
  NOW=$(( $(date +%s) - START ))
  # the step time in the first minute (tqdm's rate), then every 30 s
  if [ $NOW -ge $SEEN ]; then
    echo "[$NOW s] $(tail -c 400 "$RUN/train.log" | tr '\r' '\n' | grep -a 'step' | tail -1)"
    SEEN=$(( NOW < 60 ? NOW + 10 : NOW + 30 ))
  fi
done
wait $PID; RC=$?
echo "trainer exit $RC"; tail -n 5 "$RUN/train.log"
$PY - "$RUN" "$OUT" <<'PYCODE'
import sys
from pathlib import Path
from ADDiffDoseLib.model.weights import load_checkpoint, save_checkpoint
run, out = Path(sys.argv[1]), Path(sys.argv[2])
best = run / "best.safetensors"
if best.exists():
    m = load_checkpoint(best)
    save_checkpoint(m, out / "unet_fullres", m.record, half=True)
    print("saved unet_fullres: step", m.record.get("step"), "selection dose score", m.record.get("selection_mae_gy"),
          "DVH score", m.record.get("selection_dvh_score"))
PYCODE
cp "$RUN/curve.jsonl" "$OUT/" 2>/dev/null; cp "$RUN/train.log" "$OUT/" 2>/dev/null
ls -la "$OUT"
exit $RC
