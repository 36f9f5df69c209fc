"""Embedding benchmarks; prints one markdown table. A script, not a test: timings vary with the machine.

1. `LocalEmbedder.embed` against raw `SentenceTransformer.encode` on the same Alpaca outputs (same model, batch
   size and normalisation): the wrapper's throughput as a share of the raw one (goal >= 0.95x). Best of
   `--repeats`, alternating which goes first, so a busy machine penalises both alike; in wall time and in the
   process's CPU time, which other jobs on shared cores disturb far less.
2. `embed_dataset` (the SQLite embedding cache) with the local embedder: a first run into an empty cache, then a
   rerun that finds every text cached.
3. `OpenAIEmbedder` against tests/openai_server.py, a local server that enforces requests- and tokens-per-minute
   limits itself and answers after `--latency-seconds`. Limits keep the ratio of OpenAI's tier 1 for
   text-embedding-3-small (3,000 RPM, 1,000,000 TPM) with time sped up: one simulated minute lasts
   `--seconds-per-minute`, and the limits are set so the dataset takes `--minutes-of-quota` minutes of the token
   limit (a real 52k-row Alpaca at tier 1 is about 3), so tokens/min binds. The server's bucket holds one simulated
   minute, like OpenAI's; the client's holds 58/60 of it (its default headroom); the server's answer time is
   `--latency-seconds` in simulated time too. Reported: wall time divided by the fastest schedule the server's
   limits allow for what the server charged (successes and its 500s), max(0, (total - bucket) / rate) over tokens
   and requests, not counting the last answer's latency (goal <= 1.10x), with the 429s and retries. Two stress
   rows follow: a client that believes the limits are 1.5x what the server enforces (it must adapt to 429s), and
   a server failing every 10th request with a 500. One-time process costs (SDK imports, first connection) are
   paid by an untimed warm-up request.

    .venv/bin/python bench/embed.py                      # everything on the 4,965 cleaned Alpaca outputs
    .venv/bin/python bench/embed.py --rows 1000 --skip-local --skip-cache
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "tests"))  # the local OpenAI server lives beside the tests

from openai_server import LocalOpenAIServer  # noqa: E402

from e2p_lib.data import load_alpaca  # noqa: E402
from e2p_lib.embed.openai import DEFAULT_CLIENT_SETTINGS, OpenAIEmbedder  # noqa: E402

ALPACA_5000 = PROJECT_ROOT.parent / "shared" / "data" / "alpaca_5000.json"
TIER1_REQUESTS_PER_MINUTE, TIER1_TOKENS_PER_MINUTE = 3_000, 1_000_000
# OpenAIEmbedder's default burst_seconds over OpenAI's one-minute bucket
CLIENT_BURST_FRACTION = DEFAULT_CLIENT_SETTINGS.burst_seconds / 60


@dataclass
class Row:
    benchmark: str
    setting: str
    seconds: float
    reference: str
    reference_seconds: float
    ratio: float
    goal: str
    notes: str = ""


def seconds_of(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def wall_and_cpu_seconds_of(work) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads): CPU time barely moves when others share the cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


# ---------------------------------------------------------------------------------------------------------------------
# 1. LocalEmbedder vs SentenceTransformer.encode


def bench_local(texts: list[str], repeats: int) -> list[Row]:
    from sentence_transformers import SentenceTransformer

    from e2p_lib.embed import LocalEmbedder, default_local_model_path

    embedder = LocalEmbedder(show_progress=False)
    model = SentenceTransformer(default_local_model_path())  # the same weights, loaded again: only the wrapper differs

    def raw() -> None:
        model.encode(
            texts,
            batch_size=embedder.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def wrapped() -> None:
        embedder.embed(texts)

    raw_times, wrapped_times = [], []  # (wall, cpu) per run
    for repeat in range(repeats):
        order = [(raw, raw_times), (wrapped, wrapped_times)]
        for work, times in order if repeat % 2 == 0 else order[::-1]:
            times.append(wall_and_cpu_seconds_of(work))
    setting = f"{len(texts):,} texts, {embedder.name}, batch {embedder.batch_size}"
    rows = []
    for clock, column in (("wall", 0), ("CPU", 1)):
        raw_best = min(t[column] for t in raw_times)
        wrapped_best = min(t[column] for t in wrapped_times)
        rows.append(
            Row(
                f"LocalEmbedder throughput ({clock} time)",
                setting,
                wrapped_best,
                "SentenceTransformer.encode",
                raw_best,
                raw_best / wrapped_best,
                ">= 0.95x",
                f"best of {repeats}; {len(texts) / wrapped_best:,.0f} vs {len(texts) / raw_best:,.0f} "
                f"texts per {clock} second",
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# 2. The embedding cache


def bench_cache(frame) -> list[Row]:
    from e2p_lib.embed import LocalEmbedder
    from e2p_lib.embed.cache import embed_dataset

    embedder = LocalEmbedder(show_progress=False)
    with tempfile.TemporaryDirectory() as cache_dir:
        first = seconds_of(lambda: embed_dataset(frame, embedder, cache_dir, show_progress=False))
        rerun_stats = {}
        rerun = seconds_of(
            lambda: rerun_stats.update(embed_dataset(frame, embedder, cache_dir, show_progress=False).stats)
        )
    return [
        Row(
            "embed_dataset rerun",
            f"{len(frame):,} rows, local",
            rerun,
            "first run (empty cache)",
            first,
            rerun / first,
            "",
            f"rerun embedded {rerun_stats.get('embedded_now')} texts",
        )
    ]


# ---------------------------------------------------------------------------------------------------------------------
# 3. OpenAIEmbedder against a limit-enforcing server


def warm_up_openai(dimensions: int) -> None:
    """Pay the SDK's import and first-request costs outside the timed runs."""
    with LocalOpenAIServer(api_key="sk-bench") as server:
        OpenAIEmbedder(dimensions=dimensions, base_url=server.base_url, api_key="sk-bench", verbose=False).embed(["hi"])


