"""Widen a trained U-Net checkpoint without changing its dose (ADDiffDoseLib/model/widen.py), to train on.

    python scripts/widen_unet.py $ADDIFFDOSE_HOME/runs/unet_accumulate_norot/last.safetensors --average \\
        --widths 16,32,64,128,256 -o $ADDIFFDOSE_HOME/runs/init_wide16/unet

--average takes a run's moving average (the weights it evaluates and releases) from the last_optimizer
.safetensors beside a last.safetensors, instead of the raw weights. Never overwrites (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ADDiffDoseLib.errors import ADDiffDoseError, ErrorCode, ModelError
from ADDiffDoseLib.model.weights import load_checkpoint, save_checkpoint
from ADDiffDoseLib.model.widen import widen_unet


def load_run_average(model, weights: Path) -> None:
    """Load the moving average saved beside a run's last.safetensors into `model`."""
    from safetensors.torch import load_file

    state_file = weights.with_name("last_optimizer.safetensors")
    if not state_file.exists():
        raise ModelError("no last_optimizer.safetensors beside it (not a run's last state)", path=weights,
                         code=ErrorCode.MODEL_NOT_FOUND)
    average = {k[len("ema."):]: v for k, v in load_file(str(state_file)).items() if k.startswith("ema.")}
    if not average:
        raise ModelError("the run saved no moving average", path=state_file, code=ErrorCode.INVALID_CONFIG)
    model.load_state_dict(average, strict=False)
    model.record = dict(model.record or {}, weights="average")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="a U-Net .safetensors (json beside)")
    ap.add_argument("--widths", required=True, help="new coarse-net widths, comma-separated, e.g. 16,32,64,128,256")
    ap.add_argument("--average", action="store_true", help="use the run's moving average (last.safetensors only)")
    ap.add_argument("--seed", type=int, default=0, help="random init of the new channels")
    ap.add_argument("-o", "--output", type=Path, required=True, help="output stem (.safetensors + .json)")
    args = ap.parse_args(argv)
    try:
        widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        ap.error(f"--widths must be integers separated by commas, got {args.widths!r}")
    try:
        model = load_checkpoint(args.checkpoint)
        if model.family != "unet":
            raise ModelError(f"a {model.family} model cannot be widened (U-Nets only)", path=args.checkpoint,
                             code=ErrorCode.INVALID_CONFIG)
        if args.average:
            load_run_average(model, args.checkpoint)
        wide = widen_unet(model, widths, generator=torch.Generator().manual_seed(args.seed))
        record = dict(wide.record, source=str(args.checkpoint))
        path = save_checkpoint(wide, args.output, record, overwrite=False)
    except ADDiffDoseError as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {path}: widths {tuple(model.config.widths)} -> {widths}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
