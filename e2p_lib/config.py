"""Where e2p keeps its artefacts: every path is defined here once.

Artefacts flow one way (data -> embeddings -> store -> models -> reports) and are never edited by hand.
`E2P_DATA_DIR`, `E2P_FIGURES_DIR` and `E2P_REPORTS_DIR` move them elsewhere (tests point them at a temporary
folder). Secrets are read from the environment (or a git-ignored `.env`) by the component that needs them,
never stored in a config object, so they cannot leak into a saved config or a rendered report.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# A `.env` beside the README may hold OPENAI_API_KEY / PINECONE_API_KEY; real environment variables win.
load_dotenv(PROJECT_ROOT / ".env", override=False)


DATA_DIR_ENV, FIGURES_DIR_ENV, REPORTS_DIR_ENV = "E2P_DATA_DIR", "E2P_FIGURES_DIR", "E2P_REPORTS_DIR"
ALPACA_PATH_ENV = "E2P_ALPACA_PATH"  # the dataset file to read instead of downloading (e2p_lib.data)
# Every path a user may set in the environment (run_notebooks makes them absolute: its kernels run in notebooks/).
PATH_VARIABLES = (DATA_DIR_ENV, FIGURES_DIR_ENV, REPORTS_DIR_ENV, ALPACA_PATH_ENV)


POLICY_FOLDER = "policy"  # a training run's saved policy, inside its run folder (policy-sft/policy, ...)
POLICY_CONFIG_FILE = "policy_config.json"  # written last by PromptPolicy.save: its presence means a complete policy


def _dir(env_var: str, default: Path) -> Path:
    return Path(os.environ.get(env_var) or default).expanduser()


def data_dir() -> Path:
    """Caches and downloads (git-ignored)."""
    return _dir(DATA_DIR_ENV, PROJECT_ROOT / "data")


def figures_dir() -> Path:
    """Plots written by the notebooks."""
    return _dir(FIGURES_DIR_ENV, PROJECT_ROOT / "figures")


def reports_dir() -> Path:
    """Executed notebooks and their HTML renders."""
    return _dir(REPORTS_DIR_ENV, PROJECT_ROOT / "reports")


def embeddings_dir() -> Path:
    """Embedding caches, one file per (model, dimensions)."""
    return data_dir() / "embeddings"


def models_dir() -> Path:
    """Trained models and their checkpoints."""
    return data_dir() / "models"
