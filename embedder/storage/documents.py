"""Utterances added to an output folder after `embed encode` (the service's `POST /documents`).

An addition is acknowledged only once it is durable: its rows go to a write-ahead log that is
fsynced before `add` returns, then into the in-memory indexes, where searches see them at once.
Every so often (and at shutdown) the rows not yet in a shard are written out as a new Parquet
shard of the features schema, the indexes are saved under new names, and the manifest that lists
them is swapped in; only then is the log emptied. A process killed at any point loses nothing it
acknowledged: on opening, log entries the manifest does not cover are encoded again and re-added
(encoding is deterministic, so the log holds text, not vectors).

Layout: OUT_DIR/documents/wal.jsonl and OUT_DIR/documents/part-00001.parquet, ...
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_path
from ..data.corpus import ROLES, infer_role
from ..errors import EmbedderError
from . import index, manifest as manifests, parquet
from .collection import Collection

FOLDER = "documents"
WAL = "wal.jsonl"
CHECKPOINT_ROWS = 4096


@dataclass
class Document:
    text: str
    role: str | None = None       # inferred from the text when not given, as in a corpus
    dialogue: int | None = None   # a new dialogue per request when not given


class Documents:
    """Adds utterances to an open `Collection`, durably. Thread-safe: searches on the collection
    must hold `lock` too, since a FAISS index must not be searched while it grows."""

    def __init__(self, collection: Collection, checkpoint_rows: int = CHECKPOINT_ROWS):
        self.c = collection
        self.folder = collection.path / FOLDER
        self.wal_path = self.folder / WAL
        self.checkpoint_rows = checkpoint_rows
        self.lock = threading.RLock()
        self.names = collection.encoders
        self.dims = {n: collection.model.dim(n) for n in self.names}
        state = collection.manifest.get("documents") or {}
        self.generation = int(state.get("generation", 0))
        if "next_id" in state:
            self.next_id, self.next_dialogue = int(state["next_id"]), int(state["next_dialogue"])
        else:
            self.next_id = parquet.max_value(collection.shards, "id") + 1
            self.next_dialogue = parquet.max_value(collection.shards, "dialogue") + 1
        self._clear_unsaved()
        self.folder.mkdir(exist_ok=True)
        self.replayed = self._replay()
        self.wal = open(self.wal_path, "ab")

    @property
    def total(self) -> int:
        """Rows in the collection: those in its shards and those added since."""
        return int(self.c.manifest.get("rows", 0)) + len(self.c.unsaved_rows)

    def _clear_unsaved(self) -> None:
        self.vectors: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        self.order: dict[str, list[np.ndarray]] = {n: [] for n in self.names}
        self.c.unsaved_rows.clear()

    # -- adding ---------------------------------------------------------------------------------
    def prepare(self, docs: Sequence[Document]) -> list[dict]:
        """Rows for these documents (ids not yet assigned); a bad field is an EmbedderError."""
        rows = []
        for i, d in enumerate(docs):
            if not d.text.strip():
                raise EmbedderError(f"documents[{i}].text: empty")
            if "\n" in d.text or "\r" in d.text:
                raise EmbedderError(f"documents[{i}].text: one utterance per document (no line breaks)")
            role = d.role or infer_role(d.text)
            if role not in ROLES:
                raise EmbedderError(f"documents[{i}].role: {d.role!r}; expected one of {', '.join(ROLES)}")
            if d.dialogue is not None and d.dialogue < 0:
                raise EmbedderError(f"documents[{i}].dialogue: {d.dialogue}; must be at least 0")
            rows.append({"text": d.text, "role": role, "dialogue": d.dialogue})
        return rows

    def add(self, rows: list[dict], features: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[int]:
        """Log, fsync, then index `rows` (from `prepare`) with their vectors and order scores per
        encoder (from `Model.features`); returns their ids, durable on return."""
        missing = set(self.names) - features.keys()
        if missing:
            raise EmbedderError(f"documents: no vectors for encoder(s) {', '.join(sorted(missing))}")
        with self.lock:
            new_dialogue = self.next_dialogue
            logged = []
            for pos, r in enumerate(rows):
                d = r["dialogue"] if r["dialogue"] is not None else new_dialogue
                logged.append({"id": self.next_id + pos, "dialogue": d, "position": pos,
                               "role": r["role"], "text": r["text"]})
            data = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in logged)
            self.wal.write(data)
            self.wal.flush()
            os.fsync(self.wal.fileno())
            self._apply(logged, features)
            if len(self.c.unsaved_rows) >= self.checkpoint_rows:
                self.checkpoint()
        return [r["id"] for r in logged]

    def _apply(self, logged: list[dict], features: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        ids = np.array([r["id"] for r in logged], dtype=np.int64)
        for n in self.names:
            V, O = features[n]
            self.c.index(n).add_with_ids(np.ascontiguousarray(V, dtype=np.float32), ids)
            self.vectors[n].append(np.asarray(V, dtype=np.float32))
            self.order[n].append(np.asarray(O, dtype=np.float32))
        for r in logged:  # searches find them here until a checkpoint writes them to a shard
            self.c.unsaved_rows[r["id"]] = r
        self.next_id = max(self.next_id, int(ids.max()) + 1)
        self.next_dialogue = max(self.next_dialogue, max(r["dialogue"] for r in logged) + 1)

    # -- making it permanent --------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Rows added since the last checkpoint → a new shard, new index files, a new manifest."""
        with self.lock:
            rows = list(self.c.unsaved_rows.values())  # in id order: insertion order
            if not rows:
                return
            gen = self.generation + 1
            shard = f"{FOLDER}/part-{gen:05d}.parquet"
            cols = {k: [r[k] for r in rows] for k in ("id", "dialogue", "position", "role", "text")}
            with atomic_path(self.c.path / shard) as tmp:
                writer = parquet.FeatureWriter(tmp, self.dims, self.c.model.fingerprint)
                writer.write(cols, {n: np.concatenate(self.vectors[n]) for n in self.names},
                             {n: np.concatenate(self.order[n]) for n in self.names})
                writer.close()
            m = json.loads(json.dumps(self.c.manifest))
            old_indexes = []
            for n in self.names:
                idx = self.c.index(n)
                if idx.store is not None:  # a compressed index re-ranks with exact vectors: write them too
                    path, first = idx.store.flush_tail(self.c.path / FOLDER / f"{parquet.vector_column(n)}.part-{gen:05d}.npy")
                    m["encoders"][n]["vectors"].append({"path": str(path.relative_to(self.c.path)), "first_id": first})
                name = f"{Path(index.index_filename(n)).stem}.{gen}.faiss"
                with atomic_path(self.c.path / name) as tmp:
                    index.save(idx, tmp)
                old_indexes.append(m["encoders"][n]["index"])
                m["encoders"][n]["index"] = name
            m["shards"] = [*m.get("shards", [parquet.FEATURES]), shard]
            m["rows"] = int(m.get("rows", 0)) + len(rows)
            m["documents"] = {"generation": gen, "next_id": self.next_id, "next_dialogue": self.next_dialogue}
            manifests.write(self.c.path, m)  # the commit point
            self.c.manifest, self.generation = m, gen
            for old in old_indexes:
                (self.c.path / old).unlink(missing_ok=True)
            self.wal.truncate(0)
            self.wal.flush()
            os.fsync(self.wal.fileno())
            self._clear_unsaved()

    def close(self) -> None:
        with self.lock:
            self.checkpoint()
            self.wal.close()

    # -- recovery -------------------------------------------------------------------------------
    def _replay(self) -> int:
        """Re-add what the log holds beyond the manifest; returns how many rows. A torn last line
        (the process died while writing it, before acknowledging it) is dropped; anything else
        unreadable is an error naming the line."""
        if not self.wal_path.exists():
            return 0
        lines = self.wal_path.read_bytes().split(b"\n")
        torn = lines.pop()  # the text after the last newline: empty unless the last write was cut short
        logged = []
        for n, line in enumerate(lines, 1):
            try:
                r = json.loads(line)
                r = {k: r[k] for k in ("id", "dialogue", "position", "role", "text")}
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise EmbedderError(f"{self.wal_path}:{n}: unreadable log entry ({e})") from None
            if r["id"] >= self.next_id:
                logged.append(r)
        if torn:
            with open(self.wal_path, "r+b") as f:
                f.truncate(sum(len(line) + 1 for line in lines))
        if logged:
            texts = [r["text"] for r in logged]
            self._apply(logged, {n: self.c.model.features(texts, encoder=n) for n in self.names})
        return len(logged)
