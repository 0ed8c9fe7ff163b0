"""`embed encode --engine ray`: the model runs in a pool of Ray actors; everything else stays here.

Why the work is split this way:

- **Parsing stays in this process.** Ids, dialogue numbers and positions are assigned in one
  sequential pass over the corpus (a dialogue runs across lines, a `.tsv` line gives two
  utterances), and a resumed run must skip exactly the rows it finished. Cutting the files into
  byte ranges for Ray to parse in parallel would need that pass anyway, and parsing is a small
  part of the cost: the encoders are what is slow, so they are what Ray spreads.
- **Chunks go to Ray through a bounded queue, read by one streaming Ray Data read task.** A
  Dataset per window of chunks would start a fresh actor pool (new processes, model loaded
  again) for every window and stall between windows; a Dataset over the whole corpus put in
  the object store first, or spilled to Parquet first, would hold or write the corpus before
  the first vector came back, and a spill folder would have to be on storage every node sees.
  With the queue, one Dataset lives for the whole run: its actors load the model once, the
  queue and Ray Data's backpressure bound what is in flight, and only ids and texts travel.
- **The model travels as bytes.** The model folder is on this machine; its files (a few MB) are
  sent to each actor, which writes them to a temporary folder, loads them (checking the
  fingerprint) and drops the folder, so a cluster needs no shared file system, only the same
  `embedder` installed on its nodes.
- **A row is a piece of a chunk, and a block is one row.** The unit of work must be small enough
  that a few chunks keep every actor busy (CPU actors get pieces of 2,048 utterances; a GPU actor
  whole chunks, since large batches are what a GPU wants) and must reach the actors as it is
  made: Ray Data otherwise merges what a read task yields into blocks of up to 128 MiB, which
  would hand one actor the whole corpus at the end. Each piece is one row of (ids, texts) lists,
  and the Dataset's target block size is set so that every row is its own block.
- **Results come back in input order** (`preserve_order`); this process regroups the pieces into
  the chunks it sent, so the shard writer, `--resume` and the index builder are the same code
  as for in-process encoding, and the output folder is identical.

What Ray does here: runs one actor per GPU (or per `cpus_per_actor` CPUs where the cluster has
no GPU), each encoding pieces with `Model.features` (the same length-bucketed batches as in
process, so vectors agree to float rounding), and streams the results back in order. What it
does not do: read the corpus files, write Parquet or build the FAISS index (both stay here, on
one machine, and cap the rate a cluster can reach), or make a run survive the loss of this
process (`--resume` does that, shard by shard). An actor that dies is restarted by Ray Data
(its default for actor pools).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
from collections import deque
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..data.corpus import Utterance
from ..encoders.model import MANIFEST, TOKENIZER, Model, fingerprint, load, read_manifest
from ..errors import EmbedderError

INSTALL = 'pip install -e ".[ray]"'
#: Pieces waiting in the queue for the read task, per actor.
QUEUE_PER_ACTOR = 2
#: Utterances per unit of work: a chunk is cut into pieces of this size so that a few chunks keep
#: every actor busy; a GPU actor takes whole chunks (larger batches are what a GPU wants).
CPU_PIECE = 2048
GPU_PIECE = 1 << 30

Features = dict[str, tuple[np.ndarray, np.ndarray]]


def ray_features(model: Model, names: Sequence[str], chunks: Iterator[list[Utterance]],
                 device: str = "auto", address: str | None = None, actors: int | None = None,
                 cpus_per_actor: int = 1) -> Iterator[tuple[list[Utterance], Features]]:
    """Like `encode.local_features`, on Ray actors: each chunk, in order, with its vectors and order
    scores per encoder. Connects to `address` (e.g. `auto`, `ray://host:10001`), joins a Ray
    already initialised in this process, or starts a local cluster (shut down at the end)."""
    ray = import_ray()
    if model.path is None:
        raise EmbedderError("the model has not been saved; call model.save(path) first")
    files = _model_files(model)  # before any cluster: a changed model folder is one clear line
    return _stream(ray, files, model.fingerprint, list(names), iter(chunks), device, address, actors,
                   cpus_per_actor)


def import_ray():
    """The `ray` module, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EmbedderError(f"--engine ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def _stream(ray, files: dict[str, bytes], model_id: str, names: list[str], chunks: Iterator[list[Utterance]],
            device: str, address: str | None, actors: int | None, cpus_per_actor: int):
    first = next(chunks, None)
    if first is None:  # nothing left to encode (a resumed run that had finished): no cluster needed
        return
    started = _connect(ray, address)
    try:
        yield from _run(ray, files, model_id, names, chain([first], chunks), device, actors, cpus_per_actor)
    finally:
        if started:
            ray.shutdown()


