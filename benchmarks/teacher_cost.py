"""What the teacher costs as the corpus grows: its vectors' time and the memory they take.

    python benchmarks/teacher_cost.py                        # 10k and 40k utterances, streamed, and 40k in memory
    python benchmarks/teacher_cost.py --sizes 1000000        # on a GPU machine: the 1M figure
    python benchmarks/teacher_cost.py --json /tmp/teacher.json

Why: `--teacher auto` is the default, so every `embed encode` without `--model` on a machine with
the `teacher` extra pays for all-MiniLM-L6-v2's vectors of the corpus before training. A user
with a million lines must not need memory for a million 384-wide vectors (1.5 GB, twice that with
the stretches the distillation adds), and should know the time it takes (it is reported in the
encode summary too).

Each size runs in its own process (`scale_corpus.py --distinct` utterances, a tokenizer trained
on them), timing `teacher_vectors` with a checkpoint folder (the vectors streamed to memory-mapped
files, as training does) and, with `--in-memory`, without one (all held in memory, as before).
Memory is the peak *anonymous* resident set sampled every 50 ms during the teacher stage, less
what the process held before it: the pages of a memory-mapped file are file-backed and the kernel
can drop them, so VmHWM, which counts them, would say nothing about what the stage needs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "teacher"
sys.path.insert(0, str(REPO / "benchmarks"))


def anon_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1e6
    return 0.0


def _child(corpus: Path, streamed: bool, device: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from embedder.data.corpus import read_corpus
    from embedder.data.tokenizer import Tokenizer
    from embedder.training.teacher import MINILM, load_teacher, teacher_vectors

    texts = [u.text for u in read_corpus([corpus])]
    tokenizer = Tokenizer.train(texts, seed=0)
    teacher = load_teacher(MINILM, device)
    teacher.encode(texts[:256])  # warm-up
    before, peak, done = anon_rss_gb(), [anon_rss_gb()], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], anon_rss_gb())

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        t0 = time.perf_counter()
        tv = teacher_vectors(teacher, texts, tokenizer, Path(tmp) if streamed else None, resume=False, progress=None)
        seconds = time.perf_counter() - t0
        done.set()
        watcher.join()
        return {"utterances": len(texts), "streamed": streamed, "device": teacher.device,
                "teacher_texts": tv.cost["texts"], "seconds": round(seconds, 1),
                "texts_per_s": round(tv.cost["texts"] / seconds, 1),
                "anon_rss_before_gb": round(before, 3), "teacher_stage_anon_growth_gb": round(peak[0] - before, 3),
                "vectors_gb_if_held": round((len(texts) + len(tv.extra)) * 384 * 4 / 1e9, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,40000")
    ap.add_argument("--in-memory", default="40000", help="Sizes also run without a checkpoint folder ('' for none).")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from scale_corpus import write_corpus

    OUT.mkdir(parents=True, exist_ok=True)
    runs = []
    jobs = [(int(n), True) for n in args.sizes.split(",")] + [(int(n), False) for n in args.in_memory.split(",") if n]
    for n, streamed in jobs:
        corpus = OUT / f"distinct-{n}.tsv"
        if not corpus.exists():
            write_corpus(corpus, n, distinct=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(int(streamed)), args.device],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(Path(sys.argv[2]), sys.argv[3] == "1", sys.argv[4])))
    else:
        main()
