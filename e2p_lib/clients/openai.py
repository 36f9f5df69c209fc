"""How e2p sets up the official OpenAI SDK: one place for the key, the client, the pacing and the redaction.

Shared by every OpenAI-backed component (the chat LM in `e2p_lib.lm.openai`; the embedder can use it too):

- `resolve_api_key(api_key)`: the argument, else OPENAI_API_KEY (from the environment or the git-ignored `.env`);
  a clear error naming the variable when neither is set.
- `make_client(...)`: an `openai.OpenAI` with the SDK's own retries off (`max_retries=0`), so
  `e2p_lib.clients.ratelimit`'s policy alone decides when to retry, and a per-request timeout.
- `ClientSettings`: the pace and failure settings every component shares (limits per minute, burst, concurrency,
  attempts, backoff, timeout); `ClientSettings.resolve(defaults, settings, overrides)` builds one from a
  component's keyword arguments, and `pacing()` turns it into the `RateLimiter` and `RetryPolicy`.
- `redact(text, key)` and `chainable(error, key)`: the key never reaches a message, a repr or a traceback.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from e2p_lib.clients.ratelimit import RateLimiter, RetryPolicy, check_max_concurrency

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


@dataclass(frozen=True)
class ClientSettings:
    """How an OpenAI-backed component paces and retries its requests (`OpenAIEmbedder`, `OpenAIChatLM`).

    Parameters that control pace (each component's defaults are OpenAI's tier 1 for its default model):
        requests_per_minute, tokens_per_minute (`float` or `None`): your account's limits; None for no limit.
        burst_seconds (`float`, defaults to `58.0`): seconds of each limit the client may spend at once.
        max_concurrency (`int`, defaults to `16`): requests in flight at once.
    Parameters that control failures:
        max_attempts (`int`, defaults to `6`): attempts per request before the run fails (1: no retries).
        initial_backoff_seconds (`float`, defaults to `1.0`): first backoff when the server sends no retry header
            (doubles per attempt, capped at the larger of 60 s and this value).
        timeout_seconds (`float`, defaults to `60.0`): per-request timeout; a timeout is retried.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    burst_seconds: float = 58.0
    max_concurrency: int = 16
    max_attempts: int = 6
    initial_backoff_seconds: float = 1.0
    timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        check_max_concurrency(self.max_concurrency)
        if not self.timeout_seconds > 0:
            raise ValueError(f"timeout_seconds={self.timeout_seconds!r} must be > 0 (seconds per request).")

    @classmethod
    def resolve(
        cls, defaults: ClientSettings, settings: ClientSettings | None, overrides: Mapping[str, Any]
    ) -> ClientSettings:
        """`settings` (else the component's `defaults`) with the component's keyword `overrides` applied.

        Raises TypeError naming any keyword that is not a setting, so a typo is never silently dropped.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"Unknown keyword argument(s) {unknown}; the pace and retry settings are {sorted(known)}.")
        return dataclasses.replace(settings or defaults, **overrides)

    def pacing(self) -> tuple[RateLimiter, RetryPolicy]:
        """The limiter and retry policy these settings describe."""
        limiter = RateLimiter(self.requests_per_minute, self.tokens_per_minute, burst_seconds=self.burst_seconds)
        policy = RetryPolicy(
            max_attempts=self.max_attempts,
            initial_backoff_seconds=self.initial_backoff_seconds,
            max_backoff_seconds=max(60.0, self.initial_backoff_seconds),
        )
        return limiter, policy


def redact(text: str, key: str) -> str:
    """`text` with every occurrence of the key replaced by ***."""
    return text.replace(key, "***") if key else text


def chainable(error: BaseException, key: str) -> BaseException | None:
    """`error` to chain with `raise ... from`, or None when its text carries the key (the traceback would show it)."""
    return None if key and key in f"{error!s}{error!r}" else error
