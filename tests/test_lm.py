"""The environment LMs: input checks, per-prompt sampling, the answer cache, OpenAIChatLM against the local
OpenAI-wire server (real SDK, real HTTP), and SmolLM2 itself (real weights, marked slow: the GGUF is converted once
per session into a temporary folder, and answers are kept to a few tokens)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from openai_server import LocalOpenAIServer, expected_chat_answer

from e2p_lib.devices import torch_threads
from e2p_lib.lm import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SYSTEM_PROMPT,
    ChatLM,
    check_generation_args,
    check_prompts,
    make_lm,
    make_prompt_sampler,
    prompt_seed,
)
from e2p_lib.lm.cache import AnswerCache, CachedLM, answer_cache_path, answer_key, generation_params
from e2p_lib.lm.openai import GenerationRunError, OpenAIChatLM
from e2p_lib.sqlite_store import write_transaction

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-" + "test-0123456789abcdefSECRET"  # a dummy, split so the secret scan of the repo does not flag it
FAST_BACKOFF_SECONDS = 0.01  # the server's 500s are instantaneous; real runs back off from 1 s


# --- input checks ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [[""], ["ok", "   "], ["ok", None], [3]])
def test_bad_prompts_are_refused_naming_their_position(bad):
    with pytest.raises(ValueError, match=r"not non-empty strings \(" + str(len(bad) - 1) + ":"):
        check_prompts(bad)


def test_a_single_string_is_refused():
    with pytest.raises(TypeError, match="wrap it as"):
        check_prompts("What is the capital of France?")


@pytest.mark.parametrize("max_new_tokens", [0, -3, 1.5, True, None])
def test_max_new_tokens_must_be_a_positive_integer(max_new_tokens):
    with pytest.raises(ValueError, match=f"max_new_tokens={max_new_tokens!r} must be a positive integer"):
        check_generation_args(1, max_new_tokens, 0.0, 0)


@pytest.mark.parametrize("temperature", [-0.1, float("nan"), float("inf"), "0.7"])
def test_temperature_must_be_finite_and_non_negative(temperature):
    with pytest.raises(ValueError, match="temperature=.* must be a finite number >= 0"):
        check_generation_args(1, 8, temperature, 0)


def test_seeds_are_one_int_or_one_per_prompt():
    assert check_generation_args(3, 8, 0.5, 7) == [7, 7, 7]
    assert check_generation_args(2, 8, 0.5, np.array([4, 5])) == [4, 5]
    with pytest.raises(ValueError, match="Got 1 seeds for 2 prompts"):
        check_generation_args(2, 8, 0.5, [1])
    with pytest.raises(TypeError, match="position 1 is 2.5"):
        check_generation_args(2, 8, 0.5, [1, 2.5])
    with pytest.raises(TypeError, match="must be an int"):
        check_generation_args(2, 8, 0.5, "12")


def test_prompt_seed_depends_on_seed_and_prompt_only():
    assert prompt_seed(0, "a") == prompt_seed(0, "a")
    assert len({prompt_seed(0, "a"), prompt_seed(1, "a"), prompt_seed(0, "b")}) == 3


# --- sampling: one random stream per prompt --------------------------------------------------------------------------


def _draw(sampler, log_probs, steps: int) -> np.ndarray:
    """Tokens the sampler forces over `steps` steps for rows of `log_probs` (batch, vocab): (batch, steps)."""
    tokens = []
    for _ in range(steps):
        forced = sampler(None, log_probs.clone())
        assert torch.all((forced == 0).sum(dim=1) == 1), "exactly one token per row is left possible"
        tokens.append(forced.argmax(dim=1).numpy())
    return np.stack(tokens, axis=1)


def test_a_prompts_samples_do_not_depend_on_its_batch_mates():
    row = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0]))
    other = torch.log(torch.tensor([0.7, 0.1, 0.1, 0.05, 0.05]))
    alone = _draw(make_prompt_sampler([11]), row[None], steps=50)
    in_batch = _draw(make_prompt_sampler([5, 11, 9]), torch.stack([other, row, other]), steps=50)
    np.testing.assert_array_equal(alone[0], in_batch[1])
    assert not np.array_equal(in_batch[0], in_batch[1]), "two streams are not the same stream"


def test_samples_follow_the_distribution_and_never_pick_a_zero_probability_token():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    draws = _draw(make_prompt_sampler([3]), torch.log(probs)[None], steps=4000)[0]
    frequencies = np.bincount(draws, minlength=5) / len(draws)
    assert frequencies[4] == 0
    np.testing.assert_allclose(frequencies, probs.numpy(), atol=0.03)  # 4,000 draws: standard error <= 0.008


# --- the answer cache ------------------------------------------------------------------------------------------------


def test_the_key_covers_model_settings_prompt_and_parameters_and_greedy_ignores_the_seed():
    base = ("local/m", {"system_prompt": None}, "hi", generation_params(16, 0.7, 1))
    variants = [
        ("local/other", *base[1:]),
        (base[0], {"system_prompt": "Be brief."}, *base[2:]),
        (*base[:2], "hi!", base[3]),
        (*base[:3], generation_params(17, 0.7, 1)),
        (*base[:3], generation_params(16, 0.8, 1)),
        (*base[:3], generation_params(16, 0.7, 2)),
    ]
    keys = {answer_key(*base)} | {answer_key(*v) for v in variants}
    assert len(keys) == 1 + len(variants)
    assert answer_key(*base[:3], generation_params(16, 0, 1)) == answer_key(*base[:3], generation_params(16, 0.0, 99))


def test_cache_keeps_the_first_answer_and_rolls_back_a_failed_batch(tmp_path):
    row = ("k1", "first", "m", {}, "p", {})
    with AnswerCache(tmp_path / "a.sqlite") as cache:
        cache.put([row])
        cache.put([("k1", "second", "m", {}, "p", {}), ("k2", "two", "m", {}, "p", {})])
        with pytest.raises(RuntimeError):
            with write_transaction(cache._db) as db:
                db.execute("INSERT INTO answers VALUES ('k3', 'x', 'm', '{}', 'p', '{}', 0)")
                raise RuntimeError("crash mid-batch")
        assert cache.get(["k1", "k2", "k3"]) == {"k1": "first", "k2": "two"}
        assert cache.frame()["key"].tolist() == ["k1", "k2"]


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    from e2p_lib.lm.cache import AnswerCache

    path, start = sys.argv[1], int(sys.argv[2])
    with AnswerCache(path) as cache:  # keys start..start+199 in batches of 20; the answer is a function of the key
        for batch in range(start, start + 200, 20):
            cache.put([(f"k{j}", f"answer {j}", "m", {}, f"p{j}", {}) for j in range(batch, batch + 20)])
""")


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    AnswerCache(path).close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, path, str(start)], env=env) for start in (0, 100, 150)
    ]  # overlapping key ranges, three processes at once
    assert [writer.wait(120) for writer in writers] == [0, 0, 0]
    with AnswerCache(path) as cache:
        assert len(cache) == 350
        assert cache.get([f"k{j}" for j in range(350)]) == {f"k{j}": f"answer {j}" for j in range(350)}


