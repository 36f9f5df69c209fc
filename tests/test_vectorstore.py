"""Vector stores: one contract test suite run against every backend, then what is particular to each.

The contract runs against the local store (exact and binary search) and against `PineconeVectorStore` driving the
real `pinecone` SDK at `tests/pinecone_server.py`, a loopback server speaking Pinecone's wire format. Expected results
come from a brute-force cosine oracle and plain-Python filter predicates written here, not from the code under test.
Tiny sizes throughout (8 dimensions, 40 records) keep the file at a few seconds on 2 cores.
"""

from __future__ import annotations

import logging
import multiprocessing
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from pinecone_server import MAX_REQUEST_BYTES, PineconeServer

from e2p_lib.config import PROJECT_ROOT
from e2p_lib.store import LocalVectorStore, Match, compile_filter, make_vector_store
from e2p_lib.store.pinecone import MAX_METADATA_BYTES, PineconeVectorStore, fit_metadata, pack_requests

DIMENSIONS = 8  # tiny: the contract is about behaviour, not scale
N_RECORDS = 40
API_KEY = "pc-test-key-not-a-secret"


def seed_records(n: int = N_RECORDS, dimensions: int = DIMENSIONS, seed: int = 0, prefix: str = "alpaca"):
    """ids, unit vectors and seed-shaped metadata; a third of the rows are type "dolly", tags alternate."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{prefix}-{i}" for i in range(n)]
    metadata = [
        {
            "id": ids[i],
            "prompt": f"prompt {i}",
            "output": f"output {i}",
            "tokens": i,
            "type": "dolly" if i % 3 == 0 else "alpaca",
            "tags": ["even" if i % 2 == 0 else "odd"],
        }
        for i in range(n)
    ]
    return ids, vectors, metadata


def oracle(vectors, query, allowed=None, k=5):
    """Indices of the k best cosines among allowed rows, by brute force."""
    scores = [
        (float(v @ query / np.linalg.norm(v) / np.linalg.norm(query)), i)
        for i, v in enumerate(vectors)
        if allowed is None or allowed[i]
    ]
    return [i for _, i in sorted(scores, key=lambda t: -t[0])[:k]]


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    monkeypatch.setenv("E2P_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def pinecone_server(monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", API_KEY)  # a dummy: the server is local, nothing reaches Pinecone
    monkeypatch.delenv("PINECONE_CONTROLLER_HOST", raising=False)
    with PineconeServer(api_key=API_KEY) as server:
        yield server


def pinecone_store(server, tmp_path, name="e2p-test", dimensions=DIMENSIONS, **kwargs) -> PineconeVectorStore:
    kwargs = {"ready_poll_seconds": 0.01, "journal_dir": tmp_path / "journal", **kwargs}
    return PineconeVectorStore(name, dimensions, controller_host=server.url, **kwargs)


@pytest.fixture(params=["local", pytest.param("pinecone", marks=pytest.mark.pinecone)])
def store(request, tmp_path):
    if request.param == "pinecone":
        return pinecone_store(request.getfixturevalue("pinecone_server"), tmp_path)
    return LocalVectorStore("contract", DIMENSIONS, root=tmp_path / "stores", batch_size=16)  # 3 segments


@pytest.fixture
def filled(store):
    ids, vectors, metadata = seed_records()
    assert store.upsert(ids, vectors, metadata, show_progress=False) == N_RECORDS
    return store, ids, vectors, metadata


# --- the contract ---------------------------------------------------------------------------------------------


def test_upsert_then_fetch_round_trips_vectors_and_metadata(filled):
    store, ids, vectors, metadata = filled
    assert store.count() == N_RECORDS
    assert store.upsert([], np.zeros((0, DIMENSIONS))) == 0 and store.count() == N_RECORDS
    fetched = store.fetch(["alpaca-3", "alpaca-0", "missing"])
    assert list(fetched) == ["alpaca-3", "alpaca-0"]  # in the order asked; missing ids are left out
    np.testing.assert_allclose(fetched["alpaca-3"].vector, vectors[3], rtol=1e-6)
    assert fetched["alpaca-3"].metadata == metadata[3]  # Pinecone's 3.0 equals 3


def test_query_ranks_like_brute_force_cosine(filled):
    store, ids, vectors, _ = filled
    query = vectors[5] + 0.3 * vectors[7]
    matches = store.query(query, top_k=5)[0]
    assert [m.id for m in matches] == [ids[i] for i in oracle(vectors, query)]
    expected = vectors[[int(m.id.split("-")[1]) for m in matches]] @ (query / np.linalg.norm(query))
    np.testing.assert_allclose([m.score for m in matches], expected, atol=1e-5)
    assert matches[0].metadata["prompt"] == f"prompt {matches[0].id.split('-')[1]}"


def test_batched_query_equals_single_queries(filled):
    store, _, vectors, _ = filled
    batched = store.query(vectors[:4], top_k=3)
    assert len(batched) == 4
    for query, matches in zip(vectors[:4], batched):
        assert [m.id for m in matches] == [m.id for m in store.query(query, top_k=3)[0]]


def test_exclude_ids_leaves_out_each_querys_own_row(filled):
    store, ids, vectors, _ = filled
    with_self = store.query(vectors[:3], top_k=2)
    without = store.query(vectors[:3], top_k=2, exclude_ids=ids[:3])
    for i in range(3):
        assert with_self[i][0].id == ids[i] and with_self[i][0].score == pytest.approx(1.0, abs=1e-5)
        assert ids[i] not in [m.id for m in without[i]]
        assert without[i][0].id == with_self[i][1].id
    several = store.query(vectors[0], top_k=3, exclude_ids=[[ids[0], with_self[0][1].id]])[0]
    assert {ids[0], with_self[0][1].id}.isdisjoint(m.id for m in several)


def test_upserting_an_existing_id_replaces_it(filled):
    store, ids, vectors, metadata = filled
    store.upsert([ids[1]], vectors[2:3], [{**metadata[1], "prompt": "replaced"}])
    assert store.count() == N_RECORDS
    record = store.fetch([ids[1]])[ids[1]]
    np.testing.assert_allclose(record.vector, vectors[2], rtol=1e-6)
    assert record.metadata["prompt"] == "replaced"
    top_two = {m.id for m in store.query(vectors[2], top_k=2)[0]}
    assert top_two == {ids[1], ids[2]}


def test_delete_removes_records_and_ignores_unknown_ids(filled):
    store, ids, vectors, metadata = filled
    store.delete([ids[0], ids[1], "never-stored"])
    assert store.count() == N_RECORDS - 2
    assert store.fetch([ids[0], ids[2]]).keys() == {ids[2]}
    assert ids[0] not in [m.id for m in store.query(vectors[0], top_k=N_RECORDS)[0]]
    store.upsert(ids[:2], vectors[:2], metadata[:2])  # deleted records can come back (Pinecone: not skipped as sent)
    assert store.count() == N_RECORDS and store.query(vectors[0], top_k=1)[0][0].id == ids[0]


def test_namespaces_keep_records_apart(filled):
    store, _, vectors, _ = filled
    other_ids, other_vectors, other_metadata = seed_records(5, seed=1, prefix="other")
    store.upsert(other_ids, other_vectors, other_metadata, namespace="run-2")
    assert store.count() == N_RECORDS and store.count(namespace="run-2") == 5
    assert store.namespaces() == ["", "run-2"]
    assert {m.id for m in store.query(vectors[0], top_k=10, namespace="run-2")[0]} == set(other_ids)
    assert store.query(vectors[0], top_k=3, namespace="empty") == [[]]
    assert store.count(namespace="empty") == 0


FILTERS = [  # (Pinecone filter, the same condition as plain Python)
    ({"type": "dolly"}, lambda m: m["type"] == "dolly"),
    ({"type": {"$ne": "dolly"}}, lambda m: m["type"] != "dolly"),
    ({"tokens": {"$gt": 20}}, lambda m: m["tokens"] > 20),
    ({"tokens": {"$gte": 10, "$lt": 15}}, lambda m: 10 <= m["tokens"] < 15),
    ({"tokens": {"$lte": 3}}, lambda m: m["tokens"] <= 3),
    ({"tokens": {"$in": [1, 2, 30]}}, lambda m: m["tokens"] in (1, 2, 30)),
    ({"type": {"$nin": ["alpaca"]}}, lambda m: m["type"] != "alpaca"),
    ({"tags": "even"}, lambda m: "even" in m["tags"]),
    ({"tags": {"$in": ["odd"]}, "type": "alpaca"}, lambda m: "odd" in m["tags"] and m["type"] == "alpaca"),
    ({"$or": [{"tokens": {"$lt": 4}}, {"type": {"$eq": "dolly"}}]}, lambda m: m["tokens"] < 4 or m["type"] == "dolly"),
    (
        {"$and": [{"tokens": {"$gt": 5}}, {"tags": {"$nin": ["even"]}}]},
        lambda m: m["tokens"] > 5 and "even" not in m["tags"],
    ),
]


@pytest.mark.parametrize("filter, condition", FILTERS, ids=[str(f) for f, _ in FILTERS])
def test_metadata_filters_select_the_same_records(filled, filter, condition):
    store, ids, vectors, metadata = filled
    allowed = [condition(m) for m in metadata]
    matches = store.query(vectors[0], top_k=N_RECORDS, filter=filter)[0]
    assert sorted(m.id for m in matches) == sorted(i for i, ok in zip(ids, allowed) if ok)
    assert [m.id for m in matches[:3]] == [ids[i] for i in oracle(vectors, vectors[0], allowed, k=3)]


def test_query_without_metadata_returns_empty_dicts(filled):
    store, _, vectors, _ = filled
    assert all(m.metadata == {} for m in store.query(vectors[0], top_k=3, include_metadata=False)[0])


BAD_UPSERTS = [  # (what to change, exception, words the message must contain)
    ("dimension", ValueError, ["dimension 7", "8-dimensional"]),
    ("nan", ValueError, ["NaN", "alpaca-2"]),
    ("zero", ValueError, ["zeros", "alpaca-1"]),
    ("duplicate", ValueError, ["more than once", "alpaca-0"]),
    ("null", ValueError, ["None", "'prompt'", "alpaca-0"]),
    ("nested", TypeError, ["dict", "'prompt'", "alpaca-0"]),
    ("dollar-key", ValueError, ["'$bad'", "alpaca-0"]),
    ("bad-id", ValueError, ["valid record ids", "''"]),
    ("count", ValueError, ["2 vectors for 3 ids"]),
]


@pytest.mark.parametrize("change, error, words", BAD_UPSERTS, ids=[b[0] for b in BAD_UPSERTS])
def test_bad_upserts_raise_clear_errors_and_write_nothing(filled, change, error, words):
    store, _, _, _ = filled
    ids, vectors, metadata = seed_records(3, seed=2)
    if change == "dimension":
        vectors = vectors[:, :7]
    elif change == "nan":
        vectors[2, 4] = np.nan
    elif change == "zero":
        vectors[1] = 0.0
    elif change == "duplicate":
        ids[2] = ids[0]
    elif change == "null":
        metadata[0]["prompt"] = None
    elif change == "nested":
        metadata[0]["prompt"] = {"text": "nested"}
    elif change == "dollar-key":
        metadata[0]["$bad"] = 1
    elif change == "bad-id":
        ids[1] = ""
    elif change == "count":
        vectors = vectors[:2]
    with pytest.raises(error) as raised:
        store.upsert(ids, vectors, metadata)
    for word in words:
        assert word in str(raised.value)
    assert store.count() == N_RECORDS


BAD_QUERIES = [
    ({"top_k": 0}, "top_k"),
    ({"filter": {"tokens": {"$regex": "a.*"}}}, "$regex"),
    ({"filter": {"tokens": {"$gt": "ten"}}}, "compares numbers"),
    ({"filter": {"$or": []}}, "non-empty list"),
    ({"exclude_ids": ["a", "b"]}, "one entry per query"),
]


@pytest.mark.parametrize("arguments, words", BAD_QUERIES, ids=[w for _, w in BAD_QUERIES])
def test_bad_queries_raise_clear_errors(filled, arguments, words):
    store, _, vectors, _ = filled
    with pytest.raises(ValueError) as raised:
        store.query(vectors[0], **arguments)
    assert words in str(raised.value)


def test_query_vector_of_wrong_dimension_is_refused(filled):
    store, _, _, _ = filled
    with pytest.raises(ValueError, match="dimension 3"):
        store.query(np.ones(3, np.float32))


# --- filters, as a pure function ------------------------------------------------------------------------------


def test_filter_equality_never_confuses_bools_with_numbers():
    assert compile_filter({"flag": True})({"flag": True})
    assert not compile_filter({"flag": True})({"flag": 1.0})
    assert not compile_filter({"n": 1})({"n": True})
    assert compile_filter({"n": 1})({"n": 1.0})


def test_missing_fields_match_ne_and_nin_but_not_comparisons():
    assert compile_filter({"type": {"$ne": "x"}})({})
    assert compile_filter({"type": {"$nin": ["x"]}})({})
    assert not compile_filter({"tokens": {"$lt": 5}})({})
    assert compile_filter({"type": {"$exists": False}})({}) and not compile_filter({"type": {"$exists": True}})({})


# --- LocalVectorStore -----------------------------------------------------------------------------------------


def test_local_store_persists_and_reloads(tmp_path):
    ids, vectors, metadata = seed_records()
    store = LocalVectorStore("persist", DIMENSIONS, root=tmp_path, batch_size=7)
    store.upsert(ids, vectors, metadata)
    store.upsert([ids[0]], vectors[1:2], [metadata[1]])
    store.delete(ids[30:])
    reopened = LocalVectorStore("persist", root=tmp_path)  # dimensions read from store.json
    assert reopened.dimensions == DIMENSIONS and reopened.count() == 30
    np.testing.assert_array_equal(reopened.fetch([ids[0]])[ids[0]].vector, vectors[1])
    assert [m.id for m in reopened.query(vectors[5], top_k=4)[0]] == [m.id for m in store.query(vectors[5], top_k=4)[0]]


def test_local_store_default_folder_is_under_data_dir(tmp_path):
    store = make_vector_store("local", name="default-root", dimensions=4)
    assert store.path == tmp_path / "data" / "vectorstores" / "default-root"


def test_local_store_refuses_another_dimension_or_a_bad_name(tmp_path):
    LocalVectorStore("dims", 8, root=tmp_path)
    with pytest.raises(ValueError, match="holds 8-dimensional vectors, not 16"):
        LocalVectorStore("dims", 16, root=tmp_path)
    with pytest.raises(ValueError, match="pass dimensions="):
        LocalVectorStore("new-store", root=tmp_path)
    with pytest.raises(ValueError, match="plain folder name"):
        LocalVectorStore("../escape", 8, root=tmp_path)
    with pytest.raises(ValueError, match="Unknown vector store backend"):
        make_vector_store("chroma")


MINILM, OPENAI = "local/all-MiniLM-L6-v2", "openai/text-embedding-3-small"  # two spaces; at 8-d here, same size


@pytest.fixture(params=["local", pytest.param("pinecone", marks=pytest.mark.pinecone)])
def open_store(request, tmp_path):
    """A function (embedder=...) -> a new handle on one store of the backend, made by the first call."""
    if request.param == "pinecone":
        server = request.getfixturevalue("pinecone_server")
        return lambda **kwargs: pinecone_store(server, tmp_path, name="spaces", **kwargs)
    return lambda **kwargs: make_vector_store("local", name="spaces", dimensions=DIMENSIONS, root=tmp_path, **kwargs)


def test_a_store_records_its_embedder_and_refuses_another(open_store):
    ids, vectors, metadata = seed_records()
    open_store(embedder=MINILM).upsert(ids, vectors, metadata, show_progress=False)
    assert open_store().embedder == MINILM  # recorded: a handle that names no embedder reads it back
    with pytest.raises(ValueError, match=f"holds vectors of the embedder '{MINILM}', not '{OPENAI}'"):
        open_store(embedder=OPENAI)  # so neither its upserts nor its queries can reach the store
    assert open_store(embedder=MINILM).query(vectors[3], top_k=1)[0][0].id == ids[3]
    with pytest.raises(TypeError, match="an embedder's name"):
        open_store(embedder=object())


def test_a_store_made_before_embedders_were_recorded_stays_readable_and_records_its_first_writer(open_store, caplog):
    ids, vectors, metadata = seed_records()
    open_store().upsert(ids, vectors, metadata, show_progress=False)  # as every store was made before
    with caplog.at_level(logging.WARNING, logger="e2p_lib.store"):
        first, second = open_store(embedder=MINILM), open_store(embedder=OPENAI)
    assert "made before e2p recorded embedders" in caplog.text
    assert first.query(vectors[3], top_k=1)[0][0].id == ids[3] and second.count() == N_RECORDS  # accepted
    assert open_store().embedder is None  # opening and reading recorded nothing
    first.upsert(["new"], vectors[:1], show_progress=False)
    assert open_store().embedder == MINILM
    with pytest.raises(ValueError, match=f"holds vectors of the embedder '{MINILM}', not '{OPENAI}'"):
        second.upsert(["other"], vectors[:1], show_progress=False)  # opened before the record: refused on write


def test_a_process_killed_mid_write_leaves_the_last_commit_intact(tmp_path):
    """A real crash: the child dies (os._exit) after writing a segment, before the manifest names it."""
    child = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = [{str(PROJECT_ROOT)!r}, {str(PROJECT_ROOT / "tests")!r}]
        from e2p_lib.store import local as vectorstore
        from test_vectorstore import seed_records
        ids, vectors, metadata = seed_records()
        store = vectorstore.LocalVectorStore("crash", {DIMENSIONS}, root={str(tmp_path)!r})
        store.upsert(ids[:20], vectors[:20], metadata[:20])
        real_write_json = vectorstore._write_json
        def dying_write_json(path, value):
            if path.name == "manifest.json":
                os._exit(9)
            real_write_json(path, value)
        vectorstore._write_json = dying_write_json
        store.upsert(ids[20:], vectors[20:], metadata[20:])
    """)
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    folder = tmp_path / "crash" / "ns-"
    orphans = {"000002.npy", "000002.json"}
    assert orphans <= {p.name for p in folder.iterdir()}  # the half-done write left its files behind...
    ids, vectors, metadata = seed_records()
    store = LocalVectorStore("crash", root=tmp_path)
    assert store.count() == 20  # ...but the store is the last commit
    assert store.query(vectors[25], top_k=20)[0][0].id in ids[:20]
    store.upsert(ids[20:], vectors[20:], metadata[20:])  # the next write works and sweeps the orphans
    assert store.count() == N_RECORDS
    assert not any(p.name.endswith(".part") for p in folder.iterdir())  # atomic_file's temporary files


