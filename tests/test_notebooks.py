"""The numbered notebooks run headless with papermill on the smoke profile, and write what the next one reads."""

from __future__ import annotations

import json

import nbformat
import pytest

from e2p_lib.embed import DEFAULT_LOCAL_MODEL
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.store import make_vector_store
from e2p_lib.run_notebooks import PROFILES, declared_parameters, notebook_paths, run_notebooks


def test_every_notebook_declares_the_parameters_its_profiles_set():
    for path in notebook_paths():
        for profile in PROFILES.values():
            assert set(profile.get(path.stem, {})) <= declared_parameters(path), (path.name, profile)
        nb = nbformat.read(path, as_version=4)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code_cells), f"{path.name} is committed with outputs"


def test_unknown_notebook_or_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="No notebook named \\['99_nothing'\\]"):
        notebook_paths(["99_nothing"])
    with pytest.raises(ValueError, match="Unknown profile 'huge'"):
        run_notebooks("huge")


@pytest.mark.slow
@pytest.mark.timeout(2400)  # five notebooks, each loading its models afresh: minutes, more on a busy machine
def test_smoke_profile_runs_every_notebook_headless(isolated_dirs):
    executed = run_notebooks("smoke")
    assert [p.stem for p in executed] == [p.stem for p in notebook_paths()]
    for path in executed:
        nb = json.loads(path.read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors[:1]}"
        assert path.with_suffix(".html").stat().st_size > 10_000
        figures = list((isolated_dirs / "figures").glob(f"{path.stem[:2]}_*.png"))
        assert figures and all(f.stat().st_size > 5_000 for f in figures), f"{path.name} saved no figure"

    # 01 left the cache that 02 (and later notebooks) read.
    dataset = load_embedded_dataset(model=f"local/{DEFAULT_LOCAL_MODEL}", dimensions=384,
                                    cache_dir=isolated_dirs / "data" / "embeddings")
    assert len(dataset) == PROFILES["smoke"]["01_embed"]["limit"]
    assert dataset.ids[0] == "alpaca-0"
    # 02 filled the store with every embedded row.
    store = make_vector_store("local", name="alpaca", dimensions=384, root=isolated_dirs / "data" / "vectorstores")
    assert store.count() == len(dataset)
