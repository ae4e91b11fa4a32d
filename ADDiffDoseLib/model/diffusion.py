"""DiffusionDoseModel: the ADDiff-Dose style latent conditional diffusion model (after arXiv 2508.02043).

VAE (dose <-> 4x latent, decoder sees the full-resolution anatomy) + latent denoiser (anatomy by
concatenation at latent resolution, plan tokens by cross-attention) + a noise schedule, behind the
protocol shared with the U-Net (``train.py`` / ``predict.py``):

  family, stages = ("vae", "denoiser"), config (frozen, to_dict/from_dict),
  trainable_parameters(stage), compute_loss(batch, stage, generator), prepare_training(stage, samples),
  predict(channels, tokens, token_mask, *, steps, samples, generator) -> (mean, std).

Spatial sizes (D, H, W) must be multiples of 16 (VAE 4x, then two stride-2 levels); ModelError otherwise.
Dose tensors are in dose / 70 Gy units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ErrorCode, ModelError
from .blocks import check_divisible
from .config_json import JsonConfig
from .denoiser import DenoiserConfig, LatentDenoiser3D
from .losses import check_limits, masked_dose_loss, noise_mse, oar_overdose, target_underdose
from .pipeline import SPATIAL_MULTIPLE, DiffusionDosePipeline
from .samplers import SPACINGS
from .schedules import BETA_SCHEDULES, PREDICTION_TYPES, NoiseSchedule
from .vae import LightweightVAE3D, VAEConfig

log = logging.getLogger(__name__)

# (organ in OAR_ORDER, 'max' | 'mean', limit Gy): ADDiffDoseLib/data/constraints_hn.yaml (QUANTEC-based)
DEFAULT_OAR_LIMITS = (
    ("SpinalCord", "max", 45.0), ("Brainstem", "max", 54.0), ("Parotid_L", "mean", 26.0),
    ("Parotid_R", "mean", 26.0), ("Mandible", "max", 70.0), ("Larynx", "mean", 45.0), ("Esophagus", "mean", 45.0),
)


@dataclass(frozen=True)
class DiffusionConfig(JsonConfig):
    """Everything that defines a diffusion dose model; stored as JSON beside its safetensors."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    # noise schedule and sampler
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction_type: str = "v_prediction"
    zero_terminal_snr: bool = True
    timestep_spacing: str = "trailing"
    default_steps: int = 10
    resolution_factor: int = 1  # 2: runs on 2x average-pooled inputs (CPU-sized); see resolution.py
    coverage_level: float = 1.0  # target-coverage prior applied after prediction (postprocess.py); 0 strength = off
    coverage_strength: float = 0.0
    mask_outside_body: bool = True
    # VAE stage loss: recon (inside body + outside_body_weight x everywhere) + kl_weight x KL + constraints
    recon_kind: str = "l1"
    outside_body_weight: float = 0.1
    kl_weight: float = 1e-5
    # denoiser stage: noise MSE + abar_t-weighted terms on the decoded x0 estimate
    x0_dose_weight: float = 0.0
    # dose-constraint penalties (both stages; on decoded doses)
    target_weight: float = 0.1
    oar_weight: float = 0.01
    d95_fraction: float = 1.0
    soft_quantile_bandwidth: float = 0.01
    soft_max_tau: float = 0.02
    oar_limits: tuple[tuple[str, str, float], ...] = DEFAULT_OAR_LIMITS

    def __post_init__(self):
        problems = []
        if self.beta_schedule not in BETA_SCHEDULES:
            problems.append(f"beta_schedule {self.beta_schedule!r} not in {BETA_SCHEDULES}")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type {self.prediction_type!r} not in {PREDICTION_TYPES}")
        if self.timestep_spacing not in SPACINGS:
            problems.append(f"timestep_spacing {self.timestep_spacing!r} not in {SPACINGS}")
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            problems.append("zero_terminal_snr needs prediction_type 'v_prediction'")
        if self.recon_kind not in ("l1", "mse"):
            problems.append(f"recon_kind {self.recon_kind!r} not in ('l1', 'mse')")
        if self.vae.latent_channels != self.denoiser.latent_channels:
            problems.append("vae and denoiser latent_channels differ")
        if problems:
            raise ValueError("; ".join(problems))
        check_limits(self.oar_limits)


