"""OpenAIEmbedder with the real `openai` SDK against tests/openai_server.py, a local server speaking OpenAI's wire
format that enforces its own rate limits and injects faults. Limits are per minute as in production, sized so
each run takes about a second (a few thousand tokens at 1,000-6,000 tokens/s)."""

from __future__ import annotations

import http.client
import json

import numpy as np
import openai
import pytest
from openai_server import LocalOpenAIServer, expected_embedding

from e2p_lib.embed import l2_normalise, make_embedder
from e2p_lib.embed.openai import EmbeddingRunError, OpenAIEmbedder, plan_batches
from e2p_lib.tokens import count_tokens, truncate_to_tokens

pytestmark = pytest.mark.openai

KEY = "sk-" + "test-0123456789abcdefSECRET"  # a dummy, split so the secret scan of the repo does not flag it
DIMENSIONS = 16  # tiny vectors: the values are what is checked, not their size
FAST_BACKOFF_SECONDS = 0.01  # the server's 500s are instantaneous; real runs back off from 1 s


def texts_of(n: int) -> list[str]:
    """Distinct texts of 1-8 words (about 3-20 tokens each)."""
    return [f"sentence {i} " + "word " * (i % 8) for i in range(n)]


def expected(texts: list[str], model: str = "text-embedding-3-small", dimensions: int = DIMENSIONS) -> np.ndarray:
    return l2_normalise(np.stack([expected_embedding(t, model, dimensions) for t in texts]))


def make(server: LocalOpenAIServer, **overrides) -> OpenAIEmbedder:
    settings = dict(
        dimensions=DIMENSIONS,
        base_url=server.base_url,
        api_key=KEY,
        requests_per_minute=None,
        tokens_per_minute=None,
        batch_size=20,
        max_concurrency=4,
        initial_backoff_seconds=FAST_BACKOFF_SECONDS,
        verbose=False,
    )
    return OpenAIEmbedder(**(settings | overrides))


@pytest.fixture
def server():
    with LocalOpenAIServer(api_key=KEY) as running:
        yield running


def windows_within_limits(records, per_minute: float, capacity: float, cost) -> bool:
    """True if every window [t_i, t_j] of arrivals holds at most per_minute/60 * length + capacity of `cost`.

    One request's cost is allowed on top: a request admitted just before a window opens can arrive inside it.
    """
    times = np.array([r.arrival_seconds for r in records])
    costs = np.array([cost(r) for r in records], dtype=float)
    order = np.argsort(times)
    times, costs = times[order], costs[order]
    cumulative = np.concatenate([[0.0], np.cumsum(costs)])
    i, j = np.triu_indices(len(times))
    used = cumulative[j + 1] - cumulative[i]
    return bool(np.all(used <= per_minute / 60 * (times[j] - times[i]) + capacity + costs.max()))


# --- results ---------------------------------------------------------------------------------------------------------


def test_rows_are_exact_and_in_input_order_despite_429s_and_500s():
    texts = texts_of(300)  # ~3,600 tokens
    # The server allows 1/4 of what the client was told, and fails every 4th request.
    with LocalOpenAIServer(
        api_key=KEY, tokens_per_minute=180_000, burst_seconds=0.2, fail_every_nth_request=4
    ) as server:
        embedder = make(server, tokens_per_minute=720_000, burst_seconds=0.2)
        vectors = embedder.embed(texts)
        status = embedder.last_status
        assert server.count(429) > 0 and server.count(500) > 0
        assert (status.rate_limit_errors, status.server_errors) == (server.count(429), server.count(500))
        assert status.retries == server.count(429) + server.count(500)
        assert status.requests_succeeded == server.count(200) == len(plan_batches(count_tokens(texts), 20, 10**9))
    assert vectors.dtype == np.float32 and vectors.shape == (300, DIMENSIONS)
    np.testing.assert_array_equal(vectors, expected(texts))
    assert embedder.limiter.tokens.per_minute == 180_000  # the client adopted the server's x-ratelimit-limit-tokens


def test_iter_embed_yields_every_row_once_with_its_vector(server):
    texts = texts_of(95)
    got = {}
    for rows, vectors in make(server, batch_size=10).iter_embed(texts):
        assert rows.dtype == np.int64 and vectors.shape == (len(rows), DIMENSIONS)
        for row, vector in zip(rows.tolist(), vectors):
            assert row not in got
            got[row] = vector
    assert sorted(got) == list(range(95))
    np.testing.assert_array_equal(np.stack([got[r] for r in range(95)]), expected(texts))


def test_float_and_base64_answers_carry_the_same_values(server):
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    kwargs = dict(model="text-embedding-3-small", input=["alpha", "beta"], dimensions=DIMENSIONS)
    as_float = client.embeddings.create(encoding_format="float", **kwargs)
    as_base64 = client.embeddings.create(**kwargs)  # the SDK asks for base64 and decodes it itself
    for item_float, item_base64, text in zip(as_float.data, as_base64.data, ["alpha", "beta"]):
        want = expected_embedding(text, dimensions=DIMENSIONS)
        np.testing.assert_array_equal(np.float32(item_float.embedding), want)
        np.testing.assert_array_equal(np.float32(item_base64.embedding), want)
    assert as_float.usage.prompt_tokens == sum(count_tokens(["alpha", "beta"]))


