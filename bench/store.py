"""Benchmark of the local vector store: upsert time, query latency, and recall of the approximate search mode.

Prints one markdown table (docs/benchmarks.md, "Vector store"). Two workloads:

1. seed scale: 52,002 x 1,024 random unit vectors with seed-shaped metadata (the seed's full Pinecone upload);
2. real: Alpaca outputs embedded with the local MiniLM (384-d), as 01_embed left them in the embedding cache
   (data/embeddings; the shared subset gives 4,965 rows after cleaning). Without that cache, the shared subset is
   embedded once into data/bench/embeddings (~1-2 min on 2 cores).

For each: upsert time (validation + durable write), reopen time (a new process loading the store), query latency
p50 / p99 for top-10 (single queries, and batches of 100), for exact and binary search, and recall@10 of binary
search against exact search. Queries are stored vectors with their own row excluded, i.e. the nearest-prompt
baseline's workload. Goals on 2 cores: upsert of 52,002 x 1,024 under 5 s; p50 single-query latency under 5 ms.

    python bench/store.py                  # both workloads (the store is written to a temporary folder)
    python bench/store.py --skip-real      # seed scale only
    python bench/store.py --rows 10000 --dimensions 256 --queries 50

Timings vary with the machine and with other jobs on it: run it on an idle machine and quote the card/CPU.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from e2p_lib import config
from e2p_lib.store import LocalVectorStore

SHARED_ALPACA = config.PROJECT_ROOT.parent / "shared" / "data" / "alpaca_5000.json"
TOP_K = 10
MINILM = "local/all-MiniLM-L6-v2"  # the default LocalEmbedder's name in the embedding cache
BATCH_QUERIES = 100


def random_workload(rows: int, dimensions: int, seed: int = 0):
    """Unit vectors and seed-shaped metadata, like the seed's 52,002 Alpaca outputs embedded at 1,024-d."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dimensions), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"alpaca-{i}" for i in range(rows)]
    metadata = [
        {
            "id": i,
            "output": f"Output text number {n}, a few dozen words long in the real data.",
            "prompt": f"Instruction number {n}?",
            "tokens": 12 + n % 200,
            "type": "alpaca",
        }
        for n, i in enumerate(ids)
    ]
    return ids, vectors, metadata


def real_workload():
    """Real Alpaca outputs embedded with the local MiniLM: the project's embedding cache if 01_embed filled it,
    else the shared 5,000-row subset embedded into a cache of the benchmark's own (the project cache's record
    list is left as the notebooks wrote it)."""
    from e2p_lib.embed.cache import load_embedded_dataset

    try:
        dataset = load_embedded_dataset(model=MINILM, dimensions=384)
    except FileNotFoundError:
        from e2p_lib.data import load_alpaca
        from e2p_lib.embed import LocalEmbedder
        from e2p_lib.embed.cache import embed_dataset

        dataset = embed_dataset(
            load_alpaca(SHARED_ALPACA, download=False),
            LocalEmbedder(),
            cache_dir=config.data_dir() / "bench" / "embeddings",
        )
    return dataset.ids, dataset.vectors, dataset.frame.to_dict("records")


def percentiles_ms(seconds: list[float]) -> str:
    return f"{np.percentile(seconds, 50) * 1e3:.2f} / {np.percentile(seconds, 99) * 1e3:.2f}"


def time_queries(store: LocalVectorStore, ids: list[str], vectors: np.ndarray, positions: np.ndarray):
    """Per-call latencies: single queries, then batches of BATCH_QUERIES; plus the results of the single queries."""
    store.query(vectors[positions[0]], top_k=TOP_K)  # warm-up (binary codes, caches)
    single, results = [], []
    for p in positions:
        started = time.perf_counter()
        matches = store.query(vectors[p], top_k=TOP_K, exclude_ids=[ids[p]])[0]
        single.append(time.perf_counter() - started)
        results.append({m.id for m in matches})
    batched = []
    for start in range(0, len(positions) - BATCH_QUERIES + 1, BATCH_QUERIES):
        block = positions[start : start + BATCH_QUERIES]
        started = time.perf_counter()
        store.query(vectors[block], top_k=TOP_K, exclude_ids=[ids[p] for p in block])
        batched.append(time.perf_counter() - started)
    return single, batched, results


def benchmark(name: str, ids, vectors, metadata, queries: int, root: Path) -> list[list[str]]:
    rows, dimensions = vectors.shape
    store = LocalVectorStore(name, dimensions, root=root)
    started = time.perf_counter()
    store.upsert(ids, vectors, metadata, show_progress=False)
    upsert_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reopened = LocalVectorStore(name, root=root)
    reopened.count()  # loads the segments
    reopen_seconds = time.perf_counter() - started

    positions = np.random.default_rng(1).choice(rows, size=queries, replace=False)
    table, exact_results = [], None
    for search in ("exact", "binary"):
        searcher = LocalVectorStore(name, root=root, search=search)
        single, batched, results = time_queries(searcher, ids, vectors, positions)
        if exact_results is None:
            exact_results, recall = results, "exact"
        else:
            recall = f"{np.mean([len(a & b) / TOP_K for a, b in zip(exact_results, results)]):.3f}"
        per_query = f"{np.median(batched) / BATCH_QUERIES * 1e3:.2f}" if batched else "n/a"
        table.append(
            [
                f"{name} {rows:,} x {dimensions:,}",
                search,
                f"{upsert_seconds:.2f}" if search == "exact" else "",
                f"{reopen_seconds:.2f}" if search == "exact" else "",
                percentiles_ms(single),
                percentiles_ms(batched) if batched else "n/a",
                per_query,
                recall,
            ]
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=52_002, help="rows of the random workload (seed: 52,002)")
    parser.add_argument("--dimensions", type=int, default=1_024, help="dimension of the random workload")
    parser.add_argument("--queries", type=int, default=200, help="query vectors timed per workload")
    parser.add_argument("--skip-real", action="store_true", help="skip the real 5,000 x 384 Alpaca workload")
    args = parser.parse_args()

    table = []
    config.data_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=config.data_dir(), prefix="bench-store-") as root:
        table += benchmark("random", *random_workload(args.rows, args.dimensions), args.queries, Path(root))
        if not args.skip_real:
            table += benchmark("alpaca-minilm", *real_workload(), args.queries, Path(root))

    header = [
        "workload",
        "search",
        "upsert s",
        "reopen s",
        "single query ms p50 / p99",
        f"batch of {BATCH_QUERIES} ms p50 / p99",
        "ms per query in batch",
        f"recall@{TOP_K} vs exact",
    ]
    print(f"\nLocalVectorStore, top-{TOP_K}, {platform.processor() or platform.machine()}, numpy {np.__version__}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
