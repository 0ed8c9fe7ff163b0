"""corpus → vectors → Parquet shards + one FAISS index per encoder (`embed encode`).

Utterances stream through in chunks, so memory is bounded by a chunk and a shard, never by the
corpus. Each shard (rows of the `features.parquet` schema, plus each encoder's exact vectors as
`.npy`) is recorded as finished as soon as it is on disk, so a killed run continues after its last
finished shard (`resume=True`). The indexes are built once every vector is on disk: trained on a
uniform sample of the whole corpus, filled a chunk at a time, their search settings tuned for
recall. The whole output appears at once (`partial.partial_folder`).

Layout: one shard is `features.parquet` itself, as small collections always had it; more are
`features.parquet/part-00000.parquet, ...`, a folder that pyarrow, pandas, polars and Spark read as
one table. The manifest lists the shards either way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence, TypeVar

import numpy as np

from ..atomic import atomic_path
from ..data.corpus import Utterance, check_paths, read_corpus
from ..encoders.model import Model, load
from ..errors import EmbedderError, check_range
from ..memory import frozen_heap, release_freed
from ..progress import Progress, report
from ..version import __version__
from . import index, manifest as manifests, parquet, partial
from .vectors import VectorStore, writer as write_vectors

#: Utterances per model call and per Parquet row group.
CHUNK = 16384
#: Utterances per shard: what a killed run can lose, and what memory holds at once.
SHARD_ROWS = 65536
ENGINES = ("local", "ray")

Features = dict[str, tuple[np.ndarray, np.ndarray]]
T = TypeVar("T")


def default_out_dir(corpus: str | os.PathLike) -> Path:
    p = Path(corpus)
    return p.with_name(p.stem + ".embed")


def interrupted_rows(out_dir: str | os.PathLike) -> int:
    """Utterances an interrupted run into OUT_DIR finished (0 when there is none to continue)."""
    folder = partial.partial_path(Path(out_dir))
    state = partial.read_progress(folder) if folder.is_dir() else None
    return int(state.get("rows", 0)) if state else 0


def _chunks(it: Iterator[Utterance], n: int) -> Iterator[list[Utterance]]:
    while chunk := list(islice(it, n)):
        yield chunk


def tokenized(model: Model, names: Sequence[str], chunks: Iterator[list[Utterance]]
              ) -> Iterator[tuple[list[Utterance], dict[int, list[np.ndarray]]]]:
    """Each chunk with its pieces, cut once for all encoders that read the same length."""
    for chunk in chunks:
        texts = [u.text for u in chunk]
        pieces: dict[int, list[np.ndarray]] = {}
        for n in names:
            max_len = model.encoder(n).cfg.max_len
            if max_len not in pieces:
                pieces[max_len] = model.tokens(texts, encoder=n)
        yield chunk, pieces


def local_features(model: Model, names: Sequence[str],
                   chunks: Iterator[list[Utterance]]) -> Iterator[tuple[list[Utterance], Features]]:
    """Each chunk with its vectors and order scores per encoder, computed in this process. The
    next chunk is read and cut into pieces in a thread of its own while this one is encoded
    (SentencePiece runs without the GIL), so a GPU does not wait for the tokenizer between chunks."""
    for chunk, pieces in one_ahead(tokenized(model, names, chunks)):
        feats = {n: model.features_of_tokens(pieces[model.encoder(n).cfg.max_len], encoder=n) for n in names}
        yield chunk, feats


def one_ahead(stream: Iterator[T]) -> Iterator[T]:
    """The items of `stream`, each next one made in a worker thread while the caller handles the
    current one: the next chunk is read and encoded while this one is written to Parquet and
    `.npy` (benchmarks/RESULTS.md, "Scale"). One item ahead, never more, so memory holds two
    chunks. Closing this closes `stream` once its running item is done."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="embedder-ahead")
    try:
        running = pool.submit(next, stream, None)
        while (item := running.result()) is not None:
            running = pool.submit(next, stream, None)
            yield item
            del item  # the caller is done with it: not held while the next one is awaited
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _corpus_stamp(files: Sequence[Path]) -> list[list]:
    """What identifies the corpus for `--resume`: each file's path, size and modification time."""
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def encode_corpus(
    corpus: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    model: Model | str | os.PathLike | None = None,
    encoders: Sequence[str] | None = None,
    index_factory: str | None = None,
    device: str = "auto",
    vocab: str | os.PathLike | None = None,
    train_options: dict | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    shard_rows: int = SHARD_ROWS,
    engine: str = "local",
    address: str | None = None,
    target_recall: float = index.TARGET_RECALL,
) -> dict:
    """Write OUT_DIR/features.parquet (a file, or a folder of shards) and OUT_DIR/<encoder>.faiss;
    returns the output manifest.

    With no `model`, one is trained on the corpus first and kept in OUT_DIR/model/. `resume`
    continues a killed run into the same OUT_DIR after its last finished shard. `engine="ray"`
    encodes on a Ray cluster (`address`, default: a local one), writing the same output.
    `target_recall` is the recall@10 an approximate index's search settings are tuned to reach.
    """
    check_range("--shard-rows", shard_rows, 1)
    index.check_target(target_recall)
    if engine not in ENGINES:
        raise EmbedderError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "ray":  # a missing extra fails here: before training a model or touching a partial output
        from .ray_engine import import_ray
        import_ray()
    files = check_paths(corpus)
    out_dir = Path(out_dir)
    with partial.partial_folder(out_dir, resume) as tmp:
        model, model_ref = _model(model, files, tmp, device, vocab, encoders, train_options, resume, progress)
        names = list(encoders or model.encoders)
        for n in names:
            model.encoder(n)  # unknown names fail before any output
        if index_factory:
            index.new(model.dim(names[0]), index_factory)  # a bad factory string fails before encoding
        n_total = _count(files, vocab)
        state = _start_or_resume(tmp, model, names, files, n_total, shard_rows, resume)
        dims = {n: model.dim(n) for n in names}
        chunks = _chunks(islice(read_corpus(files, vocab=vocab), state["rows"], None), min(CHUNK, shard_rows))
        if engine == "ray":
            from .ray_engine import ray_features
            stream = ray_features(model, names, chunks, device=device, address=address)
        else:
            stream = one_ahead(local_features(model, names, chunks))
        with contextlib.closing(stream), frozen_heap():  # a failed write stops the encoding behind it at once
            _write_shards(tmp, stream, state, dims, model.fingerprint, n_total, shard_rows, progress)
        release_freed()  # what encoding freed, before the index stage allocates its own
        manifest = _finish(tmp, state, dims, model, model_ref, files, n_total, index_factory, progress, target_recall)
    return manifest


