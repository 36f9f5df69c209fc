"""The answer cache: every (model, settings, prompt, parameters, seed) is answered once, and a killed run resumes.

Evaluation and RL ask the environment LM the same prompts again and again; `CachedLM(lm)` answers from disk what
was answered before and sends only the rest to `lm`, committing each batch as it finishes.

    >>> from e2p_lib.lm import LocalChatLM
    >>> lm = CachedLM(LocalChatLM())                    # cache in config.data_dir()/answers/
    >>> lm.generate(prompts)                            # generates, and stores each batch as it completes
    >>> lm.generate(prompts)                            # reads them back: the model is not called
    >>> lm.last_stats
    {'prompts': 32, 'cached': 32, 'generated': 0, 'seconds': ...}
    >>> lm.cache.frame()                                # everything answered so far, as a DataFrame

The key of an answer is the sha256 of a canonical JSON of (model name, the LM's `settings()` such as system prompt,
top_p and dtype, prompt, max_new_tokens, temperature, seed). The settings name the engine and its compute type
(`LocalChatLM`: "dtype"; `CTranslate2ChatLM`: "engine" and "compute_type", e.g. "int8_float32"), so the answers of
two engines of one model share a file but never a key. Greedy answers (temperature 0) do not depend on the
seed, so their key holds no seed: a rerun with another seed still hits. Duplicate prompts in one call (same seed)
are generated once.

Storage: one SQLite file per model, `<cache_dir>/<model>.sqlite`, one row per answer with its prompt and parameters
beside it (so the cache can be read as a table). Each batch is one transaction (`e2p_lib.sqlite_store`): all or
nothing under SIGKILL, and several processes may share one file; the first answer stored for a key is kept.
If the LM fails half-way (an API that gives up), every answer it returned before the failure is already committed
and the error propagates; the rerun generates only what is missing. In a read-only data folder cached answers are
still read, and a prompt that would need a new answer is refused (`DataFileError`) before the LM is called.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from e2p_lib import config
from e2p_lib.embed.cache import text_key
from e2p_lib.lm.base import ChatLM
from e2p_lib.sqlite_store import SQLiteCache

SCHEMA_VERSION = 1


def default_cache_dir() -> Path:
    """`config.data_dir()/answers` (moves with E2P_DATA_DIR)."""
    return config.data_dir() / "answers"


def answer_cache_path(model: str, cache_dir: str | Path | None = None) -> Path:
    """The file that holds `model`'s answers (a readable, filesystem-safe name)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_")
    return Path(cache_dir or default_cache_dir()) / f"{slug}.sqlite"


def generation_params(max_new_tokens: int, temperature: float, seed: int) -> dict[str, Any]:
    """The call parameters that change an answer, normalised: greedy answers carry no seed."""
    temperature = float(temperature)
    return {
        "max_new_tokens": int(max_new_tokens),
        "temperature": temperature,
        "seed": None if temperature == 0 else int(seed),
    }