def test_embed_of_nothing_sends_nothing(server):
    assert make(server).embed([]).shape == (0, DIMENSIONS)
    assert server.records == []


def test_make_embedder_builds_it(server):
    embedder = make_embedder("openai", **{"dimensions": 8, "base_url": server.base_url, "api_key": KEY})
    assert embedder.name == "openai/text-embedding-3-small" and embedder.dimensions == 8


# --- pacing and request limits ---------------------------------------------------------------------------------------


def test_client_pacing_keeps_every_window_within_both_limits():
    texts = texts_of(400)  # ~4,900 tokens, 40 requests
    tokens_per_minute, requests_per_minute, burst_seconds = 240_000, 6_000, 0.25  # 4,000 tokens/s binds; 100 req/s
    with LocalOpenAIServer(api_key=KEY) as server:  # no server limits: only the client's limiter paces
        embedder = make(
            server,
            tokens_per_minute=tokens_per_minute,
            requests_per_minute=requests_per_minute,
            burst_seconds=burst_seconds,
            batch_size=10,
            max_concurrency=8,
        )
        embedder.embed(texts)
        records = server.records
    assert len(records) == 40 and all(r.status == 200 for r in records)
    assert windows_within_limits(records, tokens_per_minute, tokens_per_minute / 60 * burst_seconds, lambda r: r.tokens)
    assert windows_within_limits(records, requests_per_minute, requests_per_minute / 60 * burst_seconds, lambda r: 1)
    # and the limits did bind: the run took at least what they allow
    span = max(r.arrival_seconds for r in records) - min(r.arrival_seconds for r in records)
    total = sum(r.tokens for r in records)
    assert span >= (total - tokens_per_minute / 60 * burst_seconds - max(r.tokens for r in records)) / 4_000


def test_requests_hold_at_most_batch_size_inputs(server):
    make(server, batch_size=7).embed(texts_of(50))
    assert sorted(r.inputs for r in server.records) == [1] + [7] * 7


def test_requests_never_exceed_2048_inputs(server):
    embedder = make(server, batch_size=2048)
    embedder.embed(["hi"] * 5000)
    assert sorted(r.inputs for r in server.records) == [904, 2048, 2048]


def test_requests_fit_the_token_bucket():
    with LocalOpenAIServer(api_key=KEY) as server:
        embedder = make(server, tokens_per_minute=6_000, burst_seconds=1.0)  # the bucket holds 100 tokens
        embedder.embed(texts_of(30))
        assert embedder.max_tokens_per_request == 100
        assert max(r.tokens for r in server.records) <= 100


def test_server_refuses_more_than_2048_inputs(server):
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="2048"):
        client.embeddings.create(model="text-embedding-3-small", input=["hi"] * 2049)


