"""FAISS indexes: ids are Parquet ids, exact for small collections, factory strings for large."""

import numpy as np
import pytest

from embedder.storage import index
from embedder.errors import EmbedderError


def _unit(n, d, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_auto_choice_by_size():
    assert index.auto_factory(1000) == "Flat"
    assert index.auto_factory(500_000).startswith("HNSW")
    assert index.auto_factory(10_000_000).startswith("IVF")


@pytest.mark.parametrize("factory", ["Flat", "HNSW32,Flat", "IVF32,Flat"])
def test_factories_keep_ids_and_recall(tmp_path, factory):
    X, Q = _unit(4000, 32), _unit(100, 32, seed=1)
    ids = np.arange(len(X), dtype=np.int64) * 7 + 3  # ids are not row numbers
    b = index.IndexBuilder(32, factory)
    for lo in range(0, len(X), 1000):  # streamed in chunks, as encode does
        b.add(ids[lo:lo + 1000], X[lo:lo + 1000])
    index.save(b.finish(), tmp_path / "x.faiss")
    found = index.search(index.load(tmp_path / "x.faiss"), Q, 10)[1]
    exact = ids[np.argsort(-(Q @ X.T), axis=1)[:, :10]]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= (1.0 if factory == "Flat" else 0.8)


def test_bad_factory_and_corrupt_file(tmp_path):
    with pytest.raises(EmbedderError, match="index factory 'Nonsense42'"):
        index.IndexBuilder(8, "Nonsense42")
    (tmp_path / "bad.faiss").write_bytes(b"not an index")
    with pytest.raises(EmbedderError, match="bad.faiss: not a readable FAISS index"):
        index.load(tmp_path / "bad.faiss")
