"""3D U-Net baseline regressing the dose from the same input channels (after C3D, OpenKBP's winner).

Blocks read like the diagram (MONAI BasicUNet style): two 3x3x3 conv + InstanceNorm + ReLU per level,
stride-2 conv down, trilinear x2 + conv up, skip concatenation. Spatial sizes must be divisible by
2^(levels-1). The network outputs dose / 70 Gy; the body mask zeroes the outside at prediction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ErrorCode, ModelError
from .conditioning import N_CHANNELS
from .losses import dvh_moment_loss


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = N_CHANNELS
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    resolution_factor: int = 1  # 2: the net runs on 2x average-pooled inputs (CPU-sized); see resolution.py
    outside_body_weight: float = 0.1  # L1 weight outside the body, so the net learns zero there too
    # Full-resolution refiner (stage "refine"): a small U-Net that sees the full-resolution inputs plus the
    # upsampled coarse dose and adds a correction. A half-resolution dose blurs the target edges: on the
    # model-selection cases the reference dose itself, pooled 2x and upsampled, scores DVH 2.18 Gy.
    refiner_widths: tuple[int, ...] = ()
    # The refiner's second output: a per-voxel Laplace scale b of the error (heteroscedastic, trained by the
    # Laplace negative log-likelihood with the dose detached), so the uncertainty map is learned, not only the
    # spread of test-time flips. Weight of that term in the loss:
    refiner_scale_weight: float = 0.1
    # False: the refiner only estimates the error scale and the dose stays the coarse net's. Measured on the
    # model-selection cases: a dose-correcting refiner trained on the training cases' coarse doses (which the
    # coarse net fits better than unseen ones) made the MAE worse (3.26 -> 3.37 Gy), while its error scale ranked
    # the errors well (Spearman 0.69 vs 0.65 for the dose gradient).
    refiner_corrects_dose: bool = True
    # Training only: the refiner sees the coarse dose times (1 + this x a smooth random field of unit std, ~8 voxel
    # correlation), so that the coarse doses it learns to correct err like an unseen case's do, not like the
    # training cases' (which the coarse net fits better). 0 = the coarse dose as it is.
    refiner_input_noise: float = 0.0
    # Weight of the DVH moment loss (losses.dvh_moment_loss: per target level and organ, the mean, the
    # root-mean-square and the 10-norm of the dose against the reference's) beside the voxel L1; 0 = off
    moment_loss_weight: float = 0.0
    out_channels: int = 1
    # "instance" (whole-volume nets) or "none": the refiner trains on crops and runs on whole volumes, where
    # InstanceNorm statistics would differ (measured: a crop-trained InstanceNorm refiner made the whole-volume
    # MAE worse, 3.18 -> 3.57 Gy on the selection cases)
    norm: str = "instance"
    coverage_level: float = 1.0  # target-coverage prior applied after prediction (postprocess.py); 0 strength = off
    coverage_strength: float = 0.0
    # OAR-scale prior (postprocess.py): organ -> factor for the dose in that organ outside the targets, fitted on
    # the model-selection subset (scripts/fit_oar_prior.py); empty = off
    oar_scales: dict = field(default_factory=dict)
    # predict() averages the dose with its left-right mirrored pass even for one sample (test-time flip)
    tta_flip: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["refiner_widths"] = list(self.refiner_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d.pop("family", None)
        for key in ("widths", "refiner_widths"):
            if key in d:
                d[key] = tuple(d[key])
        try:
            return cls(**d)
        except TypeError as exc:
            raise ModelError(f"bad U-Net config: {exc}", code=ErrorCode.INVALID_CONFIG) from exc


def _norm(channels: int, kind: str) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "none":
        return nn.Identity()  # keeps the Sequential indices, so state-dict keys match either way
    raise ModelError(f"unknown norm {kind!r} (instance | none)", code=ErrorCode.INVALID_CONFIG)


class TwoConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str = "instance"):
        super().__init__(
            nn.Conv3d(cin, cout, 3, padding=1), _norm(cout, norm), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1), _norm(cout, norm), nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str = "instance"):
        super().__init__(
            nn.Conv3d(cin, cin, 3, stride=2, padding=1), _norm(cin, norm), nn.ReLU(inplace=True),
            TwoConv(cin, cout, norm),
        )


class UpCat(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, norm: str = "instance"):
        super().__init__()
        self.reduce = nn.Conv3d(cin, cskip, 1)
        self.convs = TwoConv(2 * cskip, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.convs(torch.cat([self.reduce(x), skip], dim=1))


class UNet3D(nn.Module):
    """(B, C, D, H, W) channels -> (B, 1, D, H, W) dose / 70 Gy. D, H, W divisible by 2^(len(widths)-1)."""

    family = "unet"
    stages = ("unet", "refine")

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        n = config.norm
        self.stem = TwoConv(config.in_channels, w[0], n)
        self.downs = nn.ModuleList([Down(w[i], w[i + 1], n) for i in range(len(w) - 1)])
        self.ups = nn.ModuleList([UpCat(w[i + 1], w[i], w[i], n) for i in reversed(range(len(w) - 1))])
        self.head = nn.Conv3d(w[0], config.out_channels, 1)
        self.refiner = None
        if config.refiner_widths:
            if config.resolution_factor < 2:
                raise ModelError("a refiner needs resolution_factor >= 2", code=ErrorCode.INVALID_CONFIG)
            self.refiner = UNet3D(UNetConfig(in_channels=config.in_channels + 1, widths=config.refiner_widths,
                                             out_channels=2, norm="none"))
            nn.init.zeros_(self.refiner.head.weight)  # starts as the identity: coarse dose + 0
            nn.init.zeros_(self.refiner.head.bias)

    @property
    def handles_resolution(self) -> bool:
        """True: predict() takes full-resolution channels and pools for the coarse net itself."""
        return self.refiner is not None

    def forward(self, channels: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (len(self.config.widths) - 1)
        if any(s % factor for s in channels.shape[2:]):
            raise ModelError(f"U-Net input size {tuple(channels.shape[2:])} must be divisible by {factor}",
                             code=ErrorCode.INCOMPATIBLE_MODEL)
        x = self.stem(channels)
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)

    # --- the protocol shared with the diffusion model (see train.py / predict.py) -----------------
    def trainable_parameters(self, stage: str):
        if stage == "refine":
            if self.refiner is None:
                raise ModelError("stage 'refine' needs refiner_widths in the model config", code=ErrorCode.INVALID_CONFIG)
            return self.refiner.parameters()
        return (p for name, p in self.named_parameters() if not name.startswith("refiner."))

    def training_factor(self, stage: str) -> int:
        """Pooling of the stored training samples: the refiner trains at full resolution."""
        return 1 if stage == "refine" else self.config.resolution_factor

    @torch.no_grad()
    def add_stage_inputs(self, sample: dict, stage: str) -> dict:
        """Refine stage: the coarse net's upsampled dose over the whole volume, computed once per case."""
        if stage != "refine":
            return sample
        was_training = self.training
        self.eval()
        coarse = self.coarse_dose(sample["channels"][None].float())[0]
        self.train(was_training)
        return {**sample, "coarse": coarse.to(sample["channels"].dtype)}

    def coarse_dose(self, channels: torch.Tensor) -> torch.Tensor:
        """Full-resolution (B, C, D, H, W) -> the coarse net's dose, upsampled to full resolution."""
        f = self.config.resolution_factor
        out = self.forward(F.avg_pool3d(channels, f)).float()
        return F.interpolate(out, size=channels.shape[2:], mode="trilinear", align_corners=False).clamp(min=0)

    def refine(self, channels: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dose, Laplace scale b of its error), both (B, 1, D, H, W) in dose / 70 Gy."""
        out = self.refiner(torch.cat([channels, coarse.to(channels.dtype)], dim=1)).float()
        dose = coarse + out[:, :1] if self.config.refiner_corrects_dose else coarse
        return dose, F.softplus(out[:, 1:2] - 4.0) + 1e-4  # b starts near 1 Gy

    def _full_forward(self, channels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.refiner is None:
            return self.forward(channels).float(), None
        return self.refine(channels, self.coarse_dose(channels))

    def compute_loss(self, batch: dict, stage: str = "unet", generator=None):
        scale = None
        if stage == "refine":
            coarse = batch["coarse"].float()
            if self.training and self.config.refiner_input_noise > 0:
                coarse = coarse * (1 + self.config.refiner_input_noise * smooth_noise(coarse, generator))
            pred, scale = self.refine(batch["channels"], coarse.clamp(min=0))
        else:
            pred = self.forward(batch["channels"]).float()
        body = batch["body"].float()
        err = (pred - batch["dose"]).abs()
        inside = (err * body).sum() / body.sum().clamp(min=1)
        outside = (err * (1 - body)).sum() / (1 - body).sum().clamp(min=1)
        loss = inside + self.config.outside_body_weight * outside
        moments = None
        if self.config.moment_loss_weight > 0 and stage != "refine":
            moments = dvh_moment_loss(pred, batch["dose"], batch["channels"]).mean()
            loss = loss + self.config.moment_loss_weight * moments
        # MAE inside the body in Gy: the OpenKBP dose score of this batch
        logs = {"loss": float(loss.detach()), "mae_body_gy": float(inside.detach()) * 70.0}
        if moments is not None:
            logs["moment_gy"] = float(moments.detach()) * 70.0
        if scale is not None:  # Laplace NLL of the error given b; the dose is detached so b cannot bend it
            nll = ((err.detach() / scale + torch.log(scale)) * body).sum() / body.sum().clamp(min=1)
            loss = loss + self.config.refiner_scale_weight * nll
            logs["scale_nll"] = float(nll.detach())
        return loss, logs

    @torch.no_grad()
    def predict(self, channels, tokens=None, token_mask=None, *, steps: int = 0, samples: int = 1,
                generator: torch.Generator | None = None):
        """Mean over `samples` test-time flips (left-right flip swaps the parotid channels); with
        config.tta_flip the flip is averaged in for one sample too (std stays zero then: a spread of two
        passes is no uncertainty estimate without the error head).

        std: the spread of the flips; with a refiner, combined with its learned error scale (a Laplace
        scale b has standard deviation sqrt(2) b). An error-head-only refiner (refiner_corrects_dose False)
        runs once, on the unflipped pass, and only when a std is asked for (samples > 1)."""
        flip = samples > 1 or self.config.tta_flip
        if self.refiner is not None and not self.config.refiner_corrects_dose:
            outs = [self.coarse_dose(channels)]
            if flip:
                outs.append(_unflip(self.coarse_dose(_flip_lr(channels))))
            scales = [self.refine(channels, outs[0])[1] if samples > 1 else None]
        else:
            dose, scale = self._full_forward(channels)
            outs, scales = [dose], [scale]
            if flip:
                dose, scale = self._full_forward(_flip_lr(channels))
                outs.append(_unflip(dose))
                scales.append(_unflip(scale) if scale is not None else None)
        mean = torch.stack(outs).mean(0)
        std = torch.stack(outs).std(0, unbiased=False) if samples > 1 else torch.zeros_like(mean)
        if scales[0] is not None:
            b = torch.stack(scales).mean(0)
            std = torch.sqrt(std**2 + 2 * b**2)
        return mean.clamp(min=0), std


def smooth_noise(like: torch.Tensor, generator: torch.Generator | None = None, cell: int = 8) -> torch.Tensor:
    """A random field shaped like `like` (B, 1, D, H, W): Gaussian values on a grid of `cell` voxels,
    interpolated trilinearly and scaled to unit standard deviation per sample."""
    coarse_shape = [max(2, -(-n // cell) + 1) for n in like.shape[2:]]
    values = torch.randn(like.shape[0], 1, *coarse_shape, generator=generator).to(like.device)
    field = F.interpolate(values, size=like.shape[2:], mode="trilinear", align_corners=True)
    std = field.flatten(1).std(dim=1).clamp(min=1e-6).view(-1, 1, 1, 1, 1)
    return field / std


def _flip_lr(channels: torch.Tensor) -> torch.Tensor:
    """Mirror the patient's left-right axis (array axis 1 -> tensor dim 3), swapping left/right organs."""
    from .augment import flip_channels_lr

    return flip_channels_lr(channels)


def _unflip(dose: torch.Tensor) -> torch.Tensor:
    return torch.flip(dose, dims=[3])
