"""An `embed encode` output folder, opened for queries: its manifest, its model, one index per
encoder (with the exact vectors that re-rank a compressed one) and its Parquet shards."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..encoders.model import Model, load
from ..errors import EmbedderError, check_range, check_text
from . import index, manifest as manifests, parquet
from .vectors import VectorStore


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
            info = self.manifest["encoders"][encoder]
            store = None
            if info.get("vectors") is not None:
                store = VectorStore(int(info["dim"]), [(self.path / s["path"], int(s["first_id"]))
                                                      for s in info["vectors"]])
                store.prefetch()  # re-ranking reads rows all over these files: read them into the cache, aside
            settings = {k: v for k, v in info.get("search", {}).items() if k in index.SETTINGS}
            copies = index.Copies.load(self.path / info["copies"]) if info.get("copies") else None
            self._indexes[encoder] = index.load(self.path / info["index"], store, settings, copies)
        return self._indexes[encoder]

    def warm(self) -> None:
        """Open every encoder's index now (reading its vector files ahead where memory allows), so
        the first searches are not the ones that fill the page cache: the service calls it at start."""
        for encoder in self.encoders:
            self.index(encoder)

    def query(self, texts: Sequence[str], k: int = 10, encoder: str | None = None,
              role: str | None = None, settings: dict[str, int] | None = None) -> list[list[Hit]]:
        """The k nearest utterances to each text; `role` keeps only questions or only answers;
        `settings` overrides the index's recorded search settings (`index.parse_settings`)."""
        check_range("-k", k, 1)
        for t in texts:
            check_text(t, "the query text")
        encoder = encoder or self.encoders[0]
        self.index(encoder)  # an unknown encoder fails before encoding
        return self.search(self.model.encode(list(texts), encoder=encoder), k, encoder, role, settings)

    def search(self, Q: np.ndarray, k: int = 10, encoder: str | None = None,
               role: str | None = None, settings: dict[str, int] | None = None) -> list[list[Hit]]:
        """The k nearest utterances to each unit vector in Q."""
        check_range("-k", k, 1)
        encoder = encoder or self.encoders[0]
        idx = self.index(encoder)
        fetch = k if role is None else min(idx.ntotal, max(4 * k, k + 50))
        scores, ids = idx.search(Q, max(fetch, 1), settings)
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
