"""The pasting track: prompts that carry stored outputs' text, kept apart from e2p's clean prompts.

The embedder is free and the environment is not, so a text near the target is composed with the embedder alone:
sentences of the stored outputs nearest the target, chosen greedily while they bring the text's embedding nearer
(`compose`). Two kinds of prompt carry it, and both paste other rows' outputs into the prompt, so their copied share
is high and `SearchConfig(clean=True)`, the default, never sends them; they are an opt-in track whose rows say so:

- echo prompts ask the environment to repeat the text (`echo_prompts`): copy instructions;
- grounded prompts append it to the best known prompts as ideas (`grounded_prompts`).

    >>> outputs = [[n.output for n in row] for row in nearest_rows(store, targets, 8, exclusions)]
    >>> texts = composed_texts(outputs, targets, embedder)
    >>> echo_prompts(texts, 2)[0]
    ['<text>\\n\\nRepeat the text above word for word.', 'Say exactly this: "<text>"']
    >>> grounded_prompts([["Write a poem about the sea."]], [ComposedText("Waves break.", 0.7)], 1)
    [['Write a poem about the sea.\\nUse these ideas: Waves break.']]

The policy never reads these prompts as hypotheses: it was trained on dataset prompts, not on copies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from e2p_lib.checks import check_positive_int
from e2p_lib.embed.base import Embedder, l2_normalise
from e2p_lib.inversion.templates import SCHEDULE, scheduled_prompts

# Best first (docs/experiments.md#echo-prompts): the instruction after the text is the one SmolLM2 follows best.
ECHO_TEMPLATES = (
    "{text}\n\nRepeat the text above word for word.",
    'Say exactly this: "{text}"',
    "Repeat the following text exactly, and nothing else:\n\n{text}",
)
# A line of its own after the prompt; most measured first (docs/experiments.md#grounded-prompts).
GROUND_TEMPLATES = (
    "{prompt}\nUse these ideas: {text}",
    "{prompt}\nWrite about: {text}",
    "{prompt}\nInclude these points: {text}",
)
# Per grounded call: (rank of the known prompt, wording) (docs/experiments.md#seven-grounded-calls).
GROUND_ORDER = SCHEDULE
DEFAULT_MAX_WORDS = 45  # a 64-token answer holds about 45 words: a longer text could not come back whole
# Sentence ends or line breaks: the texts are short model outputs (lists and code split on their lines).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class ComposedText:
    """A composed text and its embedding's cosine to the target (what a faithful repeat would reach)."""

    text: str
    cosine: float


def sentences(texts: Sequence[str], limit: int = 60) -> list[str]:
    """The distinct non-empty sentences of `texts`, in order, at most `limit`."""
    found = (s.strip() for text in texts for s in _SENTENCE_END.split(text))
    return list(dict.fromkeys(s for s in found if s))[:limit]


def compose(
    targets: np.ndarray,
    pools: Sequence[Sequence[str]],
    embedder: Embedder,
    *,
    max_words: int = DEFAULT_MAX_WORDS,
    max_sentences: int = 4,
) -> list[ComposedText]:
    """Per target, the text of at most `max_sentences` of its pool's sentences (at most `max_words` words) whose
    embedding lands nearest it: greedy, adding the sentence that helps most until none helps. One embedder batch per
    round for all targets."""
    check_positive_int(max_words, "max_words")
    check_positive_int(max_sentences, "max_sentences")
    targets = l2_normalise(np.asarray(targets, dtype=np.float32))
    chosen: list[list[str]] = [[] for _ in pools]
    best = np.full(len(pools), -np.inf)
    active = [i for i, pool in enumerate(pools) if pool]
    for _ in range(max_sentences):
        options = {
            i: [s for s in pools[i] if s not in chosen[i] and len(" ".join([*chosen[i], s]).split()) <= max_words]
            for i in active
        }
        texts = [" ".join([*chosen[i], s]) for i in active for s in options[i]]
        if not texts:
            break
        cosines = l2_normalise(embedder.embed(texts)) @ targets.T
        start, still = 0, []
        for i in active:
            count = len(options[i])
            if count:
                scores = cosines[start : start + count, i]
                j = int(np.argmax(scores))
                if scores[j] > best[i]:
                    chosen[i].append(options[i][j])
                    best[i] = float(scores[j])
                    still.append(i)
            start += count
        active = still
    return [ComposedText(" ".join(c), float(b)) if c else ComposedText("", float("nan")) for c, b in zip(chosen, best)]


def composed_texts(
    outputs: Sequence[Sequence[str]], targets: np.ndarray, embedder: Embedder, **options
) -> list[ComposedText]:
    """Per target, a text composed from the sentences of its stored outputs (`outputs[i]`, nearest first, never an
    excluded row's: `neighbours` reads them); `options` go to `compose`."""
    return compose(targets, [sentences(row) for row in outputs], embedder, **options)


def echo_prompts(texts: Sequence[ComposedText], count: int = 1) -> list[list[str]]:
    """Per text, its first `count` echo prompts (`ECHO_TEMPLATES`, best first); none for an empty text."""
    check_positive_int(count, "count")
    if count > len(ECHO_TEMPLATES):
        raise ValueError(f"count={count}: there are {len(ECHO_TEMPLATES)} echo templates; ask for at most that many.")
    return [[t.format(text=e.text) for t in ECHO_TEMPLATES[:count]] if e.text else [] for e in texts]


def grounded_prompts(ranked: Sequence[Sequence[str]], texts: Sequence[ComposedText], count: int = 1) -> list[list[str]]:
    """Per target, the first `count` entries of GROUND_ORDER made from its known prompts (`ranked`, best first) and
    its composed text; entries whose prompt rank is missing are skipped, and a target with no text gets none."""
    fills = [{"text": e.text} if e.text else None for e in texts]
    return scheduled_prompts(ranked, fills, GROUND_TEMPLATES, count, "grounded")