def test_server_requires_an_authorization_header(server):
    port = int(server.base_url.split(":")[2].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request(
        "POST",
        "/v1/embeddings",
        body=json.dumps({"model": "text-embedding-3-small", "input": "x"}),
        headers={"content-type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 401 and "API key" in json.loads(response.read())["error"]["message"]
    connection.close()


def test_plan_batches_respects_both_caps():
    assert [b.tolist() for b in plan_batches([5, 5, 5, 5, 5], max_inputs=2, max_tokens=100)] == [[0, 1], [2, 3], [4]]
    assert [b.tolist() for b in plan_batches([60, 50, 40, 200, 1], max_inputs=10, max_tokens=100)] == [
        [0],
        [1, 2],
        [3],
        [4],
    ]  # an oversized row goes alone


# --- input handling --------------------------------------------------------------------------------------------------


def test_over_long_input_is_truncated_with_a_warning(server):
    long_text = "lorem ipsum dolor " * 3000  # ~9,000 tokens
    assert count_tokens([long_text])[0] > 8191
    embedder = make(server)
    with pytest.warns(UserWarning, match=r"exceed 8191 tokens \(rows \[1\]\)"):
        vectors = embedder.embed(["short", long_text])
    assert server.records[0].input_tokens == (1, 8191)
    np.testing.assert_array_equal(vectors[1], expected([truncate_to_tokens(long_text, 8191)])[0])


@pytest.mark.parametrize("bad", [["ok", ""], ["ok", "   "], ["ok", None], ["ok", 3]])
def test_bad_inputs_are_rejected_before_sending(server, bad):
    with pytest.raises(ValueError, match="1: "):
        make(server).embed(bad)
    assert server.records == []


def test_a_single_string_is_refused(server):
    with pytest.raises(TypeError, match=r"wrap it as \[text\]"):
        make(server).embed("one text")


def test_estimate_cost_counts_tokens_and_dollars(server, capsys):
    texts = texts_of(50)
    embedder = make(server, price_per_million_tokens=0.13, verbose=True)
    tokens, dollars = embedder.estimate_cost(texts)
    assert tokens == sum(count_tokens(texts)) and dollars == pytest.approx(tokens * 0.13 / 1e6)
    assert server.records == []  # estimating sends nothing
    embedder.embed(texts)
    printed = capsys.readouterr().out
    assert f"{tokens:,} tokens in 3 requests" in printed and "3 requests (0 failed)" in printed


def test_wrong_vector_size_is_a_clear_error(server):
    embedder = make(server, model="text-embedding-ada-002", send_dimensions=False)  # ada returns 1,536 values
    with pytest.raises(EmbeddingRunError, match="pass dimensions=1536"):
        embedder.embed(["a"])
    assert len(server.records) == 1  # not retried: retrying cannot fix it
    assert make(server, model="text-embedding-ada-002", send_dimensions=False, dimensions=1536).embed(["a"]).shape == (
        1,
        1536,
    )


@pytest.mark.parametrize(
    "setting, value",
    [
        ("batch_size", 0),
        ("batch_size", 2049),
        ("dimensions", 0),
        ("max_concurrency", 0),
        ("max_attempts", 0),
        ("tokens_per_minute", 0),
    ],
)
def test_bad_settings_are_named_before_anything_is_sent(server, setting, value):
    with pytest.raises(ValueError, match=f"{setting}={value}"):
        make(server, **{setting: value})


# --- failures --------------------------------------------------------------------------------------------------------


def test_exhausted_retries_fail_loudly_and_completed_rows_are_kept():
    texts = texts_of(100)
    poison = texts[55]  # rows 50-59 form one request that always fails
    with LocalOpenAIServer(api_key=KEY, failing_inputs=frozenset({poison})) as server:
        embedder = make(server, batch_size=10, max_attempts=3, max_concurrency=2)
        kept = {}
        with pytest.raises(EmbeddingRunError) as info:
            for rows, vectors in embedder.iter_embed(texts):
                kept.update(zip(rows.tolist(), vectors))
        attempts_on_poison = server.count(500)
    error = info.value
    assert attempts_on_poison == 3
    assert "rows 50-59" in str(error) and "3 attempt(s)" in str(error) and "InternalServerError" in str(error)
    assert f"{len(kept)} of 100 rows completed" in str(error)
    assert error.failed_rows.tolist() == list(range(50, 60))
    assert sorted(error.completed_rows.tolist()) == sorted(kept) and not set(kept) & set(range(50, 60))
    assert len(kept) >= 50  # everything before the failing request, at least
    rows = sorted(kept)
    np.testing.assert_array_equal(np.stack([kept[r] for r in rows]), expected([texts[r] for r in rows]))


def test_embed_attaches_completed_rows_to_its_error():
    texts = texts_of(40)
    with LocalOpenAIServer(api_key=KEY, failing_inputs=frozenset({texts[0]})) as server:
        with pytest.raises(EmbeddingRunError) as info:
            make(server, batch_size=10, max_attempts=2, max_concurrency=4).embed(texts)
    error = info.value
    assert error.completed_vectors.shape == (len(error.completed_rows), DIMENSIONS)
    np.testing.assert_array_equal(error.completed_vectors, expected([texts[r] for r in error.completed_rows]))


# --- the key ---------------------------------------------------------------------------------------------------------


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIEmbedder()


def test_pace_settings_come_from_one_dataclass_or_its_keywords(server):
    from e2p_lib.clients.openai import ClientSettings

    embedder = make(server, client_settings=ClientSettings(max_concurrency=2, max_attempts=3), max_attempts=1)
    assert embedder.client_settings == ClientSettings(
        max_concurrency=4, max_attempts=1, initial_backoff_seconds=FAST_BACKOFF_SECONDS
    )
    assert embedder.max_concurrency == 4 and embedder.retry_policy.max_attempts == 1
    with pytest.raises(TypeError, match=r"Unknown keyword argument\(s\) \['max_retries'\]"):
        make(server, max_retries=3)
    with pytest.raises(ValueError, match="max_concurrency=0 must be a positive integer"):
        make(server, max_concurrency=0)


def test_key_from_the_environment_is_used(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    embedder = OpenAIEmbedder(dimensions=DIMENSIONS, base_url=server.base_url, verbose=False)
    np.testing.assert_array_equal(embedder.embed(["hello"]), expected(["hello"]))


def test_key_never_shows_in_repr_errors_or_logs(caplog, capsys):
    caplog.set_level("DEBUG")
    with LocalOpenAIServer(api_key="sk-the-right-key") as server:
        embedder = make(server, verbose=True)
        with pytest.raises(EmbeddingRunError) as info:
            embedder.embed(["hello"])
        assert server.count(401) == 1  # an auth error is not retried
    error = info.value
    assert "AuthenticationError" in str(error)
    shown = [repr(embedder), str(embedder), str(error), repr(error), caplog.text, *capsys.readouterr()]
    assert not [text for text in shown if KEY in text]
