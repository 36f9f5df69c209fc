"""e2p: given a target embedding, write a prompt whose answer lands close to it.

The library behind the numbered notebooks: data (`e2p_lib.data`), embedders (`e2p_lib.embedders`), the embedding
cache (`e2p_lib.embedding_cache`), and in later stages the vector store, the policy and the RL loop.
"""

__version__ = "0.1.0"
