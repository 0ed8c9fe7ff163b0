"""The GPU path in one command: training on CUDA, and CPU/GPU parity of what it trained.

    python benchmarks/gpu.py --json /tmp/gpu.json
    python benchmarks/gpu.py --write-corpus .gpu_data     # here, beside ../shared/data: the ~30k-line
                                                          # corpus as files, to carry to a GPU machine
    python benchmarks/gpu.py --corpus-dir .gpu_data --teacher .teacher-fp16 --json $OUT/gpu.json
    python benchmarks/gpu_prepare.py                      # here: the corpus, the teacher in float16 and
                                                          # the wheels a GPU machine lacks, and the two
                                                          # commands to run there (faiss in the second)
    python benchmarks/gpu.py --rehearse                   # no GPU: the same jobs on the CPU under the
                                                          # GPU's numerics, 1 epoch, on the bundled
                                                          # corpus (and --corpus-dir's, if given), the
                                                          # teacher's runs with 2,000 pieces

On a machine with one CUDA GPU and no network, from what the project and its extras install, it
first runs the BiRNN's skip-gram on the GPU beside the CPU's kernel (the stage that diverged),
then trains both encoders with every default on the bundled corpus and on the ~30k-line corpus of
`benchmarks/train_time.py`, each without and with the teacher, and reports for each run the wall
time, every encoder's final training and validation loss, and the parity of the vectors: the
trained model encodes 3,000 of its corpus's texts on the GPU and on the CPU, and the cosine of
each pair (and the largest difference of the order scores) is reported. The bundled corpus's
model trained with the teacher is then timed encoding 50,000 STS sentences beside its teacher
(`encode_speed`: the device's batches and the CPU's, the feed alone, MiniLM in float32 and
float16 at its best batch, peak GPU memory), then served by `embed serve` with one process and
with several, one text and 32 texts a request (`serve_speed`), and `embed encode` runs on a
million of its sentences in dialogues (`encode_at_scale`). A run that diverges is
reported with the message that names where. Runs are skipped, and say so, once `--budget`
seconds have passed (6 minutes by default), or when their data or teacher is not here.

Without a GPU it prints one line and exits 0: nothing it measures means anything on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

EXAMPLE = REPO / "examples" / "qa_corpus.txt"
PARITY_TEXTS = 3000


def corpus_files(corpus_dir: Path | None, scratch: Path) -> tuple[list[Path] | None, str]:
    """The ~30k-line corpus: the files in `corpus_dir`, or built from ../shared/data; None with the
    reason where neither is at hand."""
    if corpus_dir is not None:
        files = sorted(p for p in corpus_dir.iterdir() if p.suffix in (".txt", ".tsv", ".jsonl"))
        return (files or None), f"no corpus files in {corpus_dir}"
    from train_time import DATA, write_corpus

    if not DATA.is_dir():
        return None, f"{DATA} not found (pass --corpus-dir with the files of --write-corpus)"
    return write_corpus(scratch)[0], ""


def texts_of(files: list[Path], n: int) -> list[str]:
    """Up to `n` of the corpus's utterances, for the parity check."""
    from embedder.data.corpus import read_corpus

    out = []
    for u in read_corpus(files):
        out.append(u.text)
        if len(out) >= n:
            break
    return out


def parity(model_dir: Path, texts: list[str], device: str) -> dict:
    """Each encoder's vectors and order scores on `device` against the CPU's (float32)."""
    import embedder

    on_device = embedder.load(model_dir, device=device)
    on_cpu = embedder.load(model_dir, device="cpu")
    out = {}
    for name in on_device.encoders:
        a, sa = on_device.features(texts, encoder=name)
        with cpu_numerics():
            b, sb = on_cpu.features(texts, encoder=name)
        cos = (a * b).sum(1)
        out[name] = {"cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
                     "order_max_abs_diff": round(float(np.nanmax(np.abs(sa - sb))), 5) if np.isfinite(sa).any() else None}
    return out


