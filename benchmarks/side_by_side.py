"""`Model.encode` and `Model.features` with inference batches side by side (one core each) against
one batch at a time (on all of torch's threads), alternating, in one process.

    python benchmarks/side_by_side.py                # the scale benchmark's model and 100k corpus
    python benchmarks/side_by_side.py --texts 5000 --repeats 3

Why: a recurrent encoder's per-step matrix products are small; on a few cores, whole batches on a
core each may beat every batch shared between the cores. The machine is shared and noisy, so the
two ways alternate and the medians are compared.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out" / "scale"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=OUT / "model")
    ap.add_argument("--corpus", type=Path, default=OUT / "corpus-100000.tsv",
                    help="A .tsv corpus (text in the last column), e.g. from benchmarks/scale_corpus.py.")
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import embedder

    model = embedder.load(args.model, device="cpu")
    with open(args.corpus, encoding="utf-8") as f:
        texts = [line.rstrip("\n").split("\t")[-1] for _, line in zip(range(args.texts), f)]
    ids = {e: model.tokens(texts, e) for e in model.encoders}
    ways = {"side by side": None, "one at a time": 1}
    seconds: dict[tuple[str, bool], list[float]] = {(w, o): [] for w in ways for o in (False, True)}
    for _ in range(args.repeats):
        for way, order in seconds:
            start = time.perf_counter()
            for e in model.encoders:
                model.features_of_tokens(ids[e], e, order=order, threads=ways[way])
            seconds[(way, order)].append(time.perf_counter() - start)
    rate = {k: len(texts) / float(np.median(v)) for k, v in seconds.items()}
    for (way, order), r in rate.items():
        print(f"{way:14s} {'features' if order else 'encode':8s} {r:8,.0f} texts/s (all encoders, median of {args.repeats})")
    for order, name in ((False, "encode"), (True, "features")):
        print(f"{name}: side by side / one at a time = {rate[('side by side', order)] / rate[('one at a time', order)]:.2f}")


if __name__ == "__main__":
    main()
