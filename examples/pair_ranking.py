"""Answer ranking: does this answer belong to this question? A classifier on pair features.

Each question that is followed by an answer in its dialogue gives one positive pair (question,
its answer) and one negative pair (question, a random other answer). A pair of vectors u, v
becomes the features [u, v, |u − v|, u * v] (the InferSent recipe), and a logistic regression is
scored by cross-validated ROC AUC, whole dialogues kept in one fold, so a question is never
judged by a classifier that saw it. Per encoder and for all encoders concatenated, plus the
plain cosine u·v as a no-training reference.

Usage:
    embed encode examples/qa_corpus.txt
    python examples/pair_ranking.py [OUT_DIR]      # default: examples/qa_corpus.embed
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from embedder.errors import EmbedderError
from embedder.features import encoder_columns, load_features

DEFAULT_DIR = Path("examples/qa_corpus.embed")
FOLDS = 5


def pairs(meta, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(question rows, answer rows, labels, dialogue of each pair): a positive and a negative per question."""
    rng = np.random.default_rng(seed)
    at = {(d, p): i for i, (d, p) in enumerate(zip(meta["dialogue"], meta["position"]))}
    roles = meta["role"].to_numpy()
    answers = np.flatnonzero(roles == "answer")
    q, a, y, g = [], [], [], []
    for i in np.flatnonzero(roles == "question"):
        d, p = meta["dialogue"].iat[i], meta["position"].iat[i]
        j = at.get((d, p + 1))
        if j is None or roles[j] != "answer":
            continue
        others = answers[meta["dialogue"].to_numpy()[answers] != d]
        if not len(others):
            continue
        q += [i, i]
        a += [j, int(rng.choice(others))]
        y += [1, 0]
        g += [d, d]
    return np.array(q), np.array(a), np.array(y), np.array(g)


def pair_features(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    return np.hstack([U, V, np.abs(U - V), U * V])


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_DIR
    try:
        names = list(encoder_columns(out_dir))
        _, meta = load_features(out_dir, encoders=names[:1])
    except EmbedderError as e:
        print(f"error: {e}\n(run `embed encode examples/qa_corpus.txt` first, or pass its output folder)",
              file=sys.stderr)
        return 1
    q, a, y, groups = pairs(meta)
    if len(np.unique(groups)) < FOLDS:
        print(f"error: only {len(np.unique(groups))} dialogues with a question and its answer; "
              f"need at least {FOLDS}", file=sys.stderr)
        return 1
    print(f"{len(y) // 2} questions, each with its answer and a random other answer; "
          f"{FOLDS}-fold cross-validated ROC AUC (dialogues grouped)")
    # each encoder alone, then all of them side by side (load_features' default; on TREC QA, with
    # this classifier, its MAP was as good as the better encoder's or better: benchmarks/RESULTS.md)
    choices = [[n] for n in names] + ([names] if len(names) > 1 else [])
    for chosen in choices:
        name = chosen[0] if len(chosen) == 1 else "all encoders"
        X, _ = load_features(out_dir, encoders=chosen)
        F = pair_features(X[q], X[a])
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
        auc = cross_val_score(clf, F, y, groups=groups, cv=GroupKFold(n_splits=FOLDS), scoring="roc_auc")
        cosine = roc_auc_score(y, np.sum(X[q] * X[a], axis=1))
        print(f"  {name:<16} ({F.shape[1]:>5} features)  classifier {auc.mean():.3f} ± {auc.std():.3f}"
              f"   cosine alone {cosine:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