def test_cached_lm_refuses_what_is_not_an_lm(tmp_path):
    with pytest.raises(TypeError, match="CachedLM wraps a ChatLM"):
        CachedLM(object(), tmp_path)


# --- OpenAIChatLM against the local server ---------------------------------------------------------------------------


@pytest.fixture
def server():
    with LocalOpenAIServer(api_key=KEY) as running:
        yield running


def make_openai(server: LocalOpenAIServer, **overrides) -> OpenAIChatLM:
    settings = dict(
        base_url=server.base_url,
        api_key=KEY,
        requests_per_minute=None,
        tokens_per_minute=None,
        max_concurrency=4,
        initial_backoff_seconds=FAST_BACKOFF_SECONDS,
        verbose=False,
    )
    return OpenAIChatLM(**(settings | overrides))


def prompts_of(n: int) -> list[str]:
    return [f"question {i} about " + "things " * (i % 5) for i in range(n)]


def expected_answers(
    prompts,
    system_prompt=DEFAULT_SYSTEM_PROMPT,
    max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
    temperature=0.0,
    seeds=None,
    model="gpt-4o-mini",
):
    seeds = seeds if seeds is not None else [0] * len(prompts)
    out = []
    for prompt, seed in zip(prompts, seeds):
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt is not None else []) + [
            {"role": "user", "content": prompt}
        ]
        out.append(expected_chat_answer(messages, model, max_new_tokens, temperature, 1.0, seed)[0].strip())
    return out


