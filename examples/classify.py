"""Question-or-answer? A quick check of what embedder's vectors carry.

Why: a corpus such as examples/qa_corpus.txt uses the same words in questions and in
answers ("charge", "bank", "pitch" ...), so the words alone say little about the role of an
utterance. If a linear classifier can tell questions from answers using only the sentence
vectors, the encoders have learned something about word order and sentence form, not just
which words occur. A TF-IDF bag-of-words baseline (with the question marks removed, so
punctuation can't give the answer away) shows how far plain word counts get.

Usage:
    embed encode examples/qa_corpus.txt
    python examples/classify.py [OUT_DIR]      # default: examples/qa_corpus.embed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_DIR = Path("examples/qa_corpus.embed")
FOLDS = 5


def load(out_dir: Path) -> tuple[dict[str, np.ndarray], list[str], np.ndarray]:
    """Return ({encoder: vectors}, texts, y) from OUT_DIR/features.parquet.

    With pandas the same file is one line: ``df = pd.read_parquet(out_dir / "features.parquet")``
    (each vector cell is then a numpy array; ``np.stack(df[column])`` makes the matrix).
    """
    table = pq.read_table(out_dir / "features.parquet")
    meta = json.loads((table.schema.metadata or {})[b"embedder"])
    vectors: dict[str, np.ndarray] = {}
    for name, info in meta["encoders"].items():
        column = table.column(info["column"]).combine_chunks()  # FixedSizeList<float32>
        flat = column.flatten().to_numpy(zero_copy_only=False)
        vectors[name] = flat.reshape(len(table), int(info["dim"]))
    texts = table.column("text").to_pylist()
    y = np.array([role == "question" for role in table.column("role").to_pylist()])
    return vectors, texts, y


def score(model: Pipeline, X: object, y: np.ndarray) -> str:
    """Mean ± std accuracy over stratified folds."""
    cv = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0)
    acc = cross_val_score(model, X, y, cv=cv, scoring="accuracy")
    return f"{acc.mean():.3f} ± {acc.std():.3f}"


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    if not (out_dir / "features.parquet").is_file():
        print(
            f"error: {out_dir / 'features.parquet'} not found; "
            f"run `embed encode examples/qa_corpus.txt` first (or pass its output folder)",
            file=sys.stderr,
        )
        return 1

    vectors, texts, y = load(out_dir)
    print(f"{len(y)} utterances: {int(y.sum())} questions, {int((~y).sum())} answers; "
          f"{FOLDS}-fold cross-validated accuracy")

    def logreg() -> Pipeline:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    for name, X in vectors.items():
        print(f"  {name:<24} ({X.shape[1]:>4}-d)  {score(logreg(), X, y)}")
    X_all = np.hstack(list(vectors.values()))  # the same as above when there is one encoder
    print(f"  {'all encoders':<24} ({X_all.shape[1]:>4}-d)  {score(logreg(), X_all, y)}")

    no_qmark = [t.replace("?", "") for t in texts]
    tfidf = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=2000))
    print(f"  {'TF-IDF baseline (no ?)':<24} {'':>7}  {score(tfidf, no_qmark, y)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
