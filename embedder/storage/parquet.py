"""`features.parquet`: one row per utterance, metadata columns plus, per encoder, a vector column
and a word-order score column.

Vector columns are fixed-size float32 lists, which pandas, polars, DuckDB and Spark all read
as arrays; the order score is a plain float32 (the probability that the utterance's words are
out of natural order), kept out of the vector so cosines measure meaning alone. The schema
metadata names both columns of each encoder, so a file explains itself.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import EmbedderError
from ..version import __version__

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


def order_column(name: str) -> str:
    """The Parquet column of an encoder's word-order score: `seq2seq_order`, `skipgram_birnn_order`."""
    return f"{vector_column(name)}_order"


def schema(dims: dict[str, int], fingerprint: str) -> pa.Schema:
    fields = list(BASE_FIELDS)
    for n, d in dims.items():
        fields += [pa.field(vector_column(n), pa.list_(pa.float32(), d), nullable=False),
                   pa.field(order_column(n), pa.float32())]  # null for an encoder without a scorer
    meta = {"embedder_version": __version__, "model_fingerprint": fingerprint,
            "encoders": {n: {"column": vector_column(n), "dim": d, "order_column": order_column(n)}
                         for n, d in dims.items()},
            "unit_length": True, "similarity": "cosine (= dot product)",
            "order_score": "probability that the words are out of natural order"}
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta).encode()})


def table(schema_: pa.Schema, rows: dict[str, Sequence], vectors: dict[str, np.ndarray],
          order: dict[str, np.ndarray] | None = None) -> pa.Table:
    cols = [pa.array(rows[f.name], type=f.type) for f in BASE_FIELDS]
    for name, X in vectors.items():
        X = np.ascontiguousarray(X, dtype=np.float32)
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1]))
        scores = (order or {}).get(name)
        if scores is None:
            scores = np.full(len(X), np.nan, np.float32)
        cols.append(pa.array(scores.astype(np.float32), type=pa.float32(), from_pandas=True))  # NaN -> null
    return pa.Table.from_arrays(cols, schema=schema_)


class FeatureWriter:
    """Streams row groups into a Parquet file (the caller owns the temporary name)."""

    def __init__(self, path: str | os.PathLike, dims: dict[str, int], fingerprint: str):
        self.schema = schema(dims, fingerprint)
        # dictionaries only where values repeat: trying one on every float of the vector columns
        # took 1.7x the write time and made the file larger (benchmarks/RESULTS.md, "Scale")
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd", use_dictionary=["role", "text"])

    def write(self, rows: dict[str, Sequence], vectors: dict[str, np.ndarray],
              order: dict[str, np.ndarray] | None = None) -> None:
        self.writer.write_table(table(self.schema, rows, vectors, order))

    def close(self) -> None:
        self.writer.close()


def metadata(path: str | os.PathLike) -> dict:
    """The embedder metadata of a features file: what wrote it and each encoder's column and dim."""
    try:
        sch = pq.read_schema(str(path))
    except FileNotFoundError:
        raise EmbedderError(f"{path}: missing") from None
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        raise EmbedderError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    raw = (sch.metadata or {}).get(META_KEY)
    if raw is None:
        raise EmbedderError(f"{path}: not a features file written by embedder (no '{META_KEY.decode()}' "
                            "schema metadata)")
    try:
        meta = json.loads(raw)
        meta["encoders"] = {str(k): dict(v) for k, v in meta["encoders"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise EmbedderError(f"{path}: corrupt embedder metadata ({e})") from None
    meta["columns"] = sch.names
    return meta


def read_rows(paths: str | os.PathLike | Sequence[str | os.PathLike], ids: Iterable[int],
              columns: Sequence[str] = ("id", "role", "text")) -> dict[int, dict]:
    """The rows with these ids from one file or several shards of one schema, keyed by id (a
    predicate pushed into the Parquet scan, so only the row groups that can hold them are read)."""
    import pyarrow.dataset as ds

    files = [str(paths)] if isinstance(paths, (str, os.PathLike)) else [str(p) for p in paths]
    ids = [int(i) for i in ids]
    if not ids:
        return {}
    try:
        t = ds.dataset(files, format="parquet").to_table(columns=list(columns), filter=pc.field("id").isin(ids))
    except Exception as e:
        raise EmbedderError(f"{files[0] if len(files) == 1 else ', '.join(files)}: cannot read "
                            f"({str(e).splitlines()[0]})") from None
    return {r["id"]: r for r in t.to_pylist()}


def max_value(paths: Sequence[str | os.PathLike], column: str) -> int:
    """The largest value of an integer column over shards (-1 when they hold no rows); reads that
    column alone."""
    best = -1
    for p in paths:
        col = pq.read_table(str(p), columns=[column]).column(0)
        if len(col):
            best = max(best, int(pc.max(col).as_py()))
    return best


def matrix(column: pa.Array | pa.ChunkedArray, dim: int, where: str = "") -> np.ndarray:
    """A fixed-size-list vector column as a float32 (rows, dim) array: the one place that turns
    Parquet vectors back into numpy."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    rows = len(column)
    if dim <= 0 or flat.size != rows * dim:
        raise EmbedderError(f"{where}: column holds {flat.size} values, not {rows} rows × {dim}")
    return flat.astype(np.float32, copy=False).reshape(rows, dim)


def vector_batches(path: str | os.PathLike, encoder: str, batch_size: int = 8192):
    """(ids, vectors) of one encoder, a row batch at a time (bounded memory for any file size)."""
    info = metadata(path)["encoders"][encoder]
    pf = pq.ParquetFile(str(path))
    for b in pf.iter_batches(columns=["id", info["column"]], batch_size=batch_size):
        yield b.column(0).to_numpy(), matrix(b.column(1), int(info["dim"]), f"{path}: {info['column']}")
