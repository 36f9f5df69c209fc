"""The README is a user guide: at most 400 lines, its quick start within the first 100, and that quick start's
Python runs as written on the tiny fixture models in a data folder laid out as `make run` leaves it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_cli import MINILM_DIMS, cli_dirs  # noqa: F401 (fixture)
from test_invert import EchoLM

from e2p_lib.config import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
OUTPUTS = {
    "Drink plenty of water every day and get eight hours of sleep.": "Give me two health tips.",
    "Walking every day keeps your heart strong.": "Why should I walk?",
    "Paris is the capital of France.": "What is the capital of France?",
    "A haiku: rain on the roof, the night listens.": "Write a haiku about rain.",
}


def quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart:start -->\n```python\n(.*?)```\n<!-- quickstart:end -->", text, re.S)
    assert block, "README.md has no python block between the quickstart markers"
    return block.group(1)


def test_the_readme_is_a_guide_of_at_most_400_lines_with_the_quick_start_first():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 400, len(lines)
    first = next(i for i, line in enumerate(lines) if "quickstart:start" in line)
    assert first < 100, f"the quick start begins at line {first + 1}"
    assert "make run" in "\n".join(lines[:40]) and "make test" in "\n".join(lines[:40])


@pytest.mark.slow  # MiniLM embeds the outputs and the targets
def test_the_quick_start_runs_as_written(cli_dirs, smollm2_tokenizer):  # noqa: F811
    import torch
    from tiny import tiny_policy

    from e2p_lib.answer_index import build_answer_index
    from e2p_lib.embed import make_embedder
    from e2p_lib.evaluate.quality import clean_line, save_clean_line
    from e2p_lib.inversion.api import default_inverter
    from e2p_lib.store import make_vector_store

    torch.manual_seed(0)
    policy = tiny_policy(smollm2_tokenizer, embedding_dim=MINILM_DIMS)
    policy.config.hypotheses = 2
    policy.save(cli_dirs / "models" / "policy-sft" / "policy")
    embedder = make_embedder("local")
    ids = [f"alpaca-{i}" for i in range(len(OUTPUTS))]
    store = make_vector_store("local", name="alpaca", dimensions=MINILM_DIMS, embedder=embedder.name)
    store.upsert(ids, embedder.embed(list(OUTPUTS)), [{"prompt": p, "output": o} for o, p in OUTPUTS.items()])
    build_answer_index(store, EchoLM(), embedder, ids, list(OUTPUTS.values()))
    save_clean_line(clean_line([0.0, 0.2], neighbours=8, store="alpaca"), cli_dirs)
    default_inverter.cache_clear()
    try:
        scope: dict = {}
        exec(quick_start(), scope)  # noqa: S102 (the README's own code)
    finally:
        default_inverter.cache_clear()
    result, one_call, frame = scope["result"], scope["one_call"], scope["frame"]
    assert result.prompt and 1 <= result.environment_calls <= 8 and np.isfinite(result.achieved_cosine)
    assert result.copied_share <= 0.2 and result.answer == f"Answer to: {result.prompt}"
    assert [r.environment_calls for r in one_call] == [1] and list(frame["prompt"]) == [one_call[0].prompt]
