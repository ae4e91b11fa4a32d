"""`addiffdose train --config FILE [--set key=value ...]`: train one stage from a YAML config."""

from __future__ import annotations

import json

import yaml

from ..errors import ErrorCode, ModelError


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model stage from a YAML config (resumable)")
    p.add_argument("--config", required=True, help="YAML training config (see ADDiffDoseLib/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (YAML syntax), e.g. --set max_steps=50 --set out_dir=runs/x")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if out_dir has a checkpoint")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..model.train import TrainConfig, train

    cfg = TrainConfig.from_file(args.config)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not hasattr(cfg, key):
            raise ModelError(f"--set {item!r}: expected KEY=VALUE with a known key", path=args.config,
                             code=ErrorCode.INVALID_CONFIG)
        setattr(cfg, key, yaml.safe_load(value))
    if args.no_resume:
        cfg.resume = False
    summary = train(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    return 0
