"""A local HTTP server that speaks OpenAI's wire format, so the real `openai` SDK can be tested offline.

It listens on 127.0.0.1 (a free port), runs in a background thread, and answers `POST /v1/embeddings` as OpenAI
does: the same request fields (`model`, `input` as a string, a list of strings or token arrays, `dimensions`,
`encoding_format` "float" or "base64"), the same response (`{"object": "list", "data": [{"object": "embedding",
"index", "embedding"}], "model", "usage"}`), the same errors (`{"error": {"message", "type", "param", "code"}}`)
and status codes. Vectors are deterministic: `expected_embedding(text, model, dimensions)` gives the exact float32
vector the server returns, so tests can compare values, not just shapes.

Like OpenAI it enforces, per server (one "organisation"):
- auth: a missing `Authorization: Bearer ...` header is a 401; so is a wrong key when `api_key` is set (the
  message masks the key as OpenAI does);
- request limits: at most 2,048 inputs, 8,191 tokens per input, 300,000 tokens per request (400 otherwise);
- rate limits: requests and tokens per minute (cl100k_base token counts) in token buckets holding `burst_seconds`
  of each limit (OpenAI's hold a minute). Over the limit it answers 429 with `retry-after-ms`, `retry-after` and
  the `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers, which successes carry too.
It can inject 500s (`fail_every_nth_request`, a seeded `failure_fraction` of admitted requests, which still
count against the limits, or every request that carries one of `failing_inputs`: a persistent fault) and add
`latency_seconds` per answer. `records` holds every request with its arrival time, status and token count, so
tests can check what a client really sent.

    >>> with LocalOpenAIServer(api_key="sk-test", tokens_per_minute=60_000, burst_seconds=1) as server:
    ...     client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    ...     client.embeddings.create(model="text-embedding-3-small", input=["hi"], dimensions=8)

Routing is a table from path to handler (`routes`). `POST /v1/chat/completions` answers chat requests
(`model`, `messages`, `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `seed`) in OpenAI's format with
a deterministic answer, `expected_chat_answer(...)`, that depends on each of those fields, so tests can check what
the client forwarded; a request costs its prompt tokens plus `max_tokens` against the token limit, as at OpenAI.
Outline: deterministic vectors -> records and errors -> the embeddings route -> the chat route -> the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from e2p_lib.clients.ratelimit import RateLimiter
from e2p_lib.tokens import count_tokens, encoding

# Native sizes of OpenAI's embedding models; `dimensions` truncates (text-embedding-3-*) before normalising.
EMBEDDING_MODELS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MODELS_WITHOUT_DIMENSIONS = {"text-embedding-ada-002"}
MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_INPUT = 8191
MAX_TOKENS_PER_REQUEST = 300_000


def expected_embedding(text: str, model: str = "text-embedding-3-small", dimensions: int | None = None) -> np.ndarray:
    """The float32 unit vector the server returns for `text`: seeded by a hash of (model, text), cut, normalised."""
    digest = hashlib.sha256(f"{model}\n{text}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    vector = rng.standard_normal(EMBEDDING_MODELS[model], dtype=np.float32)[: dimensions or None]
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    arrival_seconds: float  # time.monotonic() on arrival
    path: str
    status: int
    model: str | None = None
    input_tokens: tuple[int, ...] = ()  # cl100k_base tokens of each input
    dimensions: int | None = None
    encoding_format: str | None = None

    @property
    def inputs(self) -> int:
        return len(self.input_tokens)

    @property
    def tokens(self) -> int:
        return sum(self.input_tokens)


class APIError(Exception):
    """An error answer in OpenAI's format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class RoutedRequest:
    """What a route makes of a valid request body: its cost against the limits and how to answer it."""

    model: str
    input_tokens: list[int]
    answer: Callable[[], dict]  # called only once the request is admitted
    texts: tuple[str, ...] = ()  # the inputs as text (for `failing_inputs`)
    dimensions: int | None = None
    encoding_format: str | None = None


