"""Generated Q/A corpora of any size for the scale benchmarks, drawn from public text.

    python benchmarks/scale_corpus.py base -o benchmarks/out/scale/base.txt     # the distinct dialogues
    python benchmarks/scale_corpus.py 1000000 -o benchmarks/out/scale/1m.txt    # 1M utterances
    python benchmarks/scale_corpus.py 1000000 --distinct -o ...                  # 1M, no text twice

The distinct dialogues are question → answer pairs from `../shared/data` (TREC QA's questions with
each correct sentence, XQuAD's questions with the sentence of their paragraph that holds the
answer, and STS sentence pairs as a statement and its reply): about 20k distinct utterances. A
corpus of N utterances repeats randomly chosen dialogues (seeded), as a large real corpus repeats
its common questions, so exact search has ties, which the recall counts allow for.

`--distinct` writes no utterance twice: each is a base utterance followed by a stretch of three to
eight words of another, so an index must tell a million different vectors apart (a harder test
of an approximate index than a corpus whose copies collapse into one entry).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _clean(t: str) -> str:
    return " ".join(t.replace("\t", " ").split())


def base_dialogues() -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for split in ("train", "dev"):
        with open(DATA / "trecqa" / f"{split}.csv", newline="", encoding="utf-8") as f:
            pairs += [(r["qtext"], r["atext"]) for r in csv.DictReader(f) if r["label"] == "1"]
    for article in json.loads((DATA / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))["data"]:
        for p in article["paragraphs"]:
            ctx = p["context"]
            bounds = [0] + [m.end() for m in re.finditer(r"(?<=[.!?])\s+", ctx)] + [len(ctx)]
            for qa in p["qas"]:
                start = qa["answers"][0]["answer_start"]
                for a, b in zip(bounds, bounds[1:]):
                    if a <= start < b:
                        pairs.append((qa["question"], ctx[a:b]))
                        break
    for name in ("2015.train.tsv", "2015.val.tsv", "2015.test.tsv"):
        with open(DATA / "sts" / name, encoding="utf-8") as f:
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if len(cols) >= 3:
                    pairs.append((cols[1], cols[2]))
    seen, out = set(), []
    for q, a in pairs:
        q, a = _clean(q), _clean(a)
        if q and a and (q, a) not in seen:
            seen.add((q, a))
            out.append((q, a))
    return out


def _distinct(base: list[tuple[str, str]], rng: random.Random):
    """Endless dialogues of base dialogues, each side lengthened by a stretch of another utterance,
    none repeated."""
    words = [t.split() for pair in base for t in pair]
    seen: set[str] = set()

    def lengthen(text: str) -> str:
        while True:
            w = words[rng.randrange(len(words))]
            size = rng.randint(3, 8)
            start = rng.randrange(max(1, len(w) - size + 1))
            out = f"{text} {' '.join(w[start:start + size])}"
            if out not in seen:
                seen.add(out)
                return out

    while True:
        q, a = base[rng.randrange(len(base))]
        yield lengthen(q), lengthen(a)


def _long(rng: random.Random):
    """Endless dialogues of long utterances, each two STS sentences joined (about 25 words), as a
    user's paragraphs are longer than the benchmark's questions: the hardest corpus for the index
    seen so far (issue 32)."""
    from quality import read_sts

    sentences = []
    for split in ("train", "test"):
        df = read_sts(split)
        sentences += [str(t) for t in list(df["a"]) + list(df["b"]) if isinstance(t, str) and t.strip()]
    sentences = sorted(set(sentences))
    while True:
        a, b, c, d = (sentences[rng.randrange(len(sentences))] for _ in range(4))
        yield f"{a} {b}", f"{c} {d}"


def write_corpus(path: Path, n_utterances: int | None, seed: int = 0, distinct: bool = False,
                 long: bool = False) -> int:
    """Dialogues as a tab-separated file (question, answer): the base set once, or N utterances
    (with `distinct`, none repeated; with `long`, each two STS sentences joined)."""
    if (distinct or long) and n_utterances is None:
        raise ValueError("--distinct and --long need a number of utterances (their dialogues never run out)")
    base = base_dialogues()
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        if long:
            pairs = _long(rng)
        elif distinct:
            pairs = _distinct(base, rng)
        elif n_utterances is None:
            pairs = iter(base)
        else:
            pairs = (base[rng.randrange(len(base))] for _ in iter(int, 1))
        for q, a in pairs:
            if n_utterances is not None and written >= n_utterances:
                break
            f.write(f"{q}\t{a}\n")
            written += 2
    return written


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size", help="'base' for the distinct dialogues, or a number of utterances")
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--distinct", action="store_true", help="No utterance twice (needs a number).")
    ap.add_argument("--long", action="store_true", help="Two STS sentences an utterance (needs a number).")
    args = ap.parse_args()
    try:
        n = write_corpus(args.output, None if args.size == "base" else int(args.size), args.seed, args.distinct,
                         args.long)
    except ValueError as e:
        ap.error(str(e))
    print(f"{n} utterances → {args.output}")