@pytest.mark.openai
def test_answers_come_back_in_input_order_despite_429s_and_500s():
    prompts = prompts_of(40)
    # The server allows a quarter of what the client believes, and fails a quarter of the requests it admits (its
    # seeded draws: with 40+ requests, P(no 500) ~ 1e-5; with 10 attempts, P(a prompt fails 10 times) ~ 1e-6).
    with LocalOpenAIServer(api_key=KEY, tokens_per_minute=120_000, burst_seconds=0.2, failure_fraction=0.25) as server:
        lm = make_openai(server, tokens_per_minute=480_000, burst_seconds=0.2, max_attempts=10)
        answers = lm.generate(prompts, max_new_tokens=20)
        assert server.count(429) > 0 and server.count(500) > 0
        assert lm.last_status.requests_succeeded == server.count(200) == 40
    assert answers == expected_answers(prompts, max_new_tokens=20)


@pytest.mark.openai
def test_system_prompt_max_tokens_temperature_and_seed_reach_the_server(server):
    prompts = ["one two three four five six seven eight nine ten"] * 2 + ["alpha beta"]
    lm = make_openai(server, system_prompt="Be brief.")
    seeds = [1, 2, 1]
    sampled = lm.generate(prompts, max_new_tokens=16, temperature=0.7, seed=seeds)
    assert sampled == expected_answers(prompts, "Be brief.", 16, 0.7, seeds)
    assert sampled[0] != sampled[1], "another seed, another sample"
    assert sampled[0].startswith("[Be brief.] (sample ") and "one" not in sampled[0], "cut at 16 tokens"
    assert sampled[2].endswith("beta alpha"), "short answers are whole"
    greedy_whole = "[Be brief.] ten nine eight seven six five four three two one"
    assert lm.generate(prompts[:1], max_new_tokens=16) == [greedy_whole]


@pytest.mark.openai
def test_nothing_to_answer_sends_nothing(server):
    assert make_openai(server).generate([]) == []
    assert server.records == []


@pytest.mark.openai
def test_bad_input_is_refused_before_sending(server):
    lm = make_openai(server)
    with pytest.raises(ValueError, match="not non-empty strings"):
        lm.generate(["fine", ""])
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        lm.generate(["fine"], max_new_tokens=0)
    assert server.records == []


@pytest.mark.openai
def test_exhausted_retries_fail_loudly_and_keep_the_key_out():
    prompts = prompts_of(12)
    with LocalOpenAIServer(api_key=KEY, failing_inputs=frozenset({prompts[7]})) as server:
        lm = make_openai(server, max_attempts=2, max_concurrency=1)
        done = {}
        with pytest.raises(GenerationRunError, match="failed on prompt 7 after 2 attempt") as caught:
            for positions, answers in lm.iter_generate(prompts):
                done.update(zip(positions, answers))
    assert caught.value.failed_position == 7 and sorted(caught.value.completed_positions) == sorted(done)
    assert 7 not in done and len(done) == 7  # one at a time: prompts 0-6 finished, none started after the failure
    assert KEY not in str(caught.value) and KEY not in repr(lm)


@pytest.mark.openai
def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIChatLM()


