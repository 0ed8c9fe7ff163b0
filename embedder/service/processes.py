"""`embed serve --processes N`: one listening socket, N server processes taking turns on it.

One process's event loop is the ceiling of a single server: every request's HTTP parsing, routing,
checks and JSON run on it, whatever the model threads do. So with N processes the socket is bound
once, here, and handed to each (the kernel spreads the connections among the processes that
accept on it), and each process encodes with a model of its own: the models are small, and no
request crosses a process boundary on its way to the model.

The first process, this one, is also the only one that holds an output folder's collection
(indexes, documents, the write-ahead log); the others pass `/search`, `/documents` and `/health`
to it over a Unix socket in a private folder (`proxy.py`). Prometheus counts are written by each
process to a shared folder and summed by whichever answers `/metrics` (`metrics.py`).

The others are children that end with this process: they watch its end of a pipe, so a parent
killed outright (SIGKILL) does not leave them holding the port; one that dies while the server is
up is started again, as a process supervisor would.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .metrics import SHARED_DIR

STORE_SOCKET = "store.sock"


@dataclass
class Spec:
    """What a front process needs to build its app (all of it picklable)."""
    folder: str
    model: str | None
    device: str
    api_key: str | None
    limits: object
    runtime: str
    store: str | None        # the collection's Unix socket; None for a model folder (no collection)
    uvicorn: dict = field(default_factory=dict)


def private_folder() -> Path:
    """A folder only this user can enter, for the store's socket and the metrics files."""
    return Path(tempfile.mkdtemp(prefix="embed-serve-"))  # mkdtemp makes it 0700


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(2048)
    return sock


def _end_with_parent() -> None:
    """Stop this process when the parent is gone, however it went."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        multiprocessing.connection.wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def front_main(spec: Spec, sock: socket.socket) -> None:
    """A front process: its own app and model on the shared socket, until SIGTERM/SIGINT."""
    import uvicorn

    from ..errors import EmbedderError
    from .app import create_app

    _end_with_parent()
    try:
        app = create_app(spec.folder, model=spec.model, device=spec.device, api_key=spec.api_key,
                         limits=spec.limits, runtime=spec.runtime, store=spec.store)
    except EmbedderError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    uvicorn.Server(uvicorn.Config(app, **spec.uvicorn)).run(sockets=[sock])


class Fronts:
    """The N - 1 front processes: started, restarted if one dies while serving, stopped."""

    def __init__(self, spec: Spec, sock: socket.socket, n: int):
        self.spec, self.sock, self.n = spec, sock, n
        self.ctx = multiprocessing.get_context("spawn")  # no forked copy of the parent's torch and threads
        self.procs: list = []
        self.stopping = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True, name="fronts")

    def _start_one(self):
        p = self.ctx.Process(target=front_main, args=(self.spec, self.sock), name="embed-serve-front", daemon=False)
        p.start()
        return p

    def start(self) -> None:
        self.procs = [self._start_one() for _ in range(self.n)]
        self.watcher.start()

    def _watch(self) -> None:
        while not self.stopping.is_set():
            multiprocessing.connection.wait([p.sentinel for p in self.procs], timeout=1.0)
            for i, p in enumerate(self.procs):
                if p.exitcode is not None and not self.stopping.is_set():
                    print(f"embed serve: process {p.pid} ended ({p.exitcode}); starting another", file=sys.stderr)
                    _mark_dead(p.pid)
                    self.procs[i] = self._start_one()

    def stop(self, timeout: float = 15) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        for p in self.procs:
            if p.exitcode is None:
                p.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for p in self.procs:
            p.join(timeout)
            if p.exitcode is None:
                p.kill()
                p.join()
            _mark_dead(p.pid)


def _mark_dead(pid: int) -> None:
    """A gone process's queue gauge leaves the metrics' live sum."""
    if os.environ.get(SHARED_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve_processes(n: int, host: str, port: int, app, spec: Spec, announce) -> None:
    """Serve `app` (this process's: the collection's, when there is one) with n - 1 fronts beside
    it, on one socket, until SIGTERM/SIGINT."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            # the fronts first: what they have in flight may still need the collection, which this
            # process serves until its own shutdown (and its lifespan's checkpoint) begins
            await asyncio.to_thread(fronts.stop)
            await super().shutdown(sockets)

    sock = listening_socket(host, port)
    sockets = [sock]
    if spec.store is not None:
        sockets.append(unix_socket(Path(spec.store)))
    fronts = Fronts(spec, sock, n - 1)
    fronts.start()
    announce(f"{n} processes on the port: this one ({os.getpid()}) and {n - 1} more")
    try:
        Server(uvicorn.Config(app, **spec.uvicorn)).run(sockets=sockets)  # ends by the signal it caught
    finally:
        fronts.stop()  # a failed start: nothing to finish
        for s in sockets:
            s.close()
