"""Shared pytest fixtures. Keep each one small and documented; append new ones below."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from e2p_lib.config import PROJECT_ROOT

ALPACA_5000_SHA256 = "fc1add24c93c9fbbe585a64a6c9bf6165eb110225f4470efbff382a913558ec0"
# The real 5,000-row Alpaca subset, beside the clone on the project's machines and in CI (never copied into the repo).
SHARED_ALPACA_5000 = PROJECT_ROOT.parent / "shared" / "data" / "alpaca_5000.json"
# 235 instruction/output pairs written for this project (1 empty and 1 repeated output, 32 with an input), so a
# fresh clone with nothing beside it tests on its own: its 233 clean rows cover the smoke profile's 200.
FIXTURE_ALPACA = PROJECT_ROOT / "tests" / "fixtures" / "instructions.json"


def resolve_alpaca_path(shared: Path = SHARED_ALPACA_5000) -> Path:
    """The Alpaca file the tests read: the shared subset when present (checked by sha256), else the fixture."""
    if not shared.is_file():
        return FIXTURE_ALPACA
    actual = hashlib.sha256(shared.read_bytes()).hexdigest()
    if actual != ALPACA_5000_SHA256:
        raise ValueError(
            f"{shared} has sha256 {actual}, expected {ALPACA_5000_SHA256}: the shared subset changed. "
            f"Restore it, or move it away to test on {FIXTURE_ALPACA.name}."
        )
    return shared


@pytest.fixture(scope="session")
def alpaca_path() -> Path:
    """Alpaca-format rows for tests: the real 5,000-row subset in ../shared, else tests/fixtures/instructions.json."""
    return resolve_alpaca_path()


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's real tokenizer (chat template included), from the converted cache; tiny test models share it."""
    from e2p_lib.lm.smollm import load_smollm2

    return load_smollm2(device="cpu")[1]


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch, alpaca_path):
    """Every artefact folder under tmp_path (a notebook kernel inherits the environment), the data at `alpaca_path`."""
    for var, sub in (("E2P_DATA_DIR", "data"), ("E2P_FIGURES_DIR", "figures"), ("E2P_REPORTS_DIR", "reports")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("E2P_ALPACA_PATH", str(alpaca_path))
    return tmp_path
