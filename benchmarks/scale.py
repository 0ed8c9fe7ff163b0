"""`embed encode` at 100k and 1M utterances: memory, throughput, and the large index's recall.

    python benchmarks/scale.py                          # 100k and 1M (about 25 minutes on 2 cores)
    python benchmarks/scale.py --sizes 100000 --json /tmp/scale.json   # a quicker look
    python benchmarks/scale.py --sizes 1000000 --distinct  # no text twice: the index's harder test
    python benchmarks/scale.py --sizes 1000000 --long      # two STS sentences an utterance: harder still

Why: a user with millions of utterances must not need more memory than one with thousands, must
get the neighbours an exact search would give, and should lose little speed to writing files.

What is measured, each `embed encode` in its own process (peak RSS as that process's VmHWM, so
nothing the benchmark itself holds is counted), with a model trained beforehand (`--model`),
both encoders:
- wall time and utterances/s of the whole command (process start, counting pass, encoding,
  Parquet and vector shards, index training, filling and tuning), against `Model.encode` on the
  same encoders, in this process, on 20k of the corpus's texts in batches of 256: the rate with no
  files at all; and against `Model.features`, which also computes the word-order scores that
  `embed encode` writes beside the vectors (the same model work as the command);
- peak RSS of the command, at each size;
- at the largest size, for each encoder: recall@10 of the index `embed encode` chose, at the
  settings it tuned, against exact search, tie-aware (a returned neighbour counts when its exact
  score reaches the 10th exact score, since the corpus repeats texts), and queries/s of both side
  by side on the same 422 queries (every XQuAD sentence no dialogue uses), all in one batch;
  exact search is the faster of FAISS `IndexFlatIP` over every vector in memory and numpy's
  matrix product over the vector files (both batched, which favours exact search; the index
  and numpy each the median of three passes, the index after a warm-up search);
- and the first pass over those queries from a cold page cache (the vector files' pages dropped
  with `posix_fadvise(DONTNEED)`), and again once the read-ahead `Collection` starts when it
  opens an index has finished (its time too);
- query-time peak RSS: a fresh process that opens the collection (`Collection`) and answers the
  same 422 queries one `query` call at a time, as `embed query` and the service do.

Corpora come from `benchmarks/scale_corpus.py` (dialogues drawn from ~28k distinct public
utterances; with `--distinct`, a million different ones, each lengthened by a stretch of
another); the model from `embed train benchmarks/out/scale/base.tsv -o benchmarks/out/scale/model`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "scale"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def peak_rss_gb() -> float:
    """This process's own peak RSS: VmHWM, which starts afresh at exec. (`ru_maxrss` does not:
    the kernel carries the pre-exec memory's peak into it, so a child spawned by a large parent
    reports at least the parent's size; an earlier run of this benchmark read 1.69 GB that way
    for a query process whose own peak was 0.61 GB.)"""
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) * 1024 / 1e9, 3)
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_gpu_gb() -> float | None:
    """The most GPU memory torch held at once in this process (None where CUDA never started)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 1e9, 3)


def run_measured(args: list[str]) -> dict:
    """Run this file's child mode (`--embed ARGS`: the CLI in-process, or `--query-rss OUT`); its
    wall seconds and its own peak RSS, which it writes to a file when it exits."""
    OUT.mkdir(parents=True, exist_ok=True)
    hwm = OUT / ".hwm"
    hwm.unlink(missing_ok=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], cwd=REPO, stdout=subprocess.PIPE,
                          env={**os.environ, "SCALE_HWM_FILE": str(hwm)})
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed")
    return {"seconds": round(seconds, 1), **json.loads(hwm.read_text()), "stdout": proc.stdout.decode()}


def _child(args: list[str]) -> None:
    """Child modes: record the peak RSS at exit, then run the CLI or the query loop."""
    import atexit
    import runpy

    atexit.register(lambda: Path(os.environ["SCALE_HWM_FILE"]).write_text(json.dumps(
        {"peak_rss_gb": peak_rss_gb(), "peak_gpu_gb": peak_gpu_gb()})))
    if args[0] == "--query-rss":
        query_rss(Path(args[1]), outside_queries())
    else:
        sys.argv = ["embed", *args[1:]]
        runpy.run_module("cli.main", run_name="__main__")


