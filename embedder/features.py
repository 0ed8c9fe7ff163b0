"""`features.parquet` → (X, metadata frame), ready for scikit-learn.

    from embedder.features import load_features
    X, meta = load_features("qa.embed")                      # every encoder, concatenated
    X, meta = load_features("qa.embed", encoders="seq2seq")  # one encoder
    y = (meta["role"] == "question").to_numpy()

Encoders may be named as in the model (`skipgram-birnn`) or as their Parquet column
(`skipgram_birnn`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import EmbedderError
from .storage import manifest as manifests
from .storage.parquet import FEATURES, matrix, metadata

META_COLUMNS = ("id", "dialogue", "position", "role", "text")


def feature_files(out_dir_or_parquet: str | os.PathLike) -> list[Path]:
    """Every Parquet shard of an output folder (those its manifest lists: the encoded corpus and
    documents added later through the service), or of a `features.parquet` folder of shards, or
    the one file given."""
    p = Path(out_dir_or_parquet)
    if not p.exists():
        raise EmbedderError(f"{p}: no such file or folder")
    if p.is_dir() and (p / manifests.MANIFEST).exists():
        files = manifests.shards(p, manifests.read(p))
        missing = [f for f in files if not f.exists()]
        if missing:
            raise EmbedderError(f"{missing[0]}: listed in {p / manifests.MANIFEST} but missing")
        return files
    if p.is_dir() and (p / FEATURES).exists():
        p = p / FEATURES
    elif p.is_dir() and not any(p.glob("*.parquet")):
        raise EmbedderError(f"{p}: no {FEATURES} in this folder (run `embed encode` first)")
    return sorted(p.glob("*.parquet")) if p.is_dir() else [p]


def encoder_columns(path: str | os.PathLike) -> dict[str, dict]:
    """{encoder name: {"column", "dim"}} from the file's schema metadata."""
    return metadata(feature_files(path)[0])["encoders"]


def resolve_encoders(names: Sequence[str], available: dict[str, dict], path: Path) -> list[str]:
    """Encoder names as the model has them, given either those or their Parquet column names."""
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
    id, dialogue, position, role, text and each chosen encoder's word-order score column
    (`seq2seq_order`, ...), row for row with X."""
    import pandas as pd
    import pyarrow.dataset as ds

    files = feature_files(out_dir_or_parquet)
    path = files[0]
    meta_ = metadata(path)
    available = meta_["encoders"]
    if encoders is None:
        names = list(available)
    else:
        names = [encoders] if isinstance(encoders, str) else list(encoders)
        if not names:
            raise EmbedderError("no encoders asked for")
        names = resolve_encoders(names, available, path)
    columns = [available[n]["column"] for n in names]
    order = [available[n]["order_column"] for n in names if "order_column" in available[n]]
    missing = [c for c in (*META_COLUMNS, *columns, *order) if c not in meta_["columns"]]
    if missing:
        raise EmbedderError(f"{path}: column(s) {', '.join(missing)} missing from the file")
    try:
        table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=[*META_COLUMNS, *columns, *order])
    except Exception as e:
        raise EmbedderError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    blocks = [matrix(table.column(col), int(available[name].get("dim") or 0), f"{path}: column {col!r}")
              for name, col in zip(names, columns)]
    X = np.ascontiguousarray(np.hstack(blocks) if len(blocks) > 1 else blocks[0], dtype=np.float32)
    meta = pd.DataFrame({c: table.column(c).to_numpy(zero_copy_only=False) for c in (*META_COLUMNS, *order)})
    meta["role"] = meta["role"].astype(str)
    meta["text"] = meta["text"].astype(str)
    return X, meta
