"""Training loop shared by every model family (U-Net, diffusion VAE stage, diffusion denoiser stage).

A model implements ``trainable_parameters(stage)`` and ``compute_loss(batch, stage, generator)``; this
loop adds data, crops, augmentation, AdamW + a schedule that follows the step count, bf16 autocast on CUDA,
checkpoint choice on the model-selection subset, DistributedDataParallel under torchrun (gloo on CPU, NCCL
on CUDA; each rank draws its own samples, rank 0 evaluates and saves) and training that accumulates across
sessions: the full state (float32 weights, their moving average, optimizer, step, random-number state,
minutes spent) is saved every few minutes and on SIGTERM/SIGINT, under ``$ADDIFFDOSE_HOME/runs/<name>`` for a
config with a `name`; a run whose state is gone starts from `init_from` (a file or a bundled model name).
Each evaluation appends a line to ``curve.jsonl`` (step, minutes, selection dose and DVH scores).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
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
from .weights import build_model, load_checkpoint, load_model, save_checkpoint, user_models_dir

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    family: str = "unet"  # unet | diffusion
    stage: str = "unet"  # unet | vae | denoiser
    model: dict = field(default_factory=dict)  # the network's config (defaults when empty)
    init_from: str | None = None  # checkpoint file or bundled model name to start from (e.g. the trained VAE
    # for the denoiser stage, or "unet" to warm-start from the release); with `model` set too, its keys
    # override the checkpoint's config and new submodules start fresh. A saved state in out_dir wins.
    name: str | None = None  # run name: out_dir defaults to $ADDIFFDOSE_HOME/runs/<name> (outside the work tree)
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
    out_dir: str | None = None  # default: runs_dir() / name, else runs/<family>
    resume: bool = True
    max_shift: int = 8
    rotate: bool = False  # 40 deg x k rotations of plans whose field set is symmetric (augment.py)
    schedule: str = "cosine"  # cosine | constant (after the warm-up); follows the step count only
    min_lr: float = 1e-7
    ema_decay: float = 0.0  # > 0: evaluate and release a moving average of the weights
    save_every_minutes: float = 5.0  # full state for resuming
    selection_dvh: bool = False  # also compute the OpenKBP DVH score of the selection cases at each eval

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


def runs_dir() -> Path:
    """$ADDIFFDOSE_HOME/runs (default ~/.cache/addiffdose/runs): training state that outlives a work tree."""
    return user_models_dir().parent / "runs"


def resolve_out_dir(cfg: TrainConfig) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir).expanduser()
    if cfg.name:
        return runs_dir() / cfg.name
    return Path("runs") / cfg.family


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
def selection_score(model, store: SampleStore, cfg: TrainConfig, device, dvh_cases: list | None = None) -> float | dict:
    """Mean absolute error (Gy) inside the body on the model-selection cases = their OpenKBP dose score.

    With dvh_cases (the selection Cases, OpenKBP grid = model grid) a dict {dose_score, dvh_score}: the
    DVH score of the raw network's dose (no flips, no priors) by OpenKBP's definition."""
    model.eval()
    maes, dvhs = [], []
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
        if dvh_cases is not None:
            from ..metrics.openkbp_score import case_openkbp_scores

            dose_gy = (mean[0, 0].float().clamp(min=0) * DOSE_SCALE_GY).cpu().numpy()
            dvhs.append(case_openkbp_scores(dvh_cases[i], dose_gy)["dvh_score"])
    model.train()
    dose = float(np.mean(maes)) if maes else float("nan")
    if dvh_cases is None:
        return dose
    return {"dose_score": dose, "dvh_score": float(np.nanmean(dvhs)) if dvhs else float("nan")}


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine to min_lr over max_steps (or constant): a function of the step alone, so a
    run stopped at any minute resumes on the same schedule (max_minutes only ends a session)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule != "cosine":
        raise ModelError(f"schedule must be 'cosine' or 'constant', got {cfg.schedule!r}", code=ErrorCode.INVALID_CONFIG)
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


class WeightAverage:
    """Exponential moving average of a model's float tensors (weights and buffers), kept in float32.

    The decay ramps up as (1 + n) / (10 + n) so a fresh average is not dominated by its first weights."""

    def __init__(self, model, decay: float, tensors: dict | None = None, count: int = 0):
        self.decay, self.count = decay, count
        self.tensors = tensors or {k: v.detach().float().clone() for k, v in model.state_dict().items()
                                   if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model) -> None:
        d = min(self.decay, (1 + self.count) / (10 + self.count))
        for k, v in model.state_dict().items():
            if k in self.tensors:
                self.tensors[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
        self.count += 1

    @contextlib.contextmanager
    def applied(self, model):
        """The model holds the averaged weights inside the block, its own again after it."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.tensors}
        model.load_state_dict({k: v.to(backup[k].dtype) for k, v in self.tensors.items()}, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(backup, strict=False)


class StopRequest:
    """SIGTERM / SIGINT ask the loop to save its state and stop after the current step."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        def handler(signum, frame):
            self.requested = True
            log.warning("signal %d: saving the training state and stopping", signum)
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: no handlers, the caller stops the run itself
                pass
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        return False


def _save_state(out: Path, model, optimizer, step: int, best: float, cfg: TrainConfig, extra: dict,
                generator: torch.Generator | None = None, average: WeightAverage | None = None) -> None:
    """last.safetensors/.json (float32 weights + record), last_optimizer.safetensors (optimizer state, the
    random-number state of the data order and augmentation, the weight average). Each file is written
    atomically, the record last, so a run killed mid-save resumes from the previous complete state."""
    from safetensors.torch import save_file

    from ..io.atomic import atomic_path

    flat, meta = {}, {"param_groups": optimizer.state_dict()["param_groups"], "state_keys": {}}
    for pid, st in optimizer.state_dict()["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                flat[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta["state_keys"][f"{pid}.{k}"] = v
    if generator is not None:
        flat["rng.generator"] = generator.get_state()
    if average is not None:
        flat.update({f"ema.{k}": v.cpu().contiguous() for k, v in average.tensors.items()})
        meta["ema_count"] = average.count
    with atomic_path(out / "last_optimizer.safetensors", overwrite=True) as tmp:
        save_file(flat, str(tmp), metadata={"json": json.dumps(meta)})
    record = {"step": step, "best_selection_mae_gy": best, "train_config": asdict(cfg), **extra}
    save_checkpoint(model, out / "last", record)


def _load_state(out: Path, model, optimizer, generator: torch.Generator | None = None,
                average: WeightAverage | None = None) -> tuple[int, float, dict]:
    """(step, best, record) of the saved state in `out`, loaded into model/optimizer/generator/average."""
    from safetensors import safe_open

    if not (out / "last.safetensors").is_file():
        return 0, float("inf"), {}
    loaded = load_checkpoint(out / "last.safetensors")
    model.load_state_dict(loaded.state_dict())
    record = loaded.record
    opt_path = out / "last_optimizer.safetensors"
    if opt_path.is_file():
        with safe_open(str(opt_path), "pt") as f:
            meta = json.loads(f.metadata()["json"])
            state: dict = {}
            for key in f.keys():
                if key == "rng.generator":
                    if generator is not None:
                        generator.set_state(f.get_tensor(key))
                    continue
                if key.startswith("ema."):
                    if average is not None:
                        average.tensors[key[4:]] = f.get_tensor(key).float()
                    continue
                pid, name = key.split(".", 1)
                state.setdefault(int(pid), {})[name] = f.get_tensor(key)
        for key, v in meta["state_keys"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if average is not None:
            average.count = int(meta.get("ema_count", 0))
    return int(record.get("step", 0)), float(record.get("best_selection_mae_gy", float("inf"))), record


def init_model(cfg: TrainConfig):
    """A fresh network, the checkpoint `init_from`, or that checkpoint grown by `model` config overrides
    (e.g. a trained U-Net plus a new refiner: only the new submodules' weights may be missing)."""
    if not cfg.init_from:
        return build_model(cfg.family, cfg.model)
    base = load_model(cfg.init_from)[0]  # a file, or a manifest name ("unet": the bundled release)
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
    out = resolve_out_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)

    model = init_model(cfg)  # a saved state in out_dir then replaces these weights
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
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    step, best, record = (_load_state(out, model, optimizer, gen if world == 1 else None, average)
                          if cfg.resume else (0, float("inf"), {}))
    if world > 1:  # ranks draw different samples: a per-rank stream, re-seeded by the step on resume
        gen.manual_seed(cfg.seed * 1000 + rank + step)
    minutes_before = float(record.get("minutes_total", 0.0))
    loss_module = _LossModule(model, cfg.stage)
    if world > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None)

    train_items, select_items = load_training_cases(cfg)
    factor = model.training_factor(cfg.stage) if hasattr(model, "training_factor") else resolution_factor(model)
    prepare = (lambda s: model.add_stage_inputs(s, cfg.stage)) if hasattr(model, "add_stage_inputs") else None
    store = SampleStore(train_items, device, factor, prepare)
    select_store = SampleStore(select_items, device)
    dvh_cases = None
    if cfg.selection_dvh and rank == 0:
        dvh_cases = [item if hasattr(item, "grid") else load_case(item) for item in select_items]
    if hasattr(model, "prepare_training") and step == 0:
        model.prepare_training(cfg.stage, [store.get(i) for i in range(min(8, len(store)))])
    started = time.time()
    last_save = started
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.family}/{cfg.stage}", unit="step")
    history = []
    time_up = False
    loss_sum, loss_count = 0.0, 0

    def minutes_total() -> float:
        return minutes_before + (time.time() - started) / 60

    def state_extra() -> dict:
        return {"minutes_total": minutes_total(), "sessions": int(record.get("sessions", 0)) + 1}

    with StopRequest() as stop:
        while step < cfg.max_steps and not time_up:
            idx = torch.randint(len(store), (cfg.batch_size,), generator=gen).tolist()
            batch = stack_samples(random_crop([store.get(i) for i in idx], cfg.crop, gen, cfg.crop_body_fraction))
            batch = augment_batch(batch, gen, max_shift=cfg.max_shift if cfg.crop is None else 0, rotate=cfg.rotate)
            batch = {k: (v.float() if v.is_floating_point() else v) for k, v in batch.items()}
            lr = _lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with _autocast(device):
                loss, logs = loss_module(batch, generator=gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            if average is not None:
                average.update(model)
            step += 1
            loss_sum, loss_count = loss_sum + logs.get("mae_body_gy", logs.get("loss", 0.0)), loss_count + 1
            if bar:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
            time_up = (bool(cfg.max_minutes) and (time.time() - started) / 60 > cfg.max_minutes) or stop.requested
            if world > 1:  # every rank must stop at the same step
                flag = torch.tensor([float(time_up)], device=device if device.type == "cuda" else "cpu")
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                time_up = bool(flag.item())
            if time_up:
                log.warning("stopping at step %d: %s", step, "stop requested" if stop.requested else "max_minutes reached")
            evaluate = step % cfg.eval_every == 0 or step == cfg.max_steps or (time_up and not stop.requested)
            if rank == 0 and evaluate:
                with (average.applied(model) if average is not None else contextlib.nullcontext()):
                    score = (selection_score(model, select_store, cfg, device, dvh_cases)
                             if len(select_store) else float("nan"))
                    scores = score if isinstance(score, dict) else {"dose_score": score}
                    mae = scores["dose_score"]
                    criterion = mae + (scores.get("dvh_score", 0.0) if cfg.selection_dvh else 0.0)
                    point = {"step": step, "minutes": round(minutes_total(), 2), "lr": lr,
                             "train_mae_gy": loss_sum / max(1, loss_count),
                             "selection_dose_score": mae, "selection_dvh_score": scores.get("dvh_score"),
                             "weights": "average" if average is not None else "raw", "selection_cases": len(select_store)}
                    loss_sum, loss_count = 0.0, 0
                    history.append({"step": step, "selection_mae_gy": mae, **logs, "minutes": point["minutes"]})
                    with open(out / "log.jsonl", "a") as f:
                        f.write(json.dumps(history[-1]) + "\n")
                    with open(out / "curve.jsonl", "a") as f:
                        f.write(json.dumps(point) + "\n")
                    rec = {"step": step, "selection_mae_gy": mae, "selection_dvh_score": scores.get("dvh_score"),
                           "device": str(device), "minutes_total": point["minutes"],
                           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                           "train_cases": len(store), "selection_cases": len(select_store), "seed": cfg.seed,
                           "weights": point["weights"], "train_config": asdict(cfg)}
                    if not (criterion >= best):  # also saves when the score is NaN (no selection cases)
                        best = criterion if criterion == criterion else best
                        save_checkpoint(model, out / "best", rec)
            save_due = (time.time() - last_save) / 60 >= cfg.save_every_minutes
            if rank == 0 and (evaluate or save_due or time_up or step == cfg.max_steps):
                _save_state(out, model, optimizer, step, best, cfg, state_extra(), gen if world == 1 else None, average)
                last_save = time.time()
    if bar:
        bar.close()
    summary = {"steps": step, "best_selection_mae_gy": best, "minutes": (time.time() - started) / 60,
               "minutes_total": minutes_total(), "out_dir": str(out), "history": history}
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
