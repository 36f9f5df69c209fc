"""Run the numbered notebooks headless with papermill, into executed copies and HTML renders under `reports/`.

    python -m e2p_lib.run_notebooks                    # the demo profile: all notebooks, offline defaults
    python -m e2p_lib.run_notebooks --profile smoke    # tiny sizes, minutes (what the test suite runs)
    python -m e2p_lib.run_notebooks --only 01_embed -p limit=500

Each notebook reads the previous one's outputs from disk, so one can be rerun alone. A profile is a set of
parameter overrides per notebook, injected by papermill after the notebook's `parameters` cell; `-p key=value`
overrides (a YAML/JSON literal: numbers, true/false, null, strings) apply to every notebook that declares `key`;
a key that no selected notebook declares is refused before anything runs (a typo would otherwise be dropped).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
from pathlib import Path

from e2p_lib import config

NOTEBOOKS_DIR = config.PROJECT_ROOT / "notebooks"
# The Jupyter kernel the notebooks declare and papermill runs: .venv's python, registered by `make setup`.
KERNEL_NAME = "e2p"
RUN_FILE = "run.json"  # per notebook: commit, date, minutes of the last run into a reports folder

# The target space of the full profile: what 01 embeds with and every later notebook reads.
_OPENAI_SPACE = {"embedding_model": "openai/text-embedding-3-small", "embedding_dimensions": 1024}

# Parameter overrides per profile and notebook. Unlisted parameters keep the notebook's own defaults, which are
# the offline defaults (local MiniLM embedder, on-disk store, local SmolLM2).
PROFILES: dict[str, dict[str, dict]] = {
    # What CI runs inside the test suite: small enough for minutes on 2 cores.
    "smoke": {
        "01_embed": {"limit": 200},
        "02_pinecone": {"answer_index_rows": 48, "answer_tokens": 16},
        "03_sft": {
            "train_rows": 64,
            "forward_kinds": ["mlp"],
            "policy_max_steps": 3,
            "policy_batch_size": 8,
            "validation_examples": 2,
            "hypotheses": 2,
            "answer_tokens": 16,
        },
        "04_rl": {
            "steps": 2,
            "targets_per_step": 2,
            "samples_per_target": 2,
            "answer_tokens": 16,
            "validation_targets": 2,
            "choice_targets": 2,
            "ei_targets": 2,
            "ei_budget": 2,
            "ei_steps": 1,
        },
        "05_eval": {
            "eval_targets": 4,
            "search_options": {"samples": 2, "answer_tokens": 16},
            "examples": 2,
            "budgets": [1, 2],
            "budget_targets": 2,
            "own_targets_limit": 3,
        },
    },
    # The default: the whole 5,000-row subset (or the 52,002 rows where downloaded) on 2 cores.
    "demo": {},
    # A GPU box with OPENAI_API_KEY and PINECONE_API_KEY: OpenAI embeddings at 1,024 dimensions on all 52,002 rows,
    # Pinecone for the store, the GPU presets and bigger training and evaluation. The environment stays the local
    # SmolLM2 (fast on a GPU); -p environment=openai -p environment_model=... moves it to a chat endpoint.
    "full": {
        "01_embed": {"backend": "openai", "dimensions": 1024},
        "02_pinecone": {"backend": "pinecone", **_OPENAI_SPACE},  # the answer index: all train prompts
        "03_sft": {
            **_OPENAI_SPACE,
            "forward_preset": "gpu",
            "finetune": "full",  # all weights rather than LoRA (docs/experiments.md#policy-fine-tuning-mode)
            "policy_batch_size": 32,
            "policy_max_steps": None,
            "policy_epochs": 1,
            "store_backend": "pinecone",
        },
        "04_rl": {
            **_OPENAI_SPACE,
            "steps": 200,
            "targets_per_step": 16,
            "samples_per_target": 8,
            "store_backend": "pinecone",
            "ei_targets": 800,
            "ei_budget": 16,
        },
        "05_eval": {
            **_OPENAI_SPACE,
            "store_backend": "pinecone",
            "eval_targets": 1000,
            "search_options": {"samples": 16},
            "budget_targets": 200,
        },
    },
}


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order (`only` filters by stem, e.g. ["01_embed"])."""
    paths = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = sorted(set(only) - {p.stem for p in paths})
        if unknown:
            raise ValueError(f"No notebook named {unknown}; have {[p.stem for p in paths]}.")
        paths = [p for p in paths if p.stem in only]
    return paths


def declared_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's `parameters` cell."""
    import ast

    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return {
                t.id
                for node in tree.body
                if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name)
            }
    raise ValueError(f"{path.name} has no cell tagged 'parameters'; papermill needs one.")


def check_overrides(overrides: dict, declared: dict[str, set[str]]) -> None:
    """Refuse an override that no selected notebook declares (`declared`: stem -> its parameters): papermill would
    drop it without a word, so a typo like `limt=50` would run with the default limit."""
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(overrides) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"No selected notebook ({', '.join(declared)}) declares the parameter {', '.join(hints)}. Each notebook's "
            "`parameters` cell lists what it takes (`papermill --help-notebook notebooks/<name>.ipynb`); fix the "
            "name, or select the notebook that declares it with --only."
        )


