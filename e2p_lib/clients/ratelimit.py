"""Rate-limited, retried, concurrent API calls: the machinery behind the OpenAI embedder and chat client.

OpenAI limits each key on requests per minute AND tokens per minute; at real tier limits the token limit binds
first, so a limiter that only counts requests runs into 429s. This module follows the OpenAI cookbook's
`api_request_parallel_processor.py`, with threads instead of asyncio (threads also work inside Jupyter's running
event loop, where `asyncio.run` fails), and with the server's retry and `x-ratelimit-*` headers instead of the
cookbook's fixed 15 s pause:

- `RateLimiter`: two token buckets (requests, tokens) with a shared cooldown; a 429 pauses every worker.
- `RetryPolicy`: which errors are retried (429, 408, 409, 5xx, timeouts, connection errors) and how long to wait;
  everything else (400, 401, 404, ...) fails at once, since retrying cannot fix it.
- `StatusTracker`: counts of requests, tokens, 429s, retries and failures; `summary()` at the end of a run.
- `run_rate_limited(jobs, call, ...)`: yields `(job, result)` in completion order (join on the job). When a job
  fails for good, the jobs in flight finish and are yielded before `RunFailedError` is raised, so a caller that
  saves every yielded result loses nothing and can resume.

    >>> limiter = RateLimiter(requests_per_minute=3_000, tokens_per_minute=1_000_000)
    >>> jobs = [Job(payload=batch, token_cost=count) for batch, count in planned_batches]
    >>> for job, result in run_rate_limited(jobs, send_batch, limiter=limiter):
    ...     save(job.payload, result)

`RateLimiter` takes a `clock` (seconds, monotonic) and `TokenBucket` is handed the time, so tests drive both with a
fake clock and no sleeping.
"""

from __future__ import annotations

import email.utils
import logging
import math
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import openai
from tqdm.auto import tqdm

from e2p_lib.checks import check_int

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
P = TypeVar("P")  # what a job sends
R = TypeVar("R")  # what a call returns


# ---------------------------------------------------------------------------------------------------------------------
# What the server says: retry-after and x-ratelimit-* headers


def parse_duration_seconds(text: str | None) -> float | None:
    """Seconds in an OpenAI reset header ("6m0s", "1.5s", "20ms", "1h2m"), or None if it does not parse.

    Hand-written: the format is Go's time.Duration string, for which no well-kept Python parser exists.
    """
    if text is None:
        return None
    text = text.strip()
    try:
        return float(text)  # some OpenAI-compatible servers send plain seconds
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    unit_seconds = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return sum(float(number) * unit_seconds[unit] for number, unit in parts)


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RetryHints:
    """What a response's headers say about when to retry and how much capacity is left (None: not sent)."""

    retry_after_seconds: float | None = None
    limit_requests: float | None = None  # the account's limits per minute, as the server enforces them
    limit_tokens: float | None = None
    remaining_requests: float | None = None
    remaining_tokens: float | None = None
    reset_requests_seconds: float | None = None
    reset_tokens_seconds: float | None = None
    should_retry: bool | None = None  # the non-standard x-should-retry header

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None, now_epoch_seconds: float | None = None) -> RetryHints:
        if not headers:
            return cls()
        retry_after = _header_float(headers, "retry-after-ms")
        if retry_after is not None:
            retry_after /= 1000.0
        else:
            retry_after = _header_float(headers, "retry-after")
        if retry_after is None and headers.get("retry-after"):  # the HTTP-date form
            try:
                date = email.utils.parsedate_to_datetime(headers["retry-after"])
                retry_after = date.timestamp() - (time.time() if now_epoch_seconds is None else now_epoch_seconds)
            except (TypeError, ValueError):
                retry_after = None
        if retry_after is not None and not math.isfinite(retry_after):
            retry_after = None
        should_retry = {"true": True, "false": False}.get(str(headers.get("x-should-retry", "")).lower())
        return cls(
            retry_after_seconds=None if retry_after is None else max(0.0, retry_after),
            limit_requests=_header_float(headers, "x-ratelimit-limit-requests"),
            limit_tokens=_header_float(headers, "x-ratelimit-limit-tokens"),
            remaining_requests=_header_float(headers, "x-ratelimit-remaining-requests"),
            remaining_tokens=_header_float(headers, "x-ratelimit-remaining-tokens"),
            reset_requests_seconds=parse_duration_seconds(headers.get("x-ratelimit-reset-requests")),
            reset_tokens_seconds=parse_duration_seconds(headers.get("x-ratelimit-reset-tokens")),
            should_retry=should_retry,
        )

    @classmethod
    def from_error(cls, error: BaseException) -> RetryHints:
        """Hints from an `openai.APIStatusError`'s response headers (empty for other errors)."""
        if isinstance(error, openai.APIStatusError):
            return cls.from_headers(error.response.headers)
        return cls()


