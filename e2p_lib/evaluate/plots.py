"""Figures for 05_eval: how each method's answer cosines are distributed and where its answers land.

Each function returns a matplotlib Figure; save it with `e2p_lib.plots.save_figure(fig, "05_<name>")`. Inputs are
the same dicts `e2p_lib.evaluate.metrics` takes (method name -> one value per target, every method on the same
targets in the same order), and every figure gives a method the same colour (`method_colours`, by the dict's
order), so the figures of one notebook read together.

    >>> plot_cosine_distributions(cosines)                 # violins (or kind="box"), mean marked
    >>> plot_cosine_ecdf(cosines)                          # one cumulative curve per method: right is better
    >>> plot_cosine_vs_length(cosines, answer_tokens)      # scatter + binned mean per method
    >>> plot_answer_map(targets, answer_vectors)           # PCA of the targets, lines target -> answer, a subset
    >>> plot_win_rates(summarise(cosines))                 # against the oracle and against retrieval
    >>> plot_quality(results_table(...), line)             # copied share against answer cosine, the clean line
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection

from e2p_lib.evaluate.metrics import REFERENCE, RETRIEVAL, check_cosines

COSINE_LABEL = "cosine(answer, target)"


def method_colours(methods: Sequence[str]) -> dict[str, tuple]:
    """A distinct colour per method, by position, so the same dict order means the same colours: tab10 for up to
    ten methods, tab20 (ten hues, dark and light) up to twenty, then evenly spaced hues.

    Raises:
        ValueError: a method named twice (two lines would share one name).
    """
    if len(set(methods)) != len(methods):
        raise ValueError(f"Method names repeat in {list(methods)}: each needs its own colour.")
    if len(methods) <= 10:
        palette = plt.colormaps["tab10"].colors
    elif len(methods) <= 20:
        palette = plt.colormaps["tab20"].colors
    else:
        palette = plt.colormaps["hsv"](np.linspace(0, 1, len(methods), endpoint=False))
    return {name: tuple(palette[i]) for i, name in enumerate(methods)}


def plot_cosine_distributions(
    cosines_by_method: Mapping[str, np.ndarray],
    kind: str = "violin",
    title: str = "Answer cosine to the target, per method",
) -> plt.Figure:
    """One horizontal violin (or box) per method, top to bottom in the dict's order, with the mean as a black dot."""
    if kind not in ("violin", "box"):
        raise ValueError(f"kind={kind!r} must be 'violin' or 'box'.")
    arrays = check_cosines(cosines_by_method)
    names, colours = list(arrays), method_colours(list(arrays))
    positions = np.arange(len(names))[::-1]  # first method on top
    fig, ax = plt.subplots(figsize=(7.5, 0.6 * len(names) + 1.5))
    values = [arrays[name] for name in names]
    if kind == "violin":
        parts = ax.violinplot(
            values, positions=positions, orientation="horizontal", showmedians=True, showextrema=False
        )
        for body, name in zip(parts["bodies"], names):
            body.set(facecolor=colours[name], alpha=0.6)
        parts["cmedians"].set(color="0.25", label="median")
    else:
        parts = ax.boxplot(
            values,
            positions=positions,
            orientation="horizontal",
            patch_artist=True,
            widths=0.6,
            flierprops={"markersize": 2},
        )
        for box, name in zip(parts["boxes"], names):
            box.set(facecolor=colours[name], alpha=0.6)
    ax.scatter([v.mean() for v in values], positions, color="black", s=14, zorder=3, label="mean")
    ax.set_yticks(positions, names)
    ax.set(xlabel=COSINE_LABEL, title=title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=2, frameon=False)  # below: violins fill the axes
    fig.tight_layout()
    return fig