def test_a_failed_segment_write_leaves_no_partial_file(tmp_path, monkeypatch):
    ids, vectors, metadata = seed_records()
    store = LocalVectorStore("partial", DIMENSIONS, root=tmp_path)
    store.upsert(ids[:10], vectors[:10], metadata[:10])

    def failing_save(handle, array):
        handle.write(b"half of an npy file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        store.upsert(ids[10:], vectors[10:], metadata[10:])
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "partial" / "ns-").iterdir()) == [
        ".lock",
        "000001.json",
        "000001.npy",
        "manifest.json",
    ]
    assert store.count() == 10 and LocalVectorStore("partial", root=tmp_path).count() == 10


def test_rewrites_are_compacted_so_files_stay_few(tmp_path):
    ids, vectors, metadata = seed_records()
    store = LocalVectorStore("compact", DIMENSIONS, root=tmp_path, batch_size=4)
    for _ in range(4):  # 40 segments (80 files) without compaction
        store.upsert(ids, vectors, metadata, show_progress=False)
    files = list((tmp_path / "compact" / "ns-").iterdir())
    assert len(files) <= 2 * 32 + 2  # segments are bounded by MAX_SEGMENTS
    assert LocalVectorStore("compact", root=tmp_path).count() == N_RECORDS


def _upsert_range(root: str, start: int, stop: int) -> None:
    """Worker of the concurrency test: upserts records [start, stop) in batches of 5."""
    ids, vectors, metadata = seed_records(80)
    store = LocalVectorStore("shared", DIMENSIONS, root=root, batch_size=5)
    store.upsert(ids[start:stop], vectors[start:stop], metadata[start:stop], show_progress=False)