@contextlib.contextmanager
def cpu_numerics() -> Iterator[None]:
    """The CPU's own arithmetic within the block, also in a rehearsal (which sets the GPU's)."""
    rehearsal = os.environ.pop("EMBEDDER_NUMERICS", None)
    try:
        yield
    finally:
        if rehearsal is not None:
            os.environ["EMBEDDER_NUMERICS"] = rehearsal


def skipgram_check(device: str) -> dict:
    """The BiRNN's skip-gram on the bundled corpus with its defaults: the torch backend on
    `device` against the numba kernel on the CPU (largest row norm, and the share of each word's
    10 nearest words the two agree on, beside the share two seeds of the kernel agree on). Before
    the fix the torch backend's rows reached norms of 1e13 here."""
    import torch

    from embedder.data.corpus import read_corpus
    from embedder.data.pairs import PairCorpus
    from embedder.data.tokenizer import Tokenizer
    from embedder.encoders.birnn import BiRNNConfig, train_word_vectors

    data = PairCorpus.from_utterances(read_corpus([EXAMPLE]))
    tokenizer = Tokenizer.train(data.texts, seed=0)
    ids = tokenizer.encode(data.texts, max_len=64)
    cfg = BiRNNConfig(vocab_size=len(tokenizer))
    with cpu_numerics():
        kernel = [train_word_vectors(ids, cfg, seed, torch.device("cpu")) for seed in (0, 1)]
    t0 = time.perf_counter()
    batched = train_word_vectors(ids, cfg, 0, torch.device(device))
    seconds = time.perf_counter() - t0
    counts = np.bincount(np.concatenate(ids), minlength=len(tokenizer))
    rows = np.flatnonzero(counts >= 3)
    rows = rows[rows > 3]

    def top(v: np.ndarray) -> np.ndarray:
        u = v[rows] / np.maximum(np.linalg.norm(v[rows], axis=1, keepdims=True), 1e-12)
        sims = u @ u.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :10]

    def agree(a: np.ndarray, b: np.ndarray) -> float:
        return round(float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(top(a), top(b))])), 3)

    return {"job": "skip-gram, bundled corpus", "ok": bool(np.isfinite(batched).all()), "seconds": round(seconds, 2),
            "max_norm": {"torch": round(float(np.linalg.norm(batched, axis=1).max()), 3),
                         "numba": round(float(np.linalg.norm(kernel[0], axis=1).max()), 3)},
            "neighbours_shared": {"torch_vs_numba": agree(batched, kernel[0]),
                                  "numba_seed0_vs_seed1": agree(kernel[0], kernel[1])}}


