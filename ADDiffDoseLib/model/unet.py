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


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = N_CHANNELS
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    resolution_factor: int = 1  # 2: the net runs on 2x average-pooled inputs (CPU-sized); see resolution.py
    outside_body_weight: float = 0.1  # L1 weight outside the body, so the net learns zero there too

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d.pop("family", None)
        if "widths" in d:
            d["widths"] = tuple(d["widths"])
        try:
            return cls(**d)
        except TypeError as exc:
            raise ModelError(f"bad U-Net config: {exc}", code=ErrorCode.INVALID_CONFIG) from exc


class TwoConv(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv3d(cin, cin, 3, stride=2, padding=1), nn.InstanceNorm3d(cin, affine=True), nn.ReLU(inplace=True),
            TwoConv(cin, cout),
        )


class UpCat(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.reduce = nn.Conv3d(cin, cskip, 1)
        self.convs = TwoConv(2 * cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.convs(torch.cat([self.reduce(x), skip], dim=1))


class UNet3D(nn.Module):
    """(B, C, D, H, W) channels -> (B, 1, D, H, W) dose / 70 Gy. D, H, W divisible by 2^(len(widths)-1)."""

    family = "unet"
    stages = ("unet",)

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = TwoConv(config.in_channels, w[0])
        self.downs = nn.ModuleList([Down(w[i], w[i + 1]) for i in range(len(w) - 1)])
        self.ups = nn.ModuleList([UpCat(w[i + 1], w[i], w[i]) for i in reversed(range(len(w) - 1))])
        self.head = nn.Conv3d(w[0], 1, 1)

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
        return self.parameters()

    def compute_loss(self, batch: dict, stage: str = "unet", generator=None):
        pred = self.forward(batch["channels"]).float()
        body = batch["body"].float()
        err = (pred - batch["dose"]).abs()
        inside = (err * body).sum() / body.sum().clamp(min=1)
        outside = (err * (1 - body)).sum() / (1 - body).sum().clamp(min=1)
        loss = inside + self.config.outside_body_weight * outside
        # MAE inside the body in Gy: the OpenKBP dose score of this batch
        return loss, {"loss": float(loss.detach()), "mae_body_gy": float(inside.detach()) * 70.0}

    @torch.no_grad()
    def predict(self, channels, tokens=None, token_mask=None, *, steps: int = 0, samples: int = 1,
                generator: torch.Generator | None = None):
        """Mean over `samples` test-time flips (left-right flip swaps the parotid channels); std over them."""
        outs = [self.forward(channels).float()]
        if samples > 1:
            outs.append(_unflip(self.forward(_flip_lr(channels)).float()))
        mean = torch.stack(outs).mean(0)
        std = torch.stack(outs).std(0, unbiased=False) if len(outs) > 1 else torch.zeros_like(mean)
        return mean.clamp(min=0), std


def _flip_lr(channels: torch.Tensor) -> torch.Tensor:
    """Mirror the patient's left-right axis (array axis 1 -> tensor dim 3), swapping left/right organs."""
    from .augment import flip_channels_lr

    return flip_channels_lr(channels)


def _unflip(dose: torch.Tensor) -> torch.Tensor:
    return torch.flip(dose, dims=[3])
