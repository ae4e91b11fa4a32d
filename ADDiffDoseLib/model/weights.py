"""Model files: safetensors weights + a JSON config beside them, a manifest, hash checks.

Never pickle: a checkpoint is `<stem>.safetensors` (tensors) + `<stem>.json` ({"family", "config", "record"}).
Pickled checkpoints (.pt/.pth/.ckpt, or any file that starts like a pickle or a torch zip) are refused.

Models are found by name in manifests: the bundled one (``Resources/Models/manifest.json`` beside the
library, in the repository and in the installed Slicer module) and the user's (``$ADDIFFDOSE_HOME/models``,
default ``~/.cache/addiffdose/models``), where `addiffdose models import` puts files. Entries may carry a
``download_url`` for larger future models; nothing downloads at run time: the user fetches the file and
imports it. Loading verifies the SHA-256 the manifest records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ErrorCode, ModelError
from ..io.atomic import atomic_path, write_text_atomic

BUNDLED_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def user_models_dir() -> Path:
    home = os.environ.get("ADDIFFDOSE_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "addiffdose") / "models"


def bundled_models_dir() -> Path:
    return Path(os.environ.get("ADDIFFDOSE_BUNDLED_MODELS", BUNDLED_DIR))


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def refuse_pickle(path: Path) -> None:
    """Raise if `path` is (or looks like) a pickled checkpoint."""
    head = b""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
    if path.suffix.lower() in PICKLE_SUFFIXES or head[:1] == b"\x80" or head == b"PK\x03\x04":
        raise ModelError("pickled checkpoints are refused (they can run code); convert the weights to "
                         ".safetensors with a JSON config", path=path, code=ErrorCode.UNSAFE_CONTENT)


@dataclass
class ModelEntry:
    """One manifest entry. `file` is the safetensors file (None for weight-free models like the heuristic);
    `config_file` the JSON beside it; paths are relative to the manifest's folder."""

    name: str
    family: str
    config_file: str
    file: str | None = None
    sha256: str | None = None
    version: str = "0"
    description: str = ""
    default: bool = False
    download_url: str | None = None
    training_data: str = ""
    input_contract: dict = field(default_factory=dict)
    supported_envelope: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    folder: Path = field(default=Path("."), repr=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "folder"}
        return d

    @property
    def weights_path(self) -> Path | None:
        return self.folder / self.file if self.file else None

    @property
    def config_path(self) -> Path:
        return self.folder / self.config_file


def read_manifest(folder: Path) -> list[ModelEntry]:
    path = folder / "manifest.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        return [ModelEntry(**e, folder=folder) for e in data["models"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"damaged model manifest: {exc}", path=path, code=ErrorCode.INVALID_CONFIG) from exc


def write_manifest(folder: Path, entries: list[ModelEntry], overwrite: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"not_for_clinical_use": True, "models": [e.to_dict() for e in entries]}, indent=2) + "\n"
    return write_text_atomic(folder / "manifest.json", text, overwrite=overwrite)


def all_models() -> list[ModelEntry]:
    """Bundled entries, then the user's (a user entry with a bundled name replaces it)."""
    by_name: dict[str, ModelEntry] = {}
    for folder in (bundled_models_dir(), user_models_dir()):
        for e in read_manifest(folder):
            by_name[e.name] = e
    return list(by_name.values())


def find_model(name: str | None) -> ModelEntry:
    """A manifest entry by name; 'default' or None = the entry marked default."""
    entries = all_models()
    if name in (None, "default"):
        defaults = [e for e in entries if e.default]
        if not defaults:
            raise ModelError("no default model in the manifests", path=bundled_models_dir() / "manifest.json",
                             code=ErrorCode.MODEL_NOT_FOUND)
        return defaults[-1]
    for e in entries:
        if e.name == name:
            return e
    known = ", ".join(e.name for e in entries) or "none"
    raise ModelError(f"no model named {name!r} (known: {known}); add one with `addiffdose models import`",
                     code=ErrorCode.MODEL_NOT_FOUND)


def verify(entry: ModelEntry) -> None:
    path = entry.weights_path
    if path is None:
        return
    if not path.is_file():
        hint = f"; download it from {entry.download_url} and run `addiffdose models import`" if entry.download_url else ""
        raise ModelError(f"model file missing{hint}", path=path, code=ErrorCode.MODEL_NOT_FOUND)
    refuse_pickle(path) if path.suffix != ".safetensors" else None
    if entry.sha256 and sha256_of(path) != entry.sha256:
        raise ModelError(f"SHA-256 mismatch for model {entry.name!r}: the file was changed or damaged", path=path,
                         code=ErrorCode.HASH_MISMATCH)