def test_concurrent_writers_from_two_processes_lose_nothing(tmp_path):
    LocalVectorStore("shared", DIMENSIONS, root=tmp_path)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_upsert_range, args=(str(tmp_path), a, b)) for a, b in ((0, 40), (40, 80))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    ids, vectors, _ = seed_records(80)
    store = LocalVectorStore("shared", root=tmp_path)
    assert store.count() == 80 and len(store.fetch(ids)) == 80
    np.testing.assert_array_equal(store.fetch([ids[79]])[ids[79]].vector, vectors[79])


def test_a_reader_sees_what_another_store_object_committed(tmp_path):
    ids, vectors, metadata = seed_records()
    reader = LocalVectorStore("fresh", DIMENSIONS, root=tmp_path)
    assert reader.count() == 0
    LocalVectorStore("fresh", root=tmp_path).upsert(ids, vectors, metadata)
    assert reader.count() == N_RECORDS and reader.query(vectors[3], top_k=1)[0][0].id == ids[3]


def test_binary_search_with_enough_candidates_is_exact_under_filters_and_exclusions(tmp_path):
    """rerank_candidates >= the store: every row is re-scored, so results must equal exact search."""
    ids, vectors, metadata = seed_records()
    exact = LocalVectorStore("exact", DIMENSIONS, root=tmp_path)
    binary = LocalVectorStore("binary", DIMENSIONS, root=tmp_path, search="binary", rerank_candidates=N_RECORDS)
    for store in (exact, binary):
        store.upsert(ids, vectors, metadata)
    for filter, _ in FILTERS + [(None, None)]:
        arguments = {"top_k": 7, "filter": filter, "exclude_ids": [ids[0], None, [ids[5], ids[9]]]}
        queries = vectors[[0, 4, 9]]
        for got, want in zip(binary.query(queries, **arguments), exact.query(queries, **arguments)):
            assert [(m.id, m.metadata) for m in got] == [(m.id, m.metadata) for m in want]
            np.testing.assert_allclose([m.score for m in got], [m.score for m in want], atol=1e-6)


