"""Run an experiment script with the policy reading topic phrases instead of the nearest stored output.

    TOPIC_MODE=topics E2P_DATA_DIR=<data folder> python experiments/topic_reading.py experiments/sft_targets.py \\
        --out <folder> --answers 1
    TOPIC_MODE=topics E2P_DATA_DIR=<data folder> python experiments/topic_reading.py experiments/clean_search.py \\
        --policy <folder>/policy --targets 60 --variants one-call,search

`pipeline.nearest_answers`, what the policy reads as stored answers in training (03) and in the search, is replaced:
per target, the 4 phrases (runs of up to 3 content words between stop words) of its 8 nearest stored outputs whose
embeddings lie nearest it, no two sharing a word, shown as one line "Topics: a, b, c, d" (TOPIC_MODE=topics), or after
the nearest output (TOPIC_MODE=both, with --answers 2). Phrase vectors are cached in CACHE.
"""

import os
import re
import runpy
import sys

import numpy as np

import e2p_lib.pipeline as pipeline
from e2p_lib.embed import make_embedder
from e2p_lib.evaluate.quality import words
from e2p_lib.models.policy import Hypothesis
from e2p_lib.store.retrieval import nearest_rows

STOP = set(
    """a an the and or but if of to in on at by for with from as is are was were be been being it its this
that these those there their they them he she his her we our you your i me my not no so such than
then also can could will would should may might must do does did done have has had which who whom
whose what when where why how all any each every some many much more most other into over under
about after before between through during up down out off again further once here very just only own
same too both few nor s t one two three first second new use used using make makes made include
includes including well like e g""".split()
)
MODE = os.environ.get("TOPIC_MODE", "topics")
K = int(os.environ.get("TOPIC_K", "4"))
_emb, _cache = None, {}


def phrases(texts, max_len=3, limit=80):
    out = []
    for text in texts:
        for chunk in re.split(r"[.,;:!?()\n\"]+", text):
            run = []
            for w in words(chunk) + [None]:
                if w is None or w in STOP or w.isdigit():
                    for s in range(0, len(run), max_len):
                        out.append(" ".join(run[s : s + max_len]))
                    run = []
                else:
                    run.append(w)
    return list(dict.fromkeys(p for p in out if len(p) > 2))[:limit]


CACHE = os.environ.get("TOPIC_CACHE", "/tmp/topic-phrases.npz")


def _load():
    if not _cache and os.path.exists(CACHE):
        z = np.load(CACHE, allow_pickle=True)
        _cache.update(zip(z["phrases"].tolist(), z["vectors"]))


def build(outputs):
    global _emb
    _emb = make_embedder("local")
    ps = list(dict.fromkeys(p for o in outputs for p in phrases([o])))
    v = _emb.embed(ps)
    np.savez(CACHE, phrases=np.array(ps, dtype=object), vectors=v)
    print(len(ps), "phrases")


def vectors(ps):
    global _emb
    _load()
    if _emb is None and any(p not in _cache for p in ps):
        _emb = make_embedder("local")
    new = [p for p in dict.fromkeys(ps) if p not in _cache]
    if new:
        for p, v in zip(new, _emb.embed(new)):
            _cache[p] = v
    return np.stack([_cache[p] for p in ps])


def topics(target, outputs):
    pool = phrases(outputs)
    if not pool:
        return ""
    order = np.argsort(-(vectors(pool) @ target))
    chosen, used = [], set()
    for i in order:
        ws = set(pool[i].split())
        if ws & used:
            continue
        chosen.append(pool[i])
        used |= ws
        if len(chosen) == K:
            break
    return ", ".join(chosen)


def nearest_answers(store, targets, k, exclude_ids=None):
    targets = np.asarray(targets, dtype=np.float32)
    rows = nearest_rows(store, targets, 8, exclude_ids)
    # embed all phrases of this batch at once
    vectors([p for row in rows for p in phrases([n.output for n in row])])
    out = []
    for t, row in zip(targets, rows):
        t = t / np.linalg.norm(t)
        text = topics(t, [n.output for n in row])
        topic = [Hypothesis("Topics: " + text, float("nan"), None, kind="answer")] if text else []
        nearest = pipeline.as_answers(row[:1])
        out.append(topic if MODE == "topics" else nearest + topic)
    return out


pipeline.nearest_answers = nearest_answers

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
