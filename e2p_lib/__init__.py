"""e2p: given a target embedding, write a prompt whose answer lands close to it.

The library behind the numbered notebooks: data (`e2p_lib.data`), embedders (`e2p_lib.embedders`), the embedding
cache (`e2p_lib.embedding_cache`), and in later stages the vector store, the policy and the RL loop.
"""

__version__ = "0.1.0"

# The inversion API (`e2p_lib.invert`), imported on first use so that `import e2p_lib` stays light.
_INVERT_EXPORTS = ("Inverter", "InversionResult", "load_inverter", "default_inverter", "invert_embeddings",
                   "invert_strings", "slerp", "results_frame")


def __getattr__(name: str):
    if name in _INVERT_EXPORTS:
        from e2p_lib import invert

        return getattr(invert, name)
    raise AttributeError(f"module 'e2p_lib' has no attribute {name!r}")