def _model(model, files, tmp: Path, device, vocab, encoders, train_options, resume, progress) -> tuple[Model, str]:
    """The model to encode with, and how the manifest names it."""
    if model is None:
        from ..training.train import train
        if resume and (tmp / "model").is_dir():
            try:  # an interrupted run that had finished training: its model, as it was
                return load(tmp / "model", device=device), "model"
            except EmbedderError:
                shutil.rmtree(tmp / "model")
        opts = dict(train_options or {})
        if encoders:
            opts["encoders"] = list(encoders)
        return train(files, tmp / "model", device=device, vocab=vocab, progress=progress, **opts), "model"
    if not isinstance(model, Model):
        return load(model, device=device), str(Path(model).resolve())
    if model.path is None:
        raise EmbedderError("the model has not been saved; call model.save(path) first")
    return model, str(model.path.resolve())


def _start_or_resume(tmp: Path, model: Model, names: list[str], files: Sequence[Path], n_total: int,
                     shard_rows: int, resume: bool) -> dict:
    """The progress record: an interrupted run's (checked to be the same job) or a new one."""
    job = {"model_fingerprint": model.fingerprint, "encoders": names, "corpus": _corpus_stamp(files),
           "rows_total": n_total, "shard_rows": shard_rows}
    state = partial.read_progress(tmp) if resume else None
    if state is not None:
        for key, what in (("corpus", "the corpus files changed"), ("model_fingerprint", "the model differs"),
                          ("encoders", "the encoders differ"), ("shard_rows", "--shard-rows differs")):
            if state.get("job", {}).get(key) != job[key]:
                raise EmbedderError(f"cannot resume into {tmp.name}: {what} since the interrupted run; "
                                    "run without --resume to start over")
        return state
    state = {"job": job, "rows": 0, "shards": [], "vectors": {n: [] for n in names}}
    partial.write_progress(tmp, state)
    return state


def _shard_name(i: int, single: bool) -> str:
    return parquet.FEATURES if single else f"{parquet.FEATURES}/part-{i:05d}.parquet"


def _write_shards(tmp: Path, stream: Iterator[tuple[list[Utterance], Features]], state: dict,
                  dims: dict[str, int], fingerprint: str, n_total: int, shard_rows: int,
                  progress: Progress | None) -> None:
    """Rows → shards; each finished shard is recorded in the progress file (the resume point).
    A shard's rows go to its Parquet file and its vector files as they come, so memory holds a
    chunk, not a shard."""
    single = n_total <= shard_rows
    names = list(dims)
    it = iter(stream)
    pending: tuple[list[Utterance], Features] | None = next(it, None)
    while pending is not None:
        i = len(state["shards"])
        name = _shard_name(i, single)
        expected = min(shard_rows, n_total - state["rows"])
        paths = {n: f"vectors/{parquet.vector_column(n)}/part-{i:05d}.npy" for n in names}
        first_id, rows = pending[0][0].id, 0
        if expected < 1:  # rows beyond those counted
            raise _corpus_changed(state["rows"] + len(pending[0]), n_total)
        with contextlib.ExitStack() as stack:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shard_tmp = stack.enter_context(atomic_path(tmp / name))
            sinks = {n: stack.enter_context(write_vectors(tmp / paths[n], expected, dims[n])) for n in names}
            writer = parquet.FeatureWriter(shard_tmp, dims, fingerprint)
            stack.callback(writer.close)  # before the file is renamed into place
            while pending is not None and rows < expected:
                chunk, feats = pending
                room = expected - rows
                if len(chunk) > room:  # the shard ends inside this chunk: the rest starts the next
                    rest = (chunk[room:], {n: (v[room:], o[room:]) for n, (v, o) in feats.items()})
                    chunk, feats = chunk[:room], {n: (v[:room], o[:room]) for n, (v, o) in feats.items()}
                else:
                    rest = None
                writer.write({"id": np.array([u.id for u in chunk], dtype=np.int64),
                              "dialogue": [u.dialogue for u in chunk], "position": [u.position for u in chunk],
                              "role": [u.role for u in chunk], "text": [u.text for u in chunk]},
                             {n: feats[n][0] for n in names}, {n: feats[n][1] for n in names})
                for n in names:
                    sinks[n](feats[n][0])
                rows += len(chunk)
                report(progress, "encode", (state["rows"] + rows) / max(n_total, 1))
                del chunk, feats, pending  # freed before the next chunk's features are made
                pending = rest if rest is not None else next(it, None)
            if rows != expected:
                raise _corpus_changed(state["rows"] + rows, n_total)
        for n in names:
            state["vectors"][n].append({"path": paths[n], "first_id": int(first_id)})
        state["shards"].append(name)
        state["rows"] += rows
        partial.write_progress(tmp, state)  # the shard is finished: a resume starts after it
        release_freed()  # a shard's worth of freed batches: kept, they let the heap creep up with the corpus
    if state["rows"] != n_total:
        raise _corpus_changed(state["rows"], n_total)


