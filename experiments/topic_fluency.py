"""Topic phrase rules on validation targets: each rule's topic prompt on the index's top prompt (" Mention a, b and
c."), answered once, with its perplexity under the base LM, its words and copied share.

    E2P_DATA_DIR=<data folder> python experiments/topic_fluency.py --targets 120 --rules library,stems,cased,cased-3

Needs a data folder where 01-03 ran (the answer index, the store, the clean line). Validation rows after the first 40
(04 chooses PPO's step and the policy on those). A prompt above the clean line is not sent (the top prompt stands).
Rules: `library` is `e2p_lib.inversion.topics.choose_topics`; the others cut phrases here: `stems` lets no two
phrases share a word stem (Porter's) nor a phrase repeat one, `cased` keeps a word's capitals where the outputs write
it capitalised inside a sentence (names, acronyms), `words` cuts one-word phrases, `lm` keeps of the 2N nearest
phrases the N whose one-phrase prompt the base LM finds most likely, `-N` keeps N phrases instead of 4.
Prints per rule: mean cosine alone and as a second call after the top prompt, the median perplexity, words, copied
share, and paired differences [95% bootstrap interval] to the index's top prompt and to the first rule.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

import numpy as np

from e2p_lib.data import add_split
from e2p_lib.embed import embedder_from_name
from e2p_lib.embed.base import l2_normalise
from e2p_lib.embed.cache import load_embedded_dataset
from e2p_lib.evaluate.metrics import paired_difference, perplexity
from e2p_lib.evaluate.quality import COPY_NGRAM, References, ngrams, words
from e2p_lib.inversion import SearchConfig
from e2p_lib.inversion.api import load_inverter
from e2p_lib.inversion.topics import PHRASE_WORDS, TOPIC_PHRASES, TOPIC_TEMPLATES, choose_topics, joined
from e2p_lib.lm.smollm import load_smollm2
from e2p_lib.pipeline import held_out
from e2p_lib.store.retrieval import nearest_rows
from e2p_lib.train.rewards import AnswerCosineReward

SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
BREAK = re.compile(r"[.,;:!?()\[\]{}\"\n]+")
TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z0-9]+)*")


def cased_forms(texts: Sequence[str]) -> dict[str, str]:
    """Lower-cased word -> the form to write: capitalised where some output writes it so inside a sentence, or in
    capitals (LED) anywhere."""
    forms: dict[str, str] = {}
    for text in texts:
        for sentence in SENTENCE.split(str(text)):
            for position, token in enumerate(TOKEN.findall(sentence)):
                if (position and token[0].isupper()) or (len(token) > 1 and token.isupper()):
                    forms.setdefault(token.lower(), token)
    return forms


def cut(texts: Sequence[str], stems: bool, cased: bool, limit: int = 80, most: int = PHRASE_WORDS) -> list[str]:
    """Runs of content words between stop words, digits and punctuation, at most `most` each; with `stems` a
    word whose stem the run already holds is dropped; with `cased`, words written as `cased_forms` says."""
    from nltk.stem import PorterStemmer
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS as stop

    stem = PorterStemmer().stem
    forms = cased_forms(texts) if cased else {}
    found = []
    for text in texts:
        for chunk in BREAK.split(str(text)):
            run: list[str] = []
            for word in [*words(chunk), None]:
                if word is not None and word not in stop and not word.isdigit():
                    if not (stems and stem(word) in {stem(w) for w in run}):
                        run.append(word)
                    continue
                found += [" ".join(forms.get(w, w) for w in run[i : i + most]) for i in range(0, len(run), most)]
                run = []
    return list(dict.fromkeys(p for p in found if len(p) > 1))[:limit]


def choose(targets, outputs, embed, count: int, stems: bool, cased: bool, most: int = PHRASE_WORDS) -> list[list[str]]:
    """`choose_topics` with `cut`'s phrases; with `stems`, no two chosen phrases share a stem."""
    from nltk.stem import PorterStemmer

    stem = PorterStemmer().stem
    pools = [cut(row, stems, cased, most=most) for row in outputs]
    distinct = list(dict.fromkeys(p for pool in pools for p in pool))
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
            keys = {stem(w) if stems else w for w in words(phrase)}
            if used & keys or ngrams(words(joined([*picked, phrase])), COPY_NGRAM) & grams:
                continue
            picked.append(phrase)
            used |= keys
        chosen.append(picked)
    return chosen


