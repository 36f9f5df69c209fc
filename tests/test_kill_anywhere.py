"""Kill anywhere, resume, lose nothing: SIGKILL during every write path of the pipeline (issue 13).

Each test runs tests/kill_child.py once to the end (the reference), then again in a fresh folder, killed with SIGKILL
at a point a seeded RNG picks among the child's announced steps (every rename, unlink and SQLite commit, every model
batch), then resumed, killed again, and finally run to the end. After every kill, what is on disk must open and be
whole (a committed prefix, never half a row or half a file); after the final run the artefacts must equal the
reference's, with no row lost, duplicated or computed twice. The seed is in each test, so a failure replays exactly.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import kill_child
import numpy as np
import pytest
from kill_child import TRAINING_STEPS, answer_prompts, embed_frame, fake_vector, store_operations

CHILD = Path(kill_child.__file__)
KILLS = 3  # kills per test, each in the resumed run of the one before (1 for PPO: each of its runs takes ~20 s)
CHILD_TIMEOUT_SECONDS = 300  # a watchdog only: a healthy child finishes in seconds


def run_child(scenario: str, workdir: Path, pause_at: int = 0) -> tuple[int, dict | None]:
    """Run the child; with `pause_at`, SIGKILL it once it has announced its `pause_at`-th step.

    Returns (steps announced, the DONE payload, or None when it was killed).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir.parent / f"{workdir.name}-stderr.txt", "ab") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), scenario, str(workdir), str(pause_at)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    watchdog = threading.Timer(CHILD_TIMEOUT_SECONDS, child.kill)
    watchdog.start()
    events, done = 0, None
    try:
        for line in child.stdout:
            if line.startswith("EVENT "):
                events += 1
                if events == pause_at:
                    os.kill(child.pid, signal.SIGKILL)  # the child is blocked at exactly this step
                    break
            elif line.startswith("DONE "):
                done = json.loads(line[5:])
        returncode = child.wait()
    finally:
        watchdog.cancel()
        child.stdin.close()
        child.stdout.close()
    if done is None:
        assert returncode == -signal.SIGKILL, (
            f"{scenario} child failed (exit {returncode}): see {workdir.parent / f'{workdir.name}-stderr.txt'}"
        )
    else:
        assert returncode == 0, returncode
    return events, done


def kill_resume_finish(
    scenario: str, tmp_path: Path, seed: int, after_kill, kills: int = KILLS
) -> tuple[Path, dict, Path, dict, list]:
    """Reference run, then `kills` kills at seeded points (each followed by `after_kill(workdir)`), then a final run.

    Returns (reference dir, its DONE payload, the killed-and-resumed dir, the final DONE payload, [after_kill's
    return value before the final run]).
    """
    reference = tmp_path / "reference"
    steps, reference_done = run_child(scenario, reference)
    assert reference_done is not None and steps > 0
    rng = np.random.default_rng(seed)
    work, seen, final_done = tmp_path / "killed", [], None
    for _ in range(kills):
        _, final_done = run_child(scenario, work, pause_at=int(rng.integers(1, steps + 1)))
        if final_done is not None:
            break  # the resumed run had less left to do than the kill point: it finished, and is the final run
        seen.append(after_kill(work))
    if final_done is None:
        _, final_done = run_child(scenario, work)
    assert final_done is not None
    return reference, reference_done, work, final_done, seen


# --- 01: embedding into the SQLite cache ----------------------------------------------------------------------------


def _cache_file(folder: Path) -> Path:
    """The one SQLite cache file the child wrote under `folder` (it uses a single model)."""
    files = list(folder.glob("*.sqlite"))
    assert len(files) <= 1, files
    return files[0] if files else folder / "not-created-yet.sqlite"


def _embedding_cache(workdir: Path):
    from e2p_lib.embed.cache import EmbeddingCache

    embedder = kill_child.FakeEmbedder
    return EmbeddingCache(_cache_file(workdir / "embeddings"), embedder.name, embedder.dimensions)


