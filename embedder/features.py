"""`features.parquet` → (X, metadata frame), ready for scikit-learn.

    from embedder.features import load_features
    X, meta = load_features("qa.embed")                      # every encoder, concatenated
    X, meta = load_features("qa.embed", encoders="seq2seq")  # one encoder
    y = (meta["role"] == "question").to_numpy()

Encoders may be named as in the model (`skipgram-birnn`) or as their Parquet column
(`skipgram_birnn`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EmbedderError
from .storage import FEATURES, META_KEY

META_COLUMNS = ("id", "dialogue", "position", "role", "text")


def features_path(out_dir_or_parquet: str | os.PathLike) -> Path:
    """The Parquet file itself, given either it or the `embed encode` output folder."""
    p = Path(out_dir_or_parquet)
    if p.is_dir():
        p = p / FEATURES
        if not p.exists():
            raise EmbedderError(f"{p.parent}: no {FEATURES} in this folder (run `embed encode` first)")
    elif not p.exists():
        raise EmbedderError(f"{p}: no such file or folder")
    return p


def _schema(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(str(path))
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        raise EmbedderError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def encoder_columns(path: str | os.PathLike) -> dict[str, dict]:
    """{encoder name: {"column", "dim"}} from the file's schema metadata."""
    path = features_path(path)
    raw = (_schema(path).metadata or {}).get(META_KEY)
    if raw is None:
        raise EmbedderError(f"{path}: not a features file written by embedder (no '{META_KEY.decode()}' "
                            "schema metadata)")
    try:
        meta = json.loads(raw)
        return {str(k): dict(v) for k, v in meta["encoders"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise EmbedderError(f"{path}: corrupt embedder metadata ({e})") from None


def _resolve(names: Sequence[str], available: dict[str, dict], path: Path) -> list[str]:
    by_column = {info["column"]: n for n, info in available.items()}
    out = []
    for name in names:
        if name in available:
            out.append(name)
        elif name in by_column:
            out.append(by_column[name])
        else:
            listed = ", ".join(f"{n} (column {i['column']})" if n != i["column"] else n
                               for n, i in available.items())
            raise EmbedderError(f"{path}: no vectors for encoder {name!r} (it has: {listed or 'none'})")
    return out


def load_features(out_dir_or_parquet: str | os.PathLike,
                  encoders: str | Sequence[str] | None = None):
    """(X, meta): X is float32 (n, sum of dims), the encoders' columns side by side in the order
    given (default: every encoder in the file's metadata); meta is a pandas DataFrame with
    id, dialogue, position, role and text, row for row with X."""
    import pandas as pd
    import pyarrow.parquet as pq

    path = features_path(out_dir_or_parquet)
    available = encoder_columns(path)
    if encoders is None:
        names = list(available)
    else:
        names = [encoders] if isinstance(encoders, str) else list(encoders)
        if not names:
            raise EmbedderError("no encoders asked for")
        names = _resolve(names, available, path)
    columns = [available[n]["column"] for n in names]
    present = set(_schema(path).names)
    missing = [c for c in (*META_COLUMNS, *columns) if c not in present]
    if missing:
        raise EmbedderError(f"{path}: column(s) {', '.join(missing)} missing from the file")
    try:
        table = pq.read_table(str(path), columns=[*META_COLUMNS, *columns])
    except Exception as e:
        raise EmbedderError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    n = table.num_rows
    blocks = []
    for name, col in zip(names, columns):
        arr = table.column(col).combine_chunks()
        dim = int(available[name].get("dim") or 0)
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        if dim <= 0 or flat.size != n * dim:
            raise EmbedderError(f"{path}: column {col!r} holds {flat.size} values, not {n} rows × {dim}")
        blocks.append(flat.astype(np.float32, copy=False).reshape(n, dim))
    X = np.ascontiguousarray(np.hstack(blocks) if len(blocks) > 1 else blocks[0], dtype=np.float32)
    meta = pd.DataFrame({c: table.column(c).to_numpy(zero_copy_only=False) for c in META_COLUMNS})
    meta["role"] = meta["role"].astype(str)
    meta["text"] = meta["text"].astype(str)
    return X, meta
