"""scripts/release_models.py: release entries keep their lineage and stay within the size limits.

Re-releasing a bundled file (to refill the manifest's metrics after the benchmarks) must not replace the record's
`released_from` with the bundled path itself, or the released model no longer says which run it came from.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
BUNDLED = REPO / "Resources" / "Models"


def _script():
    spec = importlib.util.spec_from_file_location("release_models", REPO / "scripts" / "release_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def script(tmp_path, monkeypatch):
    module = _script()
    out = tmp_path / "Models"
    out.mkdir()
    monkeypatch.setattr(module, "OUT", out)
    return module


def test_release_from_a_run_records_its_source_and_rereleasing_keeps_it(script, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(BUNDLED / f"unet{suffix}", run / f"best{suffix}")
    first = script.release(run / "best.safetensors", "unet", "test", {}, "9.9.9")
    record = json.loads((script.OUT / "unet.json").read_text())["record"]
    assert record["released_from"] == str(run / "best.safetensors")
    assert first.version == "9.9.9" and first.sha256 and first.file == "unet.safetensors"

    again = script.release(script.OUT / "unet.safetensors", "unet", "test", {"dose_score": 1.0}, "9.9.9")
    record = json.loads((script.OUT / "unet.json").read_text())["record"]
    assert record["released_from"] == str(run / "best.safetensors")
    assert again.metrics == {"dose_score": 1.0}
    # float16 -> float32 -> float16 is lossless: the same bytes, the same hash
    assert again.sha256 == first.sha256


def test_bundled_release_fits_the_size_limits():
    manifest = json.loads((BUNDLED / "manifest.json").read_text())
    entries = manifest["models"] if isinstance(manifest, dict) else manifest
    sizes = [(BUNDLED / e["file"]).stat().st_size for e in entries if e.get("file")]
    assert sizes and max(sizes) <= 15_000_000 and sum(sizes) <= 40_000_000
