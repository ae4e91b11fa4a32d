"""Shared fixtures: the read-only real data in ../shared/data, and a fresh output folder per test.

Tests never write into ../shared (CI mounts it read-only); they write to pytest's tmp_path.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ADDIFFDOSE_DATA", REPO.parent / "shared" / "data")).resolve()

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the shared data folder must sit beside the repository)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA)


@pytest.fixture(scope="session")
def openkbp_train(data_dir) -> Path:
    return _need(data_dir / "openkbp" / "train")


@pytest.fixture(scope="session")
def openkbp_validation(data_dir) -> Path:
    return _need(data_dir / "openkbp" / "validation")


@pytest.fixture(scope="session")
def openkbp_npz(openkbp_validation) -> Path:
    """One validation patient (reporting split: fine for tests, never for training)."""
    return _need(openkbp_validation / "pt_201.npz")


@pytest.fixture(scope="session")
def pyradplan_dir(data_dir) -> Path:
    return _need(data_dir / "openkbp-pyradplan")


@pytest.fixture(scope="session")
def dicom_dir(data_dir) -> Path:
    return _need(data_dir / "dicom-rt")


@pytest.fixture(scope="session")
def breast_dir(dicom_dir) -> Path:
    return _need(dicom_dir / "breast")


@pytest.fixture(scope="session")
def tg119_dir(dicom_dir) -> Path:
    return _need(dicom_dir / "tg119")