def answer_key(model: str, settings: dict[str, Any], prompt: str, params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that determines an answer."""
    canonical = json.dumps(
        {"model": model, "settings": settings, "prompt": prompt, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return text_key(canonical)


class AnswerCache(SQLiteCache):
    """Answers of one model keyed by `answer_key`; safe against crashes and concurrent writers, readable (not
    writable) in a read-only folder, every failure a `DataFileError` naming the file (`e2p_lib.sqlite_store`)."""

    def __init__(self, path: str | Path):
        super().__init__(
            path,
            [
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, "
                "model TEXT NOT NULL, settings TEXT NOT NULL, prompt TEXT NOT NULL, params TEXT NOT NULL, "
                "created_at REAL NOT NULL)"
            ],
            {"schema_version": str(SCHEMA_VERSION)},
            rebuild="Delete it and run again: the answers it held are generated again as they are asked for "
            "(notebooks 02_pinecone, 04_rl and 05_eval ask for most of them).",
        )
        version = self.meta().get("schema_version")
        if version is None or int(version) != SCHEMA_VERSION:
            self.close()
            raise ValueError(
                f"{self.path} has answer-cache schema {version}, this code reads {SCHEMA_VERSION}: "
                "use another cache_dir, or delete the file."
            )

    def __len__(self) -> int:
        return self.read("SELECT COUNT(*) FROM answers")[0][0]

    def get(self, keys: Sequence[str]) -> dict[str, str]:
        """The cached answers among `keys`, as {key: answer} (absent keys are simply missing)."""
        return dict(self.read_in("SELECT key, answer FROM answers WHERE key IN ({})", keys))

    def put(self, rows: Sequence[tuple[str, str, str, dict, str, dict]]) -> None:
        """Store (key, answer, model, settings, prompt, params) rows in one transaction; a key keeps its first."""
        now = time.time()
        with self.write(f"store {len(rows)} new answer(s)") as db:
            db.executemany(
                "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        key,
                        answer,
                        model,
                        json.dumps(settings, sort_keys=True),
                        prompt,
                        json.dumps(params, sort_keys=True),
                        now,
                    )
                    for key, answer, model, settings, prompt, params in rows
                ],
            )

    def frame(self) -> pd.DataFrame:
        """Every cached answer: key, answer, model, settings, prompt, params (JSON text), created_at (epoch s)."""
        with self.named_errors("read it"):
            return pd.read_sql_query("SELECT * FROM answers ORDER BY created_at, key", self._db)


class CachedLM(ChatLM):
    """`lm` with an on-disk answer cache: same `generate` / `iter_generate`, only new prompts reach `lm`.

    `cache_dir` None: `config.data_dir()/answers`. `last_stats` holds the counts of the latest call.
    """

    def __init__(self, lm: ChatLM, cache_dir: str | Path | None = None):
        if not isinstance(lm, ChatLM):
            raise TypeError(f"CachedLM wraps a ChatLM (LocalChatLM, OpenAIChatLM), not {type(lm).__name__}.")
        self.lm = lm
        self.name = lm.name
        self.cache = AnswerCache(answer_cache_path(lm.name, cache_dir))
        self.last_stats: dict[str, float] = {}

    def settings(self) -> dict[str, Any]:
        return self.lm.settings()

    def _iter_generate(self, prompts, max_new_tokens, temperature, seeds):
        started = time.perf_counter()
        settings = self.settings()
        params = [generation_params(max_new_tokens, temperature, s) for s in seeds]
        keys = [answer_key(self.name, settings, p, q) for p, q in zip(prompts, params)]
        positions_of: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            positions_of.setdefault(key, []).append(position)
        # 1. what is cached already
        cached = self.cache.get(list(positions_of))
        if cached:
            hits = [position for key in cached for position in positions_of[key]]
            yield hits, [cached[keys[position]] for position in hits]
        # 2. the rest, each distinct key once, committed batch by batch as the LM finishes it
        todo = [key for key in positions_of if key not in cached]
        if todo:  # refused before the LM works on answers that could not be kept
            self.cache.check_writable(f"store {len(todo)} new answer(s)")
        first = [positions_of[key][0] for key in todo]
        generated = 0
        try:
            if todo:
                for batch_positions, answers in self.lm.iter_generate(
                    [prompts[i] for i in first], max_new_tokens, temperature, [seeds[i] for i in first]
                ):
                    batch_keys = [todo[j] for j in batch_positions]
                    self.cache.put(
                        [
                            (
                                key,
                                answer,
                                self.name,
                                settings,
                                prompts[positions_of[key][0]],
                                params[positions_of[key][0]],
                            )
                            for key, answer in zip(batch_keys, answers)
                        ]
                    )
                    generated += len(batch_keys)
                    out = [
                        (position, answer) for key, answer in zip(batch_keys, answers) for position in positions_of[key]
                    ]
                    yield [position for position, _ in out], [answer for _, answer in out]
        finally:
            self.last_stats = {
                "prompts": len(prompts),
                "cached": len(prompts) - sum(len(positions_of[key]) for key in todo),
                "generated": generated,
                "seconds": round(time.perf_counter() - started, 3),
            }

    def __repr__(self) -> str:
        return f"CachedLM({self.lm!r}, path={str(self.cache.path)!r})"