def _check_embedding_cache(workdir: Path) -> int:
    """After a kill: every cached vector is whole and right, the records all or nothing; returns vectors cached."""
    from e2p_lib.embed.cache import text_key

    texts = sorted(set(embed_frame()["output"]))
    by_key = {text_key(t): t for t in texts}
    with _embedding_cache(workdir) as cache:
        present = [k for k in by_key if k not in set(cache.missing(list(by_key)))]
        assert len(cache) == len(present)  # no row under a key that is not one of the texts
        for key, vector in zip(present, cache.get(present)):
            assert np.array_equal(vector, fake_vector(by_key[key]))
        frame, _ = cache.read_records()
        assert len(frame) in (0, len(embed_frame()))  # the dataset rows are written in one transaction
    return len(present)


def test_embedding_killed_anywhere_resumes_without_losing_or_repeating_work(tmp_path):
    from e2p_lib.embed.cache import load_embedded_dataset

    reference, _, work, final, cached_before = kill_resume_finish("embed", tmp_path, 13, _check_embedding_cache)
    assert cached_before, "no kill landed (the seed picks kill points past the end)"
    # the final run embedded exactly what the killed runs had not committed: nothing twice
    assert final["embedded_now"] == 45 - cached_before[-1]
    expected = load_embedded_dataset(_cache_file(reference / "embeddings"))
    resumed = load_embedded_dataset(_cache_file(work / "embeddings"))
    assert resumed.frame.equals(expected.frame) and np.array_equal(resumed.vectors, expected.vectors)


# --- 02: vector-store upserts, deletes and compactions ----------------------------------------------------------------


def _store_state(workdir: Path) -> dict:
    """{id: (vector bytes, metadata)} of the store's records ({} when no store was created yet)."""
    from e2p_lib.store import LocalVectorStore

    if not (workdir / "kill" / "store.json").exists():
        return {}
    store = LocalVectorStore("kill", root=workdir)
    records = store.fetch([f"id-{i}" for i in range(60)])
    assert store.count() == len(records)
    return {i: (r.vector.tobytes(), r.metadata) for i, r in records.items()}


def _committed_store_states() -> list[dict]:
    """Every state an uninterrupted run commits, batch (10 records) by batch, from an empty store."""
    state, states = {}, [{}]
    for verb, ids, vectors, metadata in store_operations():
        if verb == "delete":
            for i in ids:
                state.pop(i, None)
            states.append(dict(state))
            continue
        for start in range(0, len(ids), 10):
            for i, v, m in zip(ids[start : start + 10], vectors[start : start + 10], metadata[start : start + 10]):
                state[i] = (v.tobytes(), m)
            states.append(dict(state))
    return states


def _check_store(workdir: Path) -> dict:
    """After a kill: the store opens and every record is one whole version (vector and metadata agree)."""
    state = _store_state(workdir)
    versions = {1: {}, 2: {}}
    for verb, ids, vectors, metadata in store_operations():
        if verb == "upsert":
            for i, v, m in zip(ids, vectors, metadata):
                versions[m["version"]][i] = (v.tobytes(), m)
    for record_id, (vector, metadata) in state.items():
        assert (vector, metadata) == versions[metadata["version"]][record_id]
    return state


def test_store_killed_anywhere_opens_at_a_commit_and_resumes_to_the_same_store(tmp_path):
    reference, _, work, final, states = kill_resume_finish("store", tmp_path, 2, _check_store)
    assert states, "no kill landed"
    assert states[0] in _committed_store_states()  # the first kill, from empty: exactly a committed prefix
    assert final == {"count": 50}
    assert _store_state(work) == _store_state(reference)
    # what a crash left behind was swept: only the manifest's segments, the manifest and the lock remain
    folder = work / "kill" / "ns-"
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {f"{s['name']}.{ext}" for s in manifest["segments"] for ext in ("json", "npy")}
    assert {p.name for p in folder.iterdir()} <= listed | {"manifest.json", ".lock"}


# --- answer-cache writes ----------------------------------------------------------------------------------------------


def _answers(workdir: Path) -> dict:
    from e2p_lib.lm.cache import AnswerCache

    with AnswerCache(_cache_file(workdir / "answers")) as cache:
        frame = cache.frame()
    assert not frame["key"].duplicated().any()
    return dict(zip(frame["key"], frame["answer"]))


