"""Helpers for tests that need a model: a manifest folder written in tmp (never the bundled one) and a
small random-weight diffusion network."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ADDiffDoseLib.model.denoiser import DenoiserConfig
from ADDiffDoseLib.model.diffusion import DiffusionConfig, DiffusionDoseModel
from ADDiffDoseLib.model.vae import VAEConfig
from diffusion_helpers import randomize_zero_params


def write_heuristic_manifest(folder: Path, length_mm: float = 25.0, envelope: dict | None = None) -> Path:
    """A models folder holding one weight-free default entry 'heuristic' (manifest.json + heuristic.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heuristic.json").write_text(json.dumps({"family": "heuristic", "config": {"length_mm": length_mm}}))
    entry = {"name": "heuristic", "family": "heuristic", "config_file": "heuristic.json", "version": "1",
             "default": True, "supported_envelope": envelope or {}}
    (folder / "manifest.json").write_text(json.dumps({"models": [entry]}))
    return folder


def use_models_folder(monkeypatch, bundled: Path, home: Path) -> None:
    """Point the library at `bundled` (instead of Resources/Models) and a fresh user home; forget cached models."""
    from ADDiffDoseLib.model import predict

    monkeypatch.setenv("ADDIFFDOSE_BUNDLED_MODELS", str(bundled))
    monkeypatch.setenv("ADDIFFDOSE_HOME", str(home))
    predict._cached_model.cache_clear()


def tiny_diffusion_model(seed: int = 0) -> DiffusionDoseModel:
    """Random-weight latent diffusion model run at half resolution (64^3): about 1 s a prediction on a CPU."""
    torch.manual_seed(seed)
    cfg = DiffusionConfig(vae=VAEConfig(widths=(4, 8, 8)),
                          denoiser=DenoiserConfig(widths=(8, 8, 8), time_dim=16, token_width=16, heads=2,
                                                  cond_channels=4),
                          resolution_factor=2, default_steps=2)
    model = DiffusionDoseModel(cfg).eval()
    randomize_zero_params(model, seed)  # zero-initialised output layers would make every sample alike
    return model