def speed_texts(n: int) -> list[str]:
    """`n` sentences to time encoding on: STS 2015's (as the issue's figures), else the bundled
    corpus's utterances repeated."""
    from embedder.data.corpus import read_corpus

    sts = sorted((REPO.parent / "shared" / "data" / "sts").glob("2015.*.tsv"))
    texts: list[str] = []
    for path in sts:
        for line in path.read_text(encoding="utf-8").splitlines():
            texts.extend(t for t in line.split("\t")[-2:] if t.strip())
    texts = list(dict.fromkeys(texts)) or [u.text for u in read_corpus([EXAMPLE])]
    return (texts * (n // len(texts) + 1))[:n]


# timed calls per rate (the best one counts); a rehearsal checks the paths, not the figures: 1
ROUNDS = 2


def best_rate(fn, texts: list[str]) -> float:
    """Texts a second of `fn(texts)`, the best of `ROUNDS` after a warm-up call on a few."""
    fn(texts[:min(256, max(1, len(texts) // 4))])
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn(texts)
        best = min(best, time.perf_counter() - t0)
    return round(len(texts) / best, 1)


def feed(ids: list, choice, device: str) -> None:
    """What encoding does before the model: bucket, pad, and copy each batch to `device`."""
    import torch

    from embedder.data.batches import buckets, pad_ids
    from embedder.encoders.batching import to_device

    for b in buckets([len(x) for x in ids], choice.encode_batch, max_tokens=choice.encode_tokens):
        src, _ = pad_ids([ids[i] for i in b])
        to_device(torch.from_numpy(src), torch.device(device))
    if device == "cuda":
        torch.cuda.synchronize()


def encode_speed(model_dir: Path, texts: list[str], device: str, teacher: str | None) -> dict:
    """Encoding side by side on `device` (issue 29): each encoder's `Model.encode` with the device's
    batches (`device.Numerics`) and with the CPU's (256 texts, 4,096 pieces); the feed with the
    model taken out (tokenizing; bucketing, padding and the copy to the device), the ceiling the CPU sets a GPU; and
    all-MiniLM-L6-v2 through sentence-transformers, float32 and (on CUDA) float16, at its best
    batch of three. Ratios are to MiniLM's best."""
    import torch

    import embedder
    from embedder import device as dev
    from embedder.data.batches import MAX_TOKENS

    model = embedder.load(model_dir, device=device)
    choice = dev.numerics(device)
    out: dict = {"texts": len(texts), "device_batch": choice.encode_batch, "device_tokens": choice.encode_tokens}
    for name in model.encoders:
        ids = model.tokens(texts, encoder=name)
        out[name] = {
            "encode_per_s": best_rate(lambda t, name=name: model.encode(t, encoder=name), texts),
            "encode_cpu_batches_per_s": best_rate(lambda t, name=name: model.features_of_tokens(
                model.tokens(t, encoder=name), name, 256, order=False, max_tokens=MAX_TOKENS), texts),
            "tokenize_per_s": best_rate(lambda t, name=name: model.tokens(t, encoder=name), texts),
            "pad_and_copy_per_s": best_rate(lambda t: feed(ids[:len(t)], choice, device), texts),
        }
    if teacher is not None:
        from sentence_transformers import SentenceTransformer

        import embedder.training.teacher as teacher_module

        st = SentenceTransformer(str(teacher_module.resolve(teacher)), device=device, local_files_only=True)
        batches = (256, 1024, 4096) if device == "cuda" else (64, 256)
        rates: dict = {}
        for precision in ("fp32", "fp16") if device == "cuda" else ("fp32",):
            if precision == "fp16":
                st = st.half()
            rates[precision] = {b: best_rate(lambda t, b=b: st.encode(t, batch_size=b, show_progress_bar=False), texts)
                                for b in batches}
        best = max(r for per in rates.values() for r in per.values())
        out["minilm"] = rates
        for name in model.encoders:
            out[name]["vs_minilm_best"] = round(out[name]["encode_per_s"] / best, 2)
        del st
        if device == "cuda":
            torch.cuda.empty_cache()
    if device == "cuda":
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return out


# requests per served configuration at most: a steady rate in seconds even at 5,000/s, and five
# configurations within the run's budget even at the 1,400/s the issue measured
SERVE_REQUESTS = 20_000


def serve_speed(model_dir: Path, texts: list[str], rehearse: bool) -> dict:
    """`embed serve` on this machine beside `Model.encode` in the same run (issue 29), with
    `benchmarks/serve_load.py`'s load generator (32 keep-alive clients on loopback): one-text
    requests with one process and with several (`--processes`, half the cores up to 8), and
    32-text requests with several; the several each with a model of its own and with one model
    in the first process encoding for all (`--shared-model`), whichever serves more. A rehearsal
    serves 300 one-text requests with 2 processes, each way."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"the serve extra is not installed ({exc.name} is missing)"}
    from types import SimpleNamespace

    import serve_load

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    many = max(2, min(8, cores // 2))
    configs = ([(2, 1, False), (2, 1, True)] if rehearse else
               [(1, 1, False), (many, 1, False), (many, 1, True), (many, 32, False), (many, 32, True)])
    out: dict = {"cores": cores}
    for processes, k, shared in configs:
        n = 300 if rehearse else min(len(texts) // k, SERVE_REQUESTS)
        args = SimpleNamespace(encoder="seq2seq", concurrency=32, max_seconds=60, texts_per_request=k)
        extra = ("--processes", str(processes)) + (("--shared-model",) if shared else ())
        r = serve_load.bench_embed(model_dir, texts[:n * k], args, extra)
        out[f"processes_{processes}_texts_{k}" + ("_shared_model" if shared else "")] = {key: r[key] for key in (
            "requests", "requests_per_s", "texts_per_s", "p50_ms", "p99_ms", "errors", "first_error",
            "offline_texts_per_s", "served_over_offline", "server_cpu_us_per_text")}
    return out


def encode_at_scale(model_dir: Path, texts: list[str], n: int, scratch: Path) -> dict:
    """`embed encode` of `n` utterances (dialogues of two drawn from `texts`) in a process of its
    own, against `Model.encode` and `Model.features` on 100k of them in this one (issue 29's
    target: the command at 0.8 of `Model.encode` or better at 1M); the command's peak RSS and
    peak GPU memory, from `benchmarks/scale.py`'s child mode."""
    import random

    try:
        import faiss  # noqa: F401
    except ImportError:
        return {"skipped": "faiss is not installed (carry its wheel: benchmarks/gpu_prepare.py, --only-scale)"}
    import scale

    rng = random.Random(0)
    corpus = scale.OUT / f"gpu-{n}.tsv"
    scale.OUT.mkdir(parents=True, exist_ok=True)
    with open(corpus, "w", encoding="utf-8") as f:
        for _ in range(n // 2):
            f.write(f"{rng.choice(texts)}\t{rng.choice(texts)}\n")
    out_dir = scratch / "scale.embed"
    encoders = ["seq2seq", "skipgram-birnn"]
    try:
        run = scale.run_measured(["--embed", "encode", str(corpus), "--model", str(model_dir), "-o", str(out_dir),
                                  "--quiet"])
        encode_rate, features_rate = scale.model_rate(model_dir, corpus, encoders, n=min(n, 100_000), passes=1)
    finally:
        corpus.unlink(missing_ok=True)
        shutil.rmtree(out_dir, ignore_errors=True)
    per_s = n / run["seconds"]
    return {"utterances": n, "seconds": run["seconds"], "utterances_per_s": round(per_s, 1),
            "model_encode_per_s": round(encode_rate, 1), "model_features_per_s": round(features_rate, 1),
            "over_model_encode": round(per_s / encode_rate, 3), "over_model_features": round(per_s / features_rate, 3),
            "peak_rss_gb": run["peak_rss_gb"], "peak_gpu_gb": run["peak_gpu_gb"]}


REHEARSAL_VOCAB = 2000


def run_job(name: str, files: list[Path], teacher: str | None, device: str, scratch: Path, epochs: int,
            speed: list[str] | None = None, scale_rows: int = 0, only_scale: bool = False,
            vocab_size: int | None = None) -> dict:
    import embedder
    from embedder.errors import EmbedderError

    out = scratch / name
    t0 = time.perf_counter()
    try:
        model = embedder.train(files, out, device=device, teacher=teacher, epochs=epochs, seed=0, vocab_size=vocab_size)
    except EmbedderError as exc:  # a divergence says where; the rest of the jobs still run
        return {"job": name, "ok": False, "seconds": round(time.perf_counter() - t0, 1), "error": str(exc)}
    seconds = time.perf_counter() - t0
    training = model.manifest["training"]
    losses = {k: {"train": round(v["train_loss"][-1], 4), "val": round(v["val_loss"][-1], 4), "epochs": v["epochs"],
                  "seconds": v["seconds"]} for k, v in training["history"].items()}
    finite = all(np.isfinite([v["train"], v["val"]]).all() for v in losses.values())
    result = {"job": name, "ok": bool(finite), "seconds": round(seconds, 1), "utterances": training["utterances"],
              "losses": losses, "parity": parity(out, texts_of(files, PARITY_TEXTS), device)}
    if speed and not only_scale:
        result["encode"] = encode_speed(out, speed, device, teacher)
        result["serve"] = serve_speed(out, speed, rehearse=device == "cpu")
    if speed and scale_rows:
        result["encode_at_scale"] = encode_at_scale(out, speed, scale_rows, scratch)
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--corpus-dir", type=Path, help="the ~30k-line corpus's files (see --write-corpus)")
    ap.add_argument("--write-corpus", type=Path, metavar="DIR",
                    help="write the ~30k-line corpus's files into DIR (from ../shared/data) and stop")
    ap.add_argument("--teacher", default="all-MiniLM-L6-v2",
                    help="the teacher: all-MiniLM-L6-v2 (the teacher extra) or a local sentence-transformers folder")
    ap.add_argument("--budget", type=float, default=360.0,
                    help="seconds after which no further run starts (a rehearsal: none)")
    ap.add_argument("--speed-texts", type=int, default=50_000,
                    help="sentences to time encoding on (STS 2015's), beside all-MiniLM-L6-v2 (a rehearsal: 300, enough to run every path)")
    ap.add_argument("--scale-rows", type=int, default=1_000_000,
                    help="utterances for `embed encode` at scale with the timed model (0: skip; a rehearsal: 2,000)")
    ap.add_argument("--only-scale", action="store_true",
                    help="only `embed encode` at scale, with the bundled corpus's model trained without a teacher "
                         "(a second, short run that carries faiss's wheel instead of the teacher)")
    ap.add_argument("--rehearse", action="store_true",
                    help="no GPU needed: the bundled corpus's runs on the CPU under the GPU's numerics (1 epoch), "
                         "to check this script before spending GPU time")
    args = ap.parse_args()

    if args.write_corpus:
        from train_time import DATA, write_corpus

        if not DATA.is_dir():
            print(f"{DATA} not found: nothing written")
            return 1
        args.write_corpus.mkdir(parents=True, exist_ok=True)
        files, lines = write_corpus(args.write_corpus)
        print(f"{lines} utterances in {len(files)} files -> {args.write_corpus}")
        return 0

    import torch

    global ROUNDS
    if args.rehearse:
        os.environ["EMBEDDER_NUMERICS"] = "gpu"
        device, epochs, ROUNDS = "cpu", 1, 1
        args.budget = float("inf")
    elif not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA GPU here, nothing measured")
        return 0
    else:
        device, epochs = "cuda", 0
    try:
        import embedder.training.teacher as teacher_module

        teacher_module.check(args.teacher)
        teacher, teacher_note = args.teacher, ""
    except Exception as exc:  # noqa: BLE001 - reported, and the runs without it go on
        teacher, teacher_note = None, str(exc)

    started = time.perf_counter()
    results: list[dict] = [] if args.only_scale else [skipgram_check(device)]
    if results:
        print(json.dumps(results[0]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        big, big_note = ((None, "a rehearsal runs it only with --corpus-dir") if args.rehearse and not args.corpus_dir
                         else corpus_files(args.corpus_dir, scratch))
        corpora = [("bundled", [EXAMPLE], ""), ("30k", big, big_note)]
        if args.only_scale:
            corpora, teacher, teacher_note = corpora[:1], None, "--only-scale: no teacher"
        for corpus, files, note in corpora:
            for with_teacher in ((False,) if args.only_scale else (False, True)):
                name = f"{corpus}{'+teacher' if with_teacher else ''}"
                elapsed = time.perf_counter() - started
                skip = (note if files is None else teacher_note if with_teacher and teacher is None
                        else f"budget of {args.budget:.0f} s spent" if elapsed > args.budget else "")
                if skip:
                    results.append({"job": name, "ok": None, "skipped": skip})
                    print(f"{name}: skipped ({skip})", flush=True)
                    continue
                timed = "bundled" if args.only_scale else "bundled+teacher"   # the README's model, beside its teacher
                speed = speed_texts(args.speed_texts if not args.rehearse else 300) if name == timed else None
                r = run_job(name, files, teacher if with_teacher else None, device, scratch, epochs, speed,
                            scale_rows=(2000 if args.rehearse else args.scale_rows) if speed else 0,
                            only_scale=args.only_scale,
                            # a rehearsal checks the paths, not the figures: the teacher's whole
                            # vocabulary (30k pieces, ~10 s of teacher on 2 cores) is not needed
                            vocab_size=REHEARSAL_VOCAB if args.rehearse and with_teacher else None)
                results.append(r)
                print(json.dumps(r), flush=True)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none (rehearsal on the CPU, GPU numerics)"
    report = {"device": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
              "total_seconds": round(time.perf_counter() - started, 1), "runs": results}
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if all(r.get("ok") is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
