"""An ensemble of networks of one family as one model: the mean of their predictions.

Independent training runs (other seeds, other data orders) err differently; averaging their doses lowers the
error where they disagree. The members' own weights sit in one safetensors file (``members.<i>.*``) and their
configs in the ensemble's JSON, so an ensemble is released, hashed and loaded like any model. The
post-prediction priors (coverage, OAR scales) belong to the ensemble, fitted on its averaged dose.

std with K > 1 samples: each member's own std and the spread between the members' means, combined as
sqrt(mean(std_i^2) + var(mean_i)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ErrorCode, ModelError


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple = ()  # ({"family": ..., "config": {...}}, ...)
    coverage_level: float = 1.0
    coverage_strength: float = 0.0
    oar_scales: dict = field(default_factory=dict)
    resolution_factor: int = 1  # the members pool for themselves

    def to_dict(self) -> dict:
        return {"members": [dict(m) for m in self.members], "coverage_level": self.coverage_level,
                "coverage_strength": self.coverage_strength, "oar_scales": dict(self.oar_scales),
                "resolution_factor": 1}

    @classmethod
    def from_dict(cls, d: dict) -> "EnsembleConfig":
        d = dict(d)
        d.pop("family", None)
        d["members"] = tuple(d.get("members", ()))
        try:
            cfg = cls(**d)
        except TypeError as exc:
            raise ModelError(f"bad ensemble config: {exc}", code=ErrorCode.INVALID_CONFIG) from exc
        if len(cfg.members) < 2 or len({m.get("family") for m in cfg.members}) != 1:
            raise ModelError("an ensemble needs two or more members of one family", code=ErrorCode.INVALID_CONFIG)
        return cfg


class DoseEnsemble(nn.Module):
    family = "ensemble"
    stages = ()
    handles_resolution = True  # predict() gets full-resolution channels; each member pools for itself

    def __init__(self, config: EnsembleConfig):
        super().__init__()
        from .weights import build_model

        self.config = config
        self.members = nn.ModuleList([build_model(m["family"], m["config"]) for m in config.members])

    @classmethod
    def of(cls, models, **priors) -> "DoseEnsemble":
        """An ensemble holding copies of the weights of `models` (same family)."""
        cfg = EnsembleConfig(members=tuple({"family": m.family, "config": m.config.to_dict()} for m in models), **priors)
        ens = cls(cfg)
        for dst, src in zip(ens.members, models):
            dst.load_state_dict(src.state_dict())
        return ens

    @torch.no_grad()
    def predict(self, channels, tokens=None, token_mask=None, *, steps: int = 0, samples: int = 1,
                generator: torch.Generator | None = None, **kwargs):
        from .resolution import predict_full_resolution

        means, stds = [], []
        for member in self.members:
            mean, std = predict_full_resolution(member, channels, tokens, token_mask, steps=steps, samples=samples,
                                                generator=generator, **kwargs)
            means.append(mean.float())
            stds.append(std.float())
        mean = torch.stack(means).mean(0)
        if samples > 1:
            std = torch.sqrt(torch.stack([s**2 for s in stds]).mean(0) + torch.stack(means).var(0, unbiased=False))
        else:
            std = torch.zeros_like(mean)
        return mean.clamp(min=0), std
