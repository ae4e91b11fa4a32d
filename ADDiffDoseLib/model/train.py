"""Training loop shared by every model family (U-Net, diffusion VAE stage, diffusion denoiser stage).

A model implements ``trainable_parameters(stage)`` and ``compute_loss(batch, stage, generator)``; this
loop adds data, crops, augmentation, AdamW + cosine schedule, bf16 autocast on CUDA, checkpoint choice
on the model-selection subset, resumable checkpoints (safetensors only) and DistributedDataParallel under
torchrun (gloo on CPU, NCCL on CUDA; each rank draws its own samples, rank 0 evaluates and saves).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ErrorCode, ModelError
from .augment import augment_batch
from .conditioning import DOSE_SCALE_GY
from .data import case_tensors, list_cases, load_case, load_packed, stack_samples
from .resolution import pool_sample, predict_full_resolution, resolution_factor
from .weights import build_model, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    family: str = "unet"  # unet | diffusion
    stage: str = "unet"  # unet | vae | denoiser
    model: dict = field(default_factory=dict)  # the network's config (defaults when empty)
    init_from: str | None = None  # checkpoint to start from (e.g. the trained VAE for the denoiser stage);
    # with `model` set too, its keys override the checkpoint's config and new submodules start fresh
    data_root: str | None = None  # folder holding openkbp/ (and openkbp-pyradplan/)
    packed: str | None = None  # or a packed training set (`addiffdose pack`)
    include_pyradplan: bool = True
    max_cases: int | None = None  # cap the training cases (CPU configs)
    crop: int | None = 64  # cubic training crop (multiple of 16); None = whole 128^3 volumes
    crop_body_fraction: float = 0.0  # share of crops centred on any body voxel instead of a target voxel
    batch_size: int = 1
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    max_steps: int = 1000
    max_minutes: float | None = None
    eval_every: int = 200
    eval_cases: int = 20
    eval_steps: int = 4  # sampler steps when the selection score needs sampling
    seed: int = 0
    num_threads: int = 1  # CPU: 1 thread is fastest when the box is shared (cpu-budget.md)
    device: str = "auto"
    out_dir: str = "runs/unet"
    resume: bool = True
    max_shift: int = 8

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
            return cls(**data)
        except (OSError, yaml.YAMLError, TypeError) as exc:
            raise ModelError(f"bad training config: {exc}", path=path, code=ErrorCode.INVALID_CONFIG) from exc


class _LossModule(nn.Module):
    """Wraps compute_loss as forward so DistributedDataParallel sees the call."""

    def __init__(self, model, stage):
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, batch, generator=None):
        return self.model.compute_loss(batch, self.stage, generator=generator)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def load_training_cases(cfg: TrainConfig):
    """(train cases, model-selection cases) as lists of Case."""
    if cfg.packed:
        pairs = load_packed(cfg.packed)
    else:
        if not cfg.data_root:
            raise ModelError("training config needs data_root or packed", code=ErrorCode.INVALID_CONFIG)
        refs = list_cases(cfg.data_root, "train", cfg.include_pyradplan)
        pairs = [(ref, ref.selection) for ref in refs]
    train = [c for c, sel in pairs if not sel]
    select = [c for c, sel in pairs if sel and (getattr(c, "plan_path", None) is None)]
    select = [c for c in select if not (hasattr(c, "plan") and c.plan.source == "pyradplan")]
    if cfg.max_cases:
        rng = np.random.default_rng(cfg.seed)
        train = [train[i] for i in sorted(rng.choice(len(train), min(cfg.max_cases, len(train)), replace=False))]
    return train, select[: cfg.eval_cases]


class SampleStore:
    """Per-case tensors (pooled by `factor`), built on first use and kept in float16 for later epochs.

    prepare(sample) may add stage inputs (the refine stage's coarse dose) before caching."""

    def __init__(self, items, device, factor: int = 1, prepare=None):
        self.items, self.device, self.factor, self.cache = items, device, factor, {}
        self.prepare = prepare or (lambda sample: sample)

    def __len__(self):
        return len(self.items)

    def get(self, i: int) -> dict:
        if i not in self.cache:
            item = self.items[i]
            case = item if hasattr(item, "grid") else load_case(item)
            sample = self.prepare(pool_sample(case_tensors(case, device=self.device), self.factor))
            self.cache[i] = {k: (v.half() if v.is_floating_point() and k != "tokens" else v) for k, v in sample.items()}
        return self.cache[i]


def random_crop(samples: list[dict], size: int | None, generator: torch.Generator,
                body_fraction: float = 0.0) -> list[dict]:
    """Cubic crops centred near a random target voxel (jittered), so crops hold the high-dose region; a
    `body_fraction` of them near any body voxel instead (a net that runs on whole volumes sees the rest too)."""
    if size is None:
        return samples
    out = []
    for s in samples:
        shape = s["channels"].shape[1:]
        anywhere = body_fraction > 0 and float(torch.rand(1, generator=generator)) < body_fraction
        target = (s["body"][0] if anywhere else s["channels"][1] > 0).nonzero()
        if len(target):
            centre = target[int(torch.randint(len(target), (1,), generator=generator))].cpu()
        else:
            centre = torch.tensor([n // 2 for n in shape])
        jitter = torch.randint(-size // 4, size // 4 + 1, (3,), generator=generator)
        lo = [int(min(max(int(c + j) - size // 2, 0), n - size)) for c, j, n in zip(centre, jitter, shape)]
        sl = (slice(None),) + tuple(slice(a, a + size) for a in lo)
        out.append({k: (v[sl] if v.dim() == 4 else v) for k, v in s.items()})
    return out


@torch.no_grad()
def selection_score(model, store: SampleStore, cfg: TrainConfig, device) -> float:
    """Mean absolute error (Gy) inside the body on the model-selection cases = their OpenKBP dose score."""
    model.eval()
    maes = []
    gen = torch.Generator(device="cpu").manual_seed(1234)
    for i in range(len(store)):
        s = store.get(i)
        with _autocast(device):
            if cfg.stage == "vae":  # the VAE's own ceiling: decode(encode(dose)) with the anatomy it sees
                f = resolution_factor(model)
                ch, dose = (torch.nn.functional.avg_pool3d(s[k][None].float(), f) for k in ("channels", "dose"))
                feats = model.vae.encode_anatomy(ch)
                mean = model.vae.decode(model.vae.encode(dose, feats).mean, feats).float()
                mean = torch.nn.functional.interpolate(mean, size=s["dose"].shape[1:], mode="trilinear",
                                                       align_corners=False)
            else:
                mean, _ = predict_full_resolution(model, s["channels"][None].float(), s["tokens"][None],
                                                  s["token_mask"][None], steps=cfg.eval_steps, samples=1,
                                                  generator=gen)
        body = s["body"][None].float()
        err = ((mean.float().clamp(min=0) * body - s["dose"][None].float()).abs() * body).sum() / body.sum()
        maes.append(float(err) * DOSE_SCALE_GY)
    model.train()
    return float(np.mean(maes)) if maes else float("nan")


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _lr_at(step: int, cfg: TrainConfig, elapsed_min: float = 0.0) -> float:
    """Linear warm-up, then cosine to 1e-7 over max_steps or max_minutes, whichever ends first."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.max_minutes:
        progress = max(progress, elapsed_min / cfg.max_minutes)
    return 1e-7 + 0.5 * (cfg.lr - 1e-7) * (1 + math.cos(math.pi * min(1.0, progress)))


def _save_state(out: Path, model, optimizer, step: int, best: float, cfg: TrainConfig, extra: dict) -> None:
    from safetensors.torch import save_file

    record = {"step": step, "best_selection_mae_gy": best, "train_config": asdict(cfg), **extra}
    save_checkpoint(model, out / "last", record)
    flat, meta = {}, {"param_groups": optimizer.state_dict()["param_groups"], "state_keys": {}}
    for pid, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                flat[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta["state_keys"][f"{pid}.{k}"] = v
    save_file(flat, str(out / "last_optimizer.safetensors"), metadata={"json": json.dumps(meta)})


def _load_state(out: Path, model, optimizer) -> tuple[int, float]:
    from safetensors import safe_open

    if not (out / "last.safetensors").is_file():
        return 0, float("inf")
    loaded = load_checkpoint(out / "last.safetensors")
    model.load_state_dict(loaded.state_dict())
    record = loaded.record
    opt_path = out / "last_optimizer.safetensors"
    if opt_path.is_file():
        with safe_open(str(opt_path), "pt") as f:
            meta = json.loads(f.metadata()["json"])
            state: dict = {}
            for key in f.keys():
                pid, name = key.split(".", 1)
                state.setdefault(int(pid), {})[name] = f.get_tensor(key)
        for key, v in meta["state_keys"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(record.get("step", 0)), float(record.get("best_selection_mae_gy", float("inf")))


def init_model(cfg: TrainConfig):
    """A fresh network, the checkpoint `init_from`, or that checkpoint grown by `model` config overrides
    (e.g. a trained U-Net plus a new refiner: only the new submodules' weights may be missing)."""
    if not cfg.init_from:
        return build_model(cfg.family, cfg.model)
    base = load_checkpoint(cfg.init_from)
    if not cfg.model:
        return base
    model = build_model(base.family, {**base.config.to_dict(), **cfg.model})
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    new_modules = {name.split(".")[0] for name in missing}
    if unexpected or any(name in dict(base.named_children()) for name in new_modules):
        raise ModelError(f"init_from does not fit the config overrides (missing {missing[:3]}, unexpected {unexpected[:3]})",
                         path=cfg.init_from, code=ErrorCode.INVALID_CONFIG)
    model.record = getattr(base, "record", {})
    return model


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) one training stage. Returns a summary dict (also written to out_dir/summary.json)."""
    rank, world = _distributed()
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, cfg.num_threads))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    model = init_model(cfg)
    if model.family != cfg.family:
        raise ModelError(f"init_from holds a {model.family} model, config says {cfg.family}", code=ErrorCode.INVALID_CONFIG)
    if cfg.stage not in model.stages:
        raise ModelError(f"stage {cfg.stage!r} not one of {model.stages}", code=ErrorCode.INVALID_CONFIG)
    model.to(device).train()
    params = list(model.trainable_parameters(cfg.stage))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best = (_load_state(out, model, optimizer) if cfg.resume else (0, float("inf")))
    loss_module = _LossModule(model, cfg.stage)
    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)

    train_items, select_items = load_training_cases(cfg)
    factor = model.training_factor(cfg.stage) if hasattr(model, "training_factor") else resolution_factor(model)
    prepare = (lambda s: model.add_stage_inputs(s, cfg.stage)) if hasattr(model, "add_stage_inputs") else None
    store = SampleStore(train_items, device, factor, prepare)
    select_store = SampleStore(select_items, device)
    if hasattr(model, "prepare_training") and step == 0:
        model.prepare_training(cfg.stage, [store.get(i) for i in range(min(8, len(store)))])
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank + step)
    started = time.time()
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.family}/{cfg.stage}", unit="step")
    history = []
    time_up = False
    while step < cfg.max_steps and not time_up:
        idx = torch.randint(len(store), (cfg.batch_size,), generator=gen).tolist()
        batch = stack_samples(random_crop([store.get(i) for i in idx], cfg.crop, gen, cfg.crop_body_fraction))
        batch = augment_batch(batch, gen, max_shift=cfg.max_shift if cfg.crop is None else 0)
        batch = {k: (v.float() if v.is_floating_point() else v) for k, v in batch.items()}
        for g in optimizer.param_groups:
            g["lr"] = _lr_at(step, cfg, (time.time() - started) / 60)
        with _autocast(device):
            loss, logs = loss_module(batch, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        if bar:
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
        time_up = bool(cfg.max_minutes) and (time.time() - started) / 60 > cfg.max_minutes
        if world > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(time_up)], device=device if device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            time_up = bool(flag.item())
        if time_up:
            log.warning("stopping at step %d: max_minutes reached", step)
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.max_steps or time_up):
            score = selection_score(model, select_store, cfg, device) if len(select_store) else float("nan")
            history.append({"step": step, "selection_mae_gy": score, **logs, "minutes": (time.time() - started) / 60})
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(history[-1]) + "\n")
            record = {"step": step, "selection_mae_gy": score, "device": str(device),
                      "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      "train_cases": len(store), "selection_cases": len(select_store), "seed": cfg.seed,
                      "train_config": asdict(cfg)}
            if not (score >= best):  # also saves when the score is NaN (no selection cases)
                best = score if score == score else best
                save_checkpoint(model, out / "best", record)
            _save_state(out, model, optimizer, step, best, cfg, {})
    if bar:
        bar.close()
    summary = {"steps": step, "best_selection_mae_gy": best, "minutes": (time.time() - started) / 60,
               "out_dir": str(out), "history": history}
    if world > 1:  # guard: DDP must leave every rank with the same weights
        checksum = torch.tensor([float(sum(p.double().sum() for p in model.parameters()))], dtype=torch.float64,
                                device=device if device.type == "cuda" else "cpu")
        gathered = [torch.zeros_like(checksum) for _ in range(world)]
        torch.distributed.all_gather(gathered, checksum)
        summary["rank_weight_checksums"] = [float(g.item()) for g in gathered]
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if world > 1:
        torch.distributed.barrier()
    return summary