# ---------------------------------------------------------------------------------------------------------------------
# Capacity: token buckets and the shared cooldown


class TokenBucket:
    """One resource (requests or tokens) refilled at `per_minute / 60` per second, holding at most `capacity`.

    Not thread-safe on its own: `RateLimiter` guards its buckets with one lock. A cost larger than the capacity is
    let through when the bucket is full and leaves it in debt, so it can never wait forever, and the long-run
    rate still holds. `per_minute=None` means no limit.
    """

    def __init__(self, per_minute: float | None, capacity: float, now_seconds: float):
        self.per_minute = per_minute
        self.capacity = capacity
        self.level = capacity  # start full, as a fresh OpenAI key does
        self._updated_seconds = now_seconds

    def refill(self, now_seconds: float, rate_factor: float = 1.0) -> None:
        if self.per_minute is not None:
            elapsed = max(0.0, now_seconds - self._updated_seconds)
            self.level = min(self.capacity, self.level + elapsed * self.per_minute / 60.0 * rate_factor)
        self._updated_seconds = now_seconds

    def seconds_until(self, cost: float, rate_factor: float = 1.0) -> float:
        """Time until `cost` can be taken (0 if now); call `refill` first."""
        if self.per_minute is None:
            return 0.0
        missing = min(cost, self.capacity) - self.level
        if missing <= 1e-9 * max(1.0, cost):  # float dust from refills; waiting it out could round to no time at all
            return 0.0
        return missing / (self.per_minute / 60.0 * rate_factor)

    def seconds_until_full(self) -> float:
        if self.per_minute is None:
            return 0.0
        return max(0.0, (self.capacity - self.level) / (self.per_minute / 60.0))


def _check_limit(name: str, per_minute: float | None) -> None:
    if per_minute is not None and not (isinstance(per_minute, (int, float)) and per_minute > 0):
        raise ValueError(f"{name}={per_minute!r} must be a positive number (or None for no limit).")


