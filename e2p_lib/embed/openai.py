"""OpenAI embeddings (text-embedding-3-small at 1,024 dimensions by default), paced to the account's rate limits.

`OpenAIEmbedder` implements e2p's Embedder protocol (`name`, `dimensions`, `embed(texts)` -> (n, d) float32,
L2-normalised, input order) with the official `openai` SDK. `base_url` points it at any OpenAI-compatible server
(vLLM, TEI, Ollama); pass `send_dimensions=False` where the server rejects the `dimensions` field.

    >>> embedder = OpenAIEmbedder(tokens_per_minute=1_000_000)   # key from OPENAI_API_KEY (or .env)
    >>> embedder.estimate_cost(texts)                            # (tokens, dollars), before spending anything
    >>> for rows, vectors in embedder.iter_embed(texts):         # batches in completion order: save each one
    ...     save(rows, vectors)                                  # (e2p_lib.embed.cache does this)

What happens to the texts:
1. `check_texts` refuses None, non-strings and blank strings, naming their positions.
2. An input over 8,191 cl100k_base tokens (the model's limit) is cut to its first 8,191 tokens, with a warning
   naming how many and which rows: its vector then describes only that prefix.
3. Texts are grouped in input order into requests of at most `batch_size` inputs (OpenAI allows 2,048) and
   300,000 tokens, and never more tokens than the token bucket holds.
4. The token count and a dollar estimate (`price_per_million_tokens`) are logged and, with `verbose`, printed.
5. Requests run on `max_concurrency` threads through `e2p_lib.clients.ratelimit` (paced on requests AND tokens per
   minute, retried by one policy; the SDK's own retries are off).
6. A summary (requests, tokens, 429s, retries, failures, seconds) is logged and, with `verbose`, printed.

If a request still fails after `max_attempts`, `iter_embed` first yields every batch that did complete, then raises
`EmbeddingRunError` saying which rows failed and how many succeeded; `embed` attaches the completed rows to it
(`completed_rows`, `completed_vectors`), so nothing that was paid for is lost.

The key comes from `api_key` or the `OPENAI_API_KEY` environment variable (`e2p_lib.clients.openai`). It is handed
to the SDK client, kept privately only to scrub it from error text, and never printed, logged, shown by `repr`, or
left in an exception message or its chained cause.
"""

from __future__ import annotations

import base64
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from e2p_lib.clients.openai import ClientSettings, chainable, make_client, redact
from e2p_lib.clients.ratelimit import Job, RunFailedError, StatusTracker, run_rate_limited
from e2p_lib.embed.base import check_texts, l2_normalise
from e2p_lib.tokens import count_tokens, truncate_to_tokens

logger = logging.getLogger(__name__)

MAX_INPUTS_PER_REQUEST = 2048  # OpenAI's limit on `input` items
MAX_TOKENS_PER_REQUEST = 300_000  # OpenAI's limit on the sum over inputs
MAX_TOKENS_PER_INPUT = 8191  # text-embedding-3-* and ada-002 context
# OpenAI's tier-1 limits for text-embedding-3-small; raise them to your account's (see `ClientSettings`).
DEFAULT_CLIENT_SETTINGS = ClientSettings(requests_per_minute=3_000, tokens_per_minute=1_000_000)


class EmbeddingRunError(RuntimeError):
    """Some rows could not be embedded; every batch that completed was yielded (and, from `embed`, is attached)."""

    def __init__(self, message: str, failed_rows: np.ndarray, completed_rows: np.ndarray):
        super().__init__(message)
        self.failed_rows = failed_rows
        self.completed_rows = completed_rows
        self.completed_vectors: np.ndarray | None = None  # filled by `embed`, aligned with `completed_rows`


def plan_batches(token_counts: Sequence[int], max_inputs: int, max_tokens: int) -> list[np.ndarray]:
    """Group row indices, in order, into batches of at most `max_inputs` rows and `max_tokens` tokens.

    A single row above `max_tokens` gets a batch of its own.
    """
    batches, current, current_tokens = [], [], 0
    for row, tokens in enumerate(token_counts):
        if current and (len(current) == max_inputs or current_tokens + tokens > max_tokens):
            batches.append(np.asarray(current, dtype=np.int64))
            current, current_tokens = [], 0
        current.append(row)
        current_tokens += tokens
    if current:
        batches.append(np.asarray(current, dtype=np.int64))
    return batches


