"""Skip-gram speed and quality: embedder's trainer against gensim, same corpus and settings.

    python benchmarks/skipgram.py                 # the recorded run: BBC x4, 5 epochs
    python benchmarks/skipgram.py --repeats 1 --epochs 1 --no-torch   # a quick look

Corpus: the BBC news file in ../shared/data/bbc (relative to the repo root), repeated
`--repeats` times and cut into 1000-word sentences (gensim truncates sentences at 10000
words, so both trainers get the same short ones). Speed is raw corpus words x epochs / wall
time of training alone (vocabulary building and numba compilation are timed apart). Quality
is WordSim-353 Spearman correlation of cosine similarity, on the pairs both models know.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedder.encoders.skipgram import SkipGramConfig, train_skipgram  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "bbc" / "bbc_news_preprocessed.txt"
SENTENCE_WORDS = 1000


def build_vocab(sentences: Iterable[list[str]], min_count: int) -> tuple[list[str], np.ndarray]:
    """Words seen at least `min_count` times, most frequent first (ties: first seen first), the
    order word2vec tools use; the product counts SentencePiece ids instead."""
    counter: Counter[str] = Counter()
    for sentence in sentences:
        counter.update(sentence)
    kept = [(w, c) for w, c in counter.items() if c >= min_count]
    kept.sort(key=lambda wc: -wc[1])  # stable: ties keep first-seen order
    return [w for w, _ in kept], np.array([c for _, c in kept], dtype=np.int64)


def load_corpus(repeats: int, raw_lines: bool) -> list[list[str]] | None:
    """The BBC file as 1000-word sentences, repeated; None (with a message) if it is absent.

    With `raw_lines`, the file's own 5 lines (~95k words each) instead: gensim then silently
    trains only the first 10000 words of each, which inflates its words/s about 9x.
    """
    if not DATA.exists():
        print(f"skipping: {DATA} not found (the shared data folder is not beside the checkout)")
        return None
    text = DATA.read_text(encoding="utf-8")
    if raw_lines:
        return [line.split() for line in text.splitlines() if line.strip()] * repeats
    words = text.split()
    chunks = [words[i : i + SENTENCE_WORDS] for i in range(0, len(words), SENTENCE_WORDS)]
    return chunks * repeats


def wordsim_pairs() -> list[tuple[str, str, float]]:
    """WordSim-353 as shipped with gensim: (word, word, human score)."""
    from gensim.test.utils import datapath

    pairs = []
    with open(datapath("wordsim353.tsv"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            a, b, score = line.rstrip("\n").split("\t")[:3]
            pairs.append((a.lower(), b.lower(), float(score)))
    return pairs


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties), without scipy."""

    def ranks(v: list[float]) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        order = np.argsort(a, kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a))
        for value in np.unique(a):  # average ranks of ties
            tied = a == value
            r[tied] = r[tied].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def wordsim(tables: dict[str, tuple[dict[str, int], np.ndarray]]) -> tuple[dict[str, float], int]:
    """Spearman of each model on the WordSim-353 pairs that every model has both words of."""
    pairs = [p for p in wordsim_pairs() if all(p[0] in ix and p[1] in ix for ix, _ in tables.values())]
    out = {}
    for name, (index, vectors) in tables.items():
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        sims = [float(unit[index[a]] @ unit[index[b]]) for a, b, _ in pairs]
        out[name] = spearman(sims, [s for _, _, s in pairs])
    return out, len(pairs)


def run_gensim(sentences: list[list[str]], cfg: SkipGramConfig, workers: int):
    from gensim.models import Word2Vec

    model = Word2Vec(
        vector_size=cfg.dim, window=cfg.window, negative=cfg.negatives, sample=cfg.sample,
        min_count=cfg.min_count, sg=1, hs=0, workers=workers, alpha=cfg.lr,
        min_alpha=cfg.min_lr, seed=cfg.seed + 1,
    )  # fmt: skip
    model.build_vocab(sentences)
    start = time.perf_counter()
    trained, _raw = model.train(sentences, total_examples=len(sentences), epochs=cfg.epochs)
    seconds = time.perf_counter() - start
    print(f"  (gensim trained on {trained:,} words after subsampling and truncation)")
    kv = model.wv
    return seconds, ({w: i for i, w in enumerate(kv.index_to_key)}, kv.vectors)


def run_ours(sentences: list[list[str]], cfg: SkipGramConfig, backend: str):
    words, counts = build_vocab(sentences, cfg.min_count)
    index = {w: i for i, w in enumerate(words)}
    ids = [np.array([index[w] for w in s if w in index], dtype=np.int32) for s in sentences]
    start = time.perf_counter()
    vectors = train_skipgram(ids, counts, cfg, device="cpu", backend=backend)
    seconds = time.perf_counter() - start
    return seconds, (index, vectors)


def warm_up(cfg: SkipGramConfig) -> float:
    """Compile (or load from numba's cache) the kernel on a tiny corpus; returns seconds."""
    start = time.perf_counter()
    tiny = [np.arange(50, dtype=np.int32) % 10]
    train_skipgram(tiny, np.full(10, 5, dtype=np.int64), SkipGramConfig(dim=cfg.dim, epochs=1))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4, help="copies of the BBC file (default 4)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores (both trainers)")
    parser.add_argument("--no-gensim", action="store_true", help="skip the gensim run")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch-on-CPU run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run gensim and ours alternately this many times; keep each one's "
                             "fastest (the machine is shared and noisy)")  # fmt: skip
    parser.add_argument("--raw-lines", action="store_true",
                        help="feed the file's raw ~95k-word lines (gensim truncates them at 10k)")
    args = parser.parse_args()

    sentences = load_corpus(args.repeats, args.raw_lines)
    if sentences is None:
        return
    cores = args.threads or len(os.sched_getaffinity(0))
    cfg = SkipGramConfig(epochs=args.epochs, threads=cores)
    n_words = sum(len(s) for s in sentences)
    print(f"corpus: {n_words:,} words ({args.repeats} x BBC), {cores} threads, {cfg}")
    print(f"numba compile/cache load: {warm_up(cfg):.2f}s")

    tables: dict[str, tuple[dict[str, int], np.ndarray]] = {}
    speed: dict[str, float] = {}
    runs = [("embedder-numba", lambda: run_ours(sentences, cfg, "numba"))]
    if not args.no_gensim:
        runs.insert(0, ("gensim", lambda: run_gensim(sentences, cfg, cores)))
    for round_no in range(args.rounds):
        for name, run in runs:
            seconds, table = run()
            rate = n_words * cfg.epochs / seconds
            print(f"round {round_no + 1}: {name:20s} {seconds:7.2f}s  {rate / 1e6:.3f}M words/s")
            if rate > speed.get(name, 0.0):
                speed[name], tables[name] = rate, table
    if not args.no_torch:  # for information: the CUDA code path, run on the CPU
        # one intra-op thread: with two, torch's OpenMP threads spin against each other and
        # the other load on this shared 2-core machine, and ran 5-20x slower
        one_thread = dataclasses.replace(cfg, threads=1)
        seconds, tables["embedder-torch-cpu"] = run_ours(sentences, one_thread, "torch")
        speed["embedder-torch-cpu"] = n_words * cfg.epochs / seconds
        print(f"{'embedder-torch-cpu':29s} {seconds:7.2f}s  {speed['embedder-torch-cpu'] / 1e6:.3f}M words/s")

    print("\nbest of each:")
    for name, rate in speed.items():
        ratio = f"  x{rate / speed['gensim']:.2f} of gensim" if "gensim" in speed else ""
        print(f"  {name:20s} {rate / 1e6:.3f}M words/s{ratio}")

    scores, n_pairs = wordsim(tables)
    print(f"\nWordSim-353 Spearman on the {n_pairs} pairs all models know:")
    for name in tables:
        line = f"  {name:20s} {scores[name]:.3f}"
        if "gensim" in scores and name != "gensim":
            line += f"  ({scores[name] - scores['gensim']:+.3f} vs gensim)"
        print(line)


if __name__ == "__main__":
    main()
