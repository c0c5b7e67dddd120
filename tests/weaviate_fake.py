"""An in-process fake Weaviate (REST + gRPC) for testing the Weaviate store offline.

Built like weaviate-python-client's own mock_tests: pytest-httpserver answers the REST side
(ready, meta, nodes, schema) and a real `grpc.server` answers the gRPC side (health plus a
`WeaviateServicer` with Search, BatchObjects, BatchDelete, Aggregate: object counts, grouped by
a property or not). Unlike canned mocks, it keeps the objects it is sent and actually ranks them
for hybrid searches: BM25F over the requested properties (k1 1.2, b 0.75, boosts, the
collection's stopwords) and cosine on the requested named vector, fused with relativeScoreFusion
(or ranked fusion) and the request's alpha. That is enough for contract tests to expect
meaningful rankings.

Every gRPC request is recorded with its metadata; switches make a method answer an error code
(INTERNAL, UNAVAILABLE, PERMISSION_DENIED, ...), sleep past deadlines (every call, or the calls
a function of the request picks), fail some batch objects, or make REST answer an error status.
A call the client gave up on is still carried out once its sleep ends, as a server that never
saw the cancellation would: a batch lands late.
"""

from __future__ import annotations

import json
import math
import re
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from weaviate.proto.v1 import (
    aggregate_pb2,
    base_pb2,
    base_search_pb2,
    batch_delete_pb2,
    batch_pb2,
    properties_pb2,
    search_get_pb2,
    weaviate_pb2_grpc,
)

SERVER_VERSION = "1.36.0"
K1, B = 1.2, 0.75
HYBRID_POOL = 100  # candidates per leg, as Weaviate's QUERY_HYBRID_MAXIMUM_RESULTS

_WORD = re.compile(r"[^\W_]+")
_Op = base_pb2.Filters.Operator


@dataclass
class Recorded:
    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class StoredObject:
    properties: dict[str, Any]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


def _words(text: str) -> list[str]:
    """Weaviate's `word` tokenization: split on non letters/digits, lowercase."""
    return [w.lower() for w in _WORD.findall(text)]


class _Servicer(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, fake: FakeWeaviate) -> None:
        self.fake = fake

    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        fake = self.fake
        copy = type(request)()
        copy.CopyFrom(request)
        metadata = {k: v for k, v in context.invocation_metadata()}
        with fake.lock:
            fake.requests.append(Recorded(method, copy, metadata))
            delay = fake.delay.get(method, fake.delay.get("*", 0.0))
            code = fake.fail.get(method, fake.fail.get("*"))
        if callable(delay):
            delay = delay(copy)
        if delay:
            fake.wake.wait(delay)  # stop() wakes sleepers so the server shuts down promptly
        if code is not None:
            context.abort(code, f"fake weaviate: {code.name.lower()}")

    def Search(self, request: search_get_pb2.SearchRequest, context: grpc.ServicerContext):
        self._enter("Search", request, context)
        return self.fake.search(request, context)

    def BatchObjects(self, request: batch_pb2.BatchObjectsRequest, context: grpc.ServicerContext):
        self._enter("BatchObjects", request, context)
        return self.fake.batch_objects(request)

    def BatchDelete(self, request: batch_delete_pb2.BatchDeleteRequest, context: grpc.ServicerContext):
        self._enter("BatchDelete", request, context)
        return self.fake.batch_delete(request)

    def Aggregate(self, request: aggregate_pb2.AggregateRequest, context: grpc.ServicerContext):
        self._enter("Aggregate", request, context)
        return self.fake.aggregate(request)


