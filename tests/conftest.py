"""Shared pytest fixtures. Keep each one small and documented; append new ones below."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from e2p_lib.config import PROJECT_ROOT

ALPACA_5000_SHA256 = "fc1add24c93c9fbbe585a64a6c9bf6165eb110225f4470efbff382a913558ec0"


@pytest.fixture(scope="session")
def alpaca_5000_path() -> Path:
    """The real 5,000-row Alpaca subset in ../shared (never copied into the repo), checked by sha256."""
    path = PROJECT_ROOT.parent / "shared" / "data" / "alpaca_5000.json"
    if not path.is_file():
        raise FileNotFoundError(f"The shared Alpaca subset is missing: {path}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != ALPACA_5000_SHA256:
        raise ValueError(f"{path} has sha256 {actual}, expected {ALPACA_5000_SHA256}: the shared subset changed.")
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's real tokenizer (chat template included), from the converted cache; tiny test models share it."""
    from e2p_lib.lm.smollm import load_smollm2

    return load_smollm2(device="cpu")[1]


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch, alpaca_5000_path):
    """Every artefact folder under tmp_path (a notebook kernel inherits the environment), the data at the subset."""
    for var, sub in (("E2P_DATA_DIR", "data"), ("E2P_FIGURES_DIR", "figures"), ("E2P_REPORTS_DIR", "reports")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("E2P_ALPACA_PATH", str(alpaca_5000_path))
    return tmp_path