class OpenAIEmbedder:
    """Embeddings from OpenAI's API (or a compatible server), rate-limited, retried, concurrent.

    Parameters that control the model:
        model: an OpenAI embedding model name; `name` becomes "openai/<model>".
        dimensions: vector length; text-embedding-3-* shorten their vectors to it server-side.
        send_dimensions: False for models/servers that reject the field (ada-002, many compatible servers); the
            returned vectors must then already have `dimensions` entries.
        base_url: an OpenAI-compatible endpoint ("http://localhost:8000/v1"); None uses OpenAI (or OPENAI_BASE_URL).
        api_key: None reads OPENAI_API_KEY. A local server that needs no key still needs a placeholder ("EMPTY").
    Parameters that control pace and failures:
        batch_size: inputs per request (1..2048).
        client_settings: a `ClientSettings` (limits per minute, burst, concurrency, attempts, backoff, timeout);
            None: `DEFAULT_CLIENT_SETTINGS`, OpenAI's tier 1 for text-embedding-3-small. Any of its fields may
            also be given as a keyword (`tokens_per_minute=1_000_000`, `max_attempts=2`), overriding it.
    Parameters that control reporting:
        price_per_million_tokens: dollars, for `estimate_cost` (text-embedding-3-small: 0.02).
        verbose: print the estimate and summary and show a progress bar (logging gets them either way).
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        dimensions: int = 1024,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        send_dimensions: bool = True,
        batch_size: int = 200,
        price_per_million_tokens: float = 0.02,
        verbose: bool = True,
        client_settings: ClientSettings | None = None,
        **settings: Any,
    ):
        if not (isinstance(dimensions, int) and dimensions >= 1):
            raise ValueError(f"dimensions={dimensions!r} must be a positive integer (text-embedding-3-small: 1..1536).")
        if not (isinstance(batch_size, int) and 1 <= batch_size <= MAX_INPUTS_PER_REQUEST):
            raise ValueError(
                f"batch_size={batch_size!r} must be an integer in 1..{MAX_INPUTS_PER_REQUEST} "
                "(OpenAI's limit on inputs per request)."
            )
        self.client_settings = ClientSettings.resolve(DEFAULT_CLIENT_SETTINGS, client_settings, settings)
        if price_per_million_tokens < 0:
            raise ValueError(f"price_per_million_tokens={price_per_million_tokens!r} must be >= 0.")
        # the key is kept only to redact it from error text
        self._client, self._secret = make_client(api_key, base_url, self.client_settings.timeout_seconds)
        self.model = model
        self.name = f"openai/{model}"
        self.dimensions = dimensions
        self.send_dimensions = send_dimensions
        self.batch_size = batch_size
        self.max_concurrency = self.client_settings.max_concurrency
        self.price_per_million_tokens = price_per_million_tokens
        self.verbose = verbose
        self.limiter, self.retry_policy = self.client_settings.pacing()
        # One request must always fit in the token bucket, or it would only ever pass by going into debt.
        self.max_tokens_per_request = int(min(MAX_TOKENS_PER_REQUEST, self.limiter.tokens.capacity))
        self.last_status: StatusTracker | None = None  # counts of the latest run

    def __repr__(self) -> str:
        return (
            f"OpenAIEmbedder(model={self.model!r}, dimensions={self.dimensions}, base_url="
            f"{str(self._client.base_url)!r}, limiter={self.limiter!r}, batch_size={self.batch_size})"
        )

    # -- before sending ----------------------------------------------------------------------------------------------

    def _prepare(self, texts: Sequence[str]) -> tuple[list[str], list[int]]:
        """Checked texts, cut to the model's context where needed, and their cl100k_base token counts."""
        texts = check_texts(texts)
        token_counts = count_tokens(texts)
        too_long = [row for row, tokens in enumerate(token_counts) if tokens > MAX_TOKENS_PER_INPUT]
        if too_long:
            warnings.warn(
                f"{len(too_long)} text(s) exceed {MAX_TOKENS_PER_INPUT} tokens (rows {too_long[:10]}"
                f"{' ...' if len(too_long) > 10 else ''}); each is embedded by its first "
                f"{MAX_TOKENS_PER_INPUT} tokens.",
                stacklevel=3,
            )
            for row in too_long:
                texts[row] = truncate_to_tokens(texts[row], MAX_TOKENS_PER_INPUT)
                token_counts[row] = MAX_TOKENS_PER_INPUT
        return texts, token_counts

    def estimate_cost(self, texts: Sequence[str]) -> tuple[int, float]:
        """(tokens, dollars) that embedding `texts` will be billed, counted with cl100k_base after truncation."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the truncation warning belongs to the run, not the estimate
            _, token_counts = self._prepare(texts)
        tokens = sum(token_counts)
        return tokens, tokens * self.price_per_million_tokens / 1e6

    def _announce(self, message: str) -> None:
        logger.info(message)
        if self.verbose:
            print(message)

    # -- one request -------------------------------------------------------------------------------------------------

    def _embed_batch(self, inputs: list[str]) -> np.ndarray:
        """One API call: (len(inputs), dimensions) float32, L2-normalised, in the order of `inputs`."""
        response = self._client.embeddings.create(
            model=self.model,
            input=inputs,
            encoding_format="base64",  # 4 bytes a value instead of ~20 in JSON; decoded here without a float list
            **({"dimensions": self.dimensions} if self.send_dimensions else {}),
        )
        items = sorted(response.data, key=lambda item: item.index)
        if [item.index for item in items] != list(range(len(inputs))):
            raise ValueError(
                f"The server answered {len(items)} embeddings for {len(inputs)} inputs "
                f"(indices {[item.index for item in items][:10]}...)."
            )
        vectors = np.stack(
            [
                np.frombuffer(base64.b64decode(item.embedding), dtype="<f4")
                if isinstance(item.embedding, str)
                else np.asarray(item.embedding, dtype=np.float32)  # servers that ignore encoding_format send floats
                for item in items
            ]
        )
        if vectors.shape[1] != self.dimensions:
            raise ValueError(
                f"{self.model} returned {vectors.shape[1]}-dimensional vectors but dimensions={self.dimensions}: "
                f"pass dimensions={vectors.shape[1]}, or send_dimensions=True if the server can shorten them."
            )
        return l2_normalise(vectors)

    # -- a run -------------------------------------------------------------------------------------------------------

    def iter_embed(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield `(rows, vectors)` per completed request, in completion order: `rows` index into `texts`.

        Raises:
            ValueError / TypeError: a text is not a non-blank string (before anything is sent).
            EmbeddingRunError: a request failed for good, after every completed batch was yielded.
        """
        texts, token_counts = self._prepare(texts)
        if not texts:
            return
        batches = plan_batches(token_counts, self.batch_size, self.max_tokens_per_request)
        jobs = [Job(payload=rows, token_cost=sum(token_counts[r] for r in rows), rows=len(rows)) for rows in batches]
        tokens = sum(token_counts)
        self._announce(
            f"Embedding {len(texts):,} texts with {self.name} ({self.dimensions} dimensions): {tokens:,} tokens in "
            f"{len(jobs):,} requests, about ${tokens * self.price_per_million_tokens / 1e6:,.4f} "
            f"at ${self.price_per_million_tokens} per 1M tokens."
        )
        tracker = self.last_status = StatusTracker()
        completed: list[np.ndarray] = []
        try:
            for job, vectors in run_rate_limited(
                jobs,
                lambda rows: self._embed_batch([texts[r] for r in rows]),
                limiter=self.limiter,
                retry_policy=self.retry_policy,
                max_concurrency=self.max_concurrency,
                tracker=tracker,
                show_progress=self.verbose,
                progress_description=f"embedding ({self.name})",
            ):
                completed.append(job.payload)
                yield job.payload, vectors
        except RunFailedError as error:
            rows = np.asarray(error.job.payload if error.job.payload is not None else [], dtype=np.int64)
            done = np.concatenate(completed) if completed else np.zeros(0, dtype=np.int64)
            span = f"rows {rows.min()}-{rows.max()} ({len(rows)} rows)" if len(rows) else "the run"
            message = redact(
                f"Embedding with {self.name} failed on {span} after {error.job.attempts} attempt(s): "
                f"{type(error.cause).__name__}: {error.cause}. {len(done):,} of {len(texts):,} rows completed "
                "and were returned; embed the rest again to resume.",
                self._secret,
            )
            raise EmbeddingRunError(message, rows, done) from chainable(error.cause, self._secret)
        finally:
            self._announce(f"{self.name}: {tracker.summary()}")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dimensions) float32, L2-normalised, in input order (see `iter_embed` for failures)."""
        texts = check_texts(texts)
        out = np.full((len(texts), self.dimensions), np.nan, dtype=np.float32)
        try:
            for rows, vectors in self.iter_embed(texts):
                out[rows] = vectors
        except EmbeddingRunError as error:
            error.completed_vectors = out[error.completed_rows]
            raise
        return out