def test_binary_search_is_close_to_exact_with_few_candidates(tmp_path):
    """Clustered data (like real embeddings): sign-bit candidates + exact re-scoring keep most true neighbours."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((20, 64))
    vectors = (np.repeat(centres, 30, axis=0) + 0.4 * rng.standard_normal((600, 64))).astype(np.float32)
    ids = [f"r-{i}" for i in range(600)]
    exact = LocalVectorStore("exact", 64, root=tmp_path)
    binary = LocalVectorStore("binary", 64, root=tmp_path, search="binary", rerank_candidates=60)
    for store in (exact, binary):
        store.upsert(ids, vectors)
    queries = vectors[::37] + 0.1 * rng.standard_normal((17, 64)).astype(np.float32)
    recall = np.mean(
        [
            len({m.id for m in e} & {m.id for m in b}) / 10
            for e, b in zip(exact.query(queries, top_k=10), binary.query(queries, top_k=10))
        ]
    )
    assert recall >= 0.8
    first = binary.query(queries[0], top_k=10)[0]
    assert [m.score for m in first] == sorted((m.score for m in first), reverse=True)


# --- PineconeVectorStore --------------------------------------------------------------------------------------

pinecone = pytest.mark.pinecone


@pinecone
def test_pinecone_creates_a_missing_index_and_waits_until_ready(tmp_path, monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", API_KEY)
    with PineconeServer(api_key=API_KEY, describes_until_ready=3) as server:
        store = pinecone_store(server, tmp_path, cloud="gcp", region="europe-west4")
        created = server._indexes["e2p-test"]
        assert (created.dimension, created.metric, created.cloud, created.region) == (
            8,
            "cosine",
            "gcp",
            "europe-west4",
        )
        describes = [r for r in server.requests if r.path == "/indexes/e2p-test"]
        assert len(describes) >= 3 and describes[-1].status == 200  # polled until "Ready"
        assert store.count() == 0 and store.host == created.host


@pinecone
def test_pinecone_times_out_on_an_index_that_never_gets_ready(tmp_path, monkeypatch):
    monkeypatch.setenv("PINECONE_API_KEY", API_KEY)
    with PineconeServer(api_key=API_KEY, describes_until_ready=10**9) as server:
        with pytest.raises(TimeoutError, match="still 'Initializing'"):
            pinecone_store(server, tmp_path, ready_timeout_seconds=0.05)


@pinecone
def test_pinecone_checks_an_existing_indexs_dimension_and_metric(pinecone_server, tmp_path):
    from pinecone import Pinecone

    pinecone_store(pinecone_server, tmp_path, name="dims-8")
    with pytest.raises(ValueError, match="dimension 8 .* e2p needs dimension 16"):
        pinecone_store(pinecone_server, tmp_path, name="dims-8", dimensions=16)
    reopened = pinecone_store(pinecone_server, tmp_path, name="dims-8", dimensions=None)
    assert reopened.dimensions == 8
    direct = pinecone_store(pinecone_server, tmp_path, name="dims-8", index_host=reopened.host)  # host overridable
    assert direct.host == reopened.host and direct.count() == 0
    Pinecone(api_key=API_KEY, host=pinecone_server.url).indexes.create(
        name="euclid",
        schema={"fields": {"_values": {"type": "dense_vector", "dimension": 8, "metric": "euclidean"}}},
        timeout=-1,
    )
    with pytest.raises(ValueError, match="metric 'euclidean'"):
        pinecone_store(pinecone_server, tmp_path, name="euclid")
    with pytest.raises(ValueError, match="pass dimensions="):
        pinecone_store(pinecone_server, tmp_path, name="absent", dimensions=None)


@pinecone
def test_pinecone_key_comes_from_the_environment_and_never_shows(pinecone_server, tmp_path, monkeypatch):
    monkeypatch.delenv("PINECONE_API_KEY")
    with pytest.raises(RuntimeError, match="PINECONE_API_KEY is not set"):
        pinecone_store(pinecone_server, tmp_path)
    monkeypatch.setenv("PINECONE_API_KEY", "pc-wrong-key-12345")
    with pytest.raises(Exception) as raised:
        pinecone_store(pinecone_server, tmp_path)
    assert "401" in str(raised.value) and "pc-wrong-key-12345" not in str(raised.value)
    monkeypatch.setenv("PINECONE_API_KEY", API_KEY)
    store = pinecone_store(pinecone_server, tmp_path)
    assert API_KEY not in repr(store) and API_KEY not in str(vars(store))


@pinecone
def test_pinecone_upserts_in_requests_within_its_limits(pinecone_server, tmp_path):
    ids, vectors, metadata = seed_records(2_500, dimensions=256)  # ~5 KB per record as JSON: the 2 MB cap binds
    store = pinecone_store(pinecone_server, tmp_path, dimensions=256)
    store.upsert(ids, vectors, metadata, show_progress=False)
    upserts = [r for r in pinecone_server.requests if r.path == "/vectors/upsert"]
    assert all(r.status == 200 and r.vectors <= 1_000 for r in upserts) and len(upserts) >= 6
    assert store.count() == 2_500
    small = pinecone_store(pinecone_server, tmp_path, name="small", dimensions=2)
    small.upsert([f"s-{i}" for i in range(2_500)], np.ones((2_500, 2), np.float32), show_progress=False)
    counts = [r.vectors for r in pinecone_server.requests if r.path == "/vectors/upsert"][len(upserts) :]
    assert sorted(counts, reverse=True) == [1_000, 1_000, 500]  # small records: the 1,000-record cap binds


@pinecone
def test_the_local_server_enforces_pinecones_request_limits(pinecone_server, tmp_path):
    """Without the store's packing, the real SDK hits the limits: so the test above means something."""
    from pinecone.errors.exceptions import ApiError, PayloadTooLargeError

    narrow = pinecone_store(pinecone_server, tmp_path, name="narrow", dimensions=2)
    with pytest.raises(ApiError, match="1001"):
        narrow._index.upsert(vectors=[{"id": f"n-{i}", "values": [1.0, 0.5]} for i in range(1_001)])
    store = pinecone_store(pinecone_server, tmp_path, dimensions=256)
    index = store._index
    ids, vectors, _ = seed_records(1_000, dimensions=256)
    assert len(orjson_dumps([v.tolist() for v in vectors[:1000]])) > MAX_REQUEST_BYTES
    with pytest.raises(PayloadTooLargeError):
        index.upsert(vectors=[{"id": i, "values": v.tolist()} for i, v in zip(ids[:1000], vectors[:1000])])
    with pytest.raises(ApiError, match="exceeds the limit of 40960"):
        index.upsert(vectors=[{"id": "big", "values": vectors[0].tolist(), "metadata": {"output": "x" * 50_000}}])
    with pytest.raises(ApiError, match="dimension 255 does not match"):
        index.upsert(vectors=[{"id": "short", "values": vectors[0][:255].tolist()}])
    assert store.count() == 0 and narrow.count() == 0


