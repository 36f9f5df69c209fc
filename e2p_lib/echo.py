"""Echo prompts: ask the environment to repeat a text composed to land near the target.

The embedder is free and the environment is not, so the text is built with the embedder alone: sentences of the
stored outputs nearest the target, chosen greedily while they bring the text's embedding nearer the target (the
nearest single output is rarely the nearest text those sentences can make). The prompt then asks the environment to
repeat that text; a small LM repeats it loosely, which is why the answer, not the text, is what gets scored.

    >>> texts = echo_texts(store, targets, embedder, k=8, exclude_ids=exclusions)
    >>> echo_prompts(texts, 2)[0]
    ['<text>\\n\\nRepeat the text above word for word.', 'Say exactly this: "<text>"']

An echo prompt is a copy instruction, not the kind of instruction a dataset's prompt is: `Inverter.search` keeps
them in a pool of their own (source "echo"), never shows them to the policy, and spends calls on them only when
asked (`echo=`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from e2p_lib.checks import check_positive_int
from e2p_lib.embed.base import Embedder, l2_normalise
from e2p_lib.store.retrieval import nearest_prompt

# Best first: on the demo data's first 60 test targets, SmolLM2's answers to these landed at 0.620, 0.604 and 0.581
# mean cosine (bench/echo.py; README, "Echo prompts"); the instruction after the text is the one it follows best.
ECHO_TEMPLATES = (
    "{text}\n\nRepeat the text above word for word.",
    'Say exactly this: "{text}"',
    "Repeat the following text exactly, and nothing else:\n\n{text}",
)
# A 64-token answer holds about 45 words: a longer text could not come back whole.
DEFAULT_MAX_WORDS = 45
# Sentence ends or line breaks; a regex because the texts are short model outputs, not documents that would need a
# trained sentence splitter (lists and code split on their lines).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass
class EchoText:
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
) -> list[EchoText]:
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
    return [EchoText(" ".join(c), float(b)) if c else EchoText("", float("nan")) for c, b in zip(chosen, best)]


def echo_texts(
    store, targets: np.ndarray, embedder: Embedder, *, k: int = 8, exclude_ids=None, **options
) -> list[EchoText]:
    """Per target, a text composed from the sentences of the `k` stored outputs nearest it (never the rows in
    `exclude_ids`, as for retrieval); `options` go to `compose`."""
    frame = nearest_prompt(store, targets, None, k=k, exclude_ids=exclude_ids, prompt_key="output")
    outputs: list[list[str]] = [[] for _ in range(len(targets))]
    for position, output in zip(frame["target"], frame["prompt"]):
        outputs[position].append(output)
    return compose(targets, [sentences(row) for row in outputs], embedder, **options)


def echo_prompts(texts: Sequence[EchoText], count: int = 1) -> list[list[str]]:
    """Per text, its first `count` echo prompts (`ECHO_TEMPLATES`, best first); none for an empty text."""
    check_positive_int(count, "count")
    if count > len(ECHO_TEMPLATES):
        raise ValueError(f"count={count}: there are {len(ECHO_TEMPLATES)} echo templates; ask for at most that many.")
    return [[t.format(text=e.text) for t in ECHO_TEMPLATES[:count]] if e.text else [] for e in texts]
