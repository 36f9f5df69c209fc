"""The inverter and its API: targets, best-of-N and refinement (`Inverter.sample`), interpolation, the top-level
functions, finding and loading the trained pieces, and their errors.

The policy is the tiny random SmolLM2-shaped model of tests/tiny.py (its prompts are gibberish, which is fine: the
plumbing is what is tested). The embedder and the environment are deterministic test doubles, because which
texts get embedded and which prompts get answered, and how often, is the point here: `ByteEmbedder` maps each text
to a fixed unit vector (its bytes, bucketed), `EchoLM` is a real `ChatLM` that answers "Answer to: <prompt>" and
records every prompt it is sent. The forward model is a real, untrained MLP `ForwardModel` over that embedder.
The search itself (pools, budget, clean filter) is tested in tests/test_search.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny import DIMS, tiny_policy, unit_vectors

import e2p_lib
from e2p_lib.devices import torch_threads
from e2p_lib.evaluate.quality import clean_line, save_clean_line
from e2p_lib.inversion import Inverter, SearchConfig, results_frame
from e2p_lib.inversion.api import (
    default_forward_model_dir,
    default_policy_dir,
    invert_embeddings,
    invert_strings,
    load_inverter,
    save_policy_choice,
)
from e2p_lib.inversion.sampling import feedback_target, slerp
from e2p_lib.lm import ChatLM
from e2p_lib.models.forward import ForwardModel, MLPForwardNet, forward_model_config

SMALL = SearchConfig(budget=2, samples=2, rounds=1, max_prompt_tokens=6)  # a short search: the plumbing, fast


class ByteEmbedder:
    """Each text -> its bytes counted into `dimensions` buckets (byte value mod d), normalised: fixed and cheap, and
    texts that share characters land close. Every call is recorded."""

    def __init__(self, dimensions: int = DIMS, name: str = "test/bytes"):
        self.name, self.dimensions = name, dimensions
        self.calls: list[list[str]] = []

    def vector(self, text: str) -> np.ndarray:
        buckets = np.frombuffer(text.encode(), dtype=np.uint8) % self.dimensions
        counts = np.bincount(buckets, minlength=self.dimensions).astype(np.float32)
        return counts / np.linalg.norm(counts)

    def embed(self, texts):
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts])


class EchoLM(ChatLM):
    """A deterministic environment: answers "Answer to: <prompt>", and records each prompt it is sent."""

    name = "test/echo"

    def __init__(self):
        self.received: list[str] = []

    def settings(self):
        return {}

    def _iter_generate(self, prompts, max_new_tokens, temperature, seeds):
        self.received += prompts
        yield list(range(len(prompts))), [f"Answer to: {p}" for p in prompts]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: the machines are shared 2-core ones, and the tiny models gain nothing from a second."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def policy(smollm2_tokenizer):
    return tiny_policy(smollm2_tokenizer)


@pytest.fixture
def data_folder(tmp_path, monkeypatch):
    """E2P_DATA_DIR at tmp_path/data, SmolLM2's converted cache kept where it is (a new folder would convert the GGUF
    again, ~15-40 s, on every `PromptPolicy.load`)."""
    from e2p_lib.lm import smollm

    converted = smollm.default_cache_dir()
    monkeypatch.setattr(smollm, "default_cache_dir", lambda: converted)
    monkeypatch.setenv("E2P_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def tiny_forward_model(embedder, cache_dir) -> ForwardModel:
    config = forward_model_config("mlp", hidden_sizes=(16,), device="cpu")  # 16 wide: tiny, untrained on purpose
    torch.manual_seed(0)
    return ForwardModel(
        config,
        MLPForwardNet(config, embedder.dimensions),
        target_space=embedder.name,
        dimensions=embedder.dimensions,
        device=torch.device("cpu"),
        embedder=embedder,
        cache_dir=cache_dir,
    )


@pytest.fixture
def parts(policy, tmp_path):
    """(inverter with forward model and environment, embedder, environment), caches in a temporary folder."""
    embedder, environment = ByteEmbedder(), EchoLM()
    inverter = Inverter(
        policy, embedder, tiny_forward_model(embedder, tmp_path), environment, embedding_cache_dir=tmp_path
    )
    return inverter, embedder, environment


def distinct_prompts(candidates) -> set[str]:
    return {c.prompt for c in candidates if c.prompt.strip()}


# --- pure helpers ------------------------------------------------------------------------------------------------


def test_slerp_runs_along_the_great_circle_at_constant_speed():
    a, b = unit_vectors(2, seed=1)
    ts = np.linspace(0, 1, 7)
    points = slerp(3 * a, 0.5 * b, ts)  # raw lengths do not matter: directions are interpolated
    assert points.shape == (7, DIMS)
    np.testing.assert_allclose(points[0], a, atol=1e-6)
    np.testing.assert_allclose(points[-1], b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0, atol=1e-6)
    angles = np.arccos(np.clip(points @ a, -1, 1))
    np.testing.assert_allclose(angles, ts * math.acos(float(a @ b)), atol=1e-5)
    basis, _ = np.linalg.qr(np.stack([a, b], axis=1))  # every point lies in the plane of a and b
    np.testing.assert_allclose(points - (points @ basis) @ basis.T, 0.0, atol=1e-5)
    middle = slerp(a, b, 0.5)
    assert middle.shape == (DIMS,) and abs(float(middle @ a) - float(middle @ b)) < 1e-6


def test_slerp_edge_cases():
    a = unit_vectors(1, seed=2)[0]
    np.testing.assert_allclose(slerp(a, 2 * a, [0.0, 0.3, 1.0]), np.stack([a] * 3), atol=1e-6)
    with pytest.raises(ValueError, match="opposite directions"):
        slerp(a, -a, 0.5)
    with pytest.raises(ValueError, match=r"shapes \(12,\) and \(5,\)"):
        slerp(a, a[:5], 0.5)
    with pytest.raises(ValueError, match="zero or non-finite"):
        slerp(a, np.zeros_like(a), 0.5)
    with pytest.raises(ValueError, match="t must be finite"):
        slerp(a, unit_vectors(1, seed=3)[0], float("nan"))


def test_feedback_aims_past_the_target_by_the_miss():
    target, achieved = np.eye(DIMS, dtype=np.float32)[:2]
    once = feedback_target(target, target, achieved)
    np.testing.assert_allclose(once[:2], np.array([2, -1]) / math.sqrt(5), atol=1e-6)  # normalise(2t - a)
    twice = feedback_target(once, target, achieved)
    assert twice @ achieved < once @ achieved < target @ achieved, "the same miss again pushes further away"
    condition = unit_vectors(1, seed=4)[0]
    np.testing.assert_allclose(feedback_target(condition, target, target), condition, atol=1e-6)  # a hit: no change


def test_the_package_exports_its_api_lazily():
    assert e2p_lib.Inverter is Inverter and e2p_lib.SearchConfig is SearchConfig
    assert e2p_lib.invert_strings is invert_strings and e2p_lib.load_inverter is load_inverter
    with pytest.raises(AttributeError, match="no attribute 'invert_texts'"):
        e2p_lib.invert_texts  # noqa: B018 (the lookup is the test)


# --- targets -------------------------------------------------------------------------------------------------------


def test_texts_are_embedded_first_and_vectors_are_checked(parts, policy):
    inverter, embedder, environment = parts
    texts = ["A poem about the sea.", "A bread recipe."]
    from_texts = inverter.sample(texts)
    assert embedder.calls == [texts], "the targets were embedded once, before anything else"
    vectors = np.stack([embedder.vector(t) for t in texts])
    assert [r.prompt for r in from_texts] == [r.prompt for r in inverter.sample(vectors)] == policy.generate(vectors)
    assert len(inverter.sample(vectors[0])) == 1, "one (d,) vector is one target"
    assert [r.prompt for r in inverter.sample(torch.as_tensor(5 * vectors))] == policy.generate(vectors), (
        "tensors are accepted and raw vectors normalised"
    )
    broken = unit_vectors(3)
    broken[1] = 0.0
    for method in (inverter.sample, inverter.search):  # the search checks its targets the same way
        with pytest.raises(ValueError, match=r"expected \(12,\) or \(n, 12\): vectors of test/bytes"):
            method(unit_vectors(2, dims=5))
        with pytest.raises(ValueError, match=r"shape \(1, 2, 12\)"):
            method(unit_vectors(2)[None])
        with pytest.raises(ValueError, match="No targets"):
            method([])
        with pytest.raises(ValueError, match="first at row 1"):
            method(broken)
        with pytest.raises(TypeError, match="mix texts and vectors"):
            method(["a text", vectors[0]])
        with pytest.raises(ValueError, match="not non-empty strings"):
            method(["a text", "  "])
    assert environment.received == []


def test_the_pieces_must_share_one_vector_space(policy, tmp_path):
    with pytest.raises(ValueError, match="reads 12-d targets but the embedder test/bytes gives 8-d"):
        Inverter(policy, ByteEmbedder(dimensions=8))
    other = tiny_forward_model(ByteEmbedder(name="test/other"), tmp_path)
    with pytest.raises(ValueError, match="predicts test/other vectors"):
        Inverter(policy, ByteEmbedder(), forward_model=other)
    with pytest.raises(TypeError, match="environment must be an LM"):
        Inverter(policy, ByteEmbedder(), environment="local")
    with pytest.raises(ValueError, match="generation_batch_size=0"):
        Inverter(policy, ByteEmbedder(), generation_batch_size=0)


# --- sampling: best-of-N and refinement ---------------------------------------------------------------------------


def test_greedy_needs_no_environment_and_measure_answers_once(parts, policy):
    inverter, embedder, environment = parts
    targets = unit_vectors(3)
    results = inverter.sample(targets)
    assert [r.prompt for r in results] == policy.generate(targets)
    assert environment.received == [] and all(r.environment_calls == 0 and r.method is None for r in results)
    assert all(math.isnan(r.achieved_cosine) and r.answer is None for r in results)
    assert all(len(r.candidates) == 1 and r.trajectory == r.candidates for r in results)
    assert all(r.candidates[0].source == "greedy" for r in results)
    for r, target in zip(results, targets):  # the forward model's cosine, to the real target
        if r.prompt.strip():
            assert r.predicted_cosine == pytest.approx(
                float(inverter.forward_model.predict_cosine([r.prompt], target)[0])
            )

    measured = inverter.sample(targets, measure=True)
    asked = [r.prompt for r in measured if r.prompt.strip()]
    assert environment.received == asked
    for r, target in zip(measured, targets):
        if r.prompt.strip():
            assert r.environment_calls == 1 and r.answer == f"Answer to: {r.prompt}"
            assert r.achieved_cosine == pytest.approx(float(embedder.vector(r.answer) @ target), abs=1e-6)


def test_best_of_n_by_the_environment_never_loses_to_greedy(parts, policy):
    inverter, _, environment = parts
    targets = unit_vectors(3, seed=5)
    results = inverter.sample(targets, best_of=5, rerank="environment", temperature=1.0, seed=3)
    greedy = policy.generate(targets)
    for r, greedy_prompt in zip(results, greedy):
        assert r.method == "environment" and len(r.candidates) == 5
        assert [c.source for c in r.candidates] == ["greedy"] + ["sampled"] * 4
        assert r.candidates[0].prompt == greedy_prompt
        achieved = [c.achieved_cosine for c in r.candidates]
        assert r.achieved_cosine == np.nanmax(achieved), "the pick is the candidate with the best real cosine"
        assert not r.achieved_cosine < r.candidates[0].achieved_cosine, "never below greedy (NaN if it is empty)"
        assert r.environment_calls == len(distinct_prompts(r.candidates)), "one call per distinct prompt"
    assert len(environment.received) == sum(r.environment_calls for r in results), "calls counted exactly"
    assert len({c.prompt for r in results for c in r.candidates[1:]}) > 1, "the samples differ from each other"
    again = inverter.sample(targets, best_of=5, rerank="environment", temperature=1.0, seed=3)
    assert [c.prompt for r in again for c in r.candidates] == [c.prompt for r in results for c in r.candidates]


def test_best_of_n_by_the_forward_model_calls_no_environment(parts):
    inverter, _, environment = parts
    results = inverter.sample(unit_vectors(3, seed=6), best_of=4)  # rerank None: the forward model, as there is one
    assert environment.received == []
    for r in results:
        predicted = [c.predicted_cosine for c in r.candidates]
        assert r.method == "forward" and r.environment_calls == 0
        assert r.predicted_cosine == np.nanmax(predicted)
        assert not r.predicted_cosine < r.candidates[0].predicted_cosine, "never below greedy (NaN if it is empty)"
        frame = r.candidates_frame()
        assert len(frame) == 4 and frame["picked"].sum() == 1
        assert frame.loc[frame["picked"], "prompt"].item() == r.prompt


def test_refinement_records_its_trajectory_and_keeps_the_best_seen(parts):
    inverter, embedder, environment = parts
    targets = unit_vectors(2, seed=7)
    results = inverter.sample(targets, best_of=3, rerank="environment", refine_steps=2, temperature=1.0)
    for r, target in zip(results, targets):
        assert [c.step for c in r.trajectory] == [0, 1, 2] and len(r.candidates) == 9
        assert r.achieved_cosine == max(c.achieved_cosine for c in r.trajectory)
        assert r.achieved_cosine == np.nanmax([c.achieved_cosine for c in r.candidates]), "the best seen"
        assert r.prompt in {c.prompt for c in r.trajectory}
        assert r.environment_calls == len(distinct_prompts(r.candidates))
        # Round 1 was conditioned on the documented feedback rule, from round 0's pick and its answer.
        expected = feedback_target(target, target, embedder.vector(r.trajectory[0].answer))
        assert r.trajectory[0].condition_cosine == pytest.approx(1.0)
        assert r.trajectory[1].condition_cosine == pytest.approx(float(expected @ target), abs=1e-6)
    assert len(environment.received) == sum(r.environment_calls for r in results), "no prompt answered twice"

    environment.received.clear()
    cheap = inverter.sample(targets, best_of=3, rerank="forward", refine_steps=2, temperature=1.0)
    for r in cheap:  # re-ranked by the forward model: only each round's pick is answered
        assert r.environment_calls == len(distinct_prompts(r.trajectory)) <= 3
        assert r.achieved_cosine == np.nanmax([c.achieved_cosine for c in r.trajectory])
    assert len(environment.received) == sum(r.environment_calls for r in cheap)


class FixedProposals(Inverter):
    """Proposes the same given prompts for every target and round, so empty, repeated and pasted prompts are
    certain."""

    def __init__(self, prompts, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prompts = prompts

    def propose(self, conditions, best_of, *args, **kwargs):
        return [list(self.prompts[:best_of]) for _ in conditions]


def test_empty_and_repeated_prompts_are_never_sent_nor_picked(policy, tmp_path):
    embedder, environment = ByteEmbedder(), EchoLM()
    inverter = FixedProposals(
        ["", "Name a colour.", "Name a colour.", "Count to three."],
        policy,
        embedder,
        environment=environment,
        embedding_cache_dir=tmp_path,
    )
    results = inverter.sample(unit_vectors(2), best_of=4, refine_steps=2)
    assert environment.received == ["Name a colour.", "Count to three."] * 2, "once per target, over all rounds"
    for r in results:
        assert r.prompt != "" and r.environment_calls == 2 and len(r.candidates) == 12
        assert math.isnan(r.candidates[0].achieved_cosine) and r.candidates[0].answer is None
    only_empty = FixedProposals([""], policy, embedder, environment=environment, embedding_cache_dir=tmp_path)
    (result,) = only_empty.sample(unit_vectors(1), refine_steps=1)
    assert result.prompt == "" and result.environment_calls == 0 and math.isnan(result.achieved_cosine)
    assert [c.condition_cosine for c in result.trajectory] == pytest.approx([1.0, 1.0]), "no answer: no correction"


def test_sample_options_are_checked_before_any_work(policy, tmp_path):
    embedder = ByteEmbedder()
    bare = Inverter(policy, embedder, embedding_cache_dir=tmp_path)
    targets = unit_vectors(1)
    with pytest.raises(ValueError, match="best_of=2 re-ranks candidates.*has neither"):
        bare.sample(targets, best_of=2)
    with pytest.raises(ValueError, match="rerank='environment' needs an environment LM"):
        bare.sample(targets, best_of=2, rerank="environment")
    with pytest.raises(ValueError, match="refine_steps=1 and measure=True need an environment LM"):
        bare.sample(targets, refine_steps=1, measure=True)
    with pytest.raises(ValueError, match="needs a forward model"):
        bare.sample(targets, best_of=2, rerank="forward")
    with pytest.raises(ValueError, match="best_of=0 must be a positive integer"):
        bare.sample(targets, best_of=0)
    with pytest.raises(ValueError, match="needs a finite temperature > 0"):
        bare.sample(targets, best_of=2, temperature=0.0)
    with pytest.raises(ValueError, match="rerank='bogus'"):
        bare.sample(targets, rerank="bogus")
    with pytest.raises(ValueError, match="refine_steps=-1"):
        bare.sample(targets, refine_steps=-1)
    with pytest.raises(TypeError, match="budget"):
        bare.sample(targets, budget=3)  # a search option: sample() takes none
    with pytest.raises(ValueError, match="needs an environment LM"):
        bare.search(targets)  # the search answers prompts: refused before any model runs
    assert embedder.calls == []
    with pytest.raises(ValueError, match="with best_of=1 there is one: pass best_of > 1"):
        bare.sample(targets, rerank="forward")  # nothing to rank: said, not silently dropped
    with pytest.raises(ValueError, match=r"top_p=0 must be in \(0, 1\]"):
        bare.sample(targets, best_of=2, top_p=0, rerank="forward")
    assert [r.prompt for r in bare.sample(targets)] == policy.generate(targets), (
        "best_of=1 ranks nothing, so no forward model is needed"
    )


# --- interpolation and the top-level functions ---------------------------------------------------------------------


def test_interpolation_gives_the_search_s_prompt_per_point(parts):
    inverter, embedder, environment = parts
    a, b = "A poem about the sea.", "A bread recipe."
    frame = inverter.interpolate(a, b, steps=4, config=SMALL)
    assert list(frame.columns) == ["t", *results_frame([]).columns] and len(frame) == 4
    np.testing.assert_allclose(frame["t"], [0, 1 / 3, 2 / 3, 1])
    assert (frame["method"] == "search").all()
    assert frame["environment_calls"].between(1, SMALL.budget).all()
    assert frame["environment_calls"].sum() == len(environment.received)
    # the search over the points of the great circle (slerp is tested above), in one seeded batch
    ends = inverter.target_vectors([a, b])
    again = inverter.search(slerp(ends[0], ends[1], np.linspace(0, 1, 4)), SMALL)
    assert frame["prompt"].tolist() == [r.prompt for r in again]
    with pytest.raises(ValueError, match="steps=1 must be an integer >= 2"):
        inverter.interpolate(a, b, steps=1)
    with pytest.raises(ValueError, match="a must be one text or one"):
        inverter.interpolate([a, b], b)
    with pytest.raises(ValueError, match="opposite directions"):
        inverter.interpolate(embedder.vector(a), -embedder.vector(a))


def test_top_level_functions_take_the_right_kind_of_target(policy, tmp_path):
    """invert_strings measures copying against the text, so a prompt pasting it is never sent; the same target as a
    vector has no text to copy, so the same prompt is allowed."""
    text = "A haiku about the rain falling on the roof."
    embedder, environment = ByteEmbedder(), EchoLM()
    inverter = FixedProposals(
        [text, "Write a haiku about rain."], policy, embedder, environment=environment, embedding_cache_dir=tmp_path
    )
    config = SearchConfig(budget=3, samples=2, max_copied_share=0.5, fluency_margin=0.0)  # the best cosine alone
    [by_text] = invert_strings([text], inverter, config)
    assert embedder.calls[0] == [text], "the text is embedded first"
    assert text not in environment.received and by_text.prompt == "Write a haiku about rain."
    assert by_text.copied_share == 0.0
    assert [c.copied_share for c in by_text.candidates if c.prompt == text] == [1.0]
    environment.received.clear()
    [by_vector] = invert_embeddings(embedder.vector(text), inverter, config)
    assert environment.received[0] == text and by_vector.prompt == text  # nothing to copy from: allowed, and first
    assert by_vector.copied_share == 0.0
    with pytest.raises(TypeError, match="wrap it as"):
        invert_strings(text, inverter)
    with pytest.raises(TypeError, match="use invert_strings"):
        invert_embeddings([text], inverter)
    with pytest.raises(ValueError, match="not non-empty strings"):
        invert_strings([" "], inverter)


# --- finding and loading the trained pieces ------------------------------------------------------------------------


def test_default_locations_prefer_the_chosen_policy_and_the_transformer(monkeypatch, tmp_path):
    monkeypatch.setenv("E2P_DATA_DIR", str(tmp_path))
    models = tmp_path / "models"
    with pytest.raises(FileNotFoundError, match="Run notebooks/03_sft.ipynb"):
        load_inverter(environment=None)  # fails before loading any model
    assert default_forward_model_dir() is None
    for folder, marker in (("policy-sft/policy", "policy_config.json"), ("forward-mlp", "checkpoint.pt")):
        (models / folder).mkdir(parents=True)
        (models / folder / marker).write_text("{}")
    assert default_policy_dir() == models / "policy-sft/policy"
    assert default_forward_model_dir() == models / "forward-mlp"
    for folder, marker in (("policy-rl/policy", "policy_config.json"), ("forward-transformer", "checkpoint.pt")):
        (models / folder).mkdir(parents=True)
        (models / folder / marker).write_text("{}")
    assert default_policy_dir() == models / "policy-rl/policy"
    assert default_forward_model_dir() == models / "forward-transformer"
    (models / "policy-ei/policy").mkdir(parents=True)
    (models / "policy-ei/policy/policy_config.json").write_text("{}")
    save_policy_choice(models, {"policy-sft": 0.4, "policy-rl": 0.5, "policy-ei": 0.6}, targets=8)
    assert default_policy_dir() == models / "policy-ei/policy"  # 04's choice by validation score wins


def test_load_inverter_rebuilds_the_saved_pieces_and_reads_the_clean_line(data_folder, tmp_path, policy):
    embedder = ByteEmbedder()
    policy.save(tmp_path / "policy-rl/policy")
    tiny_forward_model(embedder, tmp_path).save(tmp_path / "forward-mlp")

    def load(**options):
        return load_inverter(
            tmp_path / "policy-rl/policy",
            tmp_path / "forward-mlp",
            environment=EchoLM(),
            embedder=embedder,
            device="cpu",
            embedding_cache_dir=tmp_path,
            **options,
        )

    unlined = load()  # 02 has not run: no clean line, no index, no store
    assert unlined.clean_line is None and unlined.index is None and unlined.retrieval is None
    with pytest.raises(ValueError, match="needs the clean line"):
        unlined.search(["A haiku about rain."], SMALL)  # a text target could be copied: the line is needed
    line = clean_line([0.0, 0.1, 0.2, 0.4], neighbours=8, store="alpaca")
    save_clean_line(line, data_folder)  # what 02 does
    inverter = load()
    assert inverter.clean_line == line and inverter.max_copied_share == pytest.approx(line.max_copied_share)
    assert load(clean_line=None).clean_line is None and load(clean_line=0.25).max_copied_share == 0.25
    targets = unit_vectors(2, seed=8)
    assert inverter.forward_model.kind == "mlp" and inverter.policy.config == policy.config
    assert [r.prompt for r in inverter.sample(targets)] == policy.generate(targets)
    measured = inverter.sample(targets, best_of=2, rerank="environment")
    assert all(r.answer == f"Answer to: {r.prompt}" for r in measured if r.prompt.strip())
    [searched] = inverter.search(["A haiku about rain."], SMALL)
    assert searched.copied_share <= line.max_copied_share and 1 <= searched.environment_calls <= SMALL.budget
    (data_folder / "clean-line.json").write_text("{broken")
    with pytest.raises(ValueError, match="clean-line.json is not a clean line"):
        load()
    with pytest.raises(ValueError, match="clean_line='yes'"):
        load(clean_line="yes")
    with pytest.raises(ValueError, match="forward_model_dir=True is ambiguous"):
        load_inverter(tmp_path / "policy-rl/policy", True, environment=None)
    with pytest.raises(FileNotFoundError, match="No forward model"):
        load_inverter(tmp_path / "policy-rl/policy", tmp_path / "nowhere", environment=None, embedder=embedder)