def orjson_dumps(value):
    import orjson

    return orjson.dumps(value)


@pinecone
def test_pinecone_truncates_long_outputs_in_metadata_with_a_flag(pinecone_server, tmp_path):
    ids, vectors, metadata = seed_records(2)
    long_output = "A long answer, line after line.\n" * 4_000  # ~130 KB, with JSON escapes
    metadata[0]["output"] = long_output
    store = pinecone_store(pinecone_server, tmp_path)
    store.upsert(ids, vectors, metadata)
    stored = store.fetch(ids)
    kept = stored[ids[0]].metadata
    assert kept["truncated"] is True and kept["truncated_fields"] == ["output"]
    assert long_output.startswith(kept["output"]) and len(kept["output"]) > 30_000
    assert len(orjson_dumps(kept)) <= MAX_METADATA_BYTES
    assert "truncated" not in stored[ids[1]].metadata and kept["prompt"] == metadata[0]["prompt"]


def test_fit_metadata_cuts_multibyte_text_on_character_boundaries():
    metadata = {"output": "é" * 30_000, "prompt": "p"}  # 60 KB as UTF-8
    fitted = fit_metadata("x", metadata, max_bytes=10_000)
    assert len(orjson_dumps(fitted)) <= 10_000 and set(fitted["output"]) == {"é"}
    assert fit_metadata("x", {"prompt": "short"}) == {"prompt": "short"}
    with pytest.raises(ValueError, match="cutting its strings does not make it fit"):
        fit_metadata("x", {"tags": ["t" * 100] * 500}, max_bytes=1_000)