def check_kernel(name: str = KERNEL_NAME) -> None:
    """Fail early, naming the fix, when the Jupyter kernel `name` is not registered (papermill's error is vaguer)."""
    from jupyter_client.kernelspec import KernelSpecManager

    if name not in KernelSpecManager().find_kernel_specs():
        raise RuntimeError(
            f"No Jupyter kernel named {name!r}. Register the project's: `make setup`, or "
            f"`python -m ipykernel install --sys-prefix --name {name} --display-name 'Python (e2p)'`."
        )


def render_html(executed: Path) -> Path:
    """An HTML copy of an executed notebook, for sharing without Jupyter."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def absolute_path_variables() -> dict[str, str]:
    """Make each relative path in `config.PATH_VARIABLES` absolute from where the command runs, and return what
    changed: the kernels run in notebooks/, where `E2P_DATA_DIR=data` would name (and fill) another, empty folder."""
    changed = {}
    for name in config.PATH_VARIABLES:
        value = os.environ.get(name)
        if value and not Path(value).expanduser().is_absolute():
            changed[name] = os.environ[name] = str(Path(value).expanduser().resolve())
    return changed


def run_notebooks(
    profile: str = "demo",
    only: list[str] | None = None,
    overrides: dict | None = None,
    reports_dir: str | Path | None = None,
    kernel_name: str = KERNEL_NAME,
) -> list[Path]:
    """Execute the notebooks in order; return the executed copies. Stops at the first failing notebook.

    Raises:
        ValueError: an unknown profile, or an override no selected notebook declares (before anything runs).
    """
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; choose one of {sorted(PROFILES)}.")
    overrides = overrides or {}
    paths = notebook_paths(only)
    declared = {path.stem: declared_parameters(path) for path in paths}
    check_overrides(overrides, declared)
    for path in paths:
        undeclared = sorted(set(PROFILES[profile].get(path.stem, {})) - declared[path.stem])
        if undeclared:
            raise ValueError(f"Profile {profile!r} sets {undeclared} that {path.name} does not declare.")
    import papermill

    check_kernel(kernel_name)
    absolute_path_variables()
    out_dir = Path(reports_dir or config.reports_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = []
    for path in paths:
        params = {
            **PROFILES[profile].get(path.stem, {}),
            **{k: v for k, v in overrides.items() if k in declared[path.stem]},
        }
        target = out_dir / path.name
        started, cpu = time.perf_counter(), _children_cpu_seconds()
        print(f"[e2p] {path.name} ({profile}) {json.dumps(params)} -> {target}", flush=True)
        papermill.execute_notebook(
            str(path),
            str(target),
            parameters=params,
            cwd=str(NOTEBOOKS_DIR),
            kernel_name=kernel_name,
            progress_bar=sys.stderr.isatty(),
        )
        render_html(target)
        record_run(out_dir, path.stem, profile, params, time.perf_counter() - started, _children_cpu_seconds() - cpu)
        executed.append(target)
    return executed


def _children_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the kernels papermill started and stopped)."""
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def git_commit() -> tuple[str | None, bool]:
    """(the checkout's commit, whether tracked files differ from it); (None, False) outside a git checkout."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=config.PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout

    try:
        return git("rev-parse", "--short=7", "HEAD").strip(), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None, False


def record_run(folder: Path, stem: str, profile: str, params: dict, seconds: float, cpu_seconds: float) -> Path:
    """Add one notebook's run to `<folder>/run.json` (commit, date, profile, minutes), keeping the other notebooks'
    entries: `e2p results` writes the README's table and minutes from it, so the README names the run it shows."""
    import datetime
    import platform

    from e2p_lib.atomic import write_atomically

    path = folder / RUN_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:  # a damaged record must not fail a finished notebook: its entries are rewritten as they run
        print(f"[e2p] {path} was not valid JSON: starting it again", file=sys.stderr)
        record = {}
    commit, dirty = git_commit()
    record.setdefault("notebooks", {})[stem] = {
        "profile": profile,
        "parameters": params,
        "commit": commit,
        "uncommitted_changes": dirty,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "minutes": round(seconds / 60, 2),
        "cpu_minutes": round(cpu_seconds / 60, 2),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
    }
    write_atomically(path, (json.dumps(record, indent=2, default=str) + "\n").encode("utf-8"))
    return path


def _parse_override(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"Override {text!r} is not key=value.")
    return key, yaml.safe_load(value)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    parser.add_argument("--only", nargs="*", help="notebook stems to run, e.g. 01_embed")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        type=_parse_override,
        default=[],
        help="key=value parameter override (repeatable)",
    )
    parser.add_argument("--reports-dir", default=None)
    args = parser.parse_args(argv)
    done = run_notebooks(args.profile, args.only, dict(args.param), args.reports_dir)
    print(f"[e2p] {len(done)} notebook(s) executed into {Path(done[0]).parent if done else '-'}")


if __name__ == "__main__":
    main()
