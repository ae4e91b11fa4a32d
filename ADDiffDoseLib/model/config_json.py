"""JSON round trip for frozen dataclass configs: tuples <-> lists, nested configs <-> dicts.

A model is config (JSON) + weights (safetensors), never a pickle.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ..errors import ErrorCode, ModelError


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class JsonConfig:
    """Mixin for frozen dataclasses: ``to_dict()`` gives JSON-ready data; ``from_dict(d)`` rebuilds,
    turning lists back into tuples and nested dicts into the declared config classes."""

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ModelError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k != "family"}  # tolerated: checkpoints record the family beside
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ModelError(f"{cls.__name__}: unknown keys {sorted(unknown)}", code=ErrorCode.INVALID_CONFIG)
        kwargs = {}
        for key, value in d.items():
            hint = hints.get(key)
            if isinstance(hint, type) and issubclass(hint, JsonConfig) and isinstance(value, dict):
                kwargs[key] = hint.from_dict(value)
            else:
                kwargs[key] = _tuples(value)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ModelError(f"{cls.__name__}: {err}", code=ErrorCode.INVALID_CONFIG) from err