def fastest_seconds(total: float, per_minute: float, bucket: float) -> float:
    """When the last unit can be admitted by a bucket of `bucket` units refilled at `per_minute`."""
    return max(0.0, (total - bucket) / (per_minute / 60))


def bench_openai(
    texts: list[str], args, setting: str, client_limit_factor: float = 1.0, fail_every_nth_request: int | None = None
) -> Row:
    from e2p_lib.tokens import count_tokens

    speedup = 60 / args.seconds_per_minute  # real seconds per simulated minute -> limit multiplier
    total_tokens = sum(count_tokens(texts))
    # Limits (per real minute) such that the texts need `minutes_of_quota` simulated minutes of the token limit.
    tokens_per_minute = total_tokens / args.minutes_of_quota * speedup
    requests_per_minute = tokens_per_minute * TIER1_REQUESTS_PER_MINUTE / TIER1_TOKENS_PER_MINUTE
    server_burst_seconds = args.seconds_per_minute  # OpenAI's bucket holds one (simulated) minute
    with LocalOpenAIServer(
        api_key="sk-bench",
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        burst_seconds=server_burst_seconds,
        latency_seconds=args.latency_seconds / speedup,
        fail_every_nth_request=fail_every_nth_request,
    ) as server:
        embedder = OpenAIEmbedder(
            dimensions=args.dimensions,
            base_url=server.base_url,
            api_key="sk-bench",
            requests_per_minute=requests_per_minute * client_limit_factor,
            tokens_per_minute=tokens_per_minute * client_limit_factor,
            burst_seconds=server_burst_seconds * CLIENT_BURST_FRACTION,
            initial_backoff_seconds=1.0 / speedup,  # backoff in simulated time, as the limits are
            verbose=False,
        )
        wall = seconds_of(lambda: embedder.embed(texts))
        # What the server charged to its buckets: successes and its own 500s (a 429 is not charged).
        charged = [r for r in server.records if r.status in (200, 500)]
    server_tokens = sum(r.tokens for r in charged)
    fastest = max(
        fastest_seconds(server_tokens, tokens_per_minute, tokens_per_minute * server_burst_seconds / 60),
        fastest_seconds(len(charged), requests_per_minute, requests_per_minute * server_burst_seconds / 60),
    )
    status = embedder.last_status
    return Row(
        "OpenAIEmbedder vs limits",
        setting,
        wall,
        "fastest the limits allow",
        fastest,
        wall / fastest,
        "<= 1.10x",
        f"{len(charged)} requests, {server_tokens:,} tokens charged; {status.rate_limit_errors} x 429, "
        f"{status.server_errors} x 5xx, {status.retries} retries; {tokens_per_minute:,.0f} TPM / "
        f"{requests_per_minute:,.0f} RPM real time",
    )


# ---------------------------------------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    print("| benchmark | setting | seconds | reference | ref. seconds | ratio | goal | notes |")
    print("|---|---|---:|---|---:|---:|---|---|")
    for r in rows:
        print(
            f"| {r.benchmark} | {r.setting} | {r.seconds:.2f} | {r.reference} | {r.reference_seconds:.2f} | "
            f"{r.ratio:.3f}x | {r.goal} | {r.notes} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ALPACA_5000), help="Alpaca file (default: the shared 5,000 rows)")
    parser.add_argument("--rows", type=int, default=None, help="use only the first ROWS cleaned rows")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each local variant (best is kept)")
    parser.add_argument("--dimensions", type=int, default=1024, help="OpenAI vector size")
    parser.add_argument("--seconds-per-minute", type=float, default=4.0, help="real seconds per simulated minute")
    parser.add_argument(
        "--minutes-of-quota", type=float, default=3.0, help="simulated minutes of the token limit the texts need"
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=0.4,
        help="server answer time per request, in real-world seconds (scaled like the limits)",
    )
    for part in ("local", "cache", "openai"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.seconds_per_minute <= 0 or args.minutes_of_quota <= 0:
        parser.error("--repeats, --seconds-per-minute and --minutes-of-quota must be positive.")

    frame = load_alpaca(args.data, download=False, limit=args.rows)
    texts = frame["output"].tolist()
    rows: list[Row] = []
    if not args.skip_local:
        rows.extend(bench_local(texts, args.repeats))
    if not args.skip_cache:
        rows.extend(bench_cache(frame))
    if not args.skip_openai:
        warm_up_openai(args.dimensions)
        rows.append(bench_openai(texts, args, "limits known exactly"))
        rows.append(bench_openai(texts, args, "client believes 1.5x the limits", client_limit_factor=1.5))
        rows.append(bench_openai(texts, args, "every 10th request fails with 500", fail_every_nth_request=10))
    print_table(rows)


if __name__ == "__main__":
    main()