class FakeWeaviate:
    """Start with `start()` (or `with`), point a client at `url`; see the module docstring."""

    def __init__(self, version: str = SERVER_VERSION) -> None:
        self.version = version
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.requests: list[Recorded] = []
        self.rest_requests: list[tuple[str, str]] = []
        self.schemas: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, StoredObject]] = {}
        # Switches
        self.fail: dict[str, grpc.StatusCode] = {}      # gRPC method (or "*") -> error code
        # gRPC method (or "*") -> seconds, or a function of the request giving them
        self.delay: dict[str, float | Callable[[Any], float]] = {}
        self.rest_status: int | None = None              # every REST call answers this status
        self.rest_delay: float = 0.0                     # every REST call sleeps first
        self.replies: list[search_get_pb2.SearchReply] = []  # what Search answered
        self.batch_error: Callable[[dict[str, Any]], str | None] | None = None
        self._http: HTTPServer | None = None
        self._grpc: grpc.Server | None = None
        self.grpc_port = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeWeaviate:
        self._http = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self._http.expect_request(re.compile(r"^/v1/.*"), method="__ALL").respond_with_handler(self._rest)
        self._http.start()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(_Servicer(self), server)
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server
        return self

    def stop(self) -> None:
        self.wake.set()
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None
        if self._http is not None:
            if self._http.is_running():
                self._http.stop()
            self._http = None

    def reset(self) -> None:
        """Forget data, switches and recordings (to reuse one server across tests)."""
        with self.lock:
            self.requests.clear()
            self.rest_requests.clear()
            self.schemas.clear()
            self.objects.clear()
            self.fail.clear()
            self.delay.clear()
            self.rest_status = None
            self.rest_delay = 0.0
            self.replies.clear()
            self.batch_error = None

    def __enter__(self) -> FakeWeaviate:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def http_port(self) -> int:
        assert self._http is not None
        return self._http.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}?grpc_port={self.grpc_port}"

    def calls(self, method: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method]

    # -- REST --------------------------------------------------------------------------

    def _rest(self, request: Request) -> Response:
        path = request.path
        with self.lock:
            self.rest_requests.append((request.method, path))
        if self.rest_delay:
            self.wake.wait(self.rest_delay)
        if self.rest_status is not None:
            return Response(json.dumps({"error": [{"message": "fake weaviate refuses"}]}),
                            status=self.rest_status, content_type="application/json")
        if path in {"/v1/.well-known/ready", "/v1/.well-known/live"}:
            return Response("", status=200)
        if path == "/v1/.well-known/openid-configuration":
            return Response("", status=404)
        if path == "/v1/meta":
            return self._json({"version": self.version, "hostname": "http://[::]:8080", "modules": {}})
        if path == "/v1/nodes":
            return self._json({"nodes": [{"name": "fake", "status": "HEALTHY", "version": self.version}]})
        if path == "/v1/schema" and request.method == "GET":
            with self.lock:
                return self._json({"classes": list(self.schemas.values())})
        if path == "/v1/schema" and request.method == "POST":
            config = request.get_json()
            name = config["class"]
            with self.lock:
                if name in self.schemas:
                    return self._json({"error": [{"message": f"class name {name} already exists"}]}, 422)
                self.schemas[name] = config
                self.objects.setdefault(name, {})
            return self._json(config)
        match = re.fullmatch(r"/v1/schema/([^/]+)", path)
        if match:
            name = match.group(1)
            with self.lock:
                if request.method == "GET":
                    if name not in self.schemas:
                        return Response("", status=404)
                    return self._json(self.schemas[name])
                if request.method == "DELETE":
                    self.schemas.pop(name, None)
                    self.objects.pop(name, None)
                    return Response("", status=200)
        return self._json({"error": [{"message": f"fake weaviate: no route for {request.method} {path}"}]}, 404)

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    # -- data --------------------------------------------------------------------------

    def batch_objects(self, request: batch_pb2.BatchObjectsRequest) -> batch_pb2.BatchObjectsReply:
        errors = []
        with self.lock:
            for index, obj in enumerate(request.objects):
                if obj.collection not in self.schemas:
                    errors.append(batch_pb2.BatchObjectsReply.BatchError(
                        index=index, error=f"class {obj.collection} not found"))
                    continue
                props = json_format.MessageToDict(obj.properties.non_ref_properties)
                props = {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in props.items()}
                if self.batch_error is not None and (message := self.batch_error(props)):
                    errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=message))
                    continue
                vectors: dict[str, np.ndarray] = {}
                if obj.vector_bytes:
                    vectors["default"] = np.frombuffer(obj.vector_bytes, dtype="<f4").copy()
                for named in obj.vectors:
                    vectors[named.name or "default"] = np.frombuffer(named.vector_bytes, dtype="<f4").copy()
                self.objects[obj.collection][obj.uuid] = StoredObject(props, vectors)
        return batch_pb2.BatchObjectsReply(took=0.001, errors=errors)

    def batch_delete(self, request: batch_delete_pb2.BatchDeleteRequest) -> batch_delete_pb2.BatchDeleteReply:
        with self.lock:
            objects = self.objects.get(request.collection, {})
            matched = [key for key, obj in objects.items() if self._matches(obj, request.filters)]
            if not request.dry_run:
                for key in matched:
                    del objects[key]
        return batch_delete_pb2.BatchDeleteReply(
            took=0.001, failed=0, matches=len(matched), successful=len(matched),
            objects=[batch_delete_pb2.BatchDeleteObject(uuid=uuid.UUID(k).bytes, successful=True)
                     for k in matched] if request.verbose else [],
        )

    def aggregate(self, request: aggregate_pb2.AggregateRequest) -> aggregate_pb2.AggregateReply:
        """Object counts (no metrics): of the whole match, or per value of the group-by property
        (objects without it in no group; at most `limit` groups)."""
        with self.lock:
            matched = [obj for obj in self.objects.get(request.collection, {}).values()
                       if not request.HasField("filters") or self._matches(obj, request.filters)]
        if not request.HasField("group_by"):
            return aggregate_pb2.AggregateReply(
                took=0.001, single_result=aggregate_pb2.AggregateReply.Single(objects_count=len(matched)))
        prop = request.group_by.property
        counts = Counter(obj.properties[prop] for obj in matched if prop in obj.properties)
        groups = []
        for value, count in counts.most_common(request.limit if request.HasField("limit") else None):
            grouped_by = aggregate_pb2.AggregateReply.Group.GroupedBy(path=[prop])
            if isinstance(value, bool):
                grouped_by.boolean = value
            elif isinstance(value, int):
                grouped_by.int = value
            elif isinstance(value, float):
                grouped_by.number = value
            else:
                grouped_by.text = str(value)
            groups.append(aggregate_pb2.AggregateReply.Group(objects_count=count, grouped_by=grouped_by))
        return aggregate_pb2.AggregateReply(
            took=0.001, grouped_results=aggregate_pb2.AggregateReply.Grouped(groups=groups))

    # -- filters -----------------------------------------------------------------------

    def _matches(self, obj: StoredObject, filters: base_pb2.Filters) -> bool:
        op = filters.operator
        if op == _Op.OPERATOR_AND:
            return all(self._matches(obj, f) for f in filters.filters)
        if op == _Op.OPERATOR_OR:
            return any(self._matches(obj, f) for f in filters.filters)
        if op == _Op.OPERATOR_NOT:
            return not any(self._matches(obj, f) for f in filters.filters)
        prop = filters.target.property if filters.HasField("target") else (filters.on[0] if filters.on else "")
        value: Any
        kind = filters.WhichOneof("test_value")
        if kind == "value_text":
            value = filters.value_text
        elif kind == "value_int":
            value = filters.value_int
        elif kind == "value_number":
            value = filters.value_number
        elif kind == "value_boolean":
            value = filters.value_boolean
        else:
            raise ValueError(f"fake weaviate: unsupported filter value {kind}")
        actual = obj.properties.get(prop)
        if op == _Op.OPERATOR_EQUAL:
            return actual == value
        if op == _Op.OPERATOR_NOT_EQUAL:
            return actual != value
        raise ValueError(f"fake weaviate: unsupported filter operator {_Op.Name(op)}")

    # -- search ------------------------------------------------------------------------

    def _stopwords(self, collection: str) -> set[str]:
        config = self.schemas.get(collection, {}).get("invertedIndexConfig", {}).get("stopwords", {})
        words = set(config.get("additions") or [])
        if config.get("preset", "en") == "en":
            words |= {"a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into",
                      "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then",
                      "there", "these", "they", "this", "to", "was", "will", "with"}
        return words - set(config.get("removals") or [])

    def _bm25(self, collection: str, objects: dict[str, StoredObject], query: str,
              properties: list[str]) -> list[tuple[str, float]]:
        stop = self._stopwords(collection)
        terms = [t for t in _words(query) if t not in stop]
        if not terms:
            return []
        fields: list[tuple[str, float]] = []
        for spec in properties or ["text"]:
            name, _, boost = spec.partition("^")
            fields.append((name, float(boost) if boost else 1.0))
        tokens = {key: {name: Counter(_words(str(obj.properties.get(name, "")))) for name, _ in fields}
                  for key, obj in objects.items()}
        lengths = {key: {name: sum(c.values()) for name, c in per.items()} for key, per in tokens.items()}
        n = len(objects)
        scores: dict[str, float] = {}
        for name, boost in fields:
            avg = (sum(lengths[k][name] for k in objects) / n) if n else 0.0
            for term in set(terms):
                df = sum(1 for k in objects if tokens[k][name][term])
                if not df:
                    continue
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                for key in objects:
                    tf = tokens[key][name][term]
                    if tf:
                        norm = 1 - B + B * (lengths[key][name] / avg if avg else 0.0)
                        scores[key] = scores.get(key, 0.0) + boost * idf * tf * (K1 + 1) / (tf + K1 * norm)
        return sorted(scores.items(), key=lambda kv: -kv[1])[:HYBRID_POOL]

    @staticmethod
    def _query_vector(hybrid: base_search_pb2.Hybrid) -> tuple[np.ndarray | None, str]:
        target = "default"
        if hybrid.HasField("targets") and hybrid.targets.target_vectors:
            target = hybrid.targets.target_vectors[0]
        elif hybrid.target_vectors:
            target = hybrid.target_vectors[0]
        if hybrid.vector_bytes:
            return np.frombuffer(hybrid.vector_bytes, dtype="<f4"), target
        if hybrid.vectors:
            return np.frombuffer(hybrid.vectors[0].vector_bytes, dtype="<f4"), target
        if hybrid.vector:
            return np.asarray(list(hybrid.vector), dtype=np.float32), target
        return None, target

    def _hybrid(self, request: search_get_pb2.SearchRequest, objects: dict[str, StoredObject],
                context: grpc.ServicerContext) -> list[tuple[str, float]]:
        hybrid = request.hybrid_search
        alpha = hybrid.alpha_param if hybrid.use_alpha_param else hybrid.alpha
        legs: list[tuple[list[tuple[str, float]], float]] = []
        if alpha < 1 and hybrid.query:
            legs.append((self._bm25(request.collection, objects, hybrid.query, list(hybrid.properties)), 1 - alpha))
        if alpha > 0:
            vector, target = self._query_vector(hybrid)
            if vector is None:
                # A self-provided collection cannot vectorise the query text itself.
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              "fake weaviate: hybrid with alpha > 0 needs a vector (no vectorizer configured)")
            qnorm = float(np.linalg.norm(vector)) or 1.0
            dense = []
            for key, obj in objects.items():
                stored = obj.vectors.get(target)
                if stored is not None and len(stored) == len(vector):
                    cosine = float(stored @ vector) / ((float(np.linalg.norm(stored)) or 1.0) * qnorm)
                    dense.append((key, cosine))  # 1 - cosine distance
            dense.sort(key=lambda kv: -kv[1])
            legs.append((dense[:HYBRID_POOL], alpha))

        fused: dict[str, float] = {}
        secondary: dict[str, float] = {}
        ranked = hybrid.fusion_type == base_search_pb2.Hybrid.FusionType.FUSION_TYPE_RANKED
        for results, weight in legs:
            if not results:
                continue
            values = [s for _, s in results]
            high, low = max(values), min(values)
            for rank, (key, raw) in enumerate(results):
                if ranked:
                    part = weight / (rank + 60)
                elif high == low:
                    part = weight
                else:
                    part = weight * (raw - low) / (high - low)
                fused[key] = fused.get(key, 0.0) + part
                secondary[key] = raw
        return sorted(fused.items(), key=lambda kv: (-kv[1], -secondary[kv[0]], kv[0]))

    def search(self, request: search_get_pb2.SearchRequest,
               context: grpc.ServicerContext) -> search_get_pb2.SearchReply:
        with self.lock:
            if request.collection not in self.schemas:
                context.abort(grpc.StatusCode.NOT_FOUND, f"fake weaviate: class {request.collection} not found")
            objects = {k: o for k, o in self.objects.get(request.collection, {}).items()
                       if not request.HasField("filters") or self._matches(o, request.filters)}
            if request.HasField("hybrid_search"):
                ranked = self._hybrid(request, objects, context)
                with_score = True
            else:
                # Listed by UUID, as Weaviate's cursor (`after`) pages them.
                ranked = [(key, 0.0) for key in sorted(objects) if key > request.after]
                with_score = False
            limit = request.limit or 10
            ranked = ranked[request.offset: request.offset + limit]
            wanted = list(request.properties.non_ref_properties)
            everything = request.properties.return_all_nonref_properties or not request.HasField("properties")
            results = []
            for key, score in ranked:
                props = objects[key].properties
                names = list(props) if everything else [n for n in wanted if n in props]
                fields = {name: self._value(props[name]) for name in names}
                metadata = search_get_pb2.MetadataResult(id=key, id_as_bytes=uuid.UUID(key).bytes)
                if with_score and request.metadata.score:
                    metadata.score = score
                    metadata.score_present = True
                results.append(search_get_pb2.SearchResult(
                    properties=search_get_pb2.PropertiesResult(
                        non_ref_props=properties_pb2.Properties(fields=fields)),
                    metadata=metadata,
                ))
            reply = search_get_pb2.SearchReply(took=0.001, results=results)
            self.replies.append(reply)
        return reply

    @staticmethod
    def _value(value: Any) -> properties_pb2.Value:
        if isinstance(value, bool):
            return properties_pb2.Value(bool_value=value)
        if isinstance(value, int):
            return properties_pb2.Value(int_value=value)
        if isinstance(value, float):
            return properties_pb2.Value(number_value=value)
        return properties_pb2.Value(text_value=str(value))


def unpack_vector(data: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(data) // 4}f", data))


@pytest.fixture(scope="module")
def fake_weaviate_server() -> Iterator[FakeWeaviate]:
    """One fake per test module (stopping the REST side takes ~0.5 s); use `fake_weaviate`."""
    with FakeWeaviate() as fake:
        yield fake


@pytest.fixture
def fake_weaviate(fake_weaviate_server: FakeWeaviate) -> Iterator[FakeWeaviate]:
    """The module's fake, emptied and with every switch off."""
    fake_weaviate_server.reset()
    yield fake_weaviate_server
    fake_weaviate_server.wake.set()  # release handlers still sleeping on a delay switch
    fake_weaviate_server.reset()
    fake_weaviate_server.wake.clear()