def outside_queries(n: int = 1000) -> list[str]:
    """Sentences of XQuAD paragraphs that no corpus dialogue uses: new text to look up."""
    from scale_corpus import DATA, base_dialogues

    used = {t for pair in base_dialogues() for t in pair}
    found: list[str] = []
    for article in json.loads((DATA / "xquad" / "xquad.en.json").read_text(encoding="utf-8"))["data"]:
        for p in article["paragraphs"]:
            for s in re.split(r"(?<=[.!?])\s+", p["context"]):
                s = " ".join(s.split())
                if len(s.split()) >= 4 and s not in used and s not in found:
                    found.append(s)
    return found[:n]


def model_rate(model_dir: Path, corpus: Path, encoders: list[str], n: int = 20000,
               passes: int = 3) -> tuple[float, float]:
    """Utterances/s of `Model.encode` with every encoder, on n texts of the corpus (the device's batches),
    and of `Model.features` (vectors and word-order scores: what `embed encode` computes); the
    median of `passes` alternating passes (one pass read 6,258-6,784/s across runs)."""
    import embedder

    texts = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            texts += line.rstrip("\n").split("\t")
            if len(texts) >= n:
                break
    model = embedder.load(model_dir)
    for e in encoders:
        model.encode(texts[:512], encoder=e)  # warm-up
    encode_s, features_s = [], []
    for _ in range(passes):
        t = time.perf_counter()
        for e in encoders:
            model.encode(texts, encoder=e)  # the device's batches: 256 on the CPU
        encode_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        for e in encoders:
            model.features(texts, encoder=e)
        features_s.append(time.perf_counter() - t)
    return len(texts) / statistics.median(encode_s), len(texts) / statistics.median(features_s)


def index_figures(out_dir: Path, queries: list[str]) -> dict:
    """Recall@10 and queries/s of the chosen index against exact search, per encoder."""
    import faiss

    from embedder.features import load_features
    from embedder.storage import index
    from embedder.storage.collection import Collection

    c = Collection(out_dir)
    figures = {}
    for name in c.encoders:
        info = c.manifest["encoders"][name]
        Q = c.model.encode(queries, encoder=name)
        idx = c.index(name)
        cold = None
        if idx.store is not None:  # the first pass from a cold page cache, then with the read-ahead done
            idx.store.evict()
            t = time.perf_counter()
            idx.search(Q, 10)
            cold_evicted = time.perf_counter() - t
            idx.store.evict()
            t = time.perf_counter()
            reader = idx.store.prefetch()  # what `Collection` starts when it opens an index
            if reader is not None:
                reader.join()
            read_ahead_s = time.perf_counter() - t
            t = time.perf_counter()
            idx.search(Q, 10)
            cold = {"cold_queries_per_s": round(len(Q) / cold_evicted, 1),
                    "after_read_ahead_queries_per_s": round(len(Q) / (time.perf_counter() - t), 1),
                    "read_ahead_seconds": round(read_ahead_s, 2) if reader is not None else None}
        idx.search(Q[:50], 10)  # first touches of the index and the vector files, as exact's are below
        approx_s, I = timed(lambda: idx.search(Q, 10)[1])
        # exact search over every row (copies included), all in memory here only, one batch:
        # FAISS's flat index, and numpy's matrix product in blocks; the faster is the baseline
        X = load_features(out_dir, encoders=name)[0]
        everything = ArrayStore(X)
        flat = faiss.IndexFlatIP(info["dim"])
        flat.add(X)
        t = time.perf_counter()
        exact_D, _ = flat.search(Q, 10)
        faiss_exact_s = time.perf_counter() - t
        del flat
        numpy_s, _ = timed(lambda: index.exact_topk(everything, Q, 10))
        exact_s = min(faiss_exact_s, numpy_s)
        figures[name] = {
            "index_factory": info["index_factory"], "settings": info.get("search"),
            "distinct_vectors": info.get("distinct_vectors"),
            "recall_at_10": round(index.recall(everything, Q, I, exact_D), 4),
            "queries_per_s": round(len(Q) / approx_s, 1), "exact_queries_per_s": round(len(Q) / exact_s, 1),
            "faiss_flat_queries_per_s": round(len(Q) / faiss_exact_s, 1),
            "speedup": round(exact_s / approx_s, 1),
            **({"cold_speedup": round(exact_s * cold["cold_queries_per_s"] / len(Q), 1), **cold} if cold else {}),
        }
    return figures


