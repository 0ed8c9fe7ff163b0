"""corpus → vectors → `features.parquet` + one FAISS index per encoder, and queries against them.

The output folder is assembled under a temporary name and swapped into place only when every
file in it is complete, so a failure at any point leaves the previous output (or nothing).
Utterances stream through in chunks: memory stays bounded by the chunk and the index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..atomic import atomic_dir
from ..data.corpus import Utterance, check_paths, read_corpus
from ..encoders.model import Model, load
from ..errors import EmbedderError, check_range
from ..progress import Progress, report
from ..version import __version__
from . import index, manifest as manifests, parquet

CHUNK = 8192


def default_out_dir(corpus: str | os.PathLike) -> Path:
    p = Path(corpus)
    return p.with_name(p.stem + ".embed")


def _chunks(it: Iterator[Utterance], n: int) -> Iterator[list[Utterance]]:
    while chunk := list(islice(it, n)):
        yield chunk


def encode_corpus(
    corpus: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    model: Model | str | os.PathLike | None = None,
    encoders: Sequence[str] | None = None,
    index_factory: str | None = None,
    device: str = "auto",
    vocab: str | os.PathLike | None = None,
    train_options: dict | None = None,
    progress: Progress | None = None,
) -> dict:
    """Write OUT_DIR/features.parquet and OUT_DIR/<encoder>.faiss; returns the output manifest.

    With no `model`, one is trained on the corpus first and kept in OUT_DIR/model/.
    """
    files = check_paths(corpus)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model_ref: str
        if model is None:
            from ..training.train import train
            opts = dict(train_options or {})
            if encoders:
                opts["encoders"] = list(encoders)
            model = train(files, tmp / "model", device=device, vocab=vocab, progress=progress, **opts)
            model_ref = "model"
        elif not isinstance(model, Model):
            model_ref = str(Path(model).resolve())
            model = load(model, device=device)
        elif model.path is None:
            raise EmbedderError("the model has not been saved; call model.save(path) first")
        else:
            model_ref = str(model.path.resolve())
        names = list(encoders or model.encoders)
        for n in names:
            model.encoder(n)  # unknown names fail before any output
        n_total = _count(files, vocab)
        factory = index_factory or index.auto_factory(n_total)
        dims = {n: model.dim(n) for n in names}
        builders = {n: index.IndexBuilder(dims[n], factory) for n in names}
        writer = parquet.FeatureWriter(tmp / parquet.FEATURES, dims, model.fingerprint)
        done = 0
        try:
            for chunk in _chunks(read_corpus(files, vocab=vocab), CHUNK):
                texts = [u.text for u in chunk]
                ids = np.array([u.id for u in chunk], dtype=np.int64)
                out = {n: model.features(texts, encoder=n) for n in names}
                vectors = {n: v for n, (v, _) in out.items()}
                rows = {"id": ids, "dialogue": [u.dialogue for u in chunk],
                        "position": [u.position for u in chunk], "role": [u.role for u in chunk],
                        "text": texts}
                writer.write(rows, vectors, {n: o for n, (_, o) in out.items()})
                for n in names:
                    builders[n].add(ids, vectors[n])
                done += len(chunk)
                report(progress, "encode", done / max(n_total, 1))
        finally:
            writer.close()
        for n in names:
            index.save(builders[n].finish(), tmp / index.index_filename(n))
        manifest = {
            "embedder_version": __version__, "model": model_ref, "model_fingerprint": model.fingerprint,
            "corpus": [str(f.resolve()) for f in files], "rows": done, "shards": [parquet.FEATURES],
            "encoders": {n: {"column": parquet.vector_column(n), "dim": dims[n],
                             "order_column": parquet.order_column(n), "index": index.index_filename(n), "index_factory": factory} for n in names},
        }
        manifests.write(tmp, manifest)
    return manifest


def _count(files: Sequence[Path], vocab=None) -> int:
    """Utterances in the corpus, for the progress bar and the index choice (a cheap first pass)."""
    return sum(1 for _ in read_corpus(files, vocab=vocab))


@dataclass
class Hit:
    rank: int
    score: float
    id: int
    role: str
    text: str


class Collection:
    """An `embed encode` output folder, opened for queries."""

    def __init__(self, out_dir: str | os.PathLike, device: str = "auto", model: Model | None = None):
        self.path = Path(out_dir)
        self.manifest = manifests.read(self.path)
        if model is None:
            ref = self.manifest.get("model", "model")
            model_path = Path(ref) if Path(ref).is_absolute() else self.path / ref
            model = load(model_path, device=device)
        if model.fingerprint != self.manifest.get("model_fingerprint"):
            raise EmbedderError(f"{model.path}: is not the model these vectors were made with "
                                "(fingerprints differ); re-run `embed encode`")
        self.model = model
        self._indexes: dict = {}
        # id → row, for rows added since the last shard was written (embedder.storage.documents)
        self.unsaved_rows: dict[int, dict] = {}

    @property
    def shards(self) -> list[Path]:
        return manifests.shards(self.path, self.manifest)

    @property
    def encoders(self) -> list[str]:
        return list(self.manifest.get("encoders", {}))

    def index(self, encoder: str):
        if encoder not in self.manifest.get("encoders", {}):
            raise EmbedderError(f"{self.path}: has no vectors for encoder {encoder!r} "
                                f"(it has: {', '.join(self.encoders)})")
        if encoder not in self._indexes:
            self._indexes[encoder] = index.load(self.path / self.manifest["encoders"][encoder]["index"])
        return self._indexes[encoder]

    def query(self, texts: Sequence[str], k: int = 10, encoder: str | None = None,
              role: str | None = None) -> list[list[Hit]]:
        """The k nearest utterances to each text; `role` keeps only questions or only answers."""
        check_range("-k", k, 1)
        if any(not t.strip() for t in texts):
            raise EmbedderError("the query text is empty")
        encoder = encoder or self.encoders[0]
        self.index(encoder)  # an unknown encoder fails before encoding
        return self.search(self.model.encode(list(texts), encoder=encoder), k, encoder, role)

    def search(self, Q: np.ndarray, k: int = 10, encoder: str | None = None,
               role: str | None = None) -> list[list[Hit]]:
        """The k nearest utterances to each unit vector in Q."""
        check_range("-k", k, 1)
        encoder = encoder or self.encoders[0]
        idx = self.index(encoder)
        fetch = k if role is None else min(idx.ntotal, max(4 * k, k + 50))
        scores, ids = index.search(idx, Q, max(fetch, 1))
        rows = self.rows({int(i) for i in ids.ravel() if i >= 0})
        results = []
        for srow, irow in zip(scores, ids):
            hits = []
            for s, i in zip(srow, irow):
                r = rows.get(int(i))
                if r is None or (role and r["role"] != role):
                    continue
                hits.append(Hit(len(hits) + 1, float(s), int(i), r["role"], r["text"]))
                if len(hits) == k:
                    break
            results.append(hits)
        return results

    def rows(self, ids: set[int]) -> dict[int, dict]:
        """id → a dict with at least "id", "role" and "text", from the shards and from rows not yet in one."""
        found = {i: self.unsaved_rows[i] for i in ids if i in self.unsaved_rows}
        rest = ids - found.keys()
        if rest:
            found.update(parquet.read_rows(self.shards, rest))
        return found
