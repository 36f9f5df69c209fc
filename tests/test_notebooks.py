"""The numbered notebooks run headless with papermill on the smoke profile, and write what the next one reads."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import papermill
import pytest
from conftest import FIXTURE_ALPACA

from e2p_lib.data import add_split, load_alpaca
from e2p_lib.embed import DEFAULT_LOCAL_MODEL
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.metrics import load_results
from e2p_lib.evaluate.quality import load_clean_line
from e2p_lib.notebook import findings_markdown, method_findings, setup_notebook
from e2p_lib.run_notebooks import KERNEL_NAME, PROFILES, declared_parameters, notebook_paths, run_notebooks
from e2p_lib.store import make_vector_store

# Reprs that mean a cell ended on a value nobody meant to show (a path returned by a helper, a bare Figure object).
STRAY_REPRS = ("PosixPath(", "WindowsPath(", "<Figure size", "<matplotlib.")


def stray_outputs(nb: dict) -> list[str]:
    """The text/plain results of executed cells that are stray reprs."""
    texts = [
        "".join(o.get("data", {}).get("text/plain", ""))
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "execute_result"
    ]
    return [t for t in texts if t.startswith(STRAY_REPRS)]


def test_stray_output_check_catches_a_returned_path():
    cell = {"outputs": [{"output_type": "execute_result", "data": {"text/plain": "PosixPath('figures/01.png')"}}]}
    assert stray_outputs({"cells": [cell]}) == ["PosixPath('figures/01.png')"]
    assert stray_outputs({"cells": [{"outputs": [{"output_type": "stream", "text": "PosixPath("}]}]}) == []


@pytest.fixture
def e2p_logger_restored():
    """The e2p_lib logger as it was after the test (setup_notebook changes it for the whole process)."""
    import logging

    logger = logging.getLogger("e2p_lib")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def test_setup_notebook_logs_e2p_lib_once_at_info(capsys, e2p_logger_restored):
    import logging

    setup_notebook()
    setup_notebook()  # a rerun of the import cell must not print every line twice
    logging.getLogger("e2p_lib.data").info("loaded 3 rows")
    logging.getLogger("e2p_lib.data").debug("hidden")
    assert capsys.readouterr().err == "INFO e2p_lib.data: loaded 3 rows\n"


def test_method_findings_name_the_best_method_and_its_gaps():
    table = pd.DataFrame(
        {"mean_cosine": [0.66, 0.46, 0.07, 0.29]},
        index=["original prompt", "nearest neighbour", "generic prompt", "SFT best-of-4"],
    )
    lines = method_findings(table)
    assert lines[0] == "best method by mean_cosine: **SFT best-of-4** at 0.290 over 4 methods"
    assert lines[1] == "SFT best-of-4 is 0.370 behind the original prompt (0.660)"
    assert lines[2] == "SFT best-of-4 is 0.170 behind the nearest neighbour (0.460)"
    assert lines[3] == "the highest mean_cosine overall is the original prompt's (0.660)"
    # Without the baselines' rows the best method stands alone.
    assert method_findings(table.loc[["generic prompt", "SFT best-of-4"]]) == [
        "best method by mean_cosine: **SFT best-of-4** at 0.290 over 2 methods"
    ]
    with pytest.raises(KeyError, match="no column 'mean_answer'"):
        method_findings(table, score="mean_answer")
    assert findings_markdown("a 1", "b 2") == "**What this run shows**\n\n- a 1\n- b 2"


def test_every_notebook_uses_the_project_kernel_and_ends_with_its_findings():
    for path in notebook_paths():
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == KERNEL_NAME == "e2p", path.name
        assert nb.metadata["kernelspec"]["display_name"] == "Python (e2p)", path.name
        imports = next(c.source for c in nb.cells if c.cell_type == "code" and "import" in c.source)
        assert "setup_notebook(" in imports, f"{path.name} does not set up logging in its import cell"
        assert "show_findings(" in nb.cells[-1].source, f"{path.name} does not end with its findings"


def test_every_notebook_declares_the_parameters_its_profiles_set():
    for path in notebook_paths():
        for profile in PROFILES.values():
            assert set(profile.get(path.stem, {})) <= declared_parameters(path), (path.name, profile)
        # papermill skips a parameter line holding a second "=" (a "<=" in its comment too): --help-notebook then
        # leaves it out and every run warns "Passed unknown parameter".
        assert set(papermill.inspect_notebook(str(path))) == declared_parameters(path), path.name
        nb = nbformat.read(path, as_version=4)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code_cells), f"{path.name} is committed with outputs"


def test_unknown_notebook_or_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="No notebook named \\['99_nothing'\\]"):
        notebook_paths(["99_nothing"])
    with pytest.raises(ValueError, match="Unknown profile 'huge'"):
        run_notebooks("huge")


def test_the_fixture_feeds_the_smoke_profile_in_full():
    """A clone with nothing beside it runs the smoke notebooks on the fixture: the limit's rows, and every split the
    notebooks draw from holds what the profile asks of it."""
    smoke = PROFILES["smoke"]
    limit = smoke["01_embed"]["limit"]
    rows = load_alpaca(FIXTURE_ALPACA, download=False)
    assert len(rows) >= limit + 20, f"{len(rows)} clean rows in {FIXTURE_ALPACA.name}; the smoke profile embeds {limit}"
    split = add_split(rows.head(limit))["split"].value_counts()
    assert split["test"] >= smoke["05_eval"]["eval_targets"], split.to_dict()
    assert split["val"] >= smoke["04_rl"]["validation_targets"] + smoke["04_rl"]["choice_targets"], split.to_dict()
    assert split["train"] >= smoke["03_sft"]["train_rows"], split.to_dict()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # five notebooks, each loading its models afresh: minutes, more on a busy machine
def test_smoke_profile_runs_every_notebook_headless(isolated_dirs, alpaca_path):
    executed = run_notebooks("smoke")
    assert [p.stem for p in executed] == [p.stem for p in notebook_paths()]
    for path in executed:
        nb = json.loads(path.read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors[:1]}"
        assert path.with_suffix(".html").stat().st_size > 10_000
        figures = list((isolated_dirs / "figures").glob(f"{path.stem[:2]}_*.png"))
        assert figures and all(f.stat().st_size > 5_000 for f in figures), f"{path.name} saved no figure"
        stray = stray_outputs(nb)
        assert not stray, f"{path.name} shows stray reprs: {stray[:3]}"
        last = nb["cells"][-1]["outputs"]
        assert [o["output_type"] for o in last] == ["display_data"], f"{path.name} ends with {last}"
        findings = "".join(last[0]["data"]["text/markdown"])
        assert findings.startswith("**What this run shows**") and any(ch.isdigit() for ch in findings), path.name

    # 01 left the cache that 02 (and later notebooks) read.
    dataset = load_embedded_dataset(
        model=f"local/{DEFAULT_LOCAL_MODEL}", dimensions=384, cache_dir=isolated_dirs / "data" / "embeddings"
    )
    # the limit's rows, or every clean row of a smaller file (the fixture, in a clone with nothing beside it)
    clean_rows = len(load_alpaca(alpaca_path, download=False))
    assert len(dataset) == min(PROFILES["smoke"]["01_embed"]["limit"], clean_rows)
    assert dataset.ids[0] == "alpaca-0"
    # 02 filled the store with every embedded row.
    store = make_vector_store("local", name="alpaca", dimensions=384, root=isolated_dirs / "data" / "vectorstores")
    assert store.count() == len(dataset)
    # 02 recorded the clean line, and 05 kept every clean row under it, with the pasting track apart
    line = load_clean_line(isolated_dirs / "data")
    assert line is not None and 0 <= line.max_copied_share <= 1
    table = load_results(isolated_dirs / "reports" / "05_eval_results.csv")
    calls = table["eval_env_calls_per_target"]
    assert calls["e2p, 1 call"] == 1 and 1 <= calls["e2p, ≤8 calls"] <= 8, calls.to_dict()
    assert 1 <= calls["e2p, ≤8 calls, without the policy"] <= 8 and calls["pasting track: grounded, ≤8 calls"] <= 8
    for row in ("e2p, 1 call", "e2p, ≤8 calls", "e2p, ≤8 calls, without the policy"):
        assert table.loc[row, "copied_share"] <= line.max_copied_share + 1e-9, (row, table.loc[row, "copied_share"])
    assert {"SFT, 1 call", "PPO, 1 call", "RLOO, 1 call", "expert iteration, 1 call"} <= set(table.index)
    comparisons = load_results(isolated_dirs / "reports" / "05_comparisons.csv")
    assert ("e2p, ≤8 calls", "e2p, ≤8 calls, without the policy") in set(
        zip(comparisons.index, comparisons["baseline"])
    )
    per_target = pd.read_csv(isolated_dirs / "reports" / "05_eval_per_target.csv")
    assert set(per_target["method"]) == set(table.index) and per_target["copied_share"].between(0, 1).all()
    own = load_results(isolated_dirs / "reports" / "05_own_targets_results.csv")
    assert own.loc["e2p, ≤8 calls", "copied_share"] <= line.max_copied_share + 1e-9  # against the text too
    assert (
        own["median_perplexity"].gt(0).all()
        and own.loc["e2p, ≤8 calls", "baseline"] == "e2p, ≤8 calls, without the policy"
    )
    # ... and drew e2p's clean search on the budget curve, within each budget, with its copied share.
    curve = load_results(isolated_dirs / "reports" / "05_budget_curve.csv")
    e2p_curve = curve[curve["method"] == "e2p"]
    assert sorted(e2p_curve["budget"]) == [1, 2] and (e2p_curve["max_calls"] <= e2p_curve["budget"]).all(), curve
    assert curve["copied_share"].between(0, 1).all(), curve  # retrieval's prompts are measured too
    # `e2p results` writes the README's sections from these reports
    from e2p_lib.evaluate.readme import SECTIONS

    assert all(section(isolated_dirs / "reports") for section in SECTIONS.values())


def test_05_searches_with_searchconfig_s_defaults_and_declares_none_of_its_fields():
    """The method 05 reports is `SearchConfig()`: its parameters change it only through `search_options` (empty by
    default), never by a parameter of their own that could disagree with the CLI's `e2p invert`."""
    import ast
    from dataclasses import fields

    from e2p_lib.inversion import SearchConfig

    path = next(p for p in notebook_paths() if p.stem == "05_eval")
    declared = declared_parameters(path)
    assert not declared & {f.name for f in fields(SearchConfig)}, declared & {f.name for f in fields(SearchConfig)}
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    values = {t.id: n.value for n in ast.parse(cell.source).body if isinstance(n, ast.Assign) for t in n.targets}
    assert ast.literal_eval(values["search_options"]) == {}
    for profile in PROFILES.values():  # a profile may change the search only through SearchConfig's own fields
        SearchConfig(**profile.get("05_eval", {}).get("search_options", {}))
