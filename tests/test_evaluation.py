"""Evaluation metrics and plots (e2p_lib.evaluate.metrics, e2p_lib.evaluate.plots) on hand-made cases."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import LineCollection
from tiny import unit_vectors

from e2p_lib.evaluate import metrics as ev
from e2p_lib.evaluate import plots as evp

N = 30  # targets in the hand-made evaluations: enough for a bootstrap, small enough to be instant


@pytest.fixture
def targets() -> np.ndarray:
    return unit_vectors(N, seed=1)


@pytest.fixture
def cosines() -> dict[str, np.ndarray]:
    """Three methods on the same targets: the oracle, an exact copy of it, a method that is always 0.1 worse."""
    oracle = np.random.default_rng(0).uniform(0.3, 0.9, N)
    return {ev.REFERENCE: oracle, "copy of oracle": oracle.copy(), ev.RETRIEVAL: oracle - 0.1}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# --- answer cosines, win rates, bootstrap ------------------------------------------------------------------------


def test_answer_cosines_normalise_rows_and_pair_by_position(targets):
    answers = unit_vectors(N, seed=2)
    expected = np.sum(answers * targets, axis=1)
    np.testing.assert_allclose(ev.answer_cosines(answers * 7.0, targets * 0.5), expected, rtol=1e-5)
    np.testing.assert_allclose(ev.answer_cosines(targets, targets), np.ones(N), rtol=1e-6)
    with pytest.raises(ValueError, match="one answer per target"):
        ev.answer_cosines(answers[:-1], targets)


def test_win_rate_counts_ties_half():
    assert ev.win_rate(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)  # tie, loss, win
    assert ev.win_rate(np.array([0.5 + 1e-8]), np.array([0.5])) == 0.5  # float noise is a tie
    assert ev.win_rate(np.array([0.6, 0.7]), np.array([0.5, 0.5])) == 1.0


def test_method_returning_the_original_prompt_scores_like_the_oracle(cosines):
    table = ev.summarise(cosines, n_resamples=500)
    assert table.index.tolist() == list(cosines)
    oracle, copy, retrieval = (table.loc[name] for name in cosines)
    assert copy["win_vs_reference"] == 0.5 and oracle["win_vs_reference"] == 0.5  # every target a tie
    assert copy["mean_cosine"] == oracle["mean_cosine"] and copy["ci95_low"] == oracle["ci95_low"]
    assert copy["win_vs_retrieval"] == 1.0 and retrieval["win_vs_reference"] == 0.0
    assert retrieval["win_vs_retrieval"] == 0.5
    assert retrieval["mean_cosine"] == pytest.approx(oracle["mean_cosine"] - 0.1)
    assert (table["n_targets"] == N).all()


def test_summarise_refuses_bad_input(cosines):
    assert ev.summarise(cosines, reference=None, n_resamples=100)["win_vs_reference"].isna().all()
    with pytest.raises(ValueError, match="reference='oracle' is not among the methods"):
        ev.summarise(cosines, reference="oracle")
    with pytest.raises(ValueError, match="same length"):
        ev.summarise({**cosines, "short": np.zeros(N - 1)})
    with pytest.raises(ValueError, match="non-finite"):
        ev.summarise({**cosines, "broken": np.full(N, np.nan)})


def test_bootstrap_interval_contains_the_mean_and_repeats_with_its_seed(cosines):
    values = cosines[ev.REFERENCE]
    low, high = ev.mean_ci(values, n_resamples=1000, seed=3)
    assert low < values.mean() < high
    assert (low, high) == ev.mean_ci(values, n_resamples=1000, seed=3)
    assert (low, high) != ev.mean_ci(values, n_resamples=1000, seed=4)
    assert ev.mean_ci(np.full(5, 0.7)) == (0.7, 0.7)
    assert all(math.isnan(v) for v in ev.mean_ci(np.array([0.7])))


def test_noise_ceiling_from_known_angles():
    """Targets all along x; answers at known angles, so every cosine is known exactly."""
    angles_a, angles_b = np.array([0.0, 0.5, 1.0, 0.2]), np.array([0.1, 0.5, 0.8, 0.6])
    on_circle = lambda angles: np.stack([np.cos(angles), np.sin(angles)], axis=1)  # noqa: E731
    targets = on_circle(np.zeros(4))
    summary = ev.noise_ceiling(on_circle(angles_a), on_circle(angles_b), targets).summary()
    cos_a, cos_b = np.cos(angles_a), np.cos(angles_b)
    assert summary["answer_self_cosine"] == pytest.approx(np.mean(np.cos(angles_a - angles_b)), abs=1e-6)
    assert summary["target_cosine"] == pytest.approx((cos_a.mean() + cos_b.mean()) / 2, abs=1e-6)
    assert summary["seed_mean_gap"] == pytest.approx(abs(cos_a.mean() - cos_b.mean()), abs=1e-6)
    assert summary["per_target_sd"] == pytest.approx(np.std(cos_a - cos_b, ddof=1) / math.sqrt(2), abs=1e-6)
    assert summary["mean_sd"] == pytest.approx(summary["per_target_sd"] / 2)
    assert summary["seed_win_rate"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)  # a wins, tie, b wins, a wins

    same = ev.noise_ceiling(targets, targets, targets).summary()  # greedy decoding: both answers identical
    assert same["answer_self_cosine"] == pytest.approx(1.0) and same["per_target_sd"] == 0.0
    assert same["seed_win_rate"] == 0.5


# --- prompt overlap, perplexity, diversity ---------------------------------------------------------------------------


def test_bleu_and_rouge_are_full_for_identical_and_zero_for_disjoint_prompts():
    references = ["Name three primary colours.", "Write a haiku about the sea."]
    same = ev.prompt_overlap(references, references)
    np.testing.assert_allclose(same["bleu"], 100.0)
    np.testing.assert_allclose(same["rouge_l"], 1.0)
    summary = ev.overlap_summary(same)
    assert summary["corpus_bleu"] == pytest.approx(100.0) and summary["exact_match"] == 1.0

    disjoint = ev.overlap_summary(ev.prompt_overlap(["Quokkas yodel loudly", "Zebras knit"], references))
    assert disjoint["corpus_bleu"] < 1.0 and disjoint["sentence_bleu"] < 1.0 and disjoint["rouge_l"] == 0.0
    assert ev.prompt_overlap([""], ["Name three colours."]).loc[0, ["bleu", "rouge_l"]].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="pair them one to one"):
        ev.prompt_overlap(references[:1], references)


def test_perplexity_equals_exp_mean_nll_by_hand(smollm2_tokenizer):
    from tiny import tiny_policy

    model = tiny_policy(smollm2_tokenizer).lm  # 2 layers of width 32, random weights, SmolLM2's vocabulary
    prompts = ["Name three primary colours.", "", "Write a short poem about the sea and the sky at night.", "Hi"]
    got = ev.perplexity(prompts, model, smollm2_tokenizer, batch_size=2)  # batches mix lengths: padding is tested

    context = smollm2_tokenizer(ev.DEFAULT_PERPLEXITY_CONTEXT, add_special_tokens=False)["input_ids"]
    for i, prompt in enumerate(prompts):
        if not prompt:
            assert math.isnan(got[i])
            continue
        ids = context + smollm2_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
        nll = [-logprobs[t - 1, ids[t]].item() for t in range(len(context), len(ids))]
        assert np.isfinite(got[i])
        assert got[i] == pytest.approx(math.exp(np.mean(nll)), rel=1e-4)


def test_perplexity_rows_score_each_distinct_prompt_once_with_each_rows_values(smollm2_tokenizer):
    from tiny import tiny_policy

    model = tiny_policy(smollm2_tokenizer).lm
    rows = {"a": ["Name three colours.", "Hi", ""], "b": ["Hi", "Name three colours."], "none": []}
    scored = []  # the rows of every forward pass
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: scored.append(len(kwargs["input_ids"])), with_kwargs=True
    )
    got = ev.perplexity_rows(rows, model, smollm2_tokenizer)
    hook.remove()

    assert sum(scored) == 2  # two distinct non-empty prompts among five
    assert list(got) == ["a", "b", "none"] and len(got["none"]) == 0
    for name, prompts in rows.items():
        np.testing.assert_allclose(got[name], ev.perplexity(prompts, model, smollm2_tokenizer), rtol=1e-5)


def test_identical_prompts_have_minimal_diversity():
    prompt = "name three primary colours ."
    assert ev.distinct_n([prompt], 1) == 1.0
    assert ev.distinct_n([prompt] * 4, 1) == pytest.approx(0.25)
    assert ev.distinct_n([prompt] * 4, 2) == pytest.approx(0.25)
    assert ev.distinct_n(["Colours. colours"], 1) == pytest.approx(2 / 3)  # lower-cased, punctuation split off
    assert ev.distinct_n(["a b", "b c"], 2) == 1.0  # n-grams do not cross prompts
    assert math.isnan(ev.distinct_n(["one", ""], 2))
    with pytest.raises(ValueError, match="positive integer"):
        ev.distinct_n([prompt], 0)


def test_mean_pairwise_cosine():
    vector = unit_vectors(1)
    assert ev.mean_pairwise_cosine(np.repeat(vector, 5, axis=0) * 3.0) == pytest.approx(1.0)
    assert ev.mean_pairwise_cosine(np.eye(4)) == pytest.approx(0.0, abs=1e-9)
    vectors = unit_vectors(7, seed=5).astype(np.float64)
    gram = vectors @ vectors.T
    assert ev.mean_pairwise_cosine(vectors) == pytest.approx(gram[~np.eye(7, dtype=bool)].mean(), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        ev.mean_pairwise_cosine(vector)


# --- results table, save and load --------------------------------------------------------------------------------


def _evaluation(targets):
    """Answer vectors and prompts of three methods: oracle (answers = targets), retrieval, a constant prompt."""
    originals = [f"Describe item number {i} in detail." for i in range(N)]
    answer_vectors = {
        ev.REFERENCE: targets,
        ev.RETRIEVAL: unit_vectors(N, seed=7),
        "constant prompt": np.repeat(unit_vectors(1, seed=8), N, axis=0),
    }
    prompts = {
        ev.REFERENCE: originals,
        ev.RETRIEVAL: [f"Explain thing {i}." for i in range(N)],
        "constant prompt": ["Tell me something."] * N,
    }
    return answer_vectors, prompts, originals


def test_results_table_combines_everything(targets):
    answer_vectors, prompts, originals = _evaluation(targets)
    perplexities = {ev.REFERENCE: np.r_[np.nan, np.full(N - 1, 12.0)]}
    table = ev.results_table(
        targets,
        answer_vectors,
        prompts=prompts,
        reference_prompts=originals,
        answers={ev.REFERENCE: ["Four words of answer."] * N},
        perplexities=perplexities,
        copied_shares={"constant prompt": np.r_[np.ones(2), np.zeros(N - 2)]},
        train_env_calls={"constant prompt": 0},
        n_resamples=200,
    )
    oracle, constant = table.loc[ev.REFERENCE], table.loc["constant prompt"]
    assert constant["copied_share"] == pytest.approx(2 / N) and math.isnan(oracle["copied_share"])
    assert constant["distinct_prompts"] == pytest.approx(1 / N) and oracle["distinct_prompts"] == 1.0
    assert constant["words"] == len(prompts["constant prompt"][0].split())
    assert oracle["mean_cosine"] == pytest.approx(1.0) and oracle["corpus_bleu"] == pytest.approx(100.0)
    assert oracle["exact_match"] == 1.0 and oracle["median_perplexity"] == 12.0
    assert oracle["median_answer_tokens"] > 0 and math.isnan(constant["median_answer_tokens"])
    assert constant["answer_pairwise_cosine"] == pytest.approx(1.0) and constant["distinct_1"] < 0.2
    assert (table["eval_env_calls"] == N).all() and (table["eval_env_calls_per_target"] == 1.0).all()
    assert constant["train_env_calls"] == 0 and math.isnan(oracle["train_env_calls"])
    with pytest.raises(ValueError, match=r"\['SFT'\] that have no answer vectors"):
        ev.results_table(targets, answer_vectors, eval_env_calls={"SFT": 5})


def test_results_saved_and_reloaded_equal(targets, tmp_path):
    answer_vectors, prompts, originals = _evaluation(targets)
    table = ev.results_table(targets, answer_vectors, prompts=prompts, reference_prompts=originals, n_resamples=200)
    csv_path, json_path = ev.save_results(table, tmp_path / "reports", name="05_results")
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["05_results.csv", "05_results.json"]
    pd.testing.assert_frame_equal(ev.load_results(csv_path), table, check_names=False)
    records = json.loads(json_path.read_text())
    assert [r["method"] for r in records] == table.index.tolist()
    assert records[0]["train_env_calls"] is None  # NaN -> null
    assert records[1]["mean_cosine"] == table["mean_cosine"].iloc[1]  # exact, not rounded


# --- plots ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["violin", "box"])
def test_distribution_plot_has_one_row_per_method(cosines, kind):
    fig = evp.plot_cosine_distributions(cosines, kind=kind)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(cosines)
    means = ax.collections[-1].get_offsets()  # the mean markers, drawn last
    np.testing.assert_allclose(np.asarray(means)[:, 0], [v.mean() for v in cosines.values()])


def test_ecdf_plot_has_one_curve_per_method(cosines):
    (ax,) = evp.plot_cosine_ecdf(cosines).axes
    assert len(ax.lines) == len(cosines)
    assert len(ax.get_legend().get_texts()) == len(cosines)


def test_eleven_methods_are_drawn_in_eleven_colours():
    """tab10 has ten colours: an eleventh method used to share the first one's (05 draws eleven and more)."""
    rng = np.random.default_rng(0)
    many = {f"method {i}": rng.uniform(0, 1, 20) for i in range(11)}
    lines = evp.plot_cosine_ecdf(many).axes[0].get_lines()
    assert len({matplotlib.colors.to_hex(line.get_color()) for line in lines}) == 11
    for n in (3, 20, 25):
        assert len(set(evp.method_colours([f"m{i}" for i in range(n)]).values())) == n
    with pytest.raises(ValueError, match="repeat"):
        evp.method_colours(["a", "a"])


