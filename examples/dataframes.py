"""features.parquet in dataframe tools: pandas, polars and DuckDB (each optional).

The vector columns are fixed-size float32 lists, which every Arrow-based tool reads as arrays.
Vectors are unit length, so cosine similarity is a plain dot product, which DuckDB computes in
SQL with `list_dot_product` (or `array_inner_product` once cast to a fixed-size ARRAY).

Usage:
    embed encode examples/qa_corpus.txt
    python examples/dataframes.py [OUT_DIR] ["query text"]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("examples/qa_corpus.embed")


def with_pandas(path: Path, column: str) -> None:
    try:
        import pandas as pd
    except ImportError:
        print("pandas: not installed (pip install pandas), skipped")
        return
    df = pd.read_parquet(path)
    X = np.stack(df[column].to_numpy())  # each cell is a numpy array
    print(f"pandas: {len(df)} rows; {column} → matrix {X.shape} {X.dtype}")
    print(df.groupby("role").size().to_string(header=False))


def with_polars(path: Path, column: str) -> None:
    try:
        import polars as pl
    except ImportError:
        print("polars: not installed (pip install polars), skipped")
        return
    df = pl.read_parquet(path)
    X = df[column].to_numpy()  # a fixed-size list column comes back as an (n, dim) array
    print(f"polars: {df.height} rows; {column} is {df.schema[column]} → {X.shape}")
    lengths = df.group_by("role").agg(pl.col("text").str.len_chars().mean().alias("mean_chars")).sort("role")
    print(lengths)


def with_duckdb(path: Path, name: str, column: str, dim: int, model_dir: Path | None, text: str) -> None:
    try:
        import duckdb
    except ImportError:
        print("duckdb: not installed (pip install duckdb), skipped")
        return
    con = duckdb.connect()
    print("duckdb:", con.execute(f"SELECT role, count(*) AS n FROM '{path}' GROUP BY role ORDER BY role").fetchall())
    # nearest neighbours of the first question, entirely in SQL
    sql = f"""
        WITH q AS (SELECT id, text, {column} AS v FROM '{path}' WHERE role = 'question' ORDER BY id LIMIT 1)
        SELECT f.id, f.role, round(list_dot_product(f.{column}::FLOAT[], q.v::FLOAT[]), 3) AS score, f.text
        FROM '{path}' f, q WHERE f.id <> q.id
        ORDER BY score DESC LIMIT 5"""
    first = con.execute(f"SELECT text FROM '{path}' WHERE role = 'question' ORDER BY id LIMIT 1").fetchall()[0][0]
    print(f"duckdb: nearest to {first!r}:")
    for row in con.execute(sql).fetchall():
        print("   ", row)
    if model_dir is None:
        return
    # a new text: encode it with the model, pass the vector as a parameter, rank in SQL
    try:
        import embedder
        model = embedder.load(model_dir, device="cpu")
    except Exception as e:  # the model folder may have moved; the rest of the example still ran
        print(f"duckdb: cannot load the model ({e}); skipped the free-text query")
        return
    v = model.encode([text], encoder=name)[0].tolist()
    rows = con.execute(f"""
        SELECT id, role, round(array_inner_product({column}::FLOAT[{dim}], $v::FLOAT[{dim}]), 3) AS score, text
        FROM '{path}' ORDER BY score DESC LIMIT 5""", {"v": v}).fetchall()
    print(f"duckdb: nearest to {text!r}:")
    for row in rows:
        print("   ", row)


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    text = argv[2] if len(argv) > 2 else "Where can I fish by the river?"
    path = out_dir / "features.parquet"
    if not path.is_file():
        print(f"error: {path} not found; run `embed encode examples/qa_corpus.txt` first "
              "(or pass its output folder)", file=sys.stderr)
        return 1
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(path).metadata[b"embedder"])
    name, info = next(iter(meta["encoders"].items()))
    column, dim = info["column"], int(info["dim"])
    manifest = out_dir / "embed.json"
    model_dir = None
    if manifest.is_file():
        ref = Path(json.loads(manifest.read_text())["model"])
        model_dir = ref if ref.is_absolute() else out_dir / ref
    print(f"{path}: encoder {name} in column {column} ({dim}-d, unit length)\n")
    with_pandas(path, column)
    print()
    with_polars(path, column)
    print()
    with_duckdb(path, name, column, dim, model_dir, text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
