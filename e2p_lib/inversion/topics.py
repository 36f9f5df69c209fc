"""Topic prompts: the best known prompts with the target's topic words added, a clean request of the dataset's kind.

The nearest stored outputs say what the target is about; their sentences, pasted in, copy them (the pasting track).
Their topic words do not: an instruction may name its topic. Phrases of up to three content words are cut from the
outputs at stop words and punctuation (`phrases`); the embedder, which is free, ranks them by cosine to the target,
and the nearest few that share no word are kept (`choose_topics`), each joined list checked to share no 5-word run
with the outputs, so the prompts stay under the clean line.

    >>> phrases(["Solar panels cut energy bills, and LED bulbs last longer."])
    ['solar panels cut', 'energy bills', 'led bulbs', 'longer']
    >>> topic_prompts([["Give tips to save energy."]], [["solar panels", "led bulbs"]], 1)
    [['Give tips to save energy. Mention solar panels and led bulbs.']]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from e2p_lib.checks import check_positive_int
from e2p_lib.embed.base import l2_normalise
from e2p_lib.evaluate.quality import COPY_NGRAM, ngrams, words
from e2p_lib.inversion.templates import SCHEDULE, scheduled_prompts

# Most measured first (docs/experiments.md#topic-prompts).
TOPIC_TEMPLATES = (
    "{prompt} Mention {topics}.",
    "{prompt}\nTopics: {topics}.",
    "{prompt} Focus on {topics}.",
)
TOPIC_ORDER = SCHEDULE  # per topic call: (rank of the known prompt, wording), the grounded calls' schedule
TOPIC_PHRASES = 4  # phrases per prompt (docs/experiments.md#topic-prompts)
PHRASE_WORDS = 3  # a longer run of content words is cut into pieces of this many
_BREAK = re.compile(r"[.,;:!?()\[\]{}\"\n]+")


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # a kept list, not ours to maintain

    return ENGLISH_STOP_WORDS


def phrases(texts: Sequence[str], limit: int = 80) -> list[str]:
    """The distinct runs of content words in `texts`, in order, at most `limit`: lower-cased words between stop
    words, digits and punctuation, cut into pieces of at most PHRASE_WORDS words; single letters dropped."""
    stop, found = _stop_words(), []
    for text in texts:
        for chunk in _BREAK.split(str(text)):
            run: list[str] = []
            for word in [*words(chunk), None]:
                if word is not None and word not in stop and not word.isdigit():
                    run.append(word)
                    continue
                found += [" ".join(run[i : i + PHRASE_WORDS]) for i in range(0, len(run), PHRASE_WORDS)]
                run = []
    return list(dict.fromkeys(p for p in found if len(p) > 1))[:limit]


def joined(topics: Sequence[str]) -> str:
    """'a, b and c'."""
    return topics[0] if len(topics) == 1 else ", ".join(topics[:-1]) + " and " + topics[-1]


def choose_topics(
    targets: np.ndarray,
    outputs: Sequence[Sequence[str]],
    embed: Callable[[Sequence[str]], np.ndarray],
    count: int = TOPIC_PHRASES,
) -> list[list[str]]:
    """Per target, at most `count` phrases of its stored outputs (`outputs[i]`), nearest the target first, no two
    sharing a word, and none that would make the joined list share a COPY_NGRAM-word run with those outputs. One
    `embed` call (an embedder's `embed`, or `Inverter.embed`, which caches) for every target's phrases."""
    check_positive_int(count, "count")
    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} rows of outputs for {len(targets)} targets: pass one row per target.")
    pools = [phrases(row) for row in outputs]
    distinct = list(dict.fromkeys(p for pool in pools for p in pool))
    if not distinct:
        return [[] for _ in pools]
    position = {p: i for i, p in enumerate(distinct)}
    cosines = l2_normalise(embed(distinct)) @ l2_normalise(np.asarray(targets, dtype=np.float32)).T
    chosen = []
    for i, (pool, row) in enumerate(zip(pools, outputs)):
        grams = set().union(*(ngrams(words(text), COPY_NGRAM) for text in row)) if row else set()
        picked: list[str] = []
        used: set[str] = set()
        for phrase in sorted(pool, key=lambda p: -cosines[position[p], i]):
            if len(picked) == count:
                break
            if used & set(phrase.split()) or ngrams(words(joined([*picked, phrase])), COPY_NGRAM) & grams:
                continue
            picked.append(phrase)
            used |= set(phrase.split())
        chosen.append(picked)
    return chosen


def topic_prompts(ranked: Sequence[Sequence[str]], topics: Sequence[Sequence[str]], count: int = 1) -> list[list[str]]:
    """Per target, the first `count` entries of TOPIC_ORDER made from its known prompts (`ranked`, best first) and
    its topics; entries whose prompt rank is missing are skipped, and a target with no topics gets none."""
    fills = [{"topics": joined(found)} if found else None for found in topics]
    return scheduled_prompts(ranked, fills, TOPIC_TEMPLATES, count, "topic")