class RateLimiter:
    """Thread-safe dual token bucket (requests and tokens per minute) with a shared cooldown and adaptive pace.

    Parameters that control capacity:
        requests_per_minute / tokens_per_minute: the account's limits (None: no limit of that kind).
        burst_seconds: each bucket holds this many seconds of its limit. OpenAI's own buckets hold a full minute;
            keeping a little below it (the default, 58 s) leaves headroom for requests still on their way. Small
            values pace evenly from the start.
    Parameters that control adaptation to 429s (see `report_rate_limited`):
        successes_to_trust: a 429 after at least this many successes since the last one is taken as a one-off
            (a burst the server did not have room for, e.g. after another run on the same key): the sync is
            enough. A 429 sooner than that means the limits are set too high, and slows the pace.
        slowdown_factor: each such 429 multiplies the refill rate by this, down to `min_rate_fraction`.
            Simultaneous 429s from one overload count once.
        recovery_per_success: each success adds this back to the rate fraction, up to 1.0.
    """

    def __init__(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        *,
        burst_seconds: float = 58.0,
        successes_to_trust: int = 10,
        slowdown_factor: float = 0.8,
        min_rate_fraction: float = 0.25,
        recovery_per_success: float = 0.01,
        clock: Clock = time.monotonic,
    ):
        _check_limit("requests_per_minute", requests_per_minute)
        _check_limit("tokens_per_minute", tokens_per_minute)
        if not burst_seconds > 0:
            raise ValueError(f"burst_seconds={burst_seconds!r} must be positive (58 suits OpenAI's 1-minute buckets).")
        if not (isinstance(successes_to_trust, int) and successes_to_trust >= 0):
            raise ValueError(f"successes_to_trust={successes_to_trust!r} must be an integer >= 0.")
        if not (0 < slowdown_factor <= 1 and 0 < min_rate_fraction <= 1 and recovery_per_success >= 0):
            raise ValueError(
                f"slowdown_factor={slowdown_factor!r} and min_rate_fraction={min_rate_fraction!r} must be in (0, 1], "
                f"recovery_per_success={recovery_per_success!r} must be >= 0."
            )
        self.clock = clock
        self._lock = threading.Lock()
        now = clock()
        self.burst_seconds = float(burst_seconds)
        self.requests = TokenBucket(requests_per_minute, self._capacity(requests_per_minute), now)
        self.tokens = TokenBucket(tokens_per_minute, self._capacity(tokens_per_minute), now)
        self.rate_fraction = 1.0  # the share of the configured limits currently used (lowered by 429s)
        self._slowdown_factor = slowdown_factor
        self._min_rate_fraction = min_rate_fraction
        self._recovery_per_success = recovery_per_success
        self._successes_to_trust = successes_to_trust
        self._successes_since_rate_limit = math.inf  # a first 429 is a one-off
        self._cooldown_until = -math.inf
        self._episode_started = -math.inf  # when the last 429 episode began (requests sent before it are stale)
        self._episode_until = -math.inf  # 429s before this belong to the episode that set the cooldown

    def _capacity(self, per_minute: float | None) -> float:
        return math.inf if per_minute is None else per_minute * self.burst_seconds / 60.0

    def __repr__(self) -> str:
        return (
            f"RateLimiter(requests_per_minute={self.requests.per_minute}, tokens_per_minute={self.tokens.per_minute}, "
            f"burst_seconds={self.burst_seconds}, rate_fraction={self.rate_fraction:.2f})"
        )

    def _refill(self, now: float) -> None:
        self.requests.refill(now, self.rate_fraction)
        self.tokens.refill(now, self.rate_fraction)

    def try_acquire(self, tokens: float) -> float:
        """Take one request and `tokens` tokens and return 0.0, or take nothing and return the seconds to wait."""
        if tokens < 0:
            raise ValueError(f"A job's token cost must be >= 0, got {tokens!r}.")
        with self._lock:
            now = self.clock()
            if now < self._cooldown_until:
                return self._cooldown_until - now
            self._refill(now)
            wait = max(
                self.requests.seconds_until(1, self.rate_fraction),
                self.tokens.seconds_until(tokens, self.rate_fraction),
            )
            if wait > 0:
                return wait
            self.requests.level -= 1
            self.tokens.level -= tokens
            return 0.0

    def cooldown_seconds(self) -> float:
        """Time left in the shared pause after a 429 (0 when there is none)."""
        with self._lock:
            return max(0.0, self._cooldown_until - self.clock())

    def report_rate_limited(
        self,
        pause_seconds: float,
        hints: RetryHints | None = None,
        refund_tokens: float = 0.0,
        sent_at_seconds: float | None = None,
    ) -> None:
        """A 429 came back: pause every worker, trust the server's limits and remaining capacity, slow if it recurs.

        `refund_tokens` (and one request) go back into the buckets: the server did not charge the refused request,
        and its retry will be charged again. A server limit (`x-ratelimit-limit-*`) below the configured one
        replaces it for good: that explains the 429, so it does not also slow the pace. `sent_at_seconds` (this
        limiter's clock) marks a request sent before the last adaptation: its 429 is old news and slows nothing.
        """
        hints = hints or RetryHints()
        with self._lock:
            now = self.clock()
            self._refill(now)
            self.requests.level = min(self.requests.capacity, self.requests.level + 1)
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + refund_tokens)
            self._cooldown_until = max(self._cooldown_until, now + max(0.0, pause_seconds))
            lowered_limit = False
            for name, bucket, limit, remaining in (
                ("requests", self.requests, hints.limit_requests, hints.remaining_requests),
                ("tokens", self.tokens, hints.limit_tokens, hints.remaining_tokens),
            ):
                if limit is not None and limit > 0 and bucket.per_minute is not None and limit < bucket.per_minute:
                    logger.warning(
                        "The server limits %s to %s per minute, not the configured %s: using its limit.",
                        name,
                        f"{limit:,.0f}",
                        f"{bucket.per_minute:,.0f}",
                    )
                    bucket.per_minute, bucket.capacity = limit, self._capacity(limit)
                    lowered_limit = True
                if remaining is not None:
                    bucket.level = min(bucket.level, remaining)
                bucket.level = min(bucket.level, bucket.capacity)
            if now < self._episode_until or (sent_at_seconds is not None and sent_at_seconds < self._episode_started):
                return  # another worker's 429 from the same overload, or one sent before we adapted to it
            self._episode_started, self._episode_until = now, self._cooldown_until
            if self._successes_since_rate_limit < self._successes_to_trust and not lowered_limit:
                self.rate_fraction = max(self._min_rate_fraction, self.rate_fraction * self._slowdown_factor)
            self._successes_since_rate_limit = 0
            logger.info(
                "Rate limited: pausing all workers %.2f s, pace now %.0f%% of the limits.",
                pause_seconds,
                100 * self.rate_fraction,
            )

    def report_success(self) -> None:
        with self._lock:
            self._refill(self.clock())
            self.rate_fraction = min(1.0, self.rate_fraction + self._recovery_per_success)
            self._successes_since_rate_limit += 1