def test_answer_cache_killed_anywhere_keeps_whole_answers_and_asks_nothing_twice(tmp_path):
    reference, reference_done, work, final, seen = kill_resume_finish("answers", tmp_path, 5, _answers)
    assert seen, "no kill landed"
    expected = _answers(reference)
    for partial in seen:
        assert partial.items() <= expected.items()  # every committed answer is whole and right
    assert _answers(work) == expected and len(expected) == len(set(answer_prompts()))
    assert final["answers"] == reference_done["answers"]
    assert final["generated"] == len(expected) - len(seen[-1])


# --- 03/04: SFT and PPO checkpoints, the PPO step and the saved policy -------------------------------------------


def _policy_tensors(folder: Path) -> dict:
    """Every tensor of a saved policy folder (mapping network and LM weights), loaded with no code run."""
    import torch
    from safetensors.torch import load_file

    tensors = {f"mapper.{k}": v for k, v in torch.load(folder / "mapper.pt", weights_only=True).items()}
    for path in sorted((folder / "lm").glob("*.safetensors")):
        tensors.update({f"lm.{k}": v for k, v in load_file(path).items()})
    return tensors


def _check_training(scenario: str, workdir: Path) -> int:
    """After a kill: the checkpoint is absent or whole, and so is the saved policy folder; returns the step."""
    from e2p_lib.train.loop import load_checkpoint

    checkpoint = load_checkpoint(workdir / scenario)  # a half-written one would fail to unpickle here
    step = 0 if checkpoint is None else checkpoint["step"]
    if checkpoint is not None:
        metric = {"sft": "loss", "ppo": "reward"}[scenario]
        logged = [r["step"] for r in checkpoint["history"] if (r["split"], r["metric"]) == ("train", metric)]
        assert 1 <= step <= TRAINING_STEPS[scenario] and logged == list(range(1, step + 1)), (step, logged)
    policy = workdir / scenario / "policy"
    if policy.exists():
        json.loads((policy / "policy_config.json").read_text())
        assert _policy_tensors(policy)
    return step


def _killed_training_ends_with_the_reference_policy(scenario: str, tmp_path: Path, seed: int, kills: int) -> list:
    """Kill `scenario` at seeded points, resume to the end; return the step each kill left in the checkpoint."""
    import torch

    from e2p_lib.train.loop import load_checkpoint

    reference, reference_done, work, final, steps = kill_resume_finish(
        scenario, tmp_path, seed, functools.partial(_check_training, scenario), kills=kills
    )
    assert steps, "no kill landed"
    assert load_checkpoint(work / scenario)["step"] == TRAINING_STEPS[scenario]
    # the final run resumed from the last kill's checkpoint: it trained (and checkpointed) only the steps left
    assert reference_done["checkpoints"] == TRAINING_STEPS[scenario]
    assert final["checkpoints"] == TRAINING_STEPS[scenario] - steps[-1], (final, steps)
    expected = _policy_tensors(reference / scenario / "policy")
    resumed = _policy_tensors(work / scenario / "policy")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.allclose(tensor, resumed[name], atol=1e-6), name
    return steps


def test_sft_killed_anywhere_in_its_checkpoint_writes_resumes_to_the_same_policy(tmp_path):
    # Seed 297's kills land before config.json's rename (step 1), before checkpoint.pt's (step 2, so the checkpoint
    # still says step 1) and before the finished policy folder's rename: each write's file is whole, its rename not
    # yet done.
    steps = _killed_training_ends_with_the_reference_policy("sft", tmp_path, 297, kills=KILLS)
    assert steps == [1, 1, 4], steps  # the checkpoint's step after each kill: every kill landed, none went back
    # each kill left a hidden staging file or folder; the next save of the same path swept it
    leftovers = {p.name for p in (tmp_path / "killed" / "sft").iterdir()} - {"checkpoint.pt", "config.json", "policy"}
    assert not leftovers, leftovers


@pytest.mark.slow
def test_ppo_killed_anywhere_resumes_to_the_same_policy(tmp_path):
    _killed_training_ends_with_the_reference_policy("ppo", tmp_path, 7, kills=1)
