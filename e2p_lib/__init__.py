"""e2p: given a target embedding, write a prompt whose answer lands close to it.

The library behind the numbered notebooks, in packages that follow the data:
- `data`, `tokens`, `config`: Alpaca loading and splits, token counts, folders and keys.
- `embed`: embedders (`make_embedder`) and the embedding cache.
- `store`: vector stores (`make_vector_store`, local or Pinecone) and the retrieval baseline.
- `lm`: environment LMs that answer prompts (`make_lm`: CTranslate2, transformers or OpenAI) and the answer cache.
- `answer_index`: the environment's own answers to stored prompts, searchable by target.
- `models` (forward, policy) and `train` (loop, sft, rl, expert, rewards): the models and their training.
- `evaluate` (metrics, prompt quality, baselines, own targets, plots), `plots` (figures of 01-04), `pipeline` (the
  rows and hypotheses 03-05 train and score on).
- `inversion`: the search and its config, the inverter and its API, re-exported here; `cli` (the `e2p` command),
  `run_notebooks`, `notebook`.
- helpers: `clients` (OpenAI set-up, rate limiter), `atomic`, `sqlite_store`, `errors` (one error for an unusable
  data file), `devices`, `checks`.
"""

__version__ = "0.1.0"

# The inversion API (`e2p_lib.inversion`), imported on first use so that `import e2p_lib` stays light.


def __getattr__(name: str):
    import importlib

    inversion = importlib.import_module("e2p_lib.inversion")
    if name in inversion.__all__:
        return getattr(inversion, name)
    raise AttributeError(f"module 'e2p_lib' has no attribute {name!r}")