def _randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


class DiffusionDoseModel(nn.Module):
    """vae (LightweightVAE3D) + denoiser (LatentDenoiser3D) + config. Buffers: latent_scale (1/std of the
    training latents) and latent_scale_calibrated (False until :meth:`calibrate_latent_scale` ran)."""

    family = "diffusion"
    stages = ("vae", "denoiser")

    def __init__(self, config: DiffusionConfig | None = None):
        super().__init__()
        self.config = config or DiffusionConfig()
        self.vae = LightweightVAE3D(self.config.vae)
        self.denoiser = LatentDenoiser3D(self.config.denoiser)
        self.register_buffer("latent_scale", torch.tensor(1.0))
        self.register_buffer("latent_scale_calibrated", torch.tensor(False))
        c = self.config
        self.schedule = NoiseSchedule.create(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end,
                                             c.prediction_type, c.zero_terminal_snr)

    # --- training protocol ----------------------------------------------------------------------
    def trainable_parameters(self, stage: str):
        self._check_stage(stage)
        return self.vae.parameters() if stage == "vae" else self.denoiser.parameters()

    def prepare_training(self, stage: str, samples: list[dict]) -> None:
        """Before the denoiser stage: set latent_scale from these (unbatched) training samples."""
        if stage == "denoiser" and not bool(self.latent_scale_calibrated):
            self.calibrate_latent_scale(samples)

    @torch.no_grad()
    def calibrate_latent_scale(self, samples: list[dict]) -> float:
        """latent_scale = 1 / std of the posterior means of the samples' doses (dicts with unbatched
        'channels' (12, D, H, W) and 'dose' (1, D, H, W)). Returns the scale."""
        latents = []
        for s in samples:
            feats = self.vae.encode_anatomy(s["channels"][None].float())
            latents.append(self.vae.encode(s["dose"][None].float(), feats).mean.float().flatten())
        std = float(torch.cat(latents).std())
        if not std > 0:
            raise ModelError("cannot calibrate the latent scale: the latents have zero spread (VAE untrained?)",
                             code=ErrorCode.INVALID_VALUE)
        self.latent_scale.fill_(1.0 / std)
        self.latent_scale_calibrated.fill_(True)
        log.info("latent scale set to %.4g (latent std %.4g)", 1.0 / std, std)
        return 1.0 / std

    def compute_loss(self, batch: dict, stage: str, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        """batch: channels (B,12,D,H,W), tokens (B,T,14), token_mask (B,T), dose (B,1,D,H,W) dose/70,
        body (B,1,D,H,W) bool; D, H, W multiples of 16. Returns (loss, float logs)."""
        self._check_stage(stage)
        check_divisible(tuple(batch["channels"].shape[2:]), SPATIAL_MULTIPLE, "diffusion model training batch")
        # denoiser stage: VAE frozen (gradients pass through its decoder to the denoiser only)
        self.vae.requires_grad_(stage == "vae")
        return self._vae_loss(batch, generator) if stage == "vae" else self._denoiser_loss(batch, generator)

    def _constraints(self, dose: torch.Tensor, channels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        zero = dose.new_zeros(dose.shape[0], dtype=torch.float32)
        under = target_underdose(dose, channels, c.d95_fraction, c.soft_quantile_bandwidth) if c.target_weight else zero
        over = oar_overdose(dose, channels, c.oar_limits, c.soft_max_tau) if c.oar_weight else zero
        return under, over

    def _vae_loss(self, batch: dict, generator) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        feats = self.vae.encode_anatomy(batch["channels"])
        post = self.vae.encode(batch["dose"], feats)
        z = post.mean + torch.exp(0.5 * post.logvar) * _randn(post.mean.shape, generator, post.mean.device)
        recon = self.vae.decode(z, feats).float()
        rec = masked_dose_loss(recon, batch["dose"], batch["body"], c.outside_body_weight, c.recon_kind)
        kl = post.kl().mean()
        under, over = self._constraints(recon, batch["channels"])
        loss = rec + c.kl_weight * kl + c.target_weight * under.mean() + c.oar_weight * over.mean()
        mae_gy = masked_dose_loss(recon.detach().clamp(min=0), batch["dose"], batch["body"], 0.0, "l1") * 70.0
        logs = {"loss": loss, "recon": rec, "kl": kl, "target_pen": under.mean(), "oar_pen": over.mean(),
                "mae_body_gy": mae_gy}
        return loss, {k: float(v.detach()) for k, v in logs.items()}

    def _denoiser_loss(self, batch: dict, generator) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        channels = batch["channels"]
        with torch.no_grad():
            feats = self.vae.encode_anatomy(channels)
            z0 = self.vae.encode(batch["dose"], feats).mean.float() * self.latent_scale
        b, device = z0.shape[0], z0.device
        t = torch.randint(0, self.schedule.num_timesteps, (b,), generator=generator,
                          device=generator.device if generator is not None else "cpu").to(device)
        noise = _randn(z0.shape, generator, device)
        x_t = self.schedule.add_noise(z0, noise, t)
        cond = self.denoiser.condition(channels, tuple(z0.shape[2:]))
        out = self.denoiser(x_t, t, cond, batch["tokens"], batch["token_mask"]).float()
        mse = noise_mse(out, self.schedule.target(z0, noise, t))
        loss, logs = mse, {"noise_mse": float(mse.detach())}
        if c.target_weight or c.oar_weight or c.x0_dose_weight:
            x0, _ = self.schedule.split_prediction(out, x_t, t)
            dose = self.vae.decode(x0 / self.latent_scale, feats).float()
            w = self.schedule.alphas_cumprod.to(device)[t].float()  # trust x0 estimates at low noise only
            under, over = self._constraints(dose, channels)
            loss = loss + c.target_weight * (w * under).mean() + c.oar_weight * (w * over).mean()
            if c.x0_dose_weight:
                err = (dose - batch["dose"].float()).abs() * batch["body"].float()
                per_case = err.flatten(1).sum(1) / batch["body"].float().flatten(1).sum(1).clamp(min=1.0)
                loss = loss + c.x0_dose_weight * (w * per_case).mean()
            logs.update(target_pen=float(under.detach().mean()), oar_pen=float(over.detach().mean()))
        logs["loss"] = float(loss.detach())
        return loss, logs

    def _check_stage(self, stage: str) -> None:
        if stage not in self.stages:
            raise ModelError(f"unknown stage {stage!r}; diffusion stages are {self.stages}", code=ErrorCode.INVALID_CONFIG)

    # --- inference --------------------------------------------------------------------------------
    def pipeline(self) -> DiffusionDosePipeline:
        return DiffusionDosePipeline(self.vae, self.denoiser, self.schedule, float(self.latent_scale),
                                     self.config.timestep_spacing, self.config.mask_outside_body)

    @torch.no_grad()
    def predict(self, channels: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor, *, steps: int | None = None,
                samples: int = 1, generator: torch.Generator | None = None, eta: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """channels (B,12,D,H,W), tokens (B,T,14), token_mask (B,T) -> mean, std (B,1,D,H,W) float32 in dose/70;
        D, H, W multiples of 16. K = `samples` per case run as one batch; std is 0 for K = 1."""
        if samples < 1:
            raise ModelError(f"samples must be >= 1, got {samples}", code=ErrorCode.INVALID_VALUE)
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        steps = steps or self.config.default_steps
        return self.pipeline()(channels, tokens, token_mask, steps=steps, samples=samples, generator=generator, eta=eta)