def _corpus_changed(rows: int, n_total: int) -> EmbedderError:
    return EmbedderError(f"the corpus gave {rows} utterances, {n_total} expected "
                         "(did it change while encoding?)")


def _finish(tmp: Path, state: dict, dims: dict[str, int], model: Model, model_ref: str,
            files: Sequence[Path], n_total: int, index_factory: str | None,
            progress: Progress | None, target_recall: float = index.TARGET_RECALL) -> dict:
    """Build, tune and save each encoder's index; drop the exact vectors an index does not need."""
    encoders = {}
    for n, dim in dims.items():
        store = VectorStore(dim, [(tmp / s["path"], s["first_id"]) for s in state["vectors"][n]])
        copies = index.find_copies(store)  # repeated texts: indexed once, found together
        factory = index_factory or index.auto_factory(n_total - len(copies), dim)
        vindex, settings = _built_and_tuned(store, factory, copies, target_recall, progress, n)
        index.save(vindex, tmp / index.index_filename(n))
        finer = index.finer_factory(factory, dim) if not index_factory else None
        if finer and "note" in settings:  # coarse codes for this data: try twice as fine, keep the faster
            del vindex  # on disk already: one index in memory at a time (the peak RSS at 1M)
            report(progress, f"index {n}", 0.0)
            vindex, other_settings = _built_and_tuned(store, finer, copies, target_recall, progress, n)
            if _better(other_settings, settings):
                settings, factory = other_settings, finer
                index.save(vindex, tmp / index.index_filename(n))
        keep = index.reranks(factory)
        encoders[n] = {"column": parquet.vector_column(n), "dim": dim, "order_column": parquet.order_column(n),
                       "index": index.index_filename(n), "index_factory": factory, "search": settings,
                       "distinct_vectors": n_total - len(copies)}
        if len(copies):
            encoders[n]["copies"] = f"{Path(index.index_filename(n)).stem}.copies.npy"
            copies.save(tmp / encoders[n]["copies"])
        store.close()
        if keep:
            encoders[n]["vectors"] = state["vectors"][n]
        else:  # the index holds every vector it needs: no second copy on disk
            shutil.rmtree(tmp / "vectors" / parquet.vector_column(n), ignore_errors=True)
        del vindex
    if (tmp / "vectors").is_dir() and not any((tmp / "vectors").iterdir()):
        (tmp / "vectors").rmdir()
    manifest = {
        "embedder_version": __version__, "model": model_ref, "model_fingerprint": model.fingerprint,
        "corpus": [str(f.resolve()) for f in files], "rows": state["rows"], "shards": state["shards"],
        "encoders": encoders,
        "teacher": (model.manifest.get("training") or {}).get("teacher"),  # which the model learnt from, and its cost
    }
    manifests.write(tmp, manifest)
    return manifest


def _built_and_tuned(store: VectorStore, factory: str, copies, target: float, progress: Progress | None,
                     name: str) -> tuple[index.VectorIndex, dict]:
    built = index.build(store, factory, lambda f: report(progress, f"index {name}", f), copies)
    vindex = index.VectorIndex(built, store if index.reranks(factory) else None, copies=copies)
    return vindex, (index.tune(vindex, store, target=target) if factory != "Flat" else {})


def _better(a: dict, b: dict) -> bool:
    """Whether tuned settings `a` beat `b`: reaching the target first, then speed."""
    def key(s: dict) -> tuple:
        return (not s.get("note", "").startswith("no setting"), s.get("speedup", 0.0))
    return key(a) > key(b)


def _count(files: Sequence[Path], vocab=None) -> int:
    """Utterances in the corpus, for the progress bar, the shard layout and the index choice."""
    return sum(1 for _ in read_corpus(files, vocab=vocab))