def fluent(prompts, topics, count: int, model, tokenizer) -> list[list[str]]:
    """Per target, the `count` of its phrases (`topics[i]`, nearest first) whose one-phrase topic prompt on
    `prompts[i]` has the lowest perplexity under the base LM, kept in their order."""
    singles = [[TOPIC_TEMPLATES[0].format(prompt=p, topics=t) for t in found] for p, found in zip(prompts, topics)]
    flat = perplexity([s for row in singles for s in row], model, tokenizer, show_progress=False)
    chosen, start = [], 0
    for found in topics:
        scores = flat[start : start + len(found)]
        start += len(found)
        keep = set(np.argsort(scores)[:count].tolist())
        chosen.append([t for j, t in enumerate(found) if j in keep])
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=120)
    parser.add_argument("--skip", type=int, default=40, help="validation rows to skip (04's choice rows)")
    parser.add_argument("--rules", default="library,stems,cased,cased-3")
    args = parser.parse_args()
    dataset = load_embedded_dataset(model="local/all-MiniLM-L6-v2", dimensions=384)
    frame = add_split(dataset.frame)
    rows, targets, excluded = held_out(frame, dataset.vectors, "val", args.skip, args.targets)
    inverter = load_inverter(None, embedder=embedder_from_name(dataset.model, dataset.dimensions))
    reward = AnswerCosineReward(inverter.environment, inverter.embedder, max_new_tokens=SearchConfig().answer_tokens)
    known = inverter.index.hypotheses(targets, k=1, exclude_ids=excluded)
    near = nearest_rows(inverter.retrieval, targets, SearchConfig().neighbours, excluded)
    outputs = [[n.output for n in row] for row in near]
    references = [References({n.id: n.output for n in row}) for row in near]
    line = inverter.max_copied_share
    base_lm, base_tokenizer = load_smollm2(device="cpu")
    top = np.array([row[0].cosine for row in known])
    ppl_top = perplexity([row[0].prompt for row in known], base_lm, base_tokenizer, show_progress=False)
    print(f"answer index, top 1: {top.mean():.3f}; median perplexity {np.nanmedian(ppl_top):.1f}")
    first = None
    for rule in args.rules.split(","):
        name, _, count = rule.partition("-")
        count = int(count) if count else TOPIC_PHRASES
        if name == "library":
            topics = choose_topics(targets, outputs, inverter.embed, count)
        elif name == "words":
            topics = choose(targets, outputs, inverter.embed, count, stems=True, cased=False, most=1)
        elif name == "lm":
            pool = choose(targets, outputs, inverter.embed, 2 * count, stems=True, cased=False)
            topics = fluent([row[0].prompt for row in known], pool, count, base_lm, base_tokenizer)
        else:
            topics = choose(targets, outputs, inverter.embed, count, stems=True, cased=name == "cased")
        prompts = [
            TOPIC_TEMPLATES[0].format(prompt=row[0].prompt, topics=joined(found)) if found else row[0].prompt
            for row, found in zip(known, topics)
        ]
        own = [row[0].id for row in known]
        shares = np.array([r.copied_share(p, own_row=o) for r, p, o in zip(references, prompts, own)])
        sent = shares <= line + 1e-9
        answered = np.where(sent, reward([p if s else "x" for p, s in zip(prompts, sent)], targets).rewards, top)
        ppl = perplexity(prompts, base_lm, base_tokenizer, show_progress=False)
        print(
            f"{rule:12s} alone {answered.mean():.3f}  better of two {np.maximum(answered, top).mean():.3f}  median "
            f"perplexity {np.nanmedian(ppl):.1f}  words {np.mean([len(words(p)) for p in prompts]):.1f}  copied "
            f"{shares.mean():.3f}  sent {sent.mean():.2f}  e.g. {prompts[1]!r}",
            flush=True,
        )
        for label, other in (("answer index, top 1", top), *(((first[0], first[1]),) if first else ())):
            mean, low, high = paired_difference(answered, other)
            print(f"  alone - {label}: {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
        first = first or (rule, answered)


if __name__ == "__main__":
    main()
