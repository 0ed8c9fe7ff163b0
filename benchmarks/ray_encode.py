"""`embed encode --engine ray` against in-process encoding, side by side, on this machine.

    python benchmarks/ray_encode.py --rows 10000              # the first 10k lines of base.tsv: 20k utterances
    python benchmarks/ray_encode.py --corpus my.txt --model my_model --json /tmp/ray.json

Why: Ray is for going past one machine; on one machine it can only add cost (processes, copies,
a scheduler), so a user needs to know how much, to tell what a cluster would have to win back.

What is measured, in one process, on the same corpus and model (both encoders, CPU):
- `encode_corpus(engine="local")` and `encode_corpus(engine="ray")` end to end (counting pass,
  encoding, Parquet and vector shards, index): utterances/s. The Ray run joins a local cluster
  (`ray.init(num_cpus=<this machine's CPUs>)`) started beforehand and timed apart, so the figure
  holds the actors' start-up (new processes importing torch, each loading the model) but not the
  cluster's.
- The encoding stage alone (the features stream that the shard writer consumes, no files), in
  chunks of 2,048 utterances (Ray's unit of work on CPUs, so the stream has several chunks to
  time): in process with torch's default threads and with one thread; on Ray with one actor per
  CPU and with a single actor. For each, the steady rate (once the first chunk per worker is back:
  utterances of the later chunks / the seconds they took) and the start-up (the seconds before
  it, less the time those first chunks took at the steady rate), so start-up and rate are seen
  apart. Per-actor rate = the steady rate / actors.

Corpus: `benchmarks/out/scale/base.tsv` (made by `python benchmarks/scale_corpus.py base -o ...`
when missing), model: `benchmarks/out/scale/model` (`embed train benchmarks/out/scale/base.tsv -o
benchmarks/out/scale/model`). `--rows N` takes the first N lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
sys.path.insert(0, str(REPO))


def chunk_stream(files, size):
    from embedder.data.corpus import read_corpus

    it = read_corpus(files)
    while chunk := list(islice(it, size)):
        yield chunk


def time_stream(stream, workers: int = 1) -> dict:
    """Consume a features stream: seconds and rate; then start-up and steady rate seen apart.

    The first `workers` chunks are encoded side by side while the workers start, so the steady
    rate is counted after they have all come back: utterances of the later chunks / the seconds
    from the arrival of the `workers`-th chunk to the end. Start-up = that arrival time - the
    first chunks' utterances / the steady rate."""
    t0 = time.perf_counter()
    arrivals = []  # (seconds since the start, utterances so far)
    for chunk, _ in stream:
        arrivals.append((time.perf_counter() - t0, (arrivals[-1][1] if arrivals else 0) + len(chunk)))
    seconds, rows = time.perf_counter() - t0, arrivals[-1][1]
    out = {"utterances": rows, "seconds": round(seconds, 2), "per_s": round(rows / seconds)}
    if len(arrivals) > workers:
        t_k, rows_k = arrivals[workers - 1]
        steady = (rows - rows_k) / (seconds - t_k)
        out |= {"steady_per_s": round(steady), "startup_s": round(t_k - rows_k / steady, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=OUT / "scale" / "base.tsv")
    ap.add_argument("--model", type=Path, default=OUT / "scale" / "model")
    ap.add_argument("--rows", type=int, help="Take the first N lines of the corpus (default: all).")
    ap.add_argument("--json", type=Path, default=OUT / "ray_encode.json", help="Where to write the figures.")
    args = ap.parse_args()

    if not args.corpus.exists() and args.corpus == OUT / "scale" / "base.tsv":
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale_corpus.py"), "base", "-o", str(args.corpus)],
                       check=True)
    if not (args.model / "manifest.json").exists():
        raise SystemExit(f"{args.model}: no model; embed train {args.corpus} -o {args.model}")

    import ray
    import torch

    import embedder
    from embedder.storage.encode import encode_corpus, local_features
    from embedder.storage.ray_engine import CPU_PIECE as CHUNK, ray_features

    cpus = len(os.sched_getaffinity(0))
    model = embedder.load(args.model, device="cpu")
    names = list(model.encoders)
    with tempfile.TemporaryDirectory(prefix="ray_encode.") as tmp:
        tmp = Path(tmp)
        corpus = tmp / f"corpus{args.corpus.suffix}"
        with open(args.corpus, encoding="utf-8") as src, open(corpus, "w", encoding="utf-8") as dst:
            dst.writelines(islice(src, args.rows))
        files = [corpus]
        res: dict = {"corpus": str(args.corpus), "lines": args.rows, "model": str(args.model), "encoders": names,
                     "cpus": cpus, "torch_threads": torch.get_num_threads(), "stream_chunk": CHUNK, "ray": ray.__version__}

        def timed(label, fn):
            t = time.perf_counter()
            out = fn()
            res[label] = {"seconds": round(time.perf_counter() - t, 2)}
            print(label, res[label], flush=True)
            return out

        manifest = timed("encode_local", lambda: encode_corpus(files, tmp / "local", model=model, device="cpu"))
        n = manifest["rows"]
        res["utterances"] = n
        res["encode_local"]["per_s"] = round(n / res["encode_local"]["seconds"])
        res["features_local"] = time_stream(local_features(model, names, chunk_stream(files, CHUNK)))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        res["features_local_1_thread"] = time_stream(local_features(model, names, chunk_stream(files, CHUNK)))
        torch.set_num_threads(threads)
        for k in ("features_local", "features_local_1_thread"):
            print(k, res[k], flush=True)

        timed("ray_init", lambda: ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                                           logging_level="ERROR"))
        try:
            timed("encode_ray", lambda: encode_corpus(files, tmp / "ray", model=model, device="cpu", engine="ray"))
            res["encode_ray"]["per_s"] = round(n / res["encode_ray"]["seconds"])
            res["actors"] = cpus
            res["features_ray"] = time_stream(ray_features(model, names, chunk_stream(files, CHUNK), device="cpu"),
                                              workers=cpus)
            res["features_ray"]["per_actor_steady_per_s"] = round(res["features_ray"].get("steady_per_s", 0) / cpus)
            res["features_ray_1_actor"] = time_stream(
                ray_features(model, names, chunk_stream(files, CHUNK), device="cpu", actors=1))
            for k in ("features_ray", "features_ray_1_actor"):
                print(k, res[k], flush=True)
        finally:
            timed("ray_shutdown", ray.shutdown)

        from embedder.features import load_features
        import numpy as np

        X1, _ = load_features(tmp / "local")
        X2, _ = load_features(tmp / "ray")
        res["max_abs_diff"] = float(np.abs(X1 - X2).max())

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    print(f"\n{n} utterances, {', '.join(names)}, {cpus} CPUs; Ray {ray.__version__}, {cpus} actors x 1 CPU")
    print(f"{'':34}{'seconds':>9}{'utt/s':>9}{'steady/s':>10}{'start-up s':>12}")
    rows = [("encode_corpus, in process", res["encode_local"]),
            ("encode_corpus, --engine ray", res["encode_ray"]),
            (f"encoding only, in process ({threads} thr)", res["features_local"]),
            ("encoding only, in process (1 thr)", res["features_local_1_thread"]),
            (f"encoding only, Ray, {cpus} actors", res["features_ray"]),
            ("encoding only, Ray, 1 actor", res["features_ray_1_actor"])]
    for label, r in rows:
        print(f"{label:34}{r['seconds']:>9}{r['per_s']:>9}{r.get('steady_per_s', ''):>10}{r.get('startup_s', ''):>12}")
    print(f"ray.init {res['ray_init']['seconds']} s, ray.shutdown {res['ray_shutdown']['seconds']} s; "
          f"per-actor steady rate {res['features_ray']['per_actor_steady_per_s']}/s; "
          f"max |local - ray| {res['max_abs_diff']:.1e}; figures in {args.json}")


if __name__ == "__main__":
    main()