@pytest.mark.openai
def test_key_from_the_environment_is_used(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    lm = OpenAIChatLM(base_url=server.base_url, verbose=False)
    assert lm.generate(["hello there"]) == expected_answers(["hello there"])
    assert OpenAIChatLM(base_url=server.base_url, system_prompt=None).generate(["hello there"]) == ["there hello"]


# --- CachedLM over the local server ----------------------------------------------------------------------------------


@pytest.mark.openai
def test_a_rerun_sends_nothing_and_only_new_prompts_reach_the_model(server, tmp_path):
    lm = make_lm("openai", cache_dir=tmp_path, **dict(base_url=server.base_url, api_key=KEY, verbose=False))
    assert isinstance(lm, CachedLM) and isinstance(lm.lm, OpenAIChatLM)
    prompts = prompts_of(10)
    first = lm.generate(prompts)
    assert len(server.records) == 10 and lm.last_stats["generated"] == 10
    assert lm.generate(prompts) == first == expected_answers(prompts)
    assert len(server.records) == 10 and lm.last_stats == {**lm.last_stats, "cached": 10, "generated": 0}
    more = prompts_of(13)[::-1]  # 3 new, in another order
    assert lm.generate(more) == expected_answers(more)
    assert len(server.records) == 13
    # greedy answers do not depend on the seed: another seed is a hit; sampling with it is not
    lm.generate(prompts[:2], seed=5)
    assert len(server.records) == 13
    lm.generate(prompts[:2], temperature=0.5, seed=5)
    assert len(server.records) == 15


@pytest.mark.openai
def test_duplicate_prompts_are_generated_once(server, tmp_path):
    lm = CachedLM(make_openai(server), tmp_path)
    answers = lm.generate(["same question", "other", "same question"], temperature=0.9, seed=[3, 3, 3])
    assert len(server.records) == 2 and answers[0] == answers[2]
    assert lm.generate(["same question"], temperature=0.9, seed=4) != answers[:1]  # another seed is another sample


@pytest.mark.openai
def test_a_failed_run_keeps_what_finished_and_the_rerun_asks_only_for_the_rest(tmp_path):
    prompts = prompts_of(12)
    with LocalOpenAIServer(api_key=KEY, failing_inputs=frozenset({prompts[7]})) as broken:
        with pytest.raises(GenerationRunError):
            CachedLM(make_openai(broken, max_attempts=1, max_concurrency=1), tmp_path).generate(prompts)
    with LocalOpenAIServer(api_key=KEY) as healthy:
        lm = CachedLM(make_openai(healthy), tmp_path)
        assert lm.generate(prompts) == expected_answers(prompts)
        assert len(healthy.records) == 5 and lm.last_stats["cached"] == 7  # prompt 7 and the 4 never started


KILLED_SCRIPT = textwrap.dedent("""
    import sys
    from e2p_lib.lm.cache import CachedLM
    from e2p_lib.lm.openai import OpenAIChatLM

    base_url, cache_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lm = CachedLM(OpenAIChatLM(base_url=base_url, api_key="sk-test", max_concurrency=1, verbose=False), cache_dir)
    for positions, answers in lm.iter_generate([f"question {i}" for i in range(n)]):
        print("answer", flush=True)  # printed after the answer is committed
    print("done", flush=True)
""")


@pytest.mark.slow  # two child processes, each importing the SDK
@pytest.mark.openai
def test_sigkill_mid_run_loses_nothing_committed_and_the_rerun_resumes(tmp_path):
    script = tmp_path / "answer_and_die.py"
    script.write_text(KILLED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    n = 30
    with LocalOpenAIServer() as server:
        child = subprocess.Popen(
            [sys.executable, str(script), server.base_url, str(tmp_path), str(n)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        answers_seen = 0
        for line in child.stdout:
            answers_seen += line.strip() == "answer"
            if answers_seen == 5:
                child.send_signal(signal.SIGKILL)
                break
        child.wait(60)
        assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        with AnswerCache(answer_cache_path("openai/gpt-4o-mini", tmp_path)) as cache:
            survived = len(cache)
        assert 5 <= survived < n
        sent_before = len(server.records)
        rerun = subprocess.run(
            [sys.executable, str(script), server.base_url, str(tmp_path), str(n)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert len(server.records) - sent_before == n - survived
    with AnswerCache(answer_cache_path("openai/gpt-4o-mini", tmp_path)) as cache:
        frame = cache.frame()
    assert len(frame) == n and frame["answer"].tolist() == [expected_answers([p])[0] for p in frame["prompt"]]


def test_make_lm_refuses_unknown_backends_and_contradictions(tmp_path):
    with pytest.raises(ValueError, match="Unknown LM backend 'hf'"):
        make_lm("hf")
    with pytest.raises(ValueError, match="cache=False"):
        make_lm("openai", cache=False, cache_dir=tmp_path, api_key=KEY)


# --- SmolLM2 with its real weights -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2 converted from the packaged GGUF once per session, into a temporary folder."""
    from e2p_lib.lm.smollm import smollm2_path

    return smollm2_path(tmp_path_factory.mktemp("models") / "smollm2")


# Every local-model test runs on each device this machine has (only the CPU here; the CPU and CUDA where a GPU is),
# in float32, the dtype whose guarantees the module documents.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session", params=DEVICES)
def shared_local_lm(request, smollm2_dir):
    from e2p_lib.lm import LocalChatLM

    return LocalChatLM(device=request.param, dtype="float32", model_dir=smollm2_dir, batch_size=4, show_progress=False)


@pytest.fixture
def local_lm(shared_local_lm):
    """The session's SmolLM2 on one torch thread during the test, then torch's setting again.

    On 2 cores shared with other processes, torch's 2 OpenMP threads spin against them: the same 10-token answers
    took 25-40 s instead of 2-2.5 s on one thread (measured here).
    """
    with torch_threads(1):
        yield shared_local_lm


def test_a_half_written_model_folder_is_refused_not_loaded(tmp_path):
    from e2p_lib.lm.smollm import smollm2_path

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match="not a complete SmolLM2 cache.*Delete the folder"):
        smollm2_path(tmp_path)


def test_bad_dtype_and_device_are_refused_before_loading(tmp_path):
    from e2p_lib.lm.smollm import load_smollm2

    with pytest.raises(ValueError, match="dtype='fp8' is not one of"):
        load_smollm2("cpu", "fp8", cache_dir=tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda' but this machine has 0 CUDA GPU"):
            load_smollm2("cuda", cache_dir=tmp_path)


@pytest.mark.slow
def test_conversion_is_faithful_and_later_loads_use_the_cache(smollm2_dir, monkeypatch):
    import gguf

    from e2p_lib.lm import smollm

    assert sorted(p.name for p in smollm2_dir.parent.iterdir()) == ["smollm2"], "no staging folder left behind"
    assert all((smollm2_dir / name).is_file() for name in smollm.CACHE_FILES)
    # The second load reads the cache: with the GGUF made unreachable it still loads, from that folder.
    monkeypatch.setattr(smollm, "gguf_path", lambda: (_ for _ in ()).throw(AssertionError("GGUF read again")))
    model, tokenizer = smollm.load_smollm2("cpu", cache_dir=smollm2_dir)
    assert Path(model.config._name_or_path) == smollm2_dir and "quantization_config" not in model.config.to_dict()
    assert model.dtype == torch.float32 and "<|im_start|>assistant" in tokenizer.chat_template
    # The weights are the GGUF's, dequantised by the gguf package itself (not through transformers).
    monkeypatch.undo()
    reader = gguf.GGUFReader(smollm.gguf_path())
    tensor = next(t for t in reader.tensors if t.name == "blk.3.ffn_down.weight")
    expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(
        model.model.layers[3].mlp.down_proj.weight.shape
    )
    np.testing.assert_array_equal(model.model.layers[3].mlp.down_proj.weight.detach().numpy(), expected)


@pytest.mark.slow
def test_a_real_instruction_is_answered_sensibly(local_lm):
    [answer] = local_lm.generate(["What is the capital of France?"], max_new_tokens=16)
    assert "Paris" in answer


@pytest.mark.slow
def test_batched_greedy_answers_equal_one_by_one(local_lm):
    prompts = [
        "Name a primary colour.",
        "What is 2 plus 2?",
        "Say hello in French.",
        "Give one word that rhymes with cat, and explain why it rhymes.",
    ]  # different lengths: real padding
    batched = local_lm.generate(prompts, max_new_tokens=12)
    one_by_one = [local_lm.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == one_by_one and len(set(batched)) == 4


@pytest.mark.slow
def test_sampling_repeats_with_a_seed_whatever_the_batch(local_lm):
    prompts = ["Write a short poem about the sea.", "Describe a cat.", "Invent a name for a bakery."]
    first = local_lm.generate(prompts, max_new_tokens=10, temperature=1.0, seed=3)
    again = [local_lm.generate([p], max_new_tokens=10, temperature=1.0, seed=3)[0] for p in prompts[::-1]][::-1]
    assert first == again
    other_seeds = local_lm.generate(prompts, max_new_tokens=10, temperature=1.0, seed=[4, 5, 6])
    assert other_seeds != first


@pytest.mark.slow
def test_local_answers_are_cached(local_lm, tmp_path):
    lm = CachedLM(local_lm, tmp_path)
    before = local_lm.prompts_generated
    first = lm.generate(["Name a fruit.", "Name a tree."], max_new_tokens=6)
    again = lm.generate(["Name a tree.", "Name a fruit."], max_new_tokens=6)
    assert again == first[::-1] and local_lm.prompts_generated - before == 2
    stored = lm.cache.frame()
    assert (
        json.loads(stored["settings"].iloc[0])
        == local_lm.settings()
        == {"system_prompt": DEFAULT_SYSTEM_PROMPT, "top_p": 1.0, "dtype": "float32"}
    )


@pytest.mark.slow
def test_a_prompt_too_long_for_the_context_is_refused(local_lm):
    with pytest.raises(ValueError, match="do not fit the 8192-token context with max_new_tokens=8190"):
        local_lm.generate(["Tell me a story."], max_new_tokens=8190)


def test_chat_lm_is_the_common_interface():
    assert issubclass(OpenAIChatLM, ChatLM) and issubclass(CachedLM, ChatLM)


def test_answer_tokens_stop_at_the_first_stop_token():
    from e2p_lib.lm import count_answer_tokens

    steps = torch.tensor([[5, 6, 2, 2, 2], [7, 8, 9, 10, 11], [2, 2, 2, 2, 2], [0, 3, 3, 3, 3]])
    assert count_answer_tokens(steps, [0, 2]) == 3 + 5 + 1 + 1
