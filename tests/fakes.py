"""Deterministic, instant stand-ins for an embedder and an environment LM, for tests of the caches and stores
around them (which are real). Importable from child processes too (tests/ on PYTHONPATH)."""

from __future__ import annotations

import hashlib

import numpy as np

from e2p_lib.lm.base import ChatLM


class HashEmbedder:
    """A unit vector seeded by each text's sha256; `texts` counts the texts it was asked to embed."""

    def __init__(self, dimensions: int = 16):
        self.name, self.dimensions, self.texts = "test/hash", dimensions, 0

    def embed(self, texts):
        self.texts += len(texts)
        rows = [
            np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")).standard_normal(
                self.dimensions
            )
            for t in texts
        ]
        vectors = np.stack(rows).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class EchoLM(ChatLM):
    """Answers "Answer to: <prompt>"; `prompts` counts the prompts it was sent."""

    name = "test/echo"

    def __init__(self):
        self.prompts = 0

    def settings(self):
        return {}

    def _iter_generate(self, prompts, max_new_tokens, temperature, seeds):
        self.prompts += len(prompts)
        yield list(range(len(prompts))), [f"Answer to: {p}" for p in prompts]