def save_checkpoint(model, stem: str | Path, record: dict | None = None, overwrite: bool = True,
                    half: bool = False) -> Path:
    """Write `<stem>.safetensors` + `<stem>.json`. Returns the safetensors path.

    half: store float tensors as float16 (release weights: half the size; loading casts back to float32).
    """
    from safetensors.torch import save_file

    stem = Path(stem)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items()}
    with atomic_path(stem.with_suffix(".safetensors"), overwrite) as tmp:
        save_file(tensors, str(tmp))
    meta = {"family": model.family, "config": model.config.to_dict(), "record": record or {}}
    write_text_atomic(stem.with_suffix(".json"), json.dumps(meta, indent=2) + "\n", overwrite=overwrite)
    return stem.with_suffix(".safetensors")


def build_model(family: str, config: dict):
    """An untrained network of `family` from its config dict."""
    if family == "unet":
        from .unet import UNet3D, UNetConfig

        return UNet3D(UNetConfig.from_dict(config))
    if family == "diffusion":
        from .diffusion import DiffusionConfig, DiffusionDoseModel

        return DiffusionDoseModel(DiffusionConfig.from_dict(config))
    if family == "heuristic":
        from .heuristic import HeuristicConfig, HeuristicDoseModel

        return HeuristicDoseModel(HeuristicConfig.from_dict(config))
    if family == "ensemble":
        from .ensemble import DoseEnsemble, EnsembleConfig

        return DoseEnsemble(EnsembleConfig.from_dict(config))
    raise ModelError(f"unknown model family {family!r}", code=ErrorCode.INVALID_CONFIG)


def load_checkpoint(weights_or_config: str | Path):
    """Load a model from `<stem>.safetensors` (+ `<stem>.json`) or a weight-free `<stem>.json`."""
    from safetensors.torch import load_file

    path = Path(weights_or_config)
    if not path.exists():
        raise ModelError("model file not found", path=path, code=ErrorCode.MODEL_NOT_FOUND)
    if path.suffix not in (".safetensors", ".json"):
        refuse_pickle(path)
        raise ModelError("model files are .safetensors with a .json config", path=path,
                         code=ErrorCode.UNSUPPORTED_FORMAT)
    config_path = path.with_suffix(".json")
    try:
        meta = json.loads(config_path.read_text())
        model = build_model(meta["family"], meta["config"])
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read model config: {exc}", path=config_path, code=ErrorCode.INVALID_CONFIG) from exc
    weights = path.with_suffix(".safetensors")
    if weights.exists():
        try:
            state = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ModelError(f"damaged safetensors file: {exc}", path=weights, code=ErrorCode.CORRUPT_FILE) from exc
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # same names, other shapes: strict=False does not cover size mismatches
            raise ModelError(f"weights do not fit the config: {str(exc).splitlines()[-1].strip()}", path=weights,
                             code=ErrorCode.INCOMPATIBLE_MODEL) from exc
        if missing or unexpected:
            raise ModelError(f"weights do not fit the config (missing {len(missing)}, unexpected {len(unexpected)})",
                             path=weights, code=ErrorCode.INCOMPATIBLE_MODEL)
    elif meta["family"] != "heuristic":
        raise ModelError("weights file missing beside the config", path=weights, code=ErrorCode.MODEL_NOT_FOUND)
    model.record = meta.get("record", {})
    return model.eval()


def load_model(name_or_path: str | None):
    """(model, entry-or-None): a manifest name ('default' too) or a path to a model file."""
    if name_or_path and (os.sep in name_or_path or name_or_path.endswith((".safetensors", ".json")) or
                         Path(name_or_path).suffix.lower() in PICKLE_SUFFIXES):
        return load_checkpoint(name_or_path), None
    entry = find_model(name_or_path)
    verify(entry)
    return load_checkpoint(entry.weights_path or entry.config_path), entry


def import_model(file: str | Path, name: str, *, overwrite: bool = False, description: str = "") -> ModelEntry:
    """Copy a model (safetensors + json beside it) into the user's models folder and add a manifest entry."""
    src = Path(file)
    if src.suffix != ".safetensors":
        refuse_pickle(src)
        raise ModelError("import a .safetensors file (its .json config must sit beside it)", path=src,
                         code=ErrorCode.UNSUPPORTED_FORMAT)
    cfg = src.with_suffix(".json")
    if not cfg.is_file():
        raise ModelError("the .json config beside the weights is missing", path=cfg, code=ErrorCode.MODEL_NOT_FOUND)
    model = load_checkpoint(src)  # proves it loads before it is registered
    folder = user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    entries = [e for e in read_manifest(folder) if e.name != name or overwrite]
    if any(e.name == name for e in entries):
        raise ModelError(f"a model named {name!r} exists; pass --overwrite", code=ErrorCode.OUTPUT_EXISTS)
    for s, d in ((src, folder / f"{name}.safetensors"), (cfg, folder / f"{name}.json")):
        with atomic_path(d, overwrite=True) as tmp:
            shutil.copyfile(s, tmp)
    entry = ModelEntry(name=name, family=model.family, config_file=f"{name}.json", file=f"{name}.safetensors",
                       sha256=sha256_of(folder / f"{name}.safetensors"), description=description, folder=folder)
    write_manifest(folder, entries + [entry])
    return entry
