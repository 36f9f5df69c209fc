"""e2p: given a target embedding, write a prompt whose answer lands close to it.

The library behind the numbered notebooks, in packages that follow the data:
- `data`, `tokens`, `config`: Alpaca loading and splits, token counts, folders and keys.
- `embed` (base, local, openai, cache): embedders, `make_embedder`, the embedding cache.
- `store` (base, filters, local, pinecone, retrieval): vector stores, `make_vector_store`, the retrieval baseline.
- `lm` (base, local, smollm, openai, cache): environment LMs that answer prompts, `make_lm`, the answer cache.
- `models` (forward, policy) and `train` (loop, sft, rl, rewards): the forward model, the prompt policy, their training.
- `evaluate` (metrics, plots), `plots` (figures of 01-04), `clients` (OpenAI client set-up, rate limiter).
- `atomic`, `sqlite_store`: all-or-nothing file writes and the SQLite helpers the caches share.
- `invert`: the inversion API, re-exported here; `run_notebooks`: runs the notebooks headless.
"""

__version__ = "0.1.0"

# The inversion API (`e2p_lib.invert`), imported on first use so that `import e2p_lib` stays light.
_INVERT_EXPORTS = (
    "Inverter",
    "InversionResult",
    "load_inverter",
    "default_inverter",
    "invert_embeddings",
    "invert_strings",
    "slerp",
    "results_frame",
)


def __getattr__(name: str):
    if name in _INVERT_EXPORTS:
        from e2p_lib import invert

        return getattr(invert, name)
    raise AttributeError(f"module 'e2p_lib' has no attribute {name!r}")
