"""The process tests/test_kill_anywhere.py kills: runs one write path of e2p, announcing every durable step.

    python tests/kill_child.py SCENARIO WORKDIR [PAUSE_AT]

Every `os.replace` and `os.unlink` (atomic files, segment sweeps, policy folders), every SQLite write transaction
(before and after its COMMIT) and every batch of the fake models prints `EVENT n what`. With PAUSE_AT = N > 0 the
child stops at its N-th event and blocks on stdin until the parent's SIGKILL, so the kill lands exactly there and a
failing seed replays exactly. A run that finishes prints `DONE {json}` last. The models are fakes defined here
(deterministic, instant); the cache, store, checkpoint and PPO code they drive is e2p's own.

Scenarios: embed (embed_dataset into the SQLite cache), store (LocalVectorStore upserts, a delete and compactions),
answers (CachedLM answer-cache writes), sft (train_policy on the tiny policy) and ppo (train_ppo on it): both write
a checkpoint each step, then policy.save. Each is idempotent: rerunning it after a kill resumes the same job.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

PAUSE_AT = 0
_events = 0
_checkpoints = 0  # checkpoint.pt files this process wrote (a resumed trainer writes only the steps it trains)


def event(what: str) -> None:
    """Announce a step; at the PAUSE_AT-th one, wait to be killed."""
    global _events, _checkpoints
    _events += 1
    _checkpoints += what == "replaced checkpoint.pt"
    print(f"EVENT {_events} {what}", flush=True)
    if _events == PAUSE_AT:
        sys.stdin.read()  # the parent never writes: this blocks until SIGKILL
        raise SystemExit("stdin closed before the kill")  # only if the parent died first


def install_hooks() -> None:
    """Announce every rename and unlink, and every SQLite commit (before and after)."""
    real_replace, real_unlink = os.replace, os.unlink

    def replace(src, dst, *args, **kwargs):
        event(f"replace {Path(dst).name}")
        real_replace(src, dst, *args, **kwargs)
        event(f"replaced {Path(dst).name}")

    def unlink(path, *args, **kwargs):
        event(f"unlink {Path(path).name}")
        real_unlink(path, *args, **kwargs)

    os.replace, os.unlink = replace, unlink

    from e2p_lib import sqlite_store

    real_transaction = sqlite_store.write_transaction

    @contextmanager
    def transaction(db):
        with real_transaction(db) as inner:
            yield inner
            event("commit")
        event("committed")

    sqlite_store.write_transaction = transaction  # what every SQLiteCache (embeddings, answers) commits through


# --- the fakes: deterministic and instant ---------------------------------------------------------------------------


def fake_vector(text: str, dimensions: int = 8) -> np.ndarray:
    """A unit vector that depends only on the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeEmbedder:
    name = "fake/hash-embedder"
    dimensions = 8

    def embed(self, texts):
        event(f"embed {len(texts)}")
        return np.stack([fake_vector(t, self.dimensions) for t in texts])


def fake_answer(prompt: str, temperature: float, seed: int) -> str:
    return f"answer to {prompt!r} at temperature {temperature} seed {seed if temperature else '-'}"


def _fake_lm():
    from e2p_lib.lm.base import ChatLM

    class FakeLM(ChatLM):
        name = "fake/echo-lm"

        def settings(self):
            return {"style": "echo"}

        def _iter_generate(self, prompts, max_new_tokens, temperature, seeds):
            for start in range(0, len(prompts), 4):
                event(f"generate {start}")
                positions = list(range(start, min(start + 4, len(prompts))))
                yield positions, [fake_answer(prompts[i], temperature, seeds[i]) for i in positions]

    return FakeLM()


# --- the scenarios ---------------------------------------------------------------------------------------------------