def test_pack_requests_respects_both_caps():
    records = [{"id": f"r{i:02d}", "values": [0.5] * 10, "metadata": {}} for i in range(25)]
    sizes = [len(batch) for batch in pack_requests(records, max_records=10, max_bytes=10**6)]
    assert sizes == [10, 10, 5]
    one = len(orjson_dumps(records[0])) + 1
    assert [len(b) for b in pack_requests(records, max_records=1000, max_bytes=3 * one)] == [3] * 8 + [1]


@pinecone
def test_pinecone_retries_429_and_5xx_with_backoff(pinecone_server, tmp_path):
    ids, vectors, metadata = seed_records()
    store = pinecone_store(pinecone_server, tmp_path)
    pinecone_server.fail_next("/vectors/upsert", 429, 503, retry_after_seconds=0)
    store.upsert(ids, vectors, metadata)
    statuses = [r.status for r in pinecone_server.requests if r.path == "/vectors/upsert"]
    assert statuses == [429, 503, 200] and store.count() == N_RECORDS
    pinecone_server.fail_next("/query", 500, retry_after_seconds=0)
    assert store.query(vectors[0], top_k=1)[0][0].id == ids[0]


@pinecone
def test_an_interrupted_pinecone_upload_resends_only_what_is_missing(pinecone_server, tmp_path):
    ids, vectors, metadata = seed_records(300, dimensions=1024)  # ~20 KB per record: about 100 per request
    store = pinecone_store(pinecone_server, tmp_path, dimensions=1024, max_concurrent_requests=1)
    pinecone_server.fail_next("/vectors/upsert", 500, 500, 500, 500, retry_after_seconds=0)  # beats the SDK's 3 retries
    with pytest.raises(RuntimeError, match="Rerun the same upsert") as raised:
        store.upsert(ids, vectors, metadata, show_progress=False)
    stored_first = store.count()
    assert 0 < stored_first < 300 and f"{300 - stored_first} of 300 records" in str(raised.value)
    received = pinecone_server.upserted_vectors()
    resumed = pinecone_store(pinecone_server, tmp_path, dimensions=1024)  # a new process would read the same journal
    resumed.upsert(ids, vectors, metadata, show_progress=False)
    assert pinecone_server.upserted_vectors() - received == 300 - stored_first
    assert resumed.count() == 300
    changed = [{**m, "prompt": "changed"} if i < 2 else m for i, m in enumerate(metadata)]
    resumed.upsert(ids, vectors, changed, show_progress=False)  # changed records are sent again, the rest skipped
    assert pinecone_server.upserted_vectors() - received == 300 - stored_first + 2


@pinecone
def test_a_stale_journal_is_dropped_when_the_index_lost_records(pinecone_server, tmp_path):
    ids, vectors, metadata = seed_records()
    store = pinecone_store(pinecone_server, tmp_path)
    store.upsert(ids, vectors, metadata)
    store._index.delete(delete_all=True, namespace="")  # behind the store's back: its journal still lists all 40
    store.upsert(ids, vectors, metadata)
    assert store.count() == N_RECORDS and pinecone_server.upserted_vectors() == 2 * N_RECORDS


def test_match_is_a_plain_value():
    assert Match("a", 0.5, {"prompt": "p"}) == Match("a", 0.5, {"prompt": "p"})
