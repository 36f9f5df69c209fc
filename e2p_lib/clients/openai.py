"""How e2p sets up the official OpenAI SDK: one place for the key, the client, the pacing and the redaction.

Shared by every OpenAI-backed component (the chat LM in `e2p_lib.lm.openai`; the embedder can use it too):

- `resolve_api_key(api_key)`: the argument, else OPENAI_API_KEY (from the environment or the git-ignored `.env`);
  a clear error naming the variable when neither is set.
- `make_client(...)`: an `openai.OpenAI` with the SDK's own retries off (`max_retries=0`), so
  `e2p_lib.clients.ratelimit`'s policy alone decides when to retry, and a per-request timeout.
- `make_pacing(...)`: the `RateLimiter` and `RetryPolicy` built from a component's user-facing parameters.
- `redact(text, key)` and `chainable(error, key)`: the key never reaches a message, a repr or a traceback.
"""

from __future__ import annotations

import os

from e2p_lib.clients.ratelimit import RateLimiter, RetryPolicy

API_KEY_ENV = "OPENAI_API_KEY"


def resolve_api_key(api_key: str | None) -> str:
    """`api_key`, else $OPENAI_API_KEY; ValueError naming the variable when there is neither."""
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key:
        raise ValueError(
            f"No OpenAI API key: set the {API_KEY_ENV} environment variable (or put it in the .env beside the "
            "README), or pass api_key=... . For a local server that needs no key, pass api_key='EMPTY'."
        )
    return key


def make_client(api_key: str | None, base_url: str | None, timeout_seconds: float):
    """(client, key): an SDK client that never retries on its own, and the key it uses (kept only to redact it)."""
    import openai

    key = resolve_api_key(api_key)
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_seconds), key


def make_pacing(requests_per_minute: float | None, tokens_per_minute: float | None, burst_seconds: float,
                max_attempts: int, initial_backoff_seconds: float) -> tuple[RateLimiter, RetryPolicy]:
    """The limiter and retry policy for a component's limits (backoff capped at 60 s, or the initial backoff)."""
    limiter = RateLimiter(requests_per_minute, tokens_per_minute, burst_seconds=burst_seconds)
    policy = RetryPolicy(max_attempts=max_attempts, initial_backoff_seconds=initial_backoff_seconds,
                         max_backoff_seconds=max(60.0, initial_backoff_seconds))
    return limiter, policy


def redact(text: str, key: str) -> str:
    """`text` with every occurrence of the key replaced by ***."""
    return text.replace(key, "***") if key else text


def chainable(error: BaseException, key: str) -> BaseException | None:
    """`error` to chain with `raise ... from`, or None when its text carries the key (the traceback would show it)."""
    return None if key and key in f"{error!s}{error!r}" else error
