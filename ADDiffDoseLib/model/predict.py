"""Prediction: a Case in, the dose (and, with several samples, its per-voxel spread) out, on the case's grid.

`predict_case` is the Python API used by the CLI, the benchmark and the Slicer module's worker.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import NOT_FOR_CLINICAL_USE, __version__
from ..case import Beam, Case
from ..errors import ErrorCode, InputError
from .conditioning import DOSE_SCALE_GY, build_inputs, require_target
from .postprocess import apply_coverage_prior, apply_oar_prior, coverage_parameters, oar_scale_parameters
from .resolution import predict_full_resolution
from .train import pick_device
from .weights import ModelEntry, load_model

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """dose_gy: (n0, n1, n2) float32 total Gy on the case grid; dose_std_gy: same, or None for one sample."""

    dose_gy: np.ndarray
    dose_std_gy: np.ndarray | None
    provenance: dict
    warnings: list[str] = field(default_factory=list)
    bands: dict | None = None  # DVH bands and metric intervals (model/bands.py predict_bands)


@functools.lru_cache(maxsize=4)
def _cached_model(name: str):
    return load_model(name)


def resolve_device(name: str, warnings: list[str]) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'mps'; CUDA with too little free memory falls back to the CPU, saying so."""
    if name not in ("auto", "cpu", "cuda", "mps"):
        raise InputError(f"device must be auto, cpu, cuda or mps, got {name!r}", code=ErrorCode.INVALID_VALUE)
    if name == "cuda" and not torch.cuda.is_available():
        warnings.append("CUDA requested but not available: running on the CPU")
        return torch.device("cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        warnings.append("MPS requested but not available: running on the CPU")
        return torch.device("cpu")
    device = pick_device(name)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if free < 3 * 1024**3:
            warnings.append(f"only {free / 1024**3:.1f} GiB GPU memory free (3 GiB needed): running on the CPU")
            return torch.device("cpu")
    return device


def envelope_warnings(case: Case, beams: tuple[Beam, ...], entry: ModelEntry | None) -> list[str]:
    """Ways the input lies outside what the model was trained on (empty when inside or unknown)."""
    env = entry.supported_envelope if entry else {}
    out = []
    if not env:
        return out
    if "sites" in env and case.plan.site not in env["sites"]:
        out.append(f"site {case.plan.site!r} is outside the model's training data ({', '.join(env['sites'])})")
    techniques = {b.technique for b in beams}
    if "techniques" in env and not techniques <= set(env["techniques"]):
        out.append(f"technique {'/'.join(sorted(techniques))} is outside the model's training data ({', '.join(env['techniques'])})")
    energies = {b.energy_mv for b in beams}
    if "energies_mv" in env and not energies <= set(env["energies_mv"]):
        out.append(f"energies {sorted(energies)} MV are outside the model's training data ({env['energies_mv']} MV)")
    if "beam_counts" in env and not (env["beam_counts"][0] <= len(beams) <= env["beam_counts"][1]):
        out.append(f"{len(beams)} beams is outside the trained range {env['beam_counts']}")
    if any(abs(b.couch_deg) > 1e-3 and abs(b.couch_deg - 360) > 1e-3 for b in beams) and env.get("coplanar_only"):
        out.append("non-coplanar beams (couch != 0) were not in the training data")
    if "spacing_mm" in env:
        lo, hi = env["spacing_mm"]
        if np.any(case.grid.spacing_mm < lo) or np.any(case.grid.spacing_mm > hi):
            out.append(f"voxel size {np.round(case.grid.spacing_mm, 2).tolist()} mm is outside the trained range {lo}-{hi} mm")
    return out


def d95_scale_factor(case: Case, dose_gy: np.ndarray) -> float:
    """The factor that makes the highest-prescription target's D95 equal its prescription."""
    target = next(iter(case.targets.values()))
    d95 = float(np.percentile(dose_gy[target.mask], 5))
    if d95 <= 0:
        raise InputError(f"cannot normalize: D95 of {target.name} is 0", code=ErrorCode.INVALID_VALUE)
    return target.prescription_gy / d95


def _flip_averaged(net, samples: int) -> bool:
    """Whether the dose averages the left-right mirrored pass (U-Nets, and ensembles of them)."""
    if net.family == "ensemble":
        return all(_flip_averaged(m, samples) for m in net.members)
    return net.family == "unet" and bool(samples > 1 or getattr(net.config, "tta_flip", False))


def predict_case(case: Case, model="default", *, steps: int | None = None, samples: int = 1, seed: int = 0,
                 device: str = "auto", beams: tuple[Beam, ...] | None = None, normalize_d95: bool = False,
                 coverage_prior: bool = True, oar_prior: bool = True, progress=None) -> Prediction:
    """Predict the total dose (Gy) of `case` on its own grid.

    model: a manifest name ('default'), a path to a .safetensors/.json model, or a loaded model.
    steps: sampler steps (diffusion; default from the model's config); samples: K >= 1 samples, K > 1 gives
    dose_std_gy; beams override the case's plan; coverage_prior=False skips the model's target-coverage prior
    (postprocess.py), oar_prior=False its OAR-scale prior. progress(fraction, message) is called along the way.
    """
    t0 = time.time()
    report = progress or (lambda f, m: None)
    if samples < 1:
        raise InputError(f"samples must be >= 1, got {samples}", code=ErrorCode.INVALID_VALUE)
    require_target(case)
    warnings: list[str] = []
    if isinstance(model, str) or model is None:
        report(0.02, f"loading model {model or 'default'}")
        net, entry = _cached_model(model or "default")
    else:
        net, entry = model, None
    beams = tuple(beams) if beams is not None else case.plan.beams
    dev = resolve_device(device, warnings)
    warnings += envelope_warnings(case, beams, entry)
    report(0.1, "building inputs (anatomy channels, beam plate)")
    inputs = build_inputs(case, beams=beams, device=dev)
    net = net.to(dev)
    steps = steps if steps is not None else int(getattr(net.config, "default_steps", 0) or 0)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    report(0.3, f"predicting on {dev.type} ({samples} sample{'s' if samples > 1 else ''}, {steps} steps)")
    kwargs = {"spacing_mm": inputs.model_grid.spacing_mm} if net.family == "heuristic" else {}
    with torch.no_grad():
        mean, std = predict_full_resolution(net, inputs.channels[None].to(dev), inputs.tokens[None].to(dev),
                                            inputs.token_mask[None].to(dev), steps=steps, samples=samples,
                                            generator=gen, **kwargs)
    report(0.85, "mapping the dose back onto the input grid")
    dose = inputs.to_case_grid(mean[0, 0].float().cpu().numpy() * DOSE_SCALE_GY)
    dose_std = inputs.to_case_grid(std[0, 0].float().cpu().numpy() * DOSE_SCALE_GY) if samples > 1 else None
    body = case.body_mask
    if body is not None:
        dose = np.where(body, dose, 0.0)
        dose_std = np.where(body, dose_std, 0.0) if dose_std is not None else None
    dose = np.maximum(dose, 0).astype(np.float32)
    level, strength = coverage_parameters(net)
    prior = {"level": level, "strength": strength} if coverage_prior and strength > 0 else None
    if prior:
        dose = apply_coverage_prior(case, dose, level, strength)
    scales = oar_scale_parameters(net) if oar_prior else {}
    if scales:
        dose = apply_oar_prior(case, dose, scales)
    if normalize_d95:
        factor = d95_scale_factor(case, dose)
        dose = (dose * factor).astype(np.float32)
        dose_std = (dose_std * factor).astype(np.float32) if dose_std is not None else None
    provenance = {
        "software": f"ADDiffDose {__version__}",
        "model": entry.name if entry else getattr(net, "record", {}).get("name", net.family),
        "model_version": entry.version if entry else None,
        "model_sha256": entry.sha256 if entry else None,
        "family": net.family,
        "seed": int(seed),
        "steps": steps,
        "samples": samples,
        "beams": [b.to_dict() for b in beams],
        "device": dev.type,
        "normalized_d95": normalize_d95,
        "coverage_prior": prior,
        "oar_prior": scales or None,
        "flip_averaged": _flip_averaged(net, samples),
        "seconds": round(time.time() - t0, 2),
        "notice": NOT_FOR_CLINICAL_USE,
    }
    for w in warnings:
        log.warning(w)
    report(1.0, "done")
    return Prediction(dose, dose_std.astype(np.float32) if dose_std is not None else None, provenance, warnings)
