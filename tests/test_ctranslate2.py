"""The CTranslate2 environment: atomic conversion, answers equal to transformers in float32, greedy answers that do
not depend on batch mates (float32 without the anchor row, int8 with it), seeded samples, and answer-cache keys that
keep the engines apart.

The real-model tests convert SmolLM2 once per session into a temporary folder (~25 s) and keep answers to a few
tokens on one thread: the machine's 2 cores are shared with other jobs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from e2p_lib.devices import torch_threads
from e2p_lib.lm import DEFAULT_ENGINE, ENGINES, LocalChatLM, make_lm
from e2p_lib.lm import ctranslate2 as ct2
from e2p_lib.lm.cache import CachedLM

PROMPTS = [
    "Name a primary colour.",
    "What is 2 plus 2?",
    "Say hello in French.",
    "Give one word that rhymes with cat, and explain why it rhymes.",
]  # different lengths: real padding


# --- conversion ------------------------------------------------------------------------------------------------------


class FakeConverter:
    """Stands in for CTranslate2's converter in the atomicity tests: writes `files`, then raises if told to."""

    def __init__(self, files, fail: bool):
        self.files, self.fail = files, fail

    def __call__(self, source):
        return self

    def convert(self, out, force=False):
        for name in self.files:
            (Path(out) / name).write_text("x")
        if self.fail:
            raise KeyboardInterrupt("killed half-way")


def fake_ctranslate2(monkeypatch, files, fail):
    module = types.SimpleNamespace(converters=types.SimpleNamespace(TransformersConverter=FakeConverter(files, fail)))
    monkeypatch.setattr(ct2, "_ctranslate2", lambda: module)
    monkeypatch.setattr("e2p_lib.lm.smollm.smollm2_path", lambda model_dir=None: Path("/unused"))


def test_a_killed_conversion_leaves_nothing_that_loads_and_is_redone(tmp_path, monkeypatch):
    target = tmp_path / "models" / "ct2"
    fake_ctranslate2(monkeypatch, ["config.json", "model.bin"], fail=True)
    with pytest.raises(KeyboardInterrupt):
        ct2.ct2_model_path(target)
    assert not target.exists() and list(target.parent.iterdir()) == [], "no target, no staging folder left"

    target.mkdir()  # a half-written folder made some other way is converted again, not loaded
    (target / "config.json").write_text("{}")
    fake_ctranslate2(monkeypatch, ct2.CT2_FILES, fail=False)
    assert ct2.ct2_model_path(target) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(ct2.CT2_FILES)
    assert [p.name for p in target.parent.iterdir()] == ["ct2"]


def test_engine_choice_is_checked():
    assert DEFAULT_ENGINE == "ctranslate2" and DEFAULT_ENGINE in ENGINES
    with pytest.raises(ValueError, match="Unknown local engine 'vllm'"):
        make_lm("local", engine="vllm")
    with pytest.raises(ValueError, match="local backend only"):
        make_lm("openai", engine="ctranslate2")
    with pytest.raises(ValueError, match="compute_type='int4' is not one of"):
        ct2.CTranslate2ChatLM("int4")
    with pytest.raises(ValueError, match="workers=3 is more than num_threads=2"):
        ct2.CTranslate2ChatLM(num_threads=2, workers=3)


# --- the real model --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ct2_dir(tmp_path_factory) -> Path:
    from e2p_lib.lm.smollm import smollm2_path

    return ct2.ct2_model_path(tmp_path_factory.mktemp("ct2") / "smollm2-ct2", smollm2_path())


@pytest.fixture(scope="session")
def ct2_lms(ct2_dir):
    """float32 and int8 CTranslate2 environments on one thread, batch 4."""
    return {
        compute_type: ct2.CTranslate2ChatLM(
            compute_type, ct2_dir=ct2_dir, num_threads=1, batch_size=4, show_progress=False
        )
        for compute_type in ("float32", "int8")
    }


@pytest.mark.slow
def test_conversion_leaves_one_complete_folder(ct2_dir):
    assert all((ct2_dir / name).is_file() for name in ct2.CT2_FILES)
    assert [p.name for p in ct2_dir.parent.iterdir()] == [ct2_dir.name]


@pytest.mark.slow
def test_float32_greedy_answers_equal_transformers(ct2_lms):
    with torch_threads(1):
        transformers = LocalChatLM(device="cpu", batch_size=4, show_progress=False).generate(PROMPTS, 16)
    assert ct2_lms["float32"].generate(PROMPTS, 16) == transformers
    assert "Paris" in ct2_lms["int8"].generate(["What is the capital of France?"], 16)[0]


