"""A local HTTP server that speaks Pinecone's REST wire format, so the real `pinecone` SDK can be tested offline.

No Pinecone emulator runs here, and tests must never reach the internet, so this server implements the part of the
API e2p uses, as the SDK (v10, API version 2026-07) sends and parses it:

- control plane: `GET /indexes`, `POST /indexes` (a schema with one `dense_vector` field and a managed
  deployment, optional tags), `GET /indexes/{name}`, `PATCH /indexes/{name}` (tags only, merged; "" deletes one),
  `DELETE /indexes/{name}`;
- data plane, one listener (own port, as each Pinecone index has its own host) per index: `POST /vectors/upsert`,
  `POST /query`, `GET /vectors/fetch`, `POST /vectors/delete`, `POST /describe_index_stats`.

Pinecone's rules are enforced with its status codes: the `Api-Key` header (401), at most 1,000 vectors (400) and
2 MB (413) per upsert, the index's dimension (400), no all-zero vectors under cosine (400), metadata of flat
str/number/bool/list-of-str values of at most 40 KB per record (400), numbers stored as 64-bit floats, and null
metadata values dropped (the SDK documents that the server strips them). Errors use the control plane's
`{"error": {"code", "message"}, "status"}` and the data plane's `{"code", "message", "details"}` bodies.

Faults for retry tests: `server.fail_next("/vectors/upsert", 429, 500, retry_after_seconds=0)` answers the next
requests to that path with those statuses, in order. `server.requests` logs every request (method, path, status,
and the vectors an upsert carried). A new index reports "Initializing" for `describes_until_ready` describes.

    with PineconeServer(api_key="test-key") as server:      # listens on 127.0.0.1 only
        pc = Pinecone(api_key="test-key", host=server.url)
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from e2p_lib.store import compile_filter

MAX_VECTORS_PER_UPSERT = 1_000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
MAX_IDS_PER_REQUEST = 1_000
MAX_TOP_K = 10_000
METRICS = ("cosine", "euclidean", "dotproduct")
_INDEX_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,43}[a-z0-9])?")
# gRPC status codes Pinecone's data plane puts in "code"
_GRPC_CODE = {400: 3, 401: 16, 404: 5, 413: 3, 429: 8, 500: 13, 503: 14}
_CONTROL_CODE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class ApiFailure(Exception):
    """An error answer: HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int
    vectors: int = 0  # records in an upsert body


@dataclass
class _Index:
    name: str
    dimension: int
    metric: str
    cloud: str
    region: str
    describes_until_ready: int
    listener: ThreadingHTTPServer | None = None
    tags: dict[str, str] = field(default_factory=dict)
    namespaces: dict[str, dict[str, tuple[np.ndarray, dict[str, Any]]]] = field(default_factory=dict)

    @property
    def host(self) -> str:
        host, port = self.listener.server_address[:2]
        return f"http://{host}:{port}"

    def model(self) -> dict[str, Any]:
        ready = self.describes_until_ready <= 0
        return {
            "name": self.name,
            "host": self.host,
            "status": {"ready": ready, "state": "Ready" if ready else "Initializing"},
            "schema": {
                "fields": {"_values": {"type": "dense_vector", "dimension": self.dimension, "metric": self.metric}}
            },
            "deployment": {"deployment_type": "managed", "cloud": self.cloud, "region": self.region},
            "deletion_protection": "disabled",
            "tags": dict(self.tags) or None,  # Pinecone answers null, not {}, for an index without tags
        }


