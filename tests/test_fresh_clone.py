"""A fresh clone with nothing beside it tests on its own: no ../shared, no E2P_ALPACA_PATH.

The committed repository is cloned into a temporary folder (so `../shared` is absent there) and pytest runs in the
clone, on the clone's own code: the whole suite must collect, and the data-layer and notebook-structure tests that
read Alpaca rows must pass on the project's fixture, tests/fixtures/instructions.json.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from e2p_lib.config import PROJECT_ROOT

# Tests that read Alpaca rows through conftest.alpaca_path, and cheap structural ones, run in the clone.
FIXTURE_TESTS = [
    "tests/test_data.py::test_real_subset_loads_with_sensible_counts",
    "tests/test_data.py::test_real_subset_split_fractions",
    "tests/test_notebooks.py",
    "tests/test_tracking.py",
]


@pytest.mark.slow  # a clone and two pytest runs that import torch: about a minute
@pytest.mark.timeout(900)
def test_a_clone_without_shared_collects_and_passes_on_the_fixture(tmp_path):
    clone = tmp_path / "e2p"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True, timeout=120)
    assert not (clone.parent / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k != "E2P_ALPACA_PATH"}
    env.update(
        PYTHONPATH=str(clone),
        E2P_DATA_DIR=str(tmp_path / "data"),
        E2P_FIGURES_DIR=str(tmp_path / "figures"),
        E2P_REPORTS_DIR=str(tmp_path / "reports"),
    )
    # SmolLM2's converted weights are a 40 s rebuild per data folder; the clone's tests here do not load it.

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=600)

    where = run(
        "-c",
        "import e2p_lib, sys; sys.path.insert(0, 'tests'); import conftest; "
        "print(e2p_lib.__file__); print(conftest.resolve_alpaca_path())",
    )
    assert where.returncode == 0, where.stderr[-3000:]
    module, data = where.stdout.split()
    assert module.startswith(str(clone)), "the clone's tests must run the clone's code"
    assert data == str(clone / "tests" / "fixtures" / "instructions.json")

    collected = run("-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    summary = collected.stdout.strip().splitlines()[-1]  # "453 tests collected in 24.8s", or "... 1 error ..."
    assert re.fullmatch(r"\d+ tests collected in [\d.]+s", summary), summary

    done = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *FIXTURE_TESTS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout
