"""TREC QA answer ranking: do embedder's encoders rank a question's answer sentences above the
other candidates better than plain TF-IDF?

    python benchmarks/trecqa.py                          # the recorded run (epochs automatic)
    python benchmarks/trecqa.py --epochs 2 --encoders seq2seq --json /tmp/trecqa.json  # quick look

Why: answer-sentence selection is the job the product promises on a user's own Q/A text
(DESIGN.md: vectors that keep word context and keep questions apart from answers). TREC QA
(Wang et al. 2007, Yao et al. 2013 split; ../shared/data/trecqa beside the checkout) gives a
question with a few dozen candidate sentences each, a handful of them correct.

Training corpus, as a user would hand it over: every (question -> correct answer) pair of
train.csv as a two-turn Q/A dialogue (a .tsv), plus, unless `--no-extra-text`, every other
candidate sentence of train.csv as a single-utterance dialogue (a .txt, one line per
dialogue). The extra sentences are on by default because a user gives all the text they
have, and they are 12x the answer text: the skip-gram word vectors and the seq2seq
reconstruction objective both learn words from them. No dev text is trained on.

Evaluation on dev.csv: each question that has at least one correct and one incorrect
candidate ranks its candidates by cosine(question vector, candidate vector); MAP and MRR are
the usual means over those questions. Ties are broken in a fixed random order (seeded), so a
method that scores everything alike gets a random-order score, not the file's order (whose
correct answers often come first). Baselines in the same run: TF-IDF cosine (scikit-learn,
sublinear tf, unigrams + bigrams, fitted on all train + dev text; no BM25) and random order.

Speed: training seconds per encoder from the model manifest (for skipgram-birnn that is the
BiRNN stage; the skip-gram word-vector stage before it is timed apart from the progress
callback and shown as well), and encode throughput on all dev texts after a warm-up call
(best of `--repeats`); the TF-IDF transform likewise, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "trecqa"
ENCODERS = ("seq2seq", "skipgram-birnn")


@dataclass
class Question:
    """One dev question with its candidate sentences and their 0/1 labels."""
    text: str
    candidates: list[str]
    labels: np.ndarray


@dataclass
class Row:
    """One method's line of the results table."""
    method: str
    map: float
    mrr: float
    train_s: float | None = None          # manifest seconds (the encoder's own training loop)
    stage_s: dict[str, float] = field(default_factory=dict)  # wall seconds per progress stage
    encode_per_s: float | None = None
    epochs: int | None = None


# -- data ---------------------------------------------------------------------------------------

def read_split(name: str):
    import pandas as pd

    df = pd.read_csv(DATA / f"{name}.csv", dtype={"qtext": str, "atext": str, "label": int})
    for col in ("qtext", "atext"):
        df[col] = df[col].map(clean)
    return df


def clean(text: str) -> str:
    """One line of text: tabs and line breaks would split a .tsv/.txt record."""
    return " ".join(str(text).split())


def dev_questions(df) -> tuple[list[Question], int]:
    """Dev questions with both a correct and an incorrect candidate; and the total count."""
    kept = []
    for q, group in df.groupby("qtext", sort=False):
        labels = group["label"].to_numpy()
        if 0 < labels.sum() < len(labels):
            kept.append(Question(q, group["atext"].tolist(), labels))
    return kept, df["qtext"].nunique()


def write_corpus(train, folder: Path, extra_text: bool) -> tuple[list[Path], dict[str, int]]:
    """The training corpus files: Q/A pairs (.tsv) and, optionally, the other sentences (.txt)."""
    pos = train[train["label"] == 1]
    tsv = folder / "trecqa_pairs.tsv"
    tsv.write_text("".join(f"{q}\t{a}\n" for q, a in zip(pos["qtext"], pos["atext"])), encoding="utf-8")
    files, counts = [tsv], {"qa_pairs": len(pos), "extra_sentences": 0}
    if extra_text:
        answers = set(pos["atext"])
        extra = [s for s in dict.fromkeys(train.loc[train["label"] == 0, "atext"]) if s not in answers]
        txt = folder / "trecqa_other_sentences.txt"
        txt.write_text("".join(f"{s}\n\n" for s in extra), encoding="utf-8")  # blank line: own dialogue
        files.append(txt)
        counts["extra_sentences"] = len(extra)
    return files, counts


# -- metrics ------------------------------------------------------------------------------------

def ranking(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Candidate indices best first; ties in a random (seeded) order, not the file's order."""
    shuffled = rng.permutation(len(scores))
    return shuffled[np.argsort(-scores[shuffled], kind="stable")]


def average_precision(ranked_labels: np.ndarray) -> float:
    hits = np.flatnonzero(ranked_labels)
    return float(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))


def reciprocal_rank(ranked_labels: np.ndarray) -> float:
    return 1.0 / (int(np.flatnonzero(ranked_labels)[0]) + 1)


def map_mrr(questions: list[Question], scores: list[np.ndarray], seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    aps, rrs = [], []
    for q, s in zip(questions, scores):
        ranked = q.labels[ranking(s, rng)]
        aps.append(average_precision(ranked))
        rrs.append(reciprocal_rank(ranked))
    return float(np.mean(aps)), float(np.mean(rrs))


# -- scoring ------------------------------------------------------------------------------------

def dev_texts(questions: list[Question]) -> list[str]:
    """Every dev text once per appearance: each question, then its candidates."""
    return [t for q in questions for t in [q.text, *q.candidates]]


def cosine_scores(questions: list[Question], vectors: np.ndarray) -> list[np.ndarray]:
    """Per question, cosine of the question row with each candidate row (rows are unit length,
    laid out as `dev_texts` lays them out)."""
    out, i = [], 0
    for q in questions:
        n = len(q.candidates)
        out.append(vectors[i + 1 : i + 1 + n] @ vectors[i])
        i += 1 + n
    return out


def best_rate(fn: Callable[[], object], n_items: int, repeats: int) -> tuple[float, object]:
    """Items per second of `fn` (best of `repeats`, after one warm-up call) and its last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return n_items / best, result


def tfidf_row(train, questions: list[Question], texts: list[str], seed: int, repeats: int) -> Row:
    from sklearn.feature_extraction.text import TfidfVectorizer

    fit_text = list(dict.fromkeys([*train["qtext"], *train["atext"], *texts]))
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit(fit_text)
    rate, X = best_rate(lambda: vec.transform(texts), len(texts), repeats)
    dense_rows = [np.asarray(r.toarray()).ravel() for r in X]  # small: ~1.2k rows
    scores = cosine_scores(questions, np.vstack(dense_rows)) if dense_rows else []
    m, r = map_mrr(questions, scores, seed)
    return Row("TF-IDF (1-2 grams, sublinear tf)", m, r, encode_per_s=rate)


def random_row(questions: list[Question], seed: int) -> Row:
    m, r = map_mrr(questions, [np.zeros(len(q.candidates)) for q in questions], seed)
    return Row("random order", m, r)


class StageClock:
    """A progress callback that notes when each training stage first and last reported."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.perf_counter()
        self.first.setdefault(stage, now)
        self.last[stage] = now

    def seconds(self) -> dict[str, float]:
        return {k: round(self.last[k] - self.first[k], 2) for k in self.first}


def train_model(files: list[Path], out: Path, encoders: list[str], seed: int, epochs: int):
    import embedder

    clock = StageClock()
    t0 = time.perf_counter()
    model = embedder.train([str(f) for f in files], out=out, encoders=encoders, seed=seed,
                           epochs=epochs, progress=clock)
    return model, time.perf_counter() - t0, clock.seconds()


def encoder_rows(model, questions: list[Question], texts: list[str], stages: dict[str, float],
                 seed: int, repeats: int) -> list[Row]:
    rows = []
    for name, hist in model.manifest["training"]["history"].items():
        rate, X = best_rate(lambda: model.encode(texts, encoder=name), len(texts), repeats)
        m, r = map_mrr(questions, cosine_scores(questions, X), seed)
        own = {k: v for k, v in stages.items() if k == name or (name == "skipgram-birnn" and k == "skip-gram")}
        rows.append(Row(name, m, r, train_s=hist["seconds"], stage_s=own, encode_per_s=rate,
                        epochs=hist["epochs"]))
    return rows


# -- output -------------------------------------------------------------------------------------

def table(rows: list[Row]) -> str:
    def num(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    lines = ["| method | MAP | MRR | train s | encode utt/s |", "|---|---|---|---|---|"]
    for row in rows:
        train = num(row.train_s, ".1f")
        if "skip-gram" in row.stage_s:
            train += f" (+ {row.stage_s['skip-gram']:.1f} skip-gram)"
        lines.append(f"| {row.method} | {row.map:.4f} | {row.mrr:.4f} | {train} | {num(row.encode_per_s, ',.0f')} |")
    return "\n".join(lines)


def limit_threads(n: int) -> None:
    """Keep torch at `n` intra-op threads: on a shared 2-core machine, two threads that spin
    against other jobs make torch 5-10x slower."""
    import torch

    torch.set_num_threads(n)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=0, help="0 = the product's automatic count (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    p.add_argument("--no-extra-text", dest="extra_text", action="store_false",
                   help="train on the Q/A pairs only, not the other candidate sentences of train.csv")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; 0 = torch's "
                   "own default, every core)")
    p.add_argument("--repeats", type=int, default=3, help="timed encode calls; the fastest counts")
    p.add_argument("--model-dir", type=Path, help="keep the trained model here (default: a temp folder)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (DATA / "train.csv").exists() or not (DATA / "dev.csv").exists():
        print(f"skipping: {DATA} not found (the shared data folder is not beside the checkout)")
        return 0
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    sys.path.insert(0, str(REPO))
    if args.threads:
        limit_threads(args.threads)

    train, dev = read_split("train"), read_split("dev")
    questions, n_questions = dev_questions(dev)
    texts = dev_texts(questions)
    print(f"dev: {len(questions)} of {n_questions} questions have both a correct and an incorrect "
          f"candidate; {len(texts) - len(questions)} candidates, {len(texts)} texts to encode")

    with tempfile.TemporaryDirectory(prefix="trecqa-") as tmp:
        files, counts = write_corpus(train, Path(tmp), args.extra_text)
        print(f"training corpus: {counts['qa_pairs']} Q/A pairs + {counts['extra_sentences']} other sentences")
        out = args.model_dir or Path(tmp) / "model"
        t0 = time.perf_counter()
        model, train_wall, stages = train_model(files, out, args.encoders, args.seed, args.epochs)
        print(f"trained in {train_wall:.1f} s: {json.dumps(stages)}")
        rows = encoder_rows(model, questions, texts, stages, args.seed, args.repeats)
    rows.append(tfidf_row(train, questions, texts, args.seed, args.repeats))
    rows.append(random_row(questions, args.seed))
    print(table(rows))
    if args.json:
        result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "questions": len(questions), "questions_total": n_questions, "texts": len(texts),
                  "corpus": counts, "train_wall_s": round(train_wall, 2), "stages_s": stages,
                  "total_s": round(time.perf_counter() - t0, 2), "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