def embed_frame():
    """60 rows, 45 distinct outputs (duplicates are embedded once)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "id": [f"row-{i}" for i in range(60)],
            "prompt": [f"prompt {i}" for i in range(60)],
            "output": [f"output {i % 45}" for i in range(60)],
            "tokens": 2,
            "type": "alpaca",
        }
    )


def run_embed(workdir: Path) -> dict:
    from e2p_lib.embed.cache import embed_dataset

    dataset = embed_dataset(embed_frame(), FakeEmbedder(), workdir / "embeddings", chunk_rows=8, show_progress=False)
    return {"embedded_now": dataset.stats["embedded_now"]}


def store_operations():
    """The writes of the store scenario, in order: (verb, ids, vectors, metadata)."""
    ids = [f"id-{i}" for i in range(60)]
    first = np.stack([fake_vector(i) for i in ids])
    second = np.stack([fake_vector(i + " v2") for i in ids])
    yield "upsert", ids[:50], first[:50], [{"version": 1, "n": n} for n in range(50)]
    yield "delete", ids[:10], None, None
    yield "upsert", ids[40:], second[40:], [{"version": 2, "n": n} for n in range(40, 60)]


def run_store(workdir: Path) -> dict:
    from e2p_lib.store import local

    local.MAX_SEGMENTS = 3  # compact often, so kills land in compactions too (the default is 32)
    store = local.LocalVectorStore("kill", 8, root=workdir, batch_size=10)
    for verb, ids, vectors, metadata in store_operations():
        if verb == "upsert":
            store.upsert(ids, vectors, metadata, show_progress=False)
        else:
            store.delete(ids)
    return {"count": store.count()}


def answer_prompts() -> list[str]:
    return [f"question {i % 23}" for i in range(30)]  # 23 distinct prompts, 7 repeats


def run_answers(workdir: Path) -> dict:
    from e2p_lib.lm.cache import CachedLM

    lm = CachedLM(_fake_lm(), workdir / "answers")
    answers = lm.generate(answer_prompts(), max_new_tokens=8, temperature=0.7, seed=3)
    return {"generated": lm.last_stats["generated"], "answers": answers}


# Both trainers, shrunk as tests/test_rl.py does: a checkpoint after every step, so kills land between, inside and
# after checkpoint writes (and in the final policy.save).
CHECKPOINT_EVERY_STEP = dict(
    learning_rate=3e-3, mapper_learning_rate=3e-3, eval_every_steps=0, save_every_steps=1, show_progress=False
)
TRAINING_STEPS = {"sft": 4, "ppo": 3}


def tiny_trainee():
    """The tiny test policy (tests/tiny.py), on one thread: the machine is shared, and one thread keeps the run's
    arithmetic identical run to run."""
    import torch
    from tiny import tiny_policy

    from e2p_lib.lm.smollm import load_smollm2

    torch.set_num_threads(1)
    return tiny_policy(load_smollm2(device="cpu")[1])


def sft_config(workdir: Path):
    from e2p_lib.train.sft import PolicyTrainingConfig

    # 8 rows in batches of 4: each step's batch is drawn from (seed, step), so a resumed run sees the same data
    return PolicyTrainingConfig(
        max_steps=TRAINING_STEPS["sft"],
        batch_size=4,
        val_rows=4,
        output_dir=str(workdir / "sft"),
        **CHECKPOINT_EVERY_STEP,
    )


def sft_prompts() -> list[str]:
    return [f"Write a sentence about the number {i}." for i in range(8)]


def run_sft(workdir: Path) -> dict:
    from tiny import unit_vectors

    from e2p_lib.train.sft import train_policy

    prompts = sft_prompts()
    train_policy(
        unit_vectors(8), prompts, unit_vectors(4, seed=1), prompts[:4], sft_config(workdir), policy=tiny_trainee()
    )
    return {"checkpoints": _checkpoints}


def ppo_config(workdir: Path):
    from e2p_lib.train.rl import PPOConfig

    # 2 targets x 2 samples of at most 5 tokens, one PPO epoch
    return PPOConfig(
        max_steps=TRAINING_STEPS["ppo"],
        targets_per_step=2,
        samples_per_target=2,
        batch_size=4,
        ppo_epochs=1,
        max_prompt_tokens=5,
        degeneracy_weight=0.0,
        output_dir=str(workdir / "ppo"),
        **CHECKPOINT_EVERY_STEP,
    )


def run_ppo(workdir: Path) -> dict:
    from tiny import unit_vectors

    from e2p_lib.train.rl import train_ppo

    def reward(prompts, targets):
        event("reward")  # a kill here lands in the middle of a PPO step: after the rollout, before the update
        return np.array([(len(p) % 5) / 5 for p in prompts], dtype=np.float32)

    train_ppo(tiny_trainee(), reward, unit_vectors(8), ppo_config(workdir))
    return {"checkpoints": _checkpoints}


SCENARIOS = {"embed": run_embed, "store": run_store, "answers": run_answers, "sft": run_sft, "ppo": run_ppo}


def main(argv: list[str]) -> None:
    global PAUSE_AT
    scenario, workdir = argv[1], Path(argv[2])
    PAUSE_AT = int(argv[3]) if len(argv) > 3 else 0
    install_hooks()
    result = SCENARIOS[scenario](workdir)
    print("DONE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv)
