"""Figures the notebooks show and save: one function per plot, each returning the matplotlib Figure.

Notebooks call these and then `save_figure(fig, "01_lengths")`, which writes `figures/01_lengths.png` (the prefix
is the notebook's number, so a figure can be traced to the report that made it; `figure_path` says where).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from e2p_lib import config


def figure_path(name: str, folder: str | Path | None = None) -> Path:
    """Where `save_figure(fig, name, folder)` writes: `<figures>/<name>.png`."""
    return Path(folder or config.figures_dir()) / f"{name}.png"


def save_figure(fig: plt.Figure, name: str, folder: str | Path | None = None) -> None:
    """Write `fig` as `figure_path(name, folder)` (150 dpi, tight).

    Returns None on purpose: it is usually a cell's last line, and a returned path would print under every figure.
    """
    path = figure_path(name, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")


def plot_length_histograms(frame: pd.DataFrame, prompt_tokens: np.ndarray) -> plt.Figure:
    """Token-length distributions of prompts and outputs (log-spaced bins: both have long tails)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, values, label in (
        (axes[0], np.asarray(prompt_tokens), "prompt"),
        (axes[1], frame["tokens"].to_numpy(), "output"),
    ):
        values = np.maximum(values, 1)
        bins = np.logspace(0, np.log10(values.max() + 1), 40)
        ax.hist(values, bins=bins, color="#4c72b0")
        ax.set_xscale("log")
        ax.axvline(np.median(values), color="#c44e52", ls="--", label=f"median {np.median(values):.0f}")
        ax.set(xlabel=f"{label} length (cl100k tokens)", ylabel="rows", title=f"{label.capitalize()} lengths")
        ax.legend()
    fig.tight_layout()
    return fig


def project_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D PCA projection (fast and deterministic; enough to see clusters and outliers at a glance)."""
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(np.asarray(vectors, dtype=np.float32))


def plot_embedding_map(
    vectors: np.ndarray, color: np.ndarray | None = None, color_label: str = "", title: str = "Output embeddings (PCA)"
) -> plt.Figure:
    """Scatter of a 2-D projection of `vectors`, coloured by `color` (e.g. log output length)."""
    xy = project_2d(vectors)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    points = ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.6, c=color, cmap="viridis")
    if color is not None:
        fig.colorbar(points, ax=ax, label=color_label)
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    fig.tight_layout()
    return fig


def plot_similarity_histograms(
    series: dict[str, np.ndarray], title: str = "", xlabel: str = "cosine similarity"
) -> plt.Figure:
    """Overlaid histograms of several similarity distributions (one per name), each with its median marked."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bins = np.linspace(min(float(np.min(v)) for v in series.values()), 1.0, 50)
    for (name, values), colour in zip(series.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        ax.hist(values, bins=bins, alpha=0.55, color=colour, label=f"{name} (median {np.median(values):.2f})")
        ax.axvline(np.median(values), color=colour, ls="--")
    ax.set(xlabel=xlabel, ylabel="targets", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_training_curves(history: pd.DataFrame, title: str, metrics: tuple[str, ...] = ("loss",)) -> plt.Figure:
    """Train and validation curves from a tidy history (step, split, metric, value), one panel per metric.

    Training values are noisy per batch, so past 20 points a rolling mean over 5% of them is drawn over them.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = history[history["metric"] == metric]
        for split, colour in (("train", "#4c72b0"), ("val", "#dd8452")):
            part = rows[rows["split"] == split].sort_values("step")
            if part.empty:
                continue
            if split == "train" and len(part) > 20:
                ax.plot(part["step"], part["value"], color=colour, alpha=0.25, lw=0.8)
                smooth = part["value"].rolling(max(len(part) // 20, 2), min_periods=1).mean()
                ax.plot(part["step"], smooth, color=colour, label="train (smoothed)")
            else:
                ax.plot(part["step"], part["value"], color=colour, marker="o" if split == "val" else None, label=split)
        ax.set(xlabel="step", ylabel=metric, title=f"{title}: {metric}")
        ax.legend()
    fig.tight_layout()
    return fig
