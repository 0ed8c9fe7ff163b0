"""How long the default `embed train` takes on a corpus of ~30k lines, on this machine's CPU.

    python benchmarks/train_time.py --json /tmp/train_time.json

Why: a user's first run is `embed encode corpus.txt` with the defaults, and the promise is that
it trains in minutes on a laptop-class CPU, not in hours. This builds a ~31k-utterance corpus
from the public data beside the checkout (../shared/data): TREC QA train questions with their
answers and its other candidate sentences, XQuAD questions with the sentences that answer them
and the rest of their paragraphs, and the STS 2015 test sentence pairs as two-line dialogues
(text only: their scores are not read). It trains with every default (both encoders, automatic
epoch count) and reports the wall time of each stage, the epochs chosen and the utterances per
second. Timing only: the quality of these defaults is `benchmarks/quality.py`'s job.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_corpus(folder: Path) -> tuple[list[Path], int]:
    from quality import read_sts, write_training_corpus
    from trecqa import read_split

    files, texts, _ = write_training_corpus(read_split("train"), folder)
    sts = read_sts("test")
    rows = [(a, b) for a, b in zip(sts["a"], sts["b"]) if a and b]
    path = folder / "sts_pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    return [*files, path], len(texts) + 2 * len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found (the public data sits beside the checkout)")
        return 0
    import torch

    import embedder

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        files, lines = write_corpus(Path(tmp))
        skipgram: list[float] = []

        def progress(stage: str, fraction: float) -> None:
            # skip-gram reports at its start and end; the encoders time themselves (`history`)
            if stage == "skip-gram":
                skipgram.append(time.perf_counter())

        t0 = time.perf_counter()
        model = embedder.train(files, Path(tmp) / "model", device="cpu", progress=progress)
        total = time.perf_counter() - t0
    training = model.manifest["training"]
    result = {
        "corpus_lines": lines, "utterances": training["utterances"],
        "threads": args.threads, "cpu": os.cpu_count(), "torch": torch.__version__,
        "total_seconds": round(total, 1),
        "stages_seconds": {**{k: v["seconds"] for k, v in training["history"].items()},
                           "skip-gram": round(skipgram[-1] - skipgram[0], 1)},
        "epochs": {k: v["epochs"] for k, v in training["history"].items()},
        "vocab": len(model.tokenizer),
    }
    result["utterances_per_second"] = round(result["utterances"] / total, 1)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
