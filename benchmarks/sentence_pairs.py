"""Sentence-pair tasks without a teacher: the encoders against TF-IDF + SVD fitted on the same text.

    pip install -e ".[bench]"
    python benchmarks/sentence_pairs.py --json /tmp/pairs.json
    python benchmarks/sentence_pairs.py --as-pairs      # the training pairs given as two-line dialogues

Why: held out from this project (SICK-style relatedness and entailment, the encoders trained on
the tasks' own training sentences and nothing else), the encoders without a teacher trailed a bag
of words fitted on the same text, while on `benchmarks/quality.py`'s STS figures (trained on
question/answer text) they are above it. This puts the encoders in that setting on data the
project has (../shared/data/sts), to see why and to measure what fixes it:

- the training text is the task's own: every sentence of STS 2015 train + val, each as a line
  of its own (as a user with a file of sentences, not dialogues, would give them); with
  `--as-pairs`, each scored pair as a two-line dialogue instead;
- relatedness: Pearson on STS 2015 test (its scored rows) of the cosine, and of a ridge
  regression on the pair features [u, v, |u-v|, u*v] fitted on the train + val pairs (what the
  held-out "relatedness" measured);
- graded classes, the entailment-like task: the same pair features, a logistic regression
  predicting low (< 2), middle or high (>= 4) similarity, accuracy on test (the project has no
  entailment data; these three grades stand in for SICK's three labels);
- the same for the two encoders side by side (what `load_features` gives by default), for TF-IDF
  + SVD fitted on the same sentences, and for two parts of the BiRNN alone: the mean of its
  skip-gram word vectors, and of its input word vectors (what the RNN reads).
- `--set ENCODER.FIELD=VALUE` trains with one config field changed, e.g.
  `--set seq2seq.self_views=false` for the encoders as they were before stretches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from overrides import override  # noqa: E402
from quality import BOTH, DATA, Cached, pair_features, read_sts, sts, sts_regression, sts_rows, sts_train_rows  # noqa: E402

LOW, HIGH = 2.0, 4.0


def grades(scores: np.ndarray) -> np.ndarray:
    return np.digitize(scores, [LOW, HIGH])


def graded_classes(train_df, test_df, method) -> dict:
    """Accuracy of a logistic regression on pair features predicting low / middle / high."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    clf.fit(pair_features(method(train_df["a"]), method(train_df["b"])), grades(train_df["score"].to_numpy()))
    pred = clf.predict(pair_features(method(test_df["a"]), method(test_df["b"])))
    y = grades(test_df["score"].to_numpy())
    return {"accuracy": float(np.mean(pred == y)), "majority": float(np.bincount(y).max() / len(y))}


def training_text(folder: Path, as_pairs: bool) -> tuple[Path, list[str]]:
    """STS 2015 train + val sentences as a corpus file (never the test file)."""
    import pandas as pd

    df = pd.concat([read_sts("train"), read_sts("val")])
    pairs = [(a, b) for a, b in zip(df["a"], df["b"]) if a and b]
    path = folder / "sentences.txt"
    if as_pairs:
        body = "".join(f"{a}\n{b}\n\n" for a, b in pairs)
        texts = list(dict.fromkeys(t for p in pairs for t in p))
    else:
        texts = list(dict.fromkeys(t for p in pairs for t in p))
        body = "".join(f"{t}\n\n" for t in texts)  # blank line: each sentence its own dialogue
    path.write_text(body, encoding="utf-8")
    return path, texts


def mean_rows(model, table: np.ndarray):
    """Unit mean of `table`'s rows over each text's pieces (specials left out)."""
    from embedder.data.tokenizer import EOS

    def encode(texts):
        out = np.zeros((len(texts), table.shape[1]), np.float32)
        for i, ids in enumerate(model.tokenizer.encode(list(texts), max_len=256)):
            ids = ids[ids > EOS]
            if len(ids):
                out[i] = table[ids].mean(0)
        return out
    return encode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="training batch (the product's default 64)")
    p.add_argument("--encoders", default="seq2seq,skipgram-birnn")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--as-pairs", action="store_true", help="train on the scored pairs as two-line dialogues")
    p.add_argument("--set", action="append", default=[], metavar="ENCODER.FIELD=VALUE",
                   help="train with one config field changed, e.g. skipgram-birnn.self_views=true (experiments)")
    p.add_argument("--model-dir", type=Path, help="keep the trained model here, or reuse the one there")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not all((DATA / "sts" / f"2015.{s}.tsv").exists() for s in ("train", "val", "test")):
        print(f"skipping: {DATA}/sts is not beside the checkout")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    import embedder
    from embedder.evaluation.probes import Baseline

    for change in args.set:
        override(change)
    test_df, train_df = sts_rows(), sts_train_rows()
    info: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="pairs-") as tmp:
        corpus, texts = training_text(Path(tmp), args.as_pairs)
        info["training_texts"] = len(texts)
        model_dir = args.model_dir or Path(tmp) / "model"
        if args.model_dir and (model_dir / "manifest.json").exists():
            model = embedder.load(model_dir)
        else:
            t0 = time.perf_counter()
            model = embedder.train(corpus, out=model_dir, seed=args.seed, epochs=args.epochs, teacher="none",
                                   batch_size=args.batch_size,
                                   encoders=args.encoders.split(","))
            info["train_seconds"] = round(time.perf_counter() - t0, 1)
        torch.set_num_threads(args.threads)
        methods = {name: Cached(lambda t, name=name: model.encode(t, encoder=name), model.dim(name))
                   for name in model.encoders}
        if len(model.encoders) == 2:  # what `load_features` hands a downstream model by default
            parts = [methods[n] for n in model.encoders]
            methods[BOTH] = Cached(lambda t: np.hstack([m(t) for m in parts]), sum(m.dim for m in parts))
        if "skipgram-birnn" in model.encoders:
            birnn = model.encoder("skipgram-birnn")
            methods["birnn: mean skip-gram vector"] = Cached(
                mean_rows(model, birnn.skipgram.detach().numpy()), birnn.cfg.word_dim)
            methods["birnn: mean input vector"] = Cached(
                mean_rows(model, birnn.embedding.weight.detach().numpy()), birnn.cfg.word_dim)
        base = Baseline(texts, 256, args.seed)
        methods["tfidf-svd"] = Cached(base.encode, base.dim)
        results = {}
        for name, m in methods.items():
            results[name] = {"sts_cosine": sts(test_df, m)["pearson"],
                             "sts_regression": sts_regression(train_df, test_df, m)["pearson"],
                             "graded": graded_classes(train_df, test_df, m)["accuracy"]}
            print(f"{name:32s} " + "  ".join(f"{k} {v:.3f}" for k, v in results[name].items()), flush=True)
    info["results"] = results
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