# ---------------------------------------------------------------------------------------------------------------------
# Which errors are retried, and after how long

ErrorKind = Literal["rate_limit", "server", "connection"]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry 429 / 408 / 409 / 5xx / timeouts / connection errors, at most `max_attempts` attempts in all.

    The wait is the server's `retry-after-ms` / `retry-after` when sent (capped at `max_retry_after_seconds`),
    else, for a 429, the `x-ratelimit-reset-*` of the exhausted limit, else exponential backoff with "equal
    jitter": half of `initial_backoff_seconds * 2**(attempt-1)` (capped at `max_backoff_seconds`) plus a random
    share of the other half, so workers that failed together do not retry together.
    """

    max_attempts: int = 6
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    max_retry_after_seconds: float = 120.0

    def __post_init__(self):
        check_int(self.max_attempts, "max_attempts", hint=" (1 means no retries)")
        if not (0 <= self.initial_backoff_seconds <= self.max_backoff_seconds):
            raise ValueError(
                f"Need 0 <= initial_backoff_seconds ({self.initial_backoff_seconds!r}) "
                f"<= max_backoff_seconds ({self.max_backoff_seconds!r})."
            )
        if not self.max_retry_after_seconds >= 0:
            raise ValueError(f"max_retry_after_seconds={self.max_retry_after_seconds!r} must be >= 0.")

    @staticmethod
    def classify(error: BaseException) -> ErrorKind | None:
        """The kind of a retryable error, or None if retrying cannot help (bad request, auth, our own bug)."""
        if isinstance(error, openai.APIStatusError):
            if RetryHints.from_error(error).should_retry is False:
                return None
            status = error.status_code
            if status == 429:
                return "rate_limit"
            if status in (408, 409) or status >= 500:
                return "server"
            return None
        if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
            return "connection"
        return None

    def delay_seconds(self, attempt: int, kind: ErrorKind, hints: RetryHints, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if hints.retry_after_seconds is not None:
            return min(hints.retry_after_seconds, self.max_retry_after_seconds)
        if kind == "rate_limit":
            exhausted = [
                reset
                for remaining, reset in (
                    (hints.remaining_requests, hints.reset_requests_seconds),
                    (hints.remaining_tokens, hints.reset_tokens_seconds),
                )
                if remaining is not None and remaining < 1 and reset is not None
            ]
            if exhausted:
                return min(max(exhausted), self.max_retry_after_seconds)
        backoff = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2.0 ** (attempt - 1))
        return backoff / 2 + rng.uniform(0, backoff / 2)


# ---------------------------------------------------------------------------------------------------------------------
# Bookkeeping


@dataclass
class StatusTracker:
    """Counts for one run (thread-safe through `add`); `summary()` prints them."""

    requests_succeeded: int = 0
    requests_failed: int = 0  # jobs given up on
    rate_limit_errors: int = 0  # 429s
    server_errors: int = 0  # 408/409/5xx
    connection_errors: int = 0  # timeouts and connection failures
    retries: int = 0
    tokens_sent: int = 0  # estimated tokens of the requests that succeeded
    rows_completed: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **increments: float) -> None:
        with self._lock:
            for name, amount in increments.items():
                setattr(self, name, getattr(self, name) + amount)

    def summary(self) -> str:
        return (
            f"{self.requests_succeeded:,} requests ({self.requests_failed:,} failed), {self.rows_completed:,} rows, "
            f"{self.tokens_sent:,} tokens, {self.rate_limit_errors:,} rate-limit errors (429), "
            f"{self.server_errors:,} server errors, {self.connection_errors:,} connection errors, "
            f"{self.retries:,} retries, {self.seconds:.1f} s"
        )


# ---------------------------------------------------------------------------------------------------------------------
# The runner


@dataclass
class Job(Generic[P]):
    """One request to make: what to send, what it costs against the limits, and how many rows it carries."""

    payload: P
    token_cost: int
    rows: int = 1  # progress-bar units (e.g. texts in an embedding batch)
    attempts: int = 0  # attempts made so far


class RunFailedError(RuntimeError):
    """A job failed for good; the results of every other completed job were yielded before this was raised."""

    def __init__(self, job: Job, cause: BaseException, jobs_completed: int, jobs_total: int, message: str):
        super().__init__(message)
        self.job = job
        self.cause = cause
        self.jobs_completed = jobs_completed
        self.jobs_total = jobs_total


@dataclass
class _Failure:
    job: Job
    error: BaseException


_WORKER_DONE = object()


def _acquire(limiter: RateLimiter, tokens: float, stop: threading.Event) -> bool:
    """Wait until the limiter grants one request and `tokens` (True), or the run is stopped (False)."""
    while not stop.is_set():
        wait_seconds = limiter.try_acquire(tokens)
        if wait_seconds <= 0:
            return True
        stop.wait(wait_seconds)
    return False


def _attempt_job(
    job: Job[P],
    call: Callable[[P], R],
    limiter: RateLimiter,
    policy: RetryPolicy,
    tracker: StatusTracker,
    stop: threading.Event,
    rng: random.Random,
) -> tuple[Job[P], R] | _Failure | None:
    """Send one job until it succeeds, fails for good (_Failure), or the run is stopped (None)."""
    while _acquire(limiter, job.token_cost, stop):
        job.attempts += 1
        sent_at_seconds = limiter.clock()
        try:
            result = call(job.payload)
        # On purpose, every exception: each failure is classified and counted, then retried or reported.
        except Exception as error:  # noqa: BLE001
            kind = policy.classify(error)
            if kind is None or job.attempts >= policy.max_attempts:
                tracker.add(requests_failed=1, **({f"{kind}_errors": 1} if kind else {}))
                return _Failure(job, error)
            hints = RetryHints.from_error(error)
            delay = policy.delay_seconds(job.attempts, kind, hints, rng)
            tracker.add(retries=1, **{f"{kind}_errors": 1})
            logger.debug("Attempt %d failed (%s); retrying in %.2f s.", job.attempts, type(error).__name__, delay)
            if kind == "rate_limit":
                # Every worker now waits, in _acquire.
                limiter.report_rate_limited(delay, hints, refund_tokens=job.token_cost, sent_at_seconds=sent_at_seconds)
            else:
                stop.wait(delay)
            continue
        limiter.report_success()
        tracker.add(requests_succeeded=1, tokens_sent=job.token_cost)
        return job, result
    return None


def check_max_concurrency(max_concurrency: int) -> None:
    check_int(max_concurrency, "max_concurrency", hint=" (requests in flight at once)")


def run_rate_limited(
    jobs: Sequence[Job[P]],
    call: Callable[[P], R],
    *,
    limiter: RateLimiter,
    retry_policy: RetryPolicy | None = None,
    max_concurrency: int = 16,
    tracker: StatusTracker | None = None,
    show_progress: bool = True,
    progress_description: str = "requests",
    seed: int | None = None,
) -> Iterator[tuple[Job[P], R]]:
    """Run `call(job.payload)` for every job, paced by `limiter`, and yield `(job, result)` as each completes.

    Each of `max_concurrency` threads takes the next job, waits for capacity, sends it, and retries it in place
    per `retry_policy`. When a job fails for good, no new job starts; the jobs in flight finish and are yielded;
    then `RunFailedError` is raised (its `cause` is the last error). `seed` fixes the backoff jitter.

    Raises:
        RunFailedError: a job failed with a non-retryable error or ran out of attempts.
        ValueError: `max_concurrency` is not a positive integer.
    """
    check_max_concurrency(max_concurrency)
    jobs = list(jobs)
    policy = retry_policy or RetryPolicy()
    tracker = tracker if tracker is not None else StatusTracker()
    if not jobs:
        return
    rng = random.Random(seed)
    stop = threading.Event()
    outcomes: queue.Queue = queue.Queue()
    next_job = iter(jobs)
    next_job_lock = threading.Lock()

    def worker() -> None:
        try:
            while not stop.is_set():
                with next_job_lock:
                    job = next(next_job, None)
                if job is None:
                    return
                outcome = _attempt_job(job, call, limiter, policy, tracker, stop, rng)
                if isinstance(outcome, _Failure):
                    stop.set()  # start nothing new; jobs in flight still complete and are yielded
                if outcome is not None:
                    outcomes.put(outcome)
        except BaseException as error:  # noqa: BLE001 - a bug here must reach the caller, not die with the thread
            stop.set()
            outcomes.put(_Failure(Job(payload=None, token_cost=0), error))
        finally:
            outcomes.put(_WORKER_DONE)

    started = time.monotonic()
    threads = [
        threading.Thread(target=worker, name=f"e2p-ratelimit-{i}", daemon=True)
        for i in range(min(max_concurrency, len(jobs)))
    ]
    for thread in threads:
        thread.start()
    progress = tqdm(total=sum(job.rows for job in jobs), desc=progress_description, disable=not show_progress)
    failure: _Failure | None = None
    jobs_completed = 0
    try:
        workers_running = len(threads)
        while workers_running:
            outcome = outcomes.get()  # every worker ends with _WORKER_DONE, so this loop ends
            if outcome is _WORKER_DONE:
                workers_running -= 1
            elif isinstance(outcome, _Failure):
                failure = failure or outcome
            else:
                job, result = outcome
                jobs_completed += 1
                tracker.add(rows_completed=job.rows)
                progress.update(job.rows)
                yield job, result
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        progress.close()
        tracker.seconds = time.monotonic() - started
    if failure is not None:
        error = failure.error
        raise RunFailedError(
            failure.job,
            error,
            jobs_completed,
            len(jobs),
            f"A request failed after {failure.job.attempts} attempt(s) with {type(error).__name__}: {error}. "
            f"{jobs_completed} of {len(jobs)} requests completed and their results were returned.",
        )
