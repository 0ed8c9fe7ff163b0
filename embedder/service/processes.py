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
up is started again, as a process supervisor would, waiting longer after each one that dies
young (so one that cannot start does not fill the log and the CPU). A server killed outright leaves
its private folder behind; the next `embed serve --processes` removes such folders.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .metrics import SHARED_DIR

STORE_SOCKET = "store.sock"
PRIVATE_PREFIX = "embed-serve-"
OWNER_FILE = "pid"
# A front that ends within this many seconds of its start counts as failing to start: its slot
# waits RESTART_FIRST seconds, doubling with each such end up to RESTART_MOST, before the next try.
RESTART_YOUNG = 10.0
RESTART_FIRST = 0.5
RESTART_MOST = 30.0


def restart_delay(young_deaths: int) -> float:
    """Seconds before a slot's next start, after `young_deaths` ends in a row soon after starting."""
    return 0.0 if young_deaths == 0 else min(RESTART_MOST, RESTART_FIRST * 2 ** (young_deaths - 1))


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
    model_socket: str | None = None  # the first process's encoding socket (`--shared-model`); None: a model each


def private_folder() -> Path:
    """A folder only this user can enter, for the store's socket and the metrics files, marked
    with this process's id so that a later server can tell it was left by one that was killed."""
    sweep_private_folders()
    folder = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))  # mkdtemp makes it 0700
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    return folder


def sweep_private_folders(root: Path | None = None) -> list[Path]:
    """Remove this user's private folders whose server is gone (killed: a clean end removes its
    own). A folder with no owner file, or one naming a live process, is left alone."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(PRIVATE_PREFIX + "*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            pid = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        pass
    return True


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
                         limits=spec.limits, runtime=spec.runtime, store=spec.store, model_socket=spec.model_socket)
    except EmbedderError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    uvicorn.Server(uvicorn.Config(app, **spec.uvicorn)).run(sockets=[sock])


class Fronts:
    """The N - 1 front processes: started, restarted if one dies while serving (later and later
    while they die young), stopped. `run(spec, sock)` is what each runs: `front_main`."""

    def __init__(self, spec: Spec, sock: socket.socket, n: int, run=front_main):
        self.spec, self.sock, self.n, self.run = spec, sock, n, run
        self.ctx = multiprocessing.get_context("spawn")  # no forked copy of the parent's torch and threads
        self.procs: list = []
        self.started: list[float] = []
        self.young_deaths: list[int] = []
        self.due: dict[int, float] = {}       # slot -> when its next process starts
        self.starts = 0
        self.lock = threading.Lock()          # no start once stop has begun
        self.stopping = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True, name="fronts")

    def _start(self, i: int) -> None:
        with self.lock:
            if self.stopping.is_set():
                return
            p = self.ctx.Process(target=self.run, args=(self.spec, self.sock), name="embed-serve-front", daemon=False)
            p.start()
            self.procs[i], self.started[i] = p, time.monotonic()
            self.starts += 1

    def start(self) -> None:
        self.procs, self.started, self.young_deaths = [None] * self.n, [0.0] * self.n, [0] * self.n
        for i in range(self.n):
            self._start(i)
        self.watcher.start()

    def _watch(self) -> None:
        while not self.stopping.is_set():
            now = time.monotonic()
            wait = min([1.0] + [max(0.0, t - now) for t in self.due.values()])
            running = [p.sentinel for i, p in enumerate(self.procs) if i not in self.due]
            if running:
                multiprocessing.connection.wait(running, timeout=wait)
            else:
                self.stopping.wait(wait)
            if self.stopping.is_set():
                return
            now = time.monotonic()
            for i, p in enumerate(self.procs):
                if i in self.due:
                    if now >= self.due[i]:
                        del self.due[i]
                        self._start(i)
                elif p.exitcode is not None:
                    _mark_dead(p.pid)
                    young = now - self.started[i] < RESTART_YOUNG
                    self.young_deaths[i] = self.young_deaths[i] + 1 if young else 0
                    delay = restart_delay(self.young_deaths[i])
                    print(f"embed serve: process {p.pid} ended ({p.exitcode}); starting another"
                          + (f" in {delay:g} s" if delay else ""), file=sys.stderr)
                    self.due[i] = now + delay

    def stop(self, timeout: float = 15) -> None:
        with self.lock:
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
    it, on one socket, until SIGTERM/SIGINT. The encoding socket (`--shared-model`), if any, is
    already bound and served by `app` itself."""
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