def timed(run, repeats: int = 3):
    """Median seconds of `repeats` calls, and the last call's result: one pass of a few tenths of
    a second read 1,256 and 1,726 queries/s for the same index and settings minutes apart."""
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds), result


class ArrayStore:
    """Rows in memory, id = row, with the two methods exact search and recall use."""

    def __init__(self, X):
        self.X = X

    def get(self, ids):
        return self.X[ids]

    def chunks(self, rows: int = 8192):
        import numpy as np
        for a in range(0, len(self.X), rows):
            yield np.arange(a, min(a + rows, len(self.X))), self.X[a:a + rows]


def query_rss(out_dir: Path, queries: list[str]) -> None:
    """Child mode: open the collection, answer each query one `query` call at a time."""
    from embedder.storage.collection import Collection

    c = Collection(out_dir)
    for name in c.encoders:
        for q in queries:
            c.query([q], k=10, encoder=name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="Comma-separated corpus sizes (utterances).")
    ap.add_argument("--model", type=Path, default=OUT / "model")
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    ap.add_argument("--keep", action="store_true", help="Keep the output folders (they are large).")
    ap.add_argument("--distinct", action="store_true",
                    help="Corpora with no utterance twice (scale_corpus.py --distinct): every vector is indexed.")
    ap.add_argument("--long", action="store_true",
                    help="Corpora of long utterances, two STS sentences joined (about 25 words; ../shared/data).")
    args = ap.parse_args()
    from scale_corpus import write_corpus

    if not (args.model / "manifest.json").exists():
        raise SystemExit(f"{args.model}: no model; train one: python benchmarks/scale_corpus.py base -o "
                         f"{OUT}/base.tsv && embed train {OUT}/base.tsv -o {args.model}")
    sizes = [int(s) for s in args.sizes.split(",")]
    import embedder

    encoders = list(embedder.load(args.model).encoders)
    results: dict = {"encoders": encoders, "runs": []}
    queries = outside_queries()
    for n in sizes:
        corpus = OUT / (f"long-{n}.tsv" if args.long else f"distinct-{n}.tsv" if args.distinct else f"corpus-{n}.tsv")
        if not corpus.exists():
            write_corpus(corpus, n, distinct=args.distinct, long=args.long)
        out_dir = corpus.with_suffix(".embed")
        rate, features_rate = model_rate(args.model, corpus, encoders)
        run = run_measured(["--embed", "encode", str(corpus), "--model", str(args.model),
                            "-o", str(out_dir), "--quiet", "--json"])
        manifest = json.loads(run.pop("stdout"))
        rows = manifest["rows"]
        entry = {"utterances": rows, **run, "utterances_per_s": round(rows / run["seconds"], 1),
                 "model_encode_per_s": round(rate, 1), "ratio_to_model_encode": round(rows / run["seconds"] / rate, 3),
                 "model_features_per_s": round(features_rate, 1),
                 "ratio_to_model_features": round(rows / run["seconds"] / features_rate, 3),
                 "index": {e: manifest["encoders"][e]["index_factory"] for e in encoders}}
        if n == max(sizes) and n > 100_000:  # an approximate index (exact search below that)
            entry["search"] = index_figures(out_dir, queries)
            entry["query_peak_rss_gb"] = run_measured(["--query-rss", str(out_dir)])["peak_rss_gb"]
        results["runs"].append(entry)
        print(json.dumps(entry), flush=True)
        if not args.keep:
            import shutil
            shutil.rmtree(out_dir, ignore_errors=True)
    if len(results["runs"]) > 1:
        a, b = results["runs"][0], results["runs"][-1]
        results["rss_growth"] = round(b["peak_rss_gb"] / a["peak_rss_gb"] - 1, 3)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--embed", "--query-rss"):
        _child(sys.argv[1:])
    else:
        main()
