"""Prompt quality: how much of a prompt is pasted text, and the line a clean prompt stays under.

e2p writes instructions, not copies of the answer. A prompt's *copied share* is the share of its words that lie
inside a word 5-gram also found in a text the method could read: the target text (when the target is a text) and
the stored outputs nearest the target. Five words in a row are rarely shared by chance (topic words are), so an
instruction about the same topic scores near 0 while a pasted sentence scores near 1.

    >>> refs = References({"row-7": "Waves break on the shore at night."}, target_text=None)
    >>> refs.copied_share("Write a poem about waves.")                                # 0.0: topic words only
    >>> refs.copied_share("Rewrite: waves break on the shore at night.")              # 0.875: 7 of 8 words pasted
    >>> refs.copied_share("Rewrite: waves break on the shore at night.", own_row="row-7")   # 0.0: its own output

A dataset prompt is compared without its own row's output (`own_row`): its input may quote that text legitimately.
The clean line (`clean_line`) is a percentile of the original prompts' copied shares on validation targets: a prompt
above it copies more than nine in ten of the dataset's own prompts do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from e2p_lib.atomic import write_atomically

COPY_NGRAM = 5  # words in a row that count as copied; shorter runs are topic words and set phrases
CLEAN_PERCENTILE = 90  # the clean line: this percentile of the original prompts' copied shares on validation targets
CLEAN_LINE_FILE = "clean-line.json"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, inner apostrophes kept); punctuation and spacing dropped."""
    return _WORD.findall(str(text).lower())


def ngrams(tokens: Sequence[str], n: int = COPY_NGRAM) -> set[tuple[str, ...]]:
    """The distinct runs of `n` consecutive tokens."""
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def copied_mask(tokens: Sequence[str], grams: set[tuple[str, ...]], n: int = COPY_NGRAM) -> np.ndarray:
    """Per token, whether it lies inside a run of `n` tokens found in `grams`."""
    covered = np.zeros(len(tokens), dtype=bool)
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i : i + n]) in grams:
            covered[i : i + n] = True
    return covered


def copied_share(prompt: str, texts: Sequence[str], n: int = COPY_NGRAM) -> float:
    """The share of `prompt`'s words inside an `n`-word run that also occurs in one of `texts` (0.0 for no words)."""
    tokens = words(prompt)
    if not tokens:
        return 0.0
    grams = set().union(*(ngrams(words(t), n) for t in texts)) if texts else set()
    return float(copied_mask(tokens, grams, n).mean())


class References:
    """The texts one target's prompts are checked against: stored outputs by row id, and the target text if any.

    Built once per target, the n-grams of each text are computed once and reused for every candidate.
    """

    def __init__(self, outputs: Mapping[str, str], target_text: str | None = None, n: int = COPY_NGRAM):
        self.n = n
        self.by_row = {str(row): ngrams(words(text), n) for row, text in outputs.items()}
        self.target = ngrams(words(target_text), n) if target_text else set()

    def copied_share(self, prompt: str, own_row: str | None = None) -> float:
        """`prompt`'s copied share against every reference text but `own_row`'s output (a dataset prompt's own)."""
        tokens = words(prompt)
        if not tokens:
            return 0.0
        grams = set(self.target).union(*(g for row, g in self.by_row.items() if row != own_row))
        return float(copied_mask(tokens, grams, self.n).mean())


def references_for(store, targets: np.ndarray, k: int, exclude_ids=None, texts=None) -> list[References]:
    """Per target, the `k` stored outputs nearest it (never an id in `exclude_ids[i]`) and its text, if any: what a
    method that reads the store could copy from."""
    from e2p_lib.store.retrieval import nearest_rows

    rows = nearest_rows(store, targets, k, exclude_ids)
    return [References({n.id: n.output for n in row}, t) for row, t in zip(rows, texts or [None] * len(rows))]


def stored_rows(prompts: Sequence[str], neighbours, hypotheses) -> list[str | None]:
    """Per target, the stored row its prompt is (the row id of a neighbour's or hypothesis's prompt it equals), or
    None: a dataset prompt is measured without its own row's output, which its input may quote."""
    rows = []
    for prompt, near, known in zip(prompts, neighbours, hypotheses):
        ids = {p: i for i, p in near}  # retrieved (id, prompt) pairs
        ids.update({h.prompt: h.id for h in known if h.id is not None})
        rows.append(ids.get(prompt))
    return rows


def copied_shares(
    prompts: Sequence[str], references: Sequence[References], own_rows: Sequence[str | None] | None = None
) -> np.ndarray:
    """Each prompt's copied share against its target's references (`own_rows[i]`: the stored row the prompt is
    itself from, whose output it may quote)."""
    if len(prompts) != len(references):
        raise ValueError(f"{len(prompts)} prompts for {len(references)} targets' references: pass one per target.")
    own_rows = own_rows if own_rows is not None else [None] * len(prompts)
    return np.array([r.copied_share(p, own_row=o) for p, r, o in zip(prompts, references, own_rows)])


@dataclass(frozen=True)
class CleanLine:
    """The most a clean prompt may copy, and how it was set (stored with the run, printed where it is used)."""

    max_copied_share: float
    percentile: float
    targets: int  # validation targets whose original prompts set it
    originals_mean: float  # their mean copied share, the reference every row is read against
    neighbours: int  # stored outputs per target the shares were measured against
    store: str

    def __str__(self) -> str:
        return (
            f"clean line: copied share <= {self.max_copied_share:.3f} (the original prompts' {self.percentile:g}th "
            f"percentile on {self.targets} validation targets, mean {self.originals_mean:.3f}; {self.neighbours} "
            f"nearest stored outputs of {self.store!r})"
        )


def clean_line(
    shares: Sequence[float], *, percentile: float = CLEAN_PERCENTILE, neighbours: int, store: str
) -> CleanLine:
    """The clean line from the original prompts' copied shares on validation targets.

    Raises:
        ValueError: no shares, a share outside [0, 1], or a percentile outside [0, 100].
    """
    values = np.asarray(list(shares), dtype=np.float64)
    if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"clean_line needs copied shares in [0, 1] for at least one target; got {values[:5]}.")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile={percentile!r} must be between 0 and 100.")
    return CleanLine(
        float(np.percentile(values, percentile)), float(percentile), int(values.size), float(values.mean()),
        int(neighbours), str(store),
    )  # fmt: skip


def save_clean_line(line: CleanLine, folder: str | Path) -> Path:
    """Write `line` to `<folder>/clean-line.json` atomically; return the path."""
    path = Path(folder) / CLEAN_LINE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(asdict(line), indent=2) + "\n").encode("utf-8"))
    return path


def load_clean_line(folder: str | Path) -> CleanLine | None:
    """The line `save_clean_line` wrote to `folder`, or None when there is none.

    Raises:
        ValueError: the file exists but is not a clean line (names the file and how to write it again).
    """
    path = Path(folder) / CLEAN_LINE_FILE
    if not path.is_file():
        return None
    try:
        line = CleanLine(**json.loads(path.read_text(encoding="utf-8")))
        if not 0 <= line.max_copied_share <= 1 or math.isnan(line.max_copied_share):
            raise ValueError(f"max_copied_share {line.max_copied_share!r} is not in [0, 1]")
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{path} is not a clean line ({error}): rerun notebooks/02_pinecone.ipynb to write it."
        ) from None
    return line