def test_length_plot_has_a_scatter_and_a_binned_mean_line_per_method(cosines):
    lengths = {name: np.arange(N) + 10 for name in cosines}
    (ax,) = evp.plot_cosine_vs_length(cosines, lengths, n_bins=3).axes
    assert len(ax.collections) == len(cosines) and len(ax.lines) == len(cosines)
    assert all(len(line.get_xdata()) == 3 for line in ax.lines)
    with pytest.raises(ValueError, match="same methods"):
        evp.plot_cosine_vs_length(cosines, {ev.REFERENCE: lengths[ev.REFERENCE]})


def test_answer_map_has_a_panel_per_method_with_lines_for_the_subset(targets):
    answer_vectors = _evaluation(targets)[0]
    fig = evp.plot_answer_map(targets, answer_vectors, n_shown=10, ncols=2)
    assert [ax.get_title() for ax in fig.axes] == list(answer_vectors)  # the 4th grid cell is removed
    for ax in fig.axes:
        (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
        assert len(lines.get_segments()) == 10
    oracle_segments = np.asarray(fig.axes[0].collections[1].get_segments())
    np.testing.assert_allclose(oracle_segments[:, 0], oracle_segments[:, 1], atol=1e-9)  # answer = target


def test_win_rate_plot_has_two_bars_per_method(cosines):
    summary = ev.summarise(cosines, n_resamples=100)
    (ax,) = evp.plot_win_rates(summary).axes
    assert len(ax.patches) == 2 * len(cosines)
    assert sorted(round(p.get_width(), 6) for p in ax.patches) == sorted(
        round(v, 6) for v in summary[["win_vs_reference", "win_vs_retrieval"]].to_numpy().ravel()
    )
    (ax,) = evp.plot_win_rates(ev.summarise(cosines, retrieval=None, n_resamples=100)).axes
    assert len(ax.patches) == len(cosines)


def test_the_budget_curve_reports_the_copied_share_and_refuses_overspending():
    from e2p_lib.evaluate.baselines import budget_curve

    curve = budget_curve(
        {
            "with shares": lambda b: (np.full(3, 0.5), [b] * 3, np.array([0.0, 0.3, 0.3])),
            "without": lambda b: (np.full(3, 0.4), [1] * 3),
        },
        [1, 2],
    )
    assert curve.set_index("method").loc["with shares", "copied_share"].tolist() == pytest.approx([0.2, 0.2])
    assert curve.set_index("method").loc["without", "copied_share"].isna().all()
    with pytest.raises(RuntimeError, match="spent 3 environment calls at budget 2"):
        budget_curve({"greedy": lambda b: (np.ones(2), [3, 1])}, [2])


def test_the_quality_plot_has_a_point_per_method_and_marks_the_clean_line(targets):
    answer_vectors, prompts, originals = _evaluation(targets)
    shares = {name: np.full(N, 0.1 * i) for i, name in enumerate(answer_vectors)}
    table = ev.results_table(targets, answer_vectors, prompts=prompts, copied_shares=shares, n_resamples=200)
    (ax,) = evp.plot_quality(table, max_copied_share=0.15).axes
    points = [line.get_xydata()[0] for line in ax.lines if line.get_marker() == "o"]
    assert np.allclose(points, table[["copied_share", "mean_cosine"]].to_numpy())  # one point per method
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(labels) == {*answer_vectors, "not clean"}
    with pytest.raises(KeyError, match="copied_share"):
        evp.plot_quality(table.drop(columns="copied_share"))
