"""Unit tests of e2p_lib.clients.ratelimit: buckets and cooldown on a fake clock (no sleeping), header parsing, the
retry policy on real `openai` exception objects, and the threaded runner on a plain Python call."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import numpy as np
import openai
import pytest

from e2p_lib.clients.ratelimit import (
    Job,
    RateLimiter,
    RetryHints,
    RetryPolicy,
    RunFailedError,
    StatusTracker,
    parse_duration_seconds,
    run_rate_limited,
)


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    """The exception the SDK raises for `status` (it picks the subclass the same way)."""
    request = httpx.Request("POST", "http://127.0.0.1/v1/embeddings")
    response = httpx.Response(status, headers=headers or {}, request=request)
    cls = {429: openai.RateLimitError, 400: openai.BadRequestError, 500: openai.InternalServerError}.get(
        status, openai.APIStatusError
    )
    return cls(f"Error code: {status}", response=response, body=None)


# --- RateLimiter --------------------------------------------------------------------------------------------------


def test_bucket_starts_full_then_waits_exactly_for_the_missing_tokens():
    clock = FakeClock()
    limiter = RateLimiter(600, 6_000, burst_seconds=1.0, clock=clock)  # 10 req/s, 100 tokens/s; holds 10 req, 100 tok
    assert limiter.try_acquire(60) == 0.0
    assert limiter.try_acquire(40) == 0.0
    wait = limiter.try_acquire(50)  # bucket empty: 50 tokens at 100/s
    assert wait == pytest.approx(0.5)
    clock.advance(wait)
    assert limiter.try_acquire(50) == 0.0


def test_requests_bind_when_they_run_out_first():
    clock = FakeClock()
    limiter = RateLimiter(60, 1_000_000, burst_seconds=2.0, clock=clock)  # 1 request/s, holds 2
    assert limiter.try_acquire(1) == 0.0 and limiter.try_acquire(1) == 0.0
    assert limiter.try_acquire(1) == pytest.approx(1.0)


def test_capacity_caps_the_burst_after_idle_time():
    clock = FakeClock()
    limiter = RateLimiter(None, 6_000, burst_seconds=1.0, clock=clock)
    clock.advance(3600)  # an hour idle still holds only one second's worth
    assert limiter.try_acquire(100) == 0.0
    assert limiter.try_acquire(1) == pytest.approx(0.01)


def test_a_cost_above_capacity_passes_when_full_and_leaves_debt():
    clock = FakeClock()
    limiter = RateLimiter(None, 6_000, burst_seconds=1.0, clock=clock)  # capacity 100
    assert limiter.try_acquire(250) == 0.0
    assert limiter.tokens.level == pytest.approx(-150)
    assert limiter.try_acquire(100) == pytest.approx(2.5)  # 150 of debt + 100 at 100/s


def test_no_limits_never_wait():
    limiter = RateLimiter(None, None, clock=FakeClock())
    assert all(limiter.try_acquire(10**9) == 0.0 for _ in range(100))


def acquire_on_fake_clock(limiter: RateLimiter, clock: FakeClock, tokens: float) -> None:
    """Advance the clock by each wait the limiter asks for until it grants `tokens` (bounded: it must converge)."""
    for _ in range(10):
        wait = limiter.try_acquire(tokens)
        if wait == 0:
            return
        clock.advance(wait)
    raise AssertionError(f"The limiter still asks for {wait} s after waiting what it asked for ten times.")


@pytest.mark.parametrize("burst_seconds", [0.5, 5.0])
def test_schedule_never_exceeds_limits_and_is_as_fast_as_they_allow(burst_seconds):
    clock = FakeClock()
    tokens_per_minute, requests_per_minute = 60_000, 600  # 1,000 tokens/s, 10 requests/s
    limiter = RateLimiter(requests_per_minute, tokens_per_minute, burst_seconds=burst_seconds, clock=clock)
    rng = np.random.default_rng(0)
    costs = rng.integers(50, 300, size=400)
    start, times = clock.now, []
    for cost in costs:
        acquire_on_fake_clock(limiter, clock, float(cost))
        times.append(clock.now)
    times = np.asarray(times) - start
    token_capacity, request_capacity = tokens_per_minute / 60 * burst_seconds, requests_per_minute / 60 * burst_seconds
    # Every window [times[i], times[j]] holds at most rate * length + capacity, for tokens and for requests.
    cumulative = np.concatenate([[0], np.cumsum(costs)])
    i, j = np.triu_indices(len(times))
    window_seconds = times[j] - times[i]
    assert np.all(cumulative[j + 1] - cumulative[i] <= tokens_per_minute / 60 * window_seconds + token_capacity + 1e-6)
    assert np.all(j - i + 1 <= requests_per_minute / 60 * window_seconds + request_capacity + 1e-6)
    # The last request goes the moment the limits allow it: the tightest schedule, to float precision.
    fastest = max(
        (costs.sum() - token_capacity) / (tokens_per_minute / 60),
        (len(costs) - request_capacity) / (requests_per_minute / 60),
    )
    assert times[-1] == pytest.approx(fastest, rel=1e-6)


def test_rate_limited_pauses_everyone_and_trusts_the_servers_remaining_capacity():
    clock = FakeClock()
    limiter = RateLimiter(600, 6_000, burst_seconds=1.0, clock=clock)
    limiter.report_rate_limited(2.0, RetryHints(remaining_tokens=10, remaining_requests=5))
    assert limiter.cooldown_seconds() == pytest.approx(2.0)
    assert limiter.try_acquire(1) == pytest.approx(2.0)
    assert limiter.tokens.level == 10 and limiter.requests.level == 5
    clock.advance(2.0)
    assert limiter.try_acquire(1) == 0.0  # refilled during the pause, at the slowed rate


def test_a_429_for_a_request_sent_before_the_last_adaptation_slows_nothing():
    clock = FakeClock()
    limiter = RateLimiter(600, 6_000, clock=clock, successes_to_trust=3, slowdown_factor=0.5)
    sent_early = clock.now
    clock.advance(0.1)
    limiter.report_rate_limited(0.5, sent_at_seconds=sent_early)  # the first 429: adapts
    clock.advance(1.0)  # after that cooldown, another request sent before it comes back refused
    limiter.report_rate_limited(0.5, sent_at_seconds=sent_early)
    assert limiter.rate_fraction == 1.0
    assert limiter.cooldown_seconds() == pytest.approx(0.5)  # it still pauses everyone
    limiter.report_rate_limited(0.5, sent_at_seconds=clock.now)  # sent after the adaptation: it recurs
    assert limiter.rate_fraction == 0.5


def test_a_refused_request_is_refunded_before_the_sync():
    clock = FakeClock()
    limiter = RateLimiter(600, 6_000, burst_seconds=1.0, clock=clock)  # holds 10 requests, 100 tokens
    assert limiter.try_acquire(80) == 0.0
    limiter.report_rate_limited(0.0, refund_tokens=80)  # the server did not charge it; no remaining headers
    assert (limiter.requests.level, limiter.tokens.level) == (10, 100)
    assert limiter.try_acquire(80) == 0.0
    limiter.report_rate_limited(0.0, RetryHints(remaining_tokens=30), refund_tokens=80)
    assert limiter.tokens.level == 30  # the server's count wins when it is lower


def test_a_lower_server_limit_replaces_the_configured_one_without_slowing_down():
    clock = FakeClock()
    limiter = RateLimiter(600, 12_000, burst_seconds=1.0, clock=clock, successes_to_trust=5)
    limiter.report_rate_limited(0.0)  # a first 429, so that the next one would count as recurring
    limiter.report_rate_limited(0.0, RetryHints(limit_tokens=6_000, limit_requests=900, remaining_tokens=0))
    assert (limiter.tokens.per_minute, limiter.tokens.capacity) == (6_000, 100)  # lowered, burst kept in seconds
    assert limiter.requests.per_minute == 600  # a higher server limit changes nothing
    assert limiter.rate_fraction == 1.0
    assert limiter.try_acquire(50) == pytest.approx(0.5)  # 50 tokens at the server's 100 tokens/s


def test_a_one_off_429_only_syncs_but_recurring_429s_slow_down_once_per_overload():
    clock = FakeClock()
    limiter = RateLimiter(600, 6_000, clock=clock, successes_to_trust=3, slowdown_factor=0.5, recovery_per_success=0.25)
    limiter.report_rate_limited(1.0)  # the first 429: a burst the server had no room for
    assert limiter.rate_fraction == 1.0
    clock.advance(1.0)
    for _ in range(5):  # five workers hit by one recurring overload
        limiter.report_rate_limited(1.0)
    assert limiter.rate_fraction == 0.5
    clock.advance(1.0)
    limiter.report_rate_limited(1.0)  # again, with no success in between
    assert limiter.rate_fraction == 0.25
    for _ in range(3):
        limiter.report_success()
    assert limiter.rate_fraction == 1.0
    clock.advance(1.0)
    limiter.report_rate_limited(1.0)  # after a clean stretch of 3 successes: a one-off again
    assert limiter.rate_fraction == 1.0


def test_slowed_rate_refills_slower():
    clock = FakeClock()
    limiter = RateLimiter(None, 6_000, burst_seconds=1.0, clock=clock, slowdown_factor=0.5, successes_to_trust=1)
    limiter.report_rate_limited(0.0)  # a one-off
    limiter.report_rate_limited(0.0, RetryHints(remaining_tokens=0))  # recurring: half speed
    assert limiter.try_acquire(100) == pytest.approx(2.0)  # 100 tokens at half of 100/s


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"requests_per_minute": 0, "tokens_per_minute": 1}, "requests_per_minute=0"),
        ({"requests_per_minute": 1, "tokens_per_minute": -5}, "tokens_per_minute=-5"),
        ({"requests_per_minute": 1, "tokens_per_minute": 1, "burst_seconds": 0}, "burst_seconds=0"),
        ({"requests_per_minute": 1, "tokens_per_minute": 1, "slowdown_factor": 1.5}, "slowdown_factor=1.5"),
        ({"requests_per_minute": 1, "tokens_per_minute": 1, "successes_to_trust": -1}, "successes_to_trust=-1"),
    ],
)
def test_bad_limiter_settings_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RateLimiter(**kwargs)


def test_negative_cost_is_refused():
    with pytest.raises(ValueError, match="-1"):
        RateLimiter(1, 1, clock=FakeClock()).try_acquire(-1)


# --- headers and retry policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("1h2m3s", 3723.0),
        ("0.25", 0.25),
        ("soon", None),
        ("5 s", None),
        (None, None),
    ],
)
def test_parse_duration_seconds(text, seconds):
    assert parse_duration_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_hints_prefer_milliseconds_and_read_ratelimit_headers():
    hints = RetryHints.from_headers(
        {
            "retry-after-ms": "250",
            "retry-after": "1",
            "x-ratelimit-remaining-tokens": "12",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-tokens": "1.2s",
            "x-ratelimit-reset-requests": "5ms",
            "x-ratelimit-limit-requests": "3000",
            "x-ratelimit-limit-tokens": "1000000",
        }
    )
    assert hints == RetryHints(
        retry_after_seconds=0.25,
        limit_requests=3000,
        limit_tokens=1_000_000,
        remaining_requests=3,
        remaining_tokens=12,
        reset_requests_seconds=0.005,
        reset_tokens_seconds=1.2,
    )


def test_retry_hints_read_an_http_date():
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    hints = RetryHints.from_headers({"retry-after": header}, now_epoch_seconds=now.timestamp())
    assert hints.retry_after_seconds == pytest.approx(30)


@pytest.mark.parametrize(
    "error, kind",
    [
        (status_error(429), "rate_limit"),
        (status_error(500), "server"),
        (status_error(503), "server"),
        (status_error(408), "server"),
        (status_error(400), None),
        (status_error(401), None),
        (status_error(500, {"x-should-retry": "false"}), None),
        (openai.APITimeoutError(request=httpx.Request("POST", "http://127.0.0.1/")), "connection"),
        (openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1/")), "connection"),
        (ValueError("a bug"), None),
    ],
)
def test_classify(error, kind):
    assert RetryPolicy.classify(error) == kind


def test_delay_honours_retry_after_and_caps_it():
    policy = RetryPolicy(max_retry_after_seconds=10)
    rng = random.Random(0)
    assert policy.delay_seconds(1, "rate_limit", RetryHints(retry_after_seconds=0.3), rng) == 0.3
    assert policy.delay_seconds(1, "server", RetryHints(retry_after_seconds=999), rng) == 10


def test_delay_uses_the_reset_of_the_exhausted_limit_without_retry_after():
    hints = RetryHints(remaining_tokens=0, reset_tokens_seconds=1.5, remaining_requests=40, reset_requests_seconds=9)
    assert RetryPolicy().delay_seconds(1, "rate_limit", hints, random.Random(0)) == 1.5


def test_backoff_doubles_with_jitter_and_is_capped():
    policy = RetryPolicy(initial_backoff_seconds=1.0, max_backoff_seconds=8.0)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [policy.delay_seconds(attempt, "server", RetryHints(), rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"initial_backoff_seconds": 5, "max_backoff_seconds": 1}])
def test_bad_policy_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)


# --- run_rate_limited -----------------------------------------------------------------------------------------------

FAST_RETRIES = RetryPolicy(max_attempts=3, initial_backoff_seconds=0.0, max_backoff_seconds=0.0)  # no waiting


def unlimited() -> RateLimiter:
    return RateLimiter(None, None)


def test_runner_yields_every_result_once_and_counts_retries():
    failures_left = {3: 2, 7: 1}  # job payload -> transient failures before it succeeds
    lock = threading.Lock()

    def call(x: int) -> int:
        with lock:
            if failures_left.get(x, 0):
                failures_left[x] -= 1
                raise status_error(500)
        return x * x

    tracker = StatusTracker()
    jobs = [Job(payload=i, token_cost=10, rows=2) for i in range(20)]
    results = dict(
        (job.payload, r)
        for job, r in run_rate_limited(
            jobs,
            call,
            limiter=unlimited(),
            retry_policy=FAST_RETRIES,
            max_concurrency=4,
            tracker=tracker,
            show_progress=False,
        )
    )
    assert results == {i: i * i for i in range(20)}
    assert (tracker.retries, tracker.server_errors, tracker.requests_succeeded) == (3, 3, 20)
    assert (tracker.rows_completed, tracker.tokens_sent, tracker.requests_failed) == (40, 200, 0)
    assert "3 retries" in tracker.summary()


def test_runner_keeps_completed_results_then_fails_loudly():
    def call(x: int) -> int:
        if x == 5:
            raise status_error(500)
        return x

    seen = []
    with pytest.raises(RunFailedError) as info:
        for _job, result in run_rate_limited(
            [Job(payload=i, token_cost=1) for i in range(10)],
            call,
            limiter=unlimited(),
            retry_policy=FAST_RETRIES,
            max_concurrency=1,
            show_progress=False,
        ):
            seen.append(result)
    error = info.value
    assert seen == [0, 1, 2, 3, 4]  # one worker: everything before the failure, nothing started after it
    assert error.job.payload == 5 and error.job.attempts == 3 and error.jobs_completed == 5
    assert "3 attempt(s)" in str(error) and "InternalServerError" in str(error) and "5 of 10" in str(error)


def test_runner_does_not_retry_what_cannot_succeed():
    calls = []

    def call(x: int) -> int:
        calls.append(x)
        raise status_error(400)

    with pytest.raises(RunFailedError, match="BadRequestError"):
        list(run_rate_limited([Job(payload=0, token_cost=1)], call, limiter=unlimited(), show_progress=False))
    assert calls == [0]


def test_runner_never_exceeds_max_concurrency():
    in_flight, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def call(x: int) -> int:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            if peak == 3:
                release.set()
        release.wait(timeout=5)  # hold the first calls until three overlap, so the bound is really tested
        with lock:
            in_flight -= 1
        return x

    results = list(
        run_rate_limited(
            [Job(payload=i, token_cost=1) for i in range(30)],
            call,
            limiter=unlimited(),
            max_concurrency=3,
            show_progress=False,
        )
    )
    assert len(results) == 30 and peak == 3


def test_runner_rejects_bad_concurrency():
    with pytest.raises(ValueError, match="max_concurrency=0"):
        list(run_rate_limited([Job(payload=0, token_cost=1)], str, limiter=unlimited(), max_concurrency=0))