def _connect(ray, address: str | None) -> bool:
    """Join or start a cluster; True when this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(address="local", num_cpus=_cpus(), include_dashboard=False, **quiet)
    except (ConnectionError, TimeoutError, ValueError) as e:
        raise EmbedderError(f"--address {address or 'local'}: cannot start or reach a Ray cluster "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return True


def _check_reachable(address: str) -> None:
    """Fail fast when nothing listens at a host:port address: Ray itself retries for minutes."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # `auto` and the like: Ray looks the cluster up and says when there is none
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise EmbedderError(f"--address {address}: no Ray cluster answers there "
                            f"({e.strerror or type(e).__name__})") from None


def _cpus() -> int:
    """The CPUs this process may use (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _actors(ray, device: str, actors: int | None, cpus_per_actor: int) -> tuple[int, dict, str]:
    """How many actors, the resources of each, and the device each loads the model on."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
    use_gpu = str(device).startswith("cuda") or (device == "auto" and gpus > 0)
    if use_gpu and gpus == 0:
        raise EmbedderError(f"--device {device}: the Ray cluster has no GPU (use --device cpu or auto)")
    if use_gpu:
        return actors or gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda"
    return actors or max(1, cpus // cpus_per_actor), {"num_cpus": cpus_per_actor}, "cpu"


def _model_files(model: Model) -> dict[str, bytes]:
    """The files `load` reads, by path inside the model folder, checked to be the model this run
    encodes with (here, where a mismatch is one clear line, not an actor dying on every node)."""
    path = model.path
    manifest = read_manifest(path)
    rel = [manifest.get("tokenizer", TOKENIZER)]
    for name, entry in manifest.get("encoders", {}).items():
        sub = entry.get("path", name)
        rel += [f"{sub}/config.json", f"{sub}/model.safetensors"]
    if model.fingerprint and (manifest.get("fingerprint") != model.fingerprint
                              or fingerprint([path / r for r in rel]) != model.fingerprint):
        raise EmbedderError(f"{path}: the model folder changed since it was loaded")
    return {r: (path / r).read_bytes() for r in [MANIFEST, *rel]}


class _Encoder:
    """A Ray actor holding the model: rows of pieces (ids, texts) → rows of (ids, vectors, scores)."""

    def __init__(self, model: list, names: list[str], device: str, threads: int, fingerprint: str):
        import ray
        import torch

        if device == "cpu":
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="embedder-model-") as folder:
            for rel, data in ray.get(model[0]).items():
                (Path(folder) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(folder) / rel).write_bytes(data)
            self.model = load(folder, device=device)
        self.model.path = None  # the temporary folder is gone; the model lives in memory
        if self.model.fingerprint != fingerprint:  # checked before sending: a bug if it fails here
            raise RuntimeError(f"model fingerprint {self.model.fingerprint}, expected {fingerprint}")
        self.names = names

    def __call__(self, batch):
        import pyarrow as pa

        out = {"ids": [], **{f"v:{n}": [] for n in self.names}, **{f"o:{n}": [] for n in self.names}}
        for ids, texts in zip(batch.column("ids"), batch.column("texts")):
            out["ids"].append(ids)
            texts = texts.values.to_pylist()
            for n in self.names:
                vectors, scores = self.model.features(texts, encoder=n)
                out[f"v:{n}"].append(pa.array(vectors.ravel()))
                out[f"o:{n}"].append(pa.array(scores))
        return pa.table({k: pa.array(v) if k == "ids" else pa.array(v, pa.list_(pa.float32()))
                         for k, v in out.items()})


def _piece(utterances: list[Utterance]):
    """A piece of a chunk as a one-row table: the unit Ray Data moves and an actor encodes."""
    import pyarrow as pa

    return pa.table({"ids": pa.array([[u.id for u in utterances]], pa.list_(pa.int64())),
                     "texts": pa.array([[u.text for u in utterances]], pa.list_(pa.string()))})


