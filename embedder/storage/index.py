"""FAISS indexes over unit vectors, whose ids are the Parquet `id`s.

Small collections get an exact inner-product index (cosine, since rows are unit length); large
ones an approximate one chosen by size, or whatever FAISS index factory string the user names.
Vectors arrive in chunks; an index that needs training buffers a sample first.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from ..errors import EmbedderError

#: Up to this many vectors an exact search is fast enough and has perfect recall.
EXACT_LIMIT = 100_000
TRAIN_SAMPLE = 50_000


def auto_factory(n: int) -> str:
    if n <= EXACT_LIMIT:
        return "Flat"
    if n <= 2_000_000:
        return "HNSW32,Flat"
    nlist = int(4 * np.sqrt(n))
    return f"IVF{nlist},PQ32"


def index_filename(encoder: str) -> str:
    return f"{encoder}.faiss"


class IndexBuilder:
    """Add (ids, vectors) chunks; `finish()` returns the index."""

    def __init__(self, dim: int, factory: str):
        try:
            inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise EmbedderError(f"index factory {factory!r}: {str(e).strip().splitlines()[-1]}") from None
        self.factory = factory
        self.index = faiss.IndexIDMap2(inner)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_n = 0

    def add(self, ids: np.ndarray, X: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.index.is_trained:
            self.index.add_with_ids(X, ids)
            return
        self.pending.append((ids, X))
        self.pending_n += len(ids)
        if self.pending_n >= TRAIN_SAMPLE:
            self._train_and_flush()

    def _train_and_flush(self) -> None:
        X = np.concatenate([p[1] for p in self.pending])
        try:
            self.index.train(X)
        except RuntimeError as e:
            raise EmbedderError(f"index {self.factory!r}: cannot train on {len(X)} vectors "
                                f"({str(e).strip().splitlines()[-1]}); use a smaller index or Flat") from None
        for ids, Xc in self.pending:
            self.index.add_with_ids(Xc, ids)
        self.pending, self.pending_n = [], 0

    def finish(self) -> faiss.Index:
        if self.pending:
            self._train_and_flush()
        return self.index


def save(index: faiss.Index, path: str | os.PathLike) -> None:
    faiss.write_index(index, str(path))


def load(path: str | os.PathLike) -> faiss.Index:
    path = Path(path)
    if not path.exists():
        raise EmbedderError(f"{path}: missing (was `embed encode` run with this encoder?)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise EmbedderError(f"{path}: not a readable FAISS index (corrupt or truncated: "
                            f"{str(e).strip().splitlines()[-1][:120]})") from None
    try:  # IVF indexes: probe 16 lists rather than FAISS's default of 1, for usable recall
        faiss.extract_index_ivf(index).nprobe = 16
    except (RuntimeError, AttributeError):
        pass
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (n, k); missing neighbours have id -1."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
