"""An environment LM behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

`OpenAIChatLM` implements `e2p_lib.lm.ChatLM` with the official `openai` SDK: one chat completion per prompt,
`max_tokens`, `temperature`, `top_p` and `seed` in the request, the system prompt as a system message.

    >>> lm = OpenAIChatLM("gpt-4o-mini")                              # key from OPENAI_API_KEY (or .env)
    >>> lm.generate(["What is the capital of France?"])
    ['The capital of France is Paris.']
    >>> lm = OpenAIChatLM("Qwen/Qwen2.5-0.5B-Instruct", base_url="http://localhost:8000/v1", api_key="EMPTY",
    ...                   requests_per_minute=None, tokens_per_minute=None)          # a local vLLM server

The key, client and pacing are set up by `e2p_lib.clients.openai`; requests run through `e2p_lib.clients.ratelimit`,
paced on requests AND tokens per minute. A request costs its prompt tokens (cl100k_base, plus OpenAI's per-message
overhead) plus `max_new_tokens`, which is what OpenAI reserves against the token limit.

Determinism: with temperature 0 the answer is as deterministic as the server makes it; OpenAI treats `seed` as best
effort (its `system_fingerprint` changes with backend updates), vLLM honours it per request. The answer cache
(`CachedLM`) fixes an answer once it is stored.

If a request still fails after `max_attempts`, `iter_generate` first yields every answer that completed, then
raises `GenerationRunError` naming the prompt that failed and how many completed; `CachedLM` has committed those,
so a rerun asks only for the rest. The key comes from `api_key` or OPENAI_API_KEY; it is kept only to redact it,
and never printed, logged or left in an exception message.
"""

from __future__ import annotations

import logging
from typing import Any

from e2p_lib.clients.openai import ClientSettings, chainable, make_client, redact
from e2p_lib.clients.ratelimit import Job, RunFailedError, StatusTracker, run_rate_limited
from e2p_lib.lm.base import DEFAULT_SYSTEM_PROMPT, ChatLM, check_answer_settings
from e2p_lib.tokens import count_tokens

logger = logging.getLogger(__name__)

# OpenAI's accounting of a chat request (the cookbook's num_tokens_consumed_from_request): every message costs its
# content plus 4 tokens of framing, and the reply is primed with 2 more.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY_PRIMING = 2
# OpenAI's tier-1 limits for gpt-4o-mini; raise them to your account's (see `ClientSettings`).
DEFAULT_CLIENT_SETTINGS = ClientSettings(requests_per_minute=500, tokens_per_minute=200_000)


class GenerationRunError(RuntimeError):
    """A prompt could not be answered; every answer that completed before was yielded."""

    def __init__(self, message: str, failed_position: int | None, completed_positions: list[int]):
        super().__init__(message)
        self.failed_position = failed_position
        self.completed_positions = completed_positions


class OpenAIChatLM(ChatLM):
    """Chat completions from OpenAI (or a compatible server), rate-limited, retried, concurrent.

    Parameters that control the model and its answers (settings: part of the answer-cache key):
        model: a chat model name; `name` becomes "openai/<model>".
        system_prompt: a system message before each prompt (default: `e2p_lib.lm.DEFAULT_SYSTEM_PROMPT`, short
            Alpaca-like answers; None: no system message).
        top_p: nucleus sampling (1.0: not sent).
        base_url: an OpenAI-compatible endpoint ("http://localhost:8000/v1"); None uses OpenAI (or OPENAI_BASE_URL).
        api_key: None reads OPENAI_API_KEY. A local server that needs no key still needs a placeholder ("EMPTY").
    Parameters that control pace and failures:
        client_settings: a `ClientSettings` (limits per minute, burst, concurrency, attempts, backoff, timeout);
            None: `DEFAULT_CLIENT_SETTINGS`, OpenAI's tier 1 for gpt-4o-mini. Any of its fields may also be given
            as a keyword (`requests_per_minute=None`, `max_attempts=2`), overriding it.
    Parameters that control reporting:
        verbose: log and print the run's summary and show a progress bar.
    """

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        top_p: float = 1.0,
        verbose: bool = True,
        client_settings: ClientSettings | None = None,
        **settings: Any,
    ):
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model={model!r} must be a chat model name, e.g. 'gpt-4o-mini'.")
        self.system_prompt, self.top_p = check_answer_settings(system_prompt, top_p)
        self.client_settings = ClientSettings.resolve(DEFAULT_CLIENT_SETTINGS, client_settings, settings)
        # the key is kept only to redact it from error text
        self._client, self._secret = make_client(api_key, base_url, self.client_settings.timeout_seconds)
        self.model = model
        self.name = f"openai/{model}"
        self.max_concurrency = self.client_settings.max_concurrency
        self.verbose = verbose
        self.limiter, self.retry_policy = self.client_settings.pacing()
        self.last_status: StatusTracker | None = None  # counts of the latest run

    def settings(self) -> dict[str, Any]:
        return {"system_prompt": self.system_prompt, "top_p": self.top_p}

    def __repr__(self) -> str:
        return (
            f"OpenAIChatLM(model={self.model!r}, base_url={str(self._client.base_url)!r}, "
            f"settings={self.settings()!r}, limiter={self.limiter!r})"
        )

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The chat messages sent for `prompt`."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        return system + [{"role": "user", "content": prompt}]

    def _complete(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float, seed: int) -> str:
        """One API call: the assistant's answer, stripped."""
        response = self._client.chat.completions.create(
            model=self.model,
            messages=messages,
            max_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            **({"top_p": self.top_p} if self.top_p < 1.0 else {}),
        )
        if not response.choices:
            raise ValueError(f"{self.model} answered with no choices.")
        return (response.choices[0].message.content or "").strip()

    def _iter_generate(self, prompts, max_new_tokens, temperature, seeds):
        conversations = [self.messages(p) for p in prompts]
        content_tokens = count_tokens([m["content"] for messages in conversations for m in messages])
        per_conversation = len(conversations[0])  # every conversation has the same number of messages
        jobs = [
            Job(
                payload=position,
                token_cost=sum(content_tokens[position * per_conversation : (position + 1) * per_conversation])
                + TOKENS_PER_MESSAGE * per_conversation
                + TOKENS_PER_REPLY_PRIMING
                + max_new_tokens,
            )
            for position in range(len(prompts))
        ]
        tracker = self.last_status = StatusTracker()
        completed: list[int] = []
        try:
            for job, answer in run_rate_limited(
                jobs,
                lambda p: self._complete(conversations[p], max_new_tokens, temperature, seeds[p]),
                limiter=self.limiter,
                retry_policy=self.retry_policy,
                max_concurrency=self.max_concurrency,
                tracker=tracker,
                show_progress=self.verbose,
                progress_description=f"generate ({self.name})",
            ):
                completed.append(job.payload)
                yield [job.payload], [answer]
        except RunFailedError as error:
            position = error.job.payload
            message = (
                f"{self.name} failed on prompt {position} after {error.job.attempts} attempt(s): "
                f"{type(error.cause).__name__}: {error.cause}. {len(completed):,} of {len(prompts):,} "
                "prompts completed and were returned; generate the rest again to resume."
            )
            raise GenerationRunError(redact(message, self._secret), position, completed) from chainable(
                error.cause, self._secret
            )
        finally:
            logger.info("%s: %s", self.name, tracker.summary())
            if self.verbose:
                print(f"{self.name}: {tracker.summary()}")