def _queue_source(queue):
    """A Ray Data source with one read task that streams the tables put into `queue` until None."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def drain(queue=queue):
        while (table := queue.get()) is not None:
            yield table

    class _Chunks(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            return [ReadTask(drain, meta, per_task_row_limit=per_task_row_limit)]

    return _Chunks()


class _Quiet(logging.Filter):
    """Ray Data's console lines below a warning, and its note that its progress bars are off
    (the command line draws its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not record.getMessage().startswith("Progress bars disabled")


@contextmanager
def _quiet_ray_data():
    handlers = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    quiet = _Quiet()
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


def _run(ray, files: dict[str, bytes], model_id: str, names: list[str], chunks: Iterator[list[Utterance]],
         device: str, actors: int | None, cpus_per_actor: int) -> Iterator[tuple[list[Utterance], Features]]:
    from ray.util.queue import Queue

    n_actors, resources, actor_device = _actors(ray, device, actors, cpus_per_actor)
    piece = GPU_PIECE if actor_device == "cuda" else CPU_PIECE
    head = list(islice(chunks, n_actors))
    n_actors = min(n_actors, sum(-(-len(c) // piece) for c in head))  # a small corpus needs fewer actors
    queue = Queue(maxsize=QUEUE_PER_ACTOR * n_actors, actor_options={"num_cpus": 0})
    sent: deque[list[Utterance]] = deque()  # chunks in flight, oldest first
    failed: list[BaseException] = []
    stop = threading.Event()

    def feed():  # parse and send, in a thread, while the caller writes what comes back
        try:
            for chunk in chain(head, chunks):
                sent.append(chunk)
                for i in range(0, len(chunk), piece):
                    queue.put(_piece(chunk[i:i + piece]))
                if stop.is_set():
                    return
        except BaseException as e:  # a corpus error: raised to the caller after the chunks before it
            if not stop.is_set():
                failed.append(e)
        if not stop.is_set():
            queue.put(None)

    model_ref = ray.put(files)  # once in the object store, fetched by each actor
    ds = ray.data.read_datasource(_queue_source(queue), override_num_blocks=1, num_cpus=0).map_batches(
        _Encoder, batch_size=1, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=n_actors),
        fn_constructor_kwargs={"model": [model_ref], "names": names, "device": actor_device,
                               "threads": cpus_per_actor, "fingerprint": model_id},
        **resources)
    ctx = ds.context
    ctx.execution_options.preserve_order = True
    # Every piece its own block: Ray Data otherwise merges what a read task yields into blocks of
    # up to 128 MiB, and one actor would get the whole corpus, at the end.
    ctx.target_max_block_size = 1
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False

    feeder = threading.Thread(target=feed, name="embedder-ray-feed", daemon=True)
    feeder.start()
    parts: list[tuple[np.ndarray, Features]] = []  # the pieces of the oldest chunk back so far
    try:
        with _quiet_ray_data():
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for i in range(table.num_rows):
                    parts.append(_unpack(table, i, names))
                    if not sent:
                        raise RuntimeError("Ray returned more rows than were sent")  # a bug
                    if sum(len(ids) for ids, _ in parts) < len(sent[0]):
                        continue
                    chunk = sent.popleft()
                    if not np.array_equal(np.concatenate([ids for ids, _ in parts]), [u.id for u in chunk]):
                        raise RuntimeError("Ray returned rows out of order")  # a bug
                    yield chunk, {n: (np.concatenate([f[n][0] for _, f in parts]),
                                      np.concatenate([f[n][1] for _, f in parts])) for n in names}
                    parts = []
        feeder.join()
        if failed:
            raise failed[0]
        if sent or parts:
            raise RuntimeError("Ray returned fewer rows than were sent")  # a bug
    finally:
        stop.set()
        ray.kill(queue.actor)  # unblocks the feeder if it waits on a full queue
        feeder.join(timeout=10)


def _unpack(table, i: int, names: list[str]) -> tuple[np.ndarray, Features]:
    """Row i of the actors' output: a piece's ids, and its vectors and order scores per encoder."""
    ids = table.column("ids")[i].values.to_numpy()
    feats = {}
    for n in names:
        v = table.column(f"v:{n}")[i].values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        o = table.column(f"o:{n}")[i].values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        feats[n] = (v.reshape(len(ids), -1), o)
    return ids, feats