def _check_metadata(record_id: str, metadata: Any) -> dict[str, Any]:
    """Pinecone's metadata rules; returns what it stores (nulls dropped, numbers as floats)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ApiFailure(400, f"Metadata of vector {record_id} must be an object")
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise ApiFailure(
            400,
            f"Metadata size is {size} bytes, which exceeds the limit of {MAX_METADATA_BYTES} "
            f"bytes per vector (id {record_id})",
        )
    stored = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, bool) or isinstance(value, str):
            stored[key] = value
        elif isinstance(value, (int, float)):
            stored[key] = float(value)
        elif isinstance(value, list) and all(isinstance(x, str) for x in value):
            stored[key] = value
        else:
            raise ApiFailure(
                400,
                f"Metadata value for field '{key}' of vector {record_id} must be a string, number, "
                "boolean or list of strings",
            )
    return stored


class PineconeServer:
    """Control plane on one port, each index's data plane on its own; all on 127.0.0.1, stopped by `close()`."""

    def __init__(self, api_key: str = "test-key", describes_until_ready: int = 1):
        self.api_key = api_key
        self.describes_until_ready = describes_until_ready
        self.requests: list[LoggedRequest] = []
        self._indexes: dict[str, _Index] = {}
        self._faults: dict[str, deque[tuple[int, float | None]]] = {}
        self._lock = threading.RLock()
        self._control = self._listen(index_name=None)

    @property
    def url(self) -> str:
        host, port = self._control.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> PineconeServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            listeners = [self._control] + [i.listener for i in self._indexes.values()]
        for listener in listeners:
            listener.shutdown()
            listener.server_close()

    def fail_next(self, path: str, *statuses: int, retry_after_seconds: float | None = None) -> None:
        """Answer the next len(statuses) requests to `path` with these error statuses, in order."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend((s, retry_after_seconds) for s in statuses)

    def stored(self, index_name: str, namespace: str = "") -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        """What an index holds (for assertions)."""
        with self._lock:
            return dict(self._indexes[index_name].namespaces.get(namespace, {}))

    def upserted_vectors(self) -> int:
        """Vectors received by successful upserts so far."""
        return sum(r.vectors for r in self.requests if r.path == "/vectors/upsert" and r.status == 200)

    # --- HTTP plumbing ---

    def _listen(self, index_name: str | None) -> ThreadingHTTPServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # quiet: the request log is server.requests
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload, headers, vectors = server._dispatch(
                    index_name, self.command, self.path, dict(self.headers), body
                )
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                with server._lock:
                    server.requests.append(LoggedRequest(self.command, urlsplit(self.path).path, status, vectors))

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

        listener = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        listener.daemon_threads = True
        # a short poll interval: shutdown() waits up to one interval, and every test closes its server
        threading.Thread(
            target=listener.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True, name="pinecone-test-server"
        ).start()
        return listener

    def _dispatch(
        self, index_name: str | None, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str], int]:
        """(status, JSON payload, extra headers, vectors upserted) for one request."""
        url = urlsplit(target)
        control = index_name is None
        vectors = 0
        try:
            if {k.lower(): v for k, v in headers.items()}.get("api-key") != self.api_key:
                raise ApiFailure(401, "Invalid API Key")
            with self._lock:
                fault = self._faults.get(url.path)
                if fault:
                    status, retry_after = fault.popleft()
                    extra = {} if retry_after is None else {"Retry-After": str(retry_after)}
                    return status, self._error_body(control, status, "Injected fault"), extra, 0
                if control:
                    status, payload = self._control_plane(method, url.path, body)
                elif index_name not in self._indexes:
                    raise ApiFailure(404, f"Index {index_name} was deleted")
                else:
                    status, payload, vectors = self._data_plane(self._indexes[index_name], method, url, body)
            return status, payload, {}, vectors
        except ApiFailure as failure:
            return failure.status, self._error_body(control, failure.status, failure.message), {}, 0

    @staticmethod
    def _error_body(control: bool, status: int, message: str) -> dict[str, Any]:
        if control:
            return {"error": {"code": _CONTROL_CODE.get(status, "UNKNOWN"), "message": message}, "status": status}
        return {"code": _GRPC_CODE.get(status, 2), "message": message, "details": []}

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise ApiFailure(400, f"Invalid JSON body: {error}") from error
        if not isinstance(value, dict):
            raise ApiFailure(400, "The request body must be a JSON object")
        return value

    # --- control plane ---

    def _control_plane(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/indexes" and method == "GET":
            return 200, {"indexes": [i.model() for i in self._indexes.values()]}
        if path == "/indexes" and method == "POST":
            return 201, self._create_index(self._json(body)).model()
        match = re.fullmatch(r"/indexes/([^/]+)", path)
        if match:
            name = unquote(match.group(1))
            index = self._indexes.get(name)
            if index is None:
                raise ApiFailure(404, f"Resource {name} not found")
            if method == "GET":
                index.describes_until_ready -= 1
                return 200, index.model()
            if method == "PATCH":
                request = self._json(body)
                if set(request) != {"tags"}:
                    raise ApiFailure(400, "This test server configures tags only")
                index.tags.update(self._tags(request["tags"]))
                index.tags = {k: v for k, v in index.tags.items() if v}
                return 200, index.model()
            if method == "DELETE":
                del self._indexes[name]
                index.listener.shutdown()
                index.listener.server_close()
                return 202, None
        raise ApiFailure(404, f"No route for {method} {path}")

    def _create_index(self, request: dict[str, Any]) -> _Index:
        name = request.get("name")
        if not isinstance(name, str) or not _INDEX_NAME.fullmatch(name):
            raise ApiFailure(400, f"Invalid index name {name!r}: 1-45 lowercase letters, digits and '-'")
        if name in self._indexes:
            raise ApiFailure(409, f"Resource {name} already exists")
        fields = (request.get("schema") or {}).get("fields") or {}
        dense = [f for f in fields.values() if isinstance(f, dict) and f.get("type") == "dense_vector"]
        if len(fields) != 1 or len(dense) != 1:
            raise ApiFailure(400, "This test server supports indexes with exactly one dense_vector field")
        dimension, metric = dense[0].get("dimension"), dense[0].get("metric", "cosine")
        if not isinstance(dimension, int) or not 1 <= dimension <= 20_000 or metric not in METRICS:
            raise ApiFailure(400, f"Invalid dense_vector field: dimension {dimension!r}, metric {metric!r}")
        deployment = request.get("deployment") or {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"}
        if deployment.get("deployment_type") != "managed":
            raise ApiFailure(400, "This test server supports managed (serverless) deployments only")
        index = _Index(
            name,
            dimension,
            metric,
            deployment.get("cloud", "aws"),
            deployment.get("region", "us-east-1"),
            self.describes_until_ready,
        )
        index.tags = {k: v for k, v in self._tags(request.get("tags") or {}).items() if v}
        index.listener = self._listen(index_name=name)
        self._indexes[name] = index
        return index

    @staticmethod
    def _tags(tags: Any) -> dict[str, str]:
        """Pinecone's tag rules: keys of 1-80 letters, digits, '_' or '-'; values of at most 120 printable ASCII."""
        if not isinstance(tags, dict):
            raise ApiFailure(400, "tags must be an object")
        for key, value in tags.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", key):
                raise ApiFailure(400, f"Invalid tag key {key!r}")
            if not isinstance(value, str) or len(value) > 120 or not (value.isascii() and value.isprintable()):
                raise ApiFailure(400, f"Invalid value for tag {key!r}")
        return dict(tags)

    # --- data plane ---

    def _data_plane(self, index: _Index, method: str, url: Any, body: bytes) -> tuple[int, Any, int]:
        path = url.path
        if path == "/vectors/upsert" and method == "POST":
            if len(body) > MAX_REQUEST_BYTES:
                raise ApiFailure(413, f"Request size {len(body) / 1e6:.1f}MB exceeds the maximum supported size of 2MB")
            request = self._json(body)
            count = self._upsert(index, request)
            return 200, {"upsertedCount": count}, count
        if path == "/query" and method == "POST":
            return 200, self._query(index, self._json(body)), 0
        if path == "/vectors/fetch" and method == "GET":
            params = parse_qs(url.query)
            namespace = params.get("namespace", [""])[0]
            ids = params.get("ids", [])
            if not ids or len(ids) > MAX_IDS_PER_REQUEST:
                raise ApiFailure(400, f"Fetch takes 1 to {MAX_IDS_PER_REQUEST} ids; got {len(ids)}")
            records = index.namespaces.get(namespace, {})
            vectors = {
                i: {"id": i, "values": records[i][0].tolist(), "metadata": records[i][1]} for i in ids if i in records
            }
            return 200, {"vectors": vectors, "namespace": namespace, "usage": {"readUnits": 1}}, 0
        if path == "/vectors/delete" and method == "POST":
            request = self._json(body)
            records = index.namespaces.get(request.get("namespace", ""), {})
            if request.get("deleteAll"):
                records.clear()
            ids = request.get("ids") or []
            if len(ids) > MAX_IDS_PER_REQUEST:
                raise ApiFailure(400, f"Delete takes at most {MAX_IDS_PER_REQUEST} ids; got {len(ids)}")
            for record_id in ids:
                records.pop(record_id, None)
            return 200, {}, 0
        if path == "/describe_index_stats" and method == "POST":
            counts = {ns: len(r) for ns, r in index.namespaces.items() if r}
            return (
                200,
                {
                    "namespaces": {ns: {"vectorCount": n} for ns, n in counts.items()},
                    "dimension": index.dimension,
                    "indexFullness": 0.0,
                    "totalVectorCount": sum(counts.values()),
                    "metric": index.metric,
                    "vectorType": "dense",
                },
                0,
            )
        raise ApiFailure(404, f"No route for {method} {path}")

    def _vector(self, index: _Index, values: Any, what: str) -> np.ndarray:
        if not isinstance(values, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values
        ):
            raise ApiFailure(400, f"{what}: values must be a list of finite numbers")
        if len(values) != index.dimension:
            raise ApiFailure(
                400, f"Vector dimension {len(values)} does not match the dimension of the index {index.dimension}"
            )
        vector = np.asarray(values, np.float32)
        if index.metric == "cosine" and not vector.any():
            raise ApiFailure(400, f"{what}: dense vectors must contain at least one non-zero value")
        return vector

    def _upsert(self, index: _Index, request: dict[str, Any]) -> int:
        vectors = request.get("vectors")
        if not isinstance(vectors, list) or not vectors:
            raise ApiFailure(400, "vectors must be a non-empty list")
        if len(vectors) > MAX_VECTORS_PER_UPSERT:
            raise ApiFailure(
                400, f"Too many vectors in one upsert request: {len(vectors)}; the maximum is {MAX_VECTORS_PER_UPSERT}"
            )
        checked = {}
        for item in vectors:  # all or nothing: one bad record fails the whole request, as Pinecone does
            record_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(record_id, str) or not 1 <= len(record_id) <= 512 or not record_id.isascii():
                raise ApiFailure(400, f"Invalid vector id {record_id!r}")
            checked[record_id] = (
                self._vector(index, item.get("values"), f"Vector {record_id}"),
                _check_metadata(record_id, item.get("metadata")),
            )
        index.namespaces.setdefault(request.get("namespace", ""), {}).update(checked)
        return len(checked)

    def _query(self, index: _Index, request: dict[str, Any]) -> dict[str, Any]:
        top_k = request.get("topK")
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise ApiFailure(400, f"topK must be from 1 to {MAX_TOP_K}; got {top_k!r}")
        namespace = request.get("namespace", "")
        query = self._vector(index, request.get("vector"), "Query vector")
        records = index.namespaces.get(namespace, {})
        if request.get("filter") is not None:
            try:
                predicate = compile_filter(request["filter"])
            except ValueError as error:
                raise ApiFailure(400, f"Invalid filter: {error}") from error
            records = {i: r for i, r in records.items() if predicate(r[1])}
        ids = list(records)
        if not ids:
            return {"matches": [], "namespace": namespace, "usage": {"readUnits": 1}}
        matrix = np.stack([records[i][0] for i in ids])
        if index.metric == "cosine":
            scores = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
        elif index.metric == "dotproduct":
            scores = matrix @ query
        else:  # euclidean: Pinecone ranks by (squared) distance, smallest first
            scores = -((matrix - query) ** 2).sum(axis=1)
        order = np.argsort(-scores, kind="stable")[:top_k]
        matches = []
        for position in order:
            record_id = ids[position]
            match = {
                "id": record_id,
                "score": float(abs(scores[position]) if index.metric == "euclidean" else scores[position]),
                "values": records[record_id][0].tolist() if request.get("includeValues") else [],
            }
            if request.get("includeMetadata"):
                match["metadata"] = records[record_id][1]
            matches.append(match)
        return {"matches": matches, "namespace": namespace, "usage": {"readUnits": 1}}
