"""Vectors for a stream of texts (`embed vectors`): a line in, a vector out, as soon as it can.

A shell pipeline wants its first answers before its input ends, and throughput wants batches.
A reader thread queues lines as they arrive; the encoder takes whatever has arrived (at least one
line, at most a batch), so a slow producer gets one answer per line and a fast one gets full
batches.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import IO, Iterable, Iterator

import numpy as np

from ..encoders.model import Model
from ..errors import EmbedderError

FORMATS = ("tsv", "jsonl", "npy")
_END = object()


def _arrivals(lines: Iterable[str], max_batch: int) -> Iterator[list[str]]:
    """The lines in order, grouped by what had arrived when the encoder was ready for more."""
    q: queue.Queue = queue.Queue(maxsize=4 * max_batch)
    failure: list[BaseException] = []

    def read() -> None:
        try:
            for line in lines:
                q.put(line)
        except BaseException as e:  # re-raised in the caller's thread
            failure.append(e)
        finally:
            q.put(_END)

    threading.Thread(target=read, daemon=True).start()
    while True:
        first = q.get()
        if first is _END:
            break
        batch = [first]
        while len(batch) < max_batch:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                q.put(_END)
                break
            batch.append(item)
        yield batch
    if failure:
        raise failure[0]


def stream_vectors(model: Model, lines: Iterable[str], encoder: str, max_batch: int = 256,
                   where: str = "<stdin>") -> Iterator[tuple[str, np.ndarray]]:
    """(text, unit vector) for each line, in order; an empty line is an error naming its number."""
    model.encoder(encoder)  # an unknown encoder fails before any input is read
    n = 0
    for batch in _arrivals(lines, max_batch):
        texts = [line.rstrip("\r\n") for line in batch]
        empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
        good = texts if empty is None else texts[:empty]
        if good:  # the lines before an empty one are answered, as they would be one at a time
            yield from zip(good, model.encode(good, encoder=encoder, batch_size=max_batch))
        if empty is not None:
            raise EmbedderError(f"{where}:{n + empty + 1}: empty text (one text per line)")
        n += len(texts)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise EmbedderError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def write_vectors(rows: Iterator[tuple[str, np.ndarray]], fmt: str, out: IO) -> int:
    """Write each vector as it comes (tsv: the numbers tab-separated, one row per input line;
    jsonl: {"text", "embedding"}); npy holds its row count in its header, so it waits for the end.
    `out` is a binary stream. Floats keep 9 significant digits: float32 reads back exactly."""
    check_format(fmt)
    if fmt == "npy":
        vectors = [v for _, v in rows]
        if not vectors:
            raise EmbedderError("<stdin>: no text to encode")
        np.save(out, np.stack(vectors).astype(np.float32), allow_pickle=False)
        out.flush()
        return len(vectors)
    n = 0
    for text, v in rows:
        if fmt == "tsv":
            line = "\t".join(f"{x:.9g}" for x in v.tolist())
        else:
            line = json.dumps({"text": text, "embedding": [float(f"{x:.9g}") for x in v.tolist()]})
        out.write(line.encode("utf-8") + b"\n")
        out.flush()
        n += 1
    return n