# ---------------------------------------------------------------------------------------------------------------------
# POST /v1/embeddings


def _embedding_inputs(raw: Any) -> list[str]:
    """Texts from OpenAI's `input` forms: a string, a list of strings, a token array, or a list of token arrays."""

    def is_token_array(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)

    if isinstance(raw, str) or is_token_array(raw):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise APIError(400, "'$.input' is invalid: expected a non-empty string or array.", param="input")
    texts = []
    for item in raw:
        if is_token_array(item):
            item = encoding().decode(item)
        if not isinstance(item, str) or not item:
            raise APIError(
                400,
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
                param="input",
            )
        texts.append(item)
    return texts


def _known_model(body: dict, models: Collection[str]) -> str:
    """The request's `model`, which must be one of `models` (400 when missing, 404 when unknown, as OpenAI)."""
    model = body.get("model")
    if not isinstance(model, str):
        raise APIError(400, "you must provide a model parameter", param="model")
    if model not in models:
        raise APIError(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )
    return model


def _embeddings(body: dict) -> RoutedRequest:
    model = _known_model(body, EMBEDDING_MODELS)
    texts = _embedding_inputs(body.get("input"))
    if len(texts) > MAX_INPUTS_PER_REQUEST:
        raise APIError(
            400,
            f"'$.input' is invalid: {len(texts)} inputs, at most {MAX_INPUTS_PER_REQUEST} are allowed per request.",
            param="input",
        )
    tokens = count_tokens(texts)
    if max(tokens) > MAX_TOKENS_PER_INPUT:
        raise APIError(
            400,
            f"This model's maximum context length is {MAX_TOKENS_PER_INPUT + 1} tokens, however you "
            f"requested {max(tokens)} tokens in your prompt.",
            param="input",
        )
    if sum(tokens) > MAX_TOKENS_PER_REQUEST:
        raise APIError(
            400,
            f"Requested {sum(tokens)} tokens, max {MAX_TOKENS_PER_REQUEST} tokens per request",
            param="input",
            code="max_tokens_per_request",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if model in MODELS_WITHOUT_DIMENSIONS:
            raise APIError(400, "This model does not support specifying dimensions.", param="dimensions")
        if not isinstance(dimensions, int) or not 1 <= dimensions <= EMBEDDING_MODELS[model]:
            raise APIError(
                400,
                f"Invalid value for 'dimensions' = {dimensions}. Must be between 1 and {EMBEDDING_MODELS[model]}.",
                param="dimensions",
            )
    encoding_format = body.get("encoding_format", "float")
    if encoding_format not in ("float", "base64"):
        raise APIError(
            400,
            f"Invalid value for 'encoding_format' = {encoding_format}. Must be float or base64.",
            param="encoding_format",
        )

    def answer() -> dict:
        data = []
        for index, text in enumerate(texts):
            vector = expected_embedding(text, model, dimensions)
            if encoding_format == "base64":
                encoded: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            else:
                encoded = [float(x) for x in vector]  # exact: every float32 is a float64
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        usage = {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}
        return {"object": "list", "data": data, "model": model, "usage": usage}

    return RoutedRequest(model, tokens, answer, tuple(texts), dimensions, encoding_format)


# ---------------------------------------------------------------------------------------------------------------------
# POST /v1/chat/completions (added for e2p_lib.lm.openai)

CHAT_MODELS = {"gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1-nano"}
CHAT_ROLES = {"system", "developer", "user", "assistant"}
DEFAULT_CHAT_MAX_TOKENS = 4096


def expected_chat_answer(
    messages: list[dict],
    model: str = "gpt-4o-mini",
    max_tokens: int = DEFAULT_CHAT_MAX_TOKENS,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> tuple[str, str]:
    """(answer, finish_reason) the server gives: a function of every field a client must forward.

    The last user message with its words reversed; before it, a sample tag hashed from (model, temperature, top_p,
    seed, user message) when temperature > 0, and before that "[system prompt]" when there is one; all cut to
    `max_tokens` cl100k_base tokens (finish_reason "length") or whole ("stop").
    """
    system = " ".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
    user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    answer = " ".join(reversed(user.split()))
    if temperature > 0:
        digest = hashlib.sha256(f"{model}\n{temperature}\n{top_p}\n{seed}\n{user}".encode()).hexdigest()
        answer = f"(sample {digest[:8]}) {answer}"
    if system:
        answer = f"[{system}] {answer}"
    ids = encoding().encode_ordinary(answer)
    if len(ids) > max_tokens:
        return encoding().decode(ids[:max_tokens]), "length"
    return answer, "stop"


def _number_in(body: dict, name: str, low: float, high: float, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise APIError(
            400,
            f"Invalid '{name}': expected a number between {low} and {high}, got {value!r}.",
            param=name,
            code="invalid_value",
        )
    return float(value)


def _chat_completions(body: dict) -> RoutedRequest:
    model = _known_model(body, CHAT_MODELS)
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict) and m.get("role") in CHAT_ROLES and isinstance(m.get("content"), str) for m in messages
        )
    ):
        raise APIError(
            400, "Invalid 'messages': expected a non-empty array of {role, content} objects.", param="messages"
        )
    if not any(m["role"] == "user" for m in messages):
        raise APIError(
            400, "Invalid 'messages': this server answers the last user message; none was sent.", param="messages"
        )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", DEFAULT_CHAT_MAX_TOKENS))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise APIError(
            400,
            f"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got "
            f"{max_tokens!r} instead.",
            param="max_tokens",
            code="integer_below_min_value",
        )
    temperature = _number_in(body, "temperature", 0, 2, 1.0)
    top_p = _number_in(body, "top_p", 0, 1, 1.0)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise APIError(400, f"Invalid 'seed': expected an integer, got {seed!r}.", param="seed")
    if body.get("n", 1) != 1:
        raise APIError(400, "This test server answers n=1 only.", param="n")
    contents = [m["content"] for m in messages]
    # OpenAI reserves max_tokens against the tokens-per-minute limit when it admits a request.
    prompt_tokens = sum(count_tokens(contents)) + 4 * len(messages) + 2

    def answer() -> dict:
        text, finish_reason = expected_chat_answer(messages, model, max_tokens, temperature, top_p, seed)
        completion_tokens = len(encoding().encode_ordinary(text))
        return {
            "id": "chatcmpl-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_local_test",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return RoutedRequest(model, [prompt_tokens + max_tokens], answer, tuple(contents))


# ---------------------------------------------------------------------------------------------------------------------
# The server


def format_duration(seconds: float) -> str:
    """OpenAI's reset-header format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


def _masked(key: str) -> str:
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "***"


@dataclass
class LocalOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 in a background thread; use as a context manager.

    Parameters that control limits:
        requests_per_minute / tokens_per_minute: None for no limit.
        burst_seconds: seconds of each limit its bucket holds (OpenAI: 60). Small values make tests fast.
    Parameters that control faults:
        fail_every_nth_request: the n-th, 2n-th, ... admitted request gets a 500 (None: never).
        failure_fraction: each admitted request fails with a 500 with this probability (seeded by `seed`).
        failing_inputs: texts that make every request carrying them fail with a 500 (a fault retries cannot fix).
        latency_seconds: added before every answer (a simulated network and model time).
    """

    api_key: str | None = None  # None: any key is accepted, but one must be sent
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    burst_seconds: float = 60.0
    fail_every_nth_request: int | None = None
    failure_fraction: float = 0.0
    failing_inputs: frozenset[str] = frozenset()
    seed: int = 0
    latency_seconds: float = 0.0
    records: list[RequestRecord] = field(default_factory=list, init=False)

    def __post_init__(self):
        self.routes: dict[str, Callable[[dict], RoutedRequest]] = {
            "/v1/embeddings": _embeddings,
            "/v1/chat/completions": _chat_completions,
        }
        self._limiter = RateLimiter(self.requests_per_minute, self.tokens_per_minute, burst_seconds=self.burst_seconds)
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._admitted = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> LocalOpenAIServer:
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # A short poll interval so that stop() (which waits for the next poll) takes milliseconds, not 0.5 s.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="local-openai-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None

    def __enter__(self) -> LocalOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("The server is not running: use `with LocalOpenAIServer() as server:` or .start().")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def accepted(self) -> list[RequestRecord]:
        """Records of the requests answered with 200."""
        with self._lock:
            return [r for r in self.records if r.status == 200]

    def count(self, status: int) -> int:
        with self._lock:
            return sum(r.status == status for r in self.records)

    # -- one request -------------------------------------------------------------------------------------------------

    def _rate_limit_headers(self) -> dict[str, str]:
        limiter, headers = self._limiter, {}
        for kind, bucket in (("requests", limiter.requests), ("tokens", limiter.tokens)):
            if bucket.per_minute is not None:
                headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.per_minute))
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
                headers[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.seconds_until_full())
        return headers

    def _admit(self, routed: RoutedRequest) -> dict[str, str]:
        """Take the request's cost from the buckets and return the rate-limit headers, or raise a 429."""
        tokens = sum(routed.input_tokens)
        with self._lock:  # one lock for admission and headers, so the headers describe this decision
            wait_seconds = self._limiter.try_acquire(tokens)
            headers = self._rate_limit_headers()
            if wait_seconds > 0:
                limited = "tokens" if self._limiter.tokens.seconds_until(tokens) > 0 else "requests"
                headers |= {
                    "retry-after-ms": str(max(1, round(wait_seconds * 1000))),
                    "retry-after": str(max(1, round(wait_seconds))),
                }
                raise APIError(
                    429,
                    f"Rate limit reached for {routed.model} on {limited} per min. Please try again "
                    f"in {format_duration(wait_seconds)}.",
                    type=limited,
                    code="rate_limit_exceeded",
                    headers=headers,
                )
            self._admitted += 1
            nth = self.fail_every_nth_request
            fail = (
                (nth is not None and self._admitted % nth == 0)
                or self._rng.random() < self.failure_fraction
                or not self.failing_inputs.isdisjoint(routed.texts)
            )
        if fail:
            raise APIError(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type="server_error",
                headers=headers,
            )
        return headers

    def handle(
        self, path: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, dict, dict[str, str], RequestRecord]:
        """Answer one POST: (status, JSON body, extra headers, record). Order as OpenAI: route, auth, body, limits."""
        arrival = time.monotonic()
        routed: RoutedRequest | None = None
        try:
            route = self.routes.get(path)
            if route is None:
                raise APIError(404, f"Invalid URL (POST {path})")
            authorization = headers.get("authorization", "")
            if not authorization.startswith("Bearer ") or not authorization[7:].strip():
                raise APIError(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
            if self.api_key is not None and authorization[7:] != self.api_key:
                raise APIError(
                    401, f"Incorrect API key provided: {_masked(authorization[7:])}.", code="invalid_api_key"
                )
            try:
                body = json.loads(raw_body or b"null")
            except json.JSONDecodeError as error:
                raise APIError(400, f"We could not parse the JSON body of your request ({error}).") from None
            if not isinstance(body, dict):
                raise APIError(400, "The request body must be a JSON object.")
            routed = route(body)
            extra_headers = self._admit(routed)
            if self.latency_seconds:
                time.sleep(self.latency_seconds)  # simulated service time, not test synchronisation
            status, payload = 200, routed.answer()
        except APIError as error:
            status, payload, extra_headers = error.status, error.body(), error.headers
        record = RequestRecord(
            arrival,
            path,
            status,
            *((routed.model, tuple(routed.input_tokens), routed.dimensions, routed.encoding_format) if routed else ()),
        )
        with self._lock:
            self.records.append(record)
        return status, payload, extra_headers, record


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    app: LocalOpenAIServer

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        length = int(self.headers.get("content-length") or 0)
        raw_body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        status, payload, extra_headers, _ = self.app.handle(self.path, headers, raw_body)
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        pass
