"""`embed serve --processes N --shared-model`: one model, in the first process, encodes for all.

With a model in each process (the default), every process runs its own small batches; on a GPU
that is N CUDA contexts taking turns on one card, each with the batches of a 1/N share of the
traffic. With `--shared-model` only the first process holds the model on the device. The others
still parse, check and answer HTTP (the part one event loop cannot keep up with), and gather their
concurrent requests into batches as before (`MicroBatcher`), but send each batch over a Unix
socket to the first process, whose own batcher merges the batches of every process into model
calls as large as the device takes.

The socket speaks length-prefixed frames, no pickle: a request is JSON (`encoder`, `order`,
`texts`); an answer is a JSON header (`rows`, `dim`, or `error` and `overloaded`) followed by
the rows' float32 vectors, float32 order scores and int64 piece counts, little-endian.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import orjson

from .batcher import MicroBatcher, Overloaded

MODEL_SOCKET = "model.sock"
_LENGTH = struct.Struct("<I")


class ModelProcessError(RuntimeError):
    """The first process could not encode a front's batch (the message says why)."""


def _frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


def _answer(V: np.ndarray, O: np.ndarray, n: np.ndarray) -> bytes:
    header = orjson.dumps({"rows": int(V.shape[0]), "dim": int(V.shape[1])})
    return _frame(header) + V.astype("<f4", copy=False).tobytes() + O.astype("<f4", copy=False).tobytes() \
        + n.astype("<i8", copy=False).tobytes()


async def serve_model(sock: socket.socket, batcher: MicroBatcher) -> asyncio.AbstractServer:
    """Answer the fronts' batches on `sock` (bound and listening) through this process's batcher,
    each connection's requests one after another (a front opens one connection per model thread)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                req = orjson.loads(await reader.readexactly(size))
                try:
                    V, O, n = await batcher.features_each(req["texts"], req["encoder"], bool(req["order"]))
                    writer.write(_answer(V, O, n))
                except Overloaded as e:
                    writer.write(_frame(orjson.dumps({"error": str(e), "overloaded": True})))
                except Exception as e:  # noqa: BLE001 - the front raises it for the requests of that batch
                    writer.write(_frame(orjson.dumps({"error": f"{type(e).__name__}: {e}"})))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the front closed its connection (it ended, or its thread did)
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, sock=sock)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        k = conn.recv_into(view[got:])
        if k == 0:
            raise ModelProcessError("the model process closed the connection")
        got += k
    return bytes(buf)


class RemoteBatcher(MicroBatcher):
    """A front's batcher: it gathers batches as `MicroBatcher` does, and each model thread sends its
    batch to the first process over a connection of its own (blocking, off the event loop)."""

    def __init__(self, path: str | Path, max_batch: int, max_wait: float, max_queue: int, workers: int, **kw):
        super().__init__(None, max_batch, max_wait, max_queue, workers, **kw)
        self.path = str(path)
        self.local = threading.local()
        self.open: set[socket.socket] = set()   # every thread's connection, closed at stop

    async def stop(self) -> None:
        await super().stop()   # the threads are done with their connections
        for conn in list(self.open):
            conn.close()
        self.open.clear()

    def _connection(self) -> socket.socket:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.local.conn = conn
            self.open.add(conn)
            conn.connect(self.path)
        return conn

    def _drop(self) -> None:
        conn, self.local.conn = getattr(self.local, "conn", None), None
        if conn is not None:
            self.open.discard(conn)
            conn.close()

    def _features(self, texts: list[str], encoder: str, order: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            conn = self._connection()
            conn.sendall(_frame(orjson.dumps({"encoder": encoder, "order": order, "texts": texts})))
            (size,) = _LENGTH.unpack(_read_exactly(conn, _LENGTH.size))
            header = orjson.loads(_read_exactly(conn, size))
            rows, dim = header.get("rows", 0), header.get("dim", 0)
            payload = _read_exactly(conn, rows * (4 * dim + 4 + 8))
        except (OSError, ModelProcessError) as e:  # a broken connection is dropped; the next batch opens another
            self._drop()
            raise ModelProcessError(f"the model process did not answer ({e})") from None
        if "error" in header:
            raise (Overloaded if header.get("overloaded") else ModelProcessError)(header["error"])
        V = np.frombuffer(payload, "<f4", rows * dim).reshape(rows, dim)
        O = np.frombuffer(payload, "<f4", rows, offset=4 * rows * dim)
        n = np.frombuffer(payload, "<i8", rows, offset=4 * rows * (dim + 1))
        return V, O, n
