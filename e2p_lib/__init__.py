"""e2p: given a target embedding, write a prompt whose answer lands close to it.

The library behind the numbered notebooks, in packages that follow the data:
- `data`, `tokens`, `config`: Alpaca loading and splits, token counts, folders and keys.
- `embed`: embedders (`make_embedder`) and the embedding cache.
- `store`: vector stores (`make_vector_store`, local or Pinecone) and the retrieval baseline.
- `lm`: environment LMs that answer prompts (`make_lm`: CTranslate2, transformers or OpenAI) and the answer cache.
- `answer_index`: the environment's own answers to stored prompts, searchable by target.
- `models` (forward, policy) and `train` (loop, sft, rl, expert, rewards): the models and their training.
- `evaluate` (metrics, baselines, own targets, plots), `plots` (figures of 01-04), `pipeline` (what 03-05 share).
- `invert`: the inversion API, re-exported here; `cli` (the `e2p` command), `run_notebooks`, `notebook`.
- helpers: `clients` (OpenAI set-up, rate limiter), `atomic`, `sqlite_store`, `devices`, `checks`.
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
