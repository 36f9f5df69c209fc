"""What every embedder is (`Embedder`) and the helpers they share: `check_texts`, `l2_normalise`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """What the rest of e2p needs from an embedder."""

    name: str  # identifies the model, e.g. "local/all-MiniLM-L6-v2" or "openai/text-embedding-3-small"
    dimensions: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dimensions) float32, L2-normalised, in input order."""
        ...


def check_texts(
    texts: Sequence[str],
    *,
    verb: str = "embed()",
    item: str = "text",
    noun: str = "input",
    advice: str = "Drop or fill them before embedding; e2p never embeds them as zero vectors.",
) -> list[str]:
    """Return `texts` as a list, or raise ValueError naming every position that is not a non-blank string.

    `verb`, `item`, `noun` and `advice` word the errors for the caller (the LM environments check prompts too).
    """
    if isinstance(texts, str):
        raise TypeError(f"{verb} takes a list of {item}s, not one string: wrap it as [{item}].")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        shown = ", ".join(f"{i}: {texts[i]!r}" for i in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(f"{len(bad)} {noun}(s) are not non-empty strings ({shown}{more}). {advice}")
    return texts


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (a zero row raises: it has no direction)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("An embedding came back as a zero or non-finite vector; it cannot be normalised.")
    return vectors / norms