@pytest.mark.slow
@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_greedy_answers_do_not_depend_on_batch_mates(ct2_lms, compute_type):
    lm = ct2_lms[compute_type]
    assert lm.anchor_row == (compute_type == "int8"), "float32 runs without the anchor row (the module docstring)"
    batched = lm.generate(PROMPTS, max_new_tokens=24)
    one_by_one = [lm.generate([p], max_new_tokens=24)[0] for p in PROMPTS]
    backwards = PROMPTS[::-1]
    reversed_pairs = (lm.generate(backwards[:2], max_new_tokens=24) + lm.generate(backwards[2:], 24))[::-1]
    assert batched == one_by_one == reversed_pairs and len(set(batched)) == 4
    assert lm.tokens_generated > 0 and lm.prompts_generated >= 12


@pytest.mark.slow
@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_two_workers_give_one_workers_answers_in_the_callers_order(ct2_lms, ct2_dir, compute_type):
    """Batches answered two at a time (the 2-core default) come back in order, with the answers of one worker."""
    two = ct2.CTranslate2ChatLM(compute_type, ct2_dir=ct2_dir, num_threads=2, batch_size=2, show_progress=False)
    assert two.workers == 2, "on CPU one worker per thread by default"
    prompts = PROMPTS + PROMPTS[::-1][:3]  # 7 prompts: batches of 2, 2, 2 and 1, more than the queue holds
    batches = list(two._iter_generate(prompts, 12, 0.0, None))
    assert sorted(i for positions, _ in batches for i in positions) == list(range(len(prompts)))
    assert [len(positions) for positions, _ in batches] == [2, 2, 2, 1]
    assert two.generate(prompts, 12) == ct2_lms[compute_type].generate(prompts, 12)
    assert two.generate(PROMPTS[:2], 12) == ct2_lms[compute_type].generate(PROMPTS[:2], 12), "split in 2 batches of 1"


@pytest.mark.slow
def test_loading_single_threaded_workers_leaves_torchs_threads_alone(ct2_dir):
    """CTranslate2 sets the loading thread's OpenMP count to its `intra_threads`; torch shares it, and the policy's
    training after an environment was loaded ran on one core (docs/benchmarks.md#torch-threads). In a fresh
    interpreter, as a notebook kernel is, where torch reads its default count lazily, after the load."""

    def fresh(code: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        return done.stdout.split()

    default = fresh("import torch; print(torch.get_num_threads())")  # torch's own count, set lazily on first use
    loaded = fresh(
        "import torch; from e2p_lib.lm import ctranslate2 as ct2; "
        f"lm = ct2.CTranslate2ChatLM(ct2_dir={str(ct2_dir)!r}, num_threads=2, workers=2, show_progress=False); "
        "print(lm.workers, torch.get_num_threads())"
    )
    assert loaded == ["2", *default]


@pytest.mark.slow
def test_seeded_samples_repeat_whatever_the_batch_and_order(ct2_lms):
    lm = ct2_lms["int8"]
    first = lm.generate(PROMPTS[:3], max_new_tokens=10, temperature=1.0, seed=3)
    again = [lm.generate([p], max_new_tokens=10, temperature=1.0, seed=3)[0] for p in PROMPTS[:3][::-1]][::-1]
    assert first == again
    assert lm.generate(PROMPTS[:3], max_new_tokens=10, temperature=1.0, seed=[4, 5, 6]) != first


@pytest.mark.slow
def test_cache_keys_differ_by_engine_and_compute_type(ct2_lms, tmp_path):
    float32, int8 = (CachedLM(ct2_lms[c], tmp_path) for c in ("float32", "int8"))
    assert float32.cache.path == int8.cache.path, "one model, one answer file"
    before = ct2_lms["int8"].prompts_generated
    float32.generate(["Name a fruit."], max_new_tokens=6)
    int8.generate(["Name a fruit."], max_new_tokens=6)
    assert ct2_lms["int8"].prompts_generated - before == 1, "the float32 answer was not reused for int8"
    settings = [json.loads(s) for s in float32.cache.frame()["settings"]]
    assert sorted((s["engine"], s["compute_type"]) for s in settings) == [
        ("ctranslate2", "float32"),
        ("ctranslate2", "int8_float32"),
    ]