def plot_cosine_ecdf(
    cosines_by_method: Mapping[str, np.ndarray], title: str = "Cumulative distribution of answer cosine"
) -> plt.Figure:
    """Empirical CDF per method: the share of targets at or below each cosine. A curve further right is better."""
    arrays = check_cosines(cosines_by_method)
    colours = method_colours(list(arrays))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, values in arrays.items():
        ax.ecdf(values, color=colours[name], label=f"{name} (median {np.median(values):.2f})")
    ax.set(xlabel=COSINE_LABEL, ylabel="share of targets", title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _binned_means(x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean x, mean y) in each bin of x that holds at least `min_points` points (sparser bins would be noise)."""
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    kept = [b for b in range(len(edges) - 1) if np.sum(which == b) >= min_points]
    return (np.array([x[which == b].mean() for b in kept]), np.array([y[which == b].mean() for b in kept]))


def plot_cosine_vs_length(
    cosines_by_method: Mapping[str, np.ndarray],
    lengths_by_method: Mapping[str, np.ndarray],
    n_bins: int = 8,
    min_points: int = 3,
    title: str = "Answer cosine vs answer length",
) -> plt.Figure:
    """Scatter of answer cosine against answer length (e.g. cl100k tokens), a colour per method, and per method a
    line through the mean cosine of each length bin: does a method win by answering longer or shorter?

    Bins are quantiles of all methods' lengths pooled (`n_bins` of them, equal counts overall), so every method is
    averaged over the same length ranges; bins with fewer than `min_points` of a method's answers are skipped.
    """
    arrays = check_cosines(cosines_by_method)
    if set(lengths_by_method) != set(arrays):
        raise ValueError(
            f"lengths_by_method has methods {sorted(lengths_by_method)}, cosines_by_method "
            f"{sorted(arrays)}; give one length per answer for exactly the same methods."
        )
    lengths = {name: np.asarray(lengths_by_method[name], dtype=np.float64) for name in arrays}
    for name, values in lengths.items():
        if values.shape != arrays[name].shape:
            raise ValueError(f"{name!r} has {values.shape} lengths for {arrays[name].shape} cosines; one per answer.")
    edges = np.unique(np.quantile(np.concatenate(list(lengths.values())), np.linspace(0, 1, n_bins + 1)))
    colours = method_colours(list(arrays))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, cosines in arrays.items():
        ax.scatter(lengths[name], cosines, s=6, alpha=0.3, color=colours[name])
        if len(edges) > 1:
            x, y = _binned_means(lengths[name], cosines, edges, min_points)
            ax.plot(x, y, color=colours[name], marker="o", lw=2, label=name)
    ax.set(xlabel="answer length (tokens)", ylabel=COSINE_LABEL, title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_answer_map(
    target_vectors: np.ndarray,
    answer_vectors_by_method: Mapping[str, np.ndarray],
    n_shown: int = 40,
    seed: int = 0,
    ncols: int = 4,
    title: str = "Targets and answers (PCA fitted on the targets)",
) -> plt.Figure:
    """One panel per method: every target as a grey dot, and for `n_shown` targets (the same random subset in
    every panel, drawn with `seed`) a line from the target to the method's answer, which is a coloured dot.

    The projection is a 2-D PCA fitted on the targets alone, so all panels share one map and an answer's position
    says where it lands in the targets' own space. Short lines are good; a method whose dots pile up in one spot
    answers every target alike. Two dimensions keep only part of the variance: read directions, not distances.
    """
    from sklearn.decomposition import PCA

    targets = np.asarray(target_vectors, dtype=np.float64)
    for name, vectors in answer_vectors_by_method.items():
        if np.shape(vectors) != targets.shape:
            raise ValueError(
                f"Answers of {name!r} have shape {np.shape(vectors)}; targets have {targets.shape}. "
                f"Give one answer vector per target, in the targets' order."
            )
    pca = PCA(n_components=2, random_state=seed).fit(targets)
    target_xy = pca.transform(targets)
    shown = np.sort(np.random.default_rng(seed).choice(len(targets), size=min(n_shown, len(targets)), replace=False))
    names, colours = list(answer_vectors_by_method), method_colours(list(answer_vectors_by_method))
    ncols = min(ncols, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows + 0.4), sharex=True, sharey=True, squeeze=False
    )
    for ax, name in zip(axes.flat, names):
        answer_xy = pca.transform(np.asarray(answer_vectors_by_method[name], dtype=np.float64)[shown])
        ax.scatter(target_xy[:, 0], target_xy[:, 1], s=3, color="0.8")
        ax.add_collection(
            LineCollection(
                np.stack([target_xy[shown], answer_xy], axis=1), colors=colours[name], linewidths=0.8, alpha=0.7
            )
        )
        ax.scatter(answer_xy[:, 0], answer_xy[:, 1], s=10, color=colours[name], zorder=3)
        ax.set_title(name, fontsize="medium")
    for ax in axes.flat[len(names) :]:
        fig.delaxes(ax)
    fig.suptitle(title)
    fig.supxlabel("PC 1 of targets")
    fig.supylabel("PC 2 of targets")
    fig.tight_layout()
    return fig


def plot_win_rates(
    summary: pd.DataFrame,
    reference: str = REFERENCE,
    retrieval: str = RETRIEVAL,
    title: str = "Win rate per target (ties count half)",
) -> plt.Figure:
    """Horizontal bars from a `summarise` table: each method's win rate against the oracle (`reference`) and
    against retrieval, with 0.5 (as good as the comparator) marked. A comparison that is all NaN is left out."""
    series = [
        (column, label)
        for column, label in (("win_vs_reference", f"vs {reference}"), ("win_vs_retrieval", f"vs {retrieval}"))
        if column in summary and summary[column].notna().any()
    ]
    if not series:
        raise ValueError(
            f"The table has no win rates (columns win_vs_reference / win_vs_retrieval, not all NaN); "
            f"its columns are {list(summary.columns)}. Pass the output of metrics.summarise."
        )
    positions = np.arange(len(summary))[::-1]  # first method on top
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(summary) + 1.5))
    for k, ((column, label), colour) in enumerate(zip(series, ("#4c72b0", "#dd8452"))):
        ax.barh(
            positions + (len(series) - 1) * height / 2 - k * height,
            summary[column].to_numpy(),
            height=height,
            color=colour,
            label=label,
        )
    ax.axvline(0.5, color="black", ls="--", lw=1)
    ax.set_yticks(positions, summary.index.tolist())
    ax.set(xlim=(0, 1), xlabel="share of targets where the method's answer is closer", title=title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=len(series), frameon=False)  # below the bars
    fig.tight_layout()
    return fig


def plot_budget_curve(curve: pd.DataFrame, references: Mapping[str, float] | None = None) -> plt.Figure:
    """Mean answer cosine against environment calls per target (log scale), one line per method with its 95%
    interval as a band (`budget_curve`'s table), and horizontal reference lines (e.g. {"original prompt": 0.66})."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = method_colours(list(curve["method"].unique()) + list(references or {}))
    for method, rows in curve.groupby("method", sort=False):
        rows = rows.sort_values("budget")
        ax.plot(rows["budget"], rows["mean_cosine"], marker="o", color=colours[method], label=method)
        ax.fill_between(rows["budget"], rows["ci95_low"], rows["ci95_high"], color=colours[method], alpha=0.15)
    for name, value in (references or {}).items():
        ax.axhline(value, linestyle="--", color=colours[name], label=name)
    ax.set_xscale("log", base=2)
    budgets = sorted(curve["budget"].unique())
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("environment calls per target (budget)")
    ax.set_ylabel("mean answer cosine to the target")
    ax.set_title("Quality against environment budget")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_quality(table: pd.DataFrame, max_copied_share: float | None = None, reference: str = REFERENCE) -> plt.Figure:
    """The two things e2p is judged on, one point per method: mean copied share (x) against mean answer cosine (y)
    with its 95% interval, the clean line as a vertical band edge and the original prompt's cosine as a line.

    `table`: `results_table`'s, with a `copied_share` column. Up and to the left is better.
    """
    if "copied_share" not in table:
        raise KeyError("The table has no copied_share column: pass copied_shares= to results_table.")
    rows = table.dropna(subset=["copied_share"])
    colours = method_colours(list(rows.index))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, row in rows.iterrows():
        ax.errorbar(
            row["copied_share"],
            row["mean_cosine"],
            yerr=[[row["mean_cosine"] - row["ci95_low"]], [row["ci95_high"] - row["mean_cosine"]]],
            fmt="o",
            color=colours[name],
            label=name,
            capsize=3,
        )
    if max_copied_share is not None:
        ax.axvspan(max_copied_share, max(1.0, rows["copied_share"].max()), color="0.9", zorder=0, label="not clean")
    if reference in rows.index:
        ax.axhline(rows.loc[reference, "mean_cosine"], color="0.4", ls="--", lw=1)
    ax.set(
        xlim=(-0.02, max(0.6, rows["copied_share"].max() + 0.05)),
        xlabel="copied share of the prompt (words in 5-grams of stored outputs)",
        ylabel=f"mean {COSINE_LABEL}",
        title="Answer cosine against copying, per method",
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig
