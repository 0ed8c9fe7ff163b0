"""`features.parquet`: one row per utterance, metadata columns plus one vector column per encoder.

Vector columns are fixed-size float32 lists, which pandas, polars, DuckDB and Spark all read
as arrays; the schema metadata says what produced them, so a file explains itself.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__
from .errors import EmbedderError

FEATURES = "features.parquet"
META_KEY = b"embedder"
BASE_FIELDS = [
    pa.field("id", pa.int64(), nullable=False),
    pa.field("dialogue", pa.int64(), nullable=False),
    pa.field("position", pa.int32(), nullable=False),
    pa.field("role", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
]


def vector_column(name: str) -> str:
    """The Parquet column of an encoder: `seq2seq`, `skipgram_birnn` (SQL-friendly names)."""
    return name.replace("-", "_")


def schema(dims: dict[str, int], fingerprint: str) -> pa.Schema:
    fields = BASE_FIELDS + [pa.field(vector_column(n), pa.list_(pa.float32(), d), nullable=False)
                            for n, d in dims.items()]
    meta = {"embedder_version": __version__, "model_fingerprint": fingerprint,
            "encoders": {n: {"column": vector_column(n), "dim": d} for n, d in dims.items()},
            "unit_length": True, "similarity": "cosine (= dot product)"}
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta).encode()})


def table(schema_: pa.Schema, rows: dict[str, Sequence], vectors: dict[str, np.ndarray]) -> pa.Table:
    cols = [pa.array(rows[f.name], type=f.type) for f in BASE_FIELDS]
    for name, X in vectors.items():
        X = np.ascontiguousarray(X, dtype=np.float32)
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1]))
    return pa.Table.from_arrays(cols, schema=schema_)


class FeatureWriter:
    """Streams row groups into a Parquet file (the caller owns the temporary name)."""

    def __init__(self, path: str | os.PathLike, dims: dict[str, int], fingerprint: str):
        self.schema = schema(dims, fingerprint)
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.rows = 0

    def write(self, rows: dict[str, Sequence], vectors: dict[str, np.ndarray]) -> None:
        self.writer.write_table(table(self.schema, rows, vectors))
        self.rows += len(rows["id"])

    def close(self) -> None:
        self.writer.close()


def metadata(path: str | os.PathLike) -> dict:
    try:
        sch = pq.read_schema(str(path))
    except FileNotFoundError:
        raise EmbedderError(f"{path}: missing") from None
    except Exception as e:
        raise EmbedderError(f"{path}: not a readable Parquet file ({e})") from None
    raw = (sch.metadata or {}).get(META_KEY)
    if raw is None:
        raise EmbedderError(f"{path}: not a features file written by embedder (no metadata)")
    return json.loads(raw)


def read_rows(path: str | os.PathLike, ids: Iterable[int], columns: Sequence[str] = ("id", "role", "text")) -> dict[int, dict]:
    """The rows with these ids, keyed by id (a predicate pushed into the Parquet scan)."""
    ids = [int(i) for i in ids]
    try:
        t = pq.read_table(str(path), columns=list(columns), filters=pc.field("id").isin(ids))
    except Exception as e:
        raise EmbedderError(f"{path}: cannot read ({e})") from None
    return {r["id"]: r for r in t.to_pylist()}


def read_vectors(path: str | os.PathLike, encoder: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of one encoder's column."""
    col = vector_column(encoder)
    t = pq.read_table(str(path), columns=["id", col])
    flat = t.column(col).combine_chunks()
    X = flat.values.to_numpy(zero_copy_only=False).reshape(len(t), -1)
    return t.column("id").to_numpy(), X.astype(np.float32, copy=False)

