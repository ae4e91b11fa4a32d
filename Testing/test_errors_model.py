"""The model error codes triggered for real (MODEL_NOT_FOUND, HASH_MISMATCH, INCOMPATIBLE_MODEL), their one-line
CLI form, and a guard that every ErrorCode is asserted by some test in Testing/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ADDiffDoseLib.cli.main import main
from ADDiffDoseLib.errors import ErrorCode, ModelError
from ADDiffDoseLib.model.unet import UNet3D, UNetConfig
from ADDiffDoseLib.model.weights import find_model, import_model, load_checkpoint, load_model, save_checkpoint
from model_helpers import use_models_folder, write_heuristic_manifest


@pytest.fixture
def models(tmp_path, monkeypatch):
    bundled = write_heuristic_manifest(tmp_path / "bundled")
    use_models_folder(monkeypatch, bundled, tmp_path / "home")
    return bundled


@pytest.fixture
def tiny_unet(tmp_path):
    net = UNet3D(UNetConfig(widths=(4, 8, 16)))
    return save_checkpoint(net, tmp_path / "src" / "tiny")


def _code(fn) -> ErrorCode:
    with pytest.raises(ModelError) as err:
        fn()
    assert str(err.value).startswith(err.value.code.value)
    return err.value.code


def test_model_not_found(models, tmp_path, monkeypatch):
    assert _code(lambda: find_model("no_such_model")) == ErrorCode.MODEL_NOT_FOUND
    assert _code(lambda: load_checkpoint(tmp_path / "missing.safetensors")) == ErrorCode.MODEL_NOT_FOUND
    # a manifest entry whose weights file is not there (e.g. a larger model to download first)
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["models"].append({"name": "big", "family": "unet", "config_file": "big.json", "file": "big.safetensors",
                               "download_url": "https://example.org/big.safetensors"})
    (models / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError) as err:
        load_model("big")
    assert err.value.code == ErrorCode.MODEL_NOT_FOUND and "https://example.org/big.safetensors" in str(err.value)
    # no default anywhere
    empty = tmp_path / "empty"
    empty.mkdir()
    use_models_folder(monkeypatch, empty, tmp_path / "home2")
    assert _code(lambda: load_model("default")) == ErrorCode.MODEL_NOT_FOUND


def test_hash_mismatch(models, tiny_unet):
    entry = import_model(tiny_unet, "tiny")
    load_model("tiny")  # intact: loads
    data = bytearray(entry.weights_path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the tensor data
    entry.weights_path.write_bytes(bytes(data))
    assert _code(lambda: load_model("tiny")) == ErrorCode.HASH_MISMATCH


def test_incompatible_model(tiny_unet):
    cfg = tiny_unet.with_suffix(".json")
    meta = json.loads(cfg.read_text())
    # same layer names, other sizes (used to escape as a bare RuntimeError from torch)
    meta["config"]["widths"] = [4, 8, 8]
    cfg.write_text(json.dumps(meta))
    assert _code(lambda: load_checkpoint(tiny_unet)) == ErrorCode.INCOMPATIBLE_MODEL
    # another family's config beside these weights: other layer names
    cfg.write_text(json.dumps({"family": "diffusion", "config": {}}))
    assert _code(lambda: load_checkpoint(tiny_unet)) == ErrorCode.INCOMPATIBLE_MODEL


def test_model_errors_are_one_line_on_the_command_line(models, tiny_unet, tmp_path, capsys, openkbp_npz):
    cfg = tiny_unet.with_suffix(".json")
    meta = json.loads(cfg.read_text())
    meta["config"]["widths"] = [4, 8, 8]
    cfg.write_text(json.dumps(meta))
    for argv, code in (
        (["predict", str(openkbp_npz), "-o", str(tmp_path / "a.npz"), "--model", "no_such_model"], "E402"),
        (["predict", str(openkbp_npz), "-o", str(tmp_path / "b.npz"), "--model", str(tiny_unet)], "E404"),
        (["models", "verify", "no_such_model"], "E402"),
    ):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error {code}"), err
        assert not (tmp_path / "a.npz").exists() and not (tmp_path / "b.npz").exists()


def test_every_error_code_is_asserted_somewhere_in_the_suite():
    """A new ErrorCode needs a test that triggers it (ErrorCode.NAME or its quoted 'E###' in a test file)."""
    text = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    missing = [c.name for c in ErrorCode
               if not re.search(rf"ErrorCode\.{c.name}\b|[\"']{c.value}\b|error {c.value}\b", text)]
    assert missing == []
