"""Training on several processes of one machine: `embed train --nproc N`, PyTorch DDP.

The loop (`loop.py`) stays one loop. It asks this module whether it runs as one rank of several
and, if so, for the few steps DistributedDataParallel leaves to its caller: its share of the
batches, losses averaged over every rank (so every rank takes the same early-stopping decision),
and the batch-norm statistics made equal (DDP averages gradients, not buffers). Starting the
processes, and turning a failed one into one line of error instead of a hang, also lives here.

What N processes do: every rank builds the same list of batches (the same seed everywhere) and
takes every N-th one, so an epoch is still one pass over the data, in N times fewer optimiser
steps of N times as many examples. The learning rate is not scaled: AdamW with gradient
clipping is far less sensitive to the batch size than plain SGD, for which the linear-scaling
rule was made. Processes talk over the loopback interface: gloo on the CPU, NCCL with one GPU
per process. One machine only; nothing here joins processes started by `torchrun` on others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue as queue_lib
import signal
import socket
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..errors import EmbedderError, check_range
from ..progress import Progress, report

T = TypeVar("T")
TIMEOUT = timedelta(minutes=30)   # a collective waiting this long means a rank is lost: fail, don't hang
GRACE_S = 2.0                     # after one rank fails, the others get this long to end on their own


# -- inside a rank ------------------------------------------------------------------------------------
def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes); (0, 1) when training alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Every `world`-th item from `rank` on, after repeating items from the start until the count
    divides evenly (as `DistributedSampler` pads): every rank must take the same number of steps,
    or the ones with more would wait for a gradient exchange that never comes."""
    if not items:
        return []
    total = -(-len(items) // world) * world
    return [items[i % len(items)] for i in range(rank, total, world)]


def mean_over_ranks(total: float, n: int, device: torch.device) -> float:
    """`total / n` with both summed over every rank: one loss figure, the same on all of them."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([total, float(n)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, n = t[0].item(), int(t[1].item())
    return total / max(n, 1)


def sync_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank. DDP is told not to send
    them before every step (training reads the batch's own statistics, and the skip-gram table is
    a large buffer); they are made equal here, before validation and before a state is kept."""
    if dist.is_available() and dist.is_initialized():
        for b in module.buffers():
            dist.broadcast(b, 0)


class Objective(nn.Module):
    """An encoder's loss as a module's forward. DDP exchanges gradients only for what runs
    through the forward of the module it wraps, and an encoder's losses are methods beside its
    forward (`loss`, a stage's `loss`), so the loss itself becomes the forward."""

    def __init__(self, model: nn.Module, loss: Callable[[Any], torch.Tensor]):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss(batch)


def wrap(model: nn.Module, loss: Callable[[Any], torch.Tensor], device: torch.device) -> nn.Module:
    """`loss` as a DDP module over `model`'s parameters that require a gradient now.

    `find_unused_parameters`: which parameters a step uses varies (the adaptive softmax's tail
    clusters only for the rare pieces a batch holds, the word vectors frozen during warm-up, the
    order scorer only where a swap exists), and a step must not wait for their gradients."""
    return DDP(Objective(model, loss), device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=True, forward_sync_buffers=False)


def state_digest(modules: Mapping[str, nn.Module]) -> str:
    """SHA-256 of every tensor of the modules' state dicts, in a fixed order: equal digests mean
    bit-identical weights."""
    h = hashlib.sha256()
    for name in sorted(modules):
        for key, value in sorted(modules[name].state_dict().items()):
            h.update(f"{name}/{key}/{value.dtype}/{tuple(value.shape)}".encode())
            h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def gather(obj: Any) -> list[Any]:
    """`obj` from every rank, in rank order ([obj] alone)."""
    world = rank_and_world()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


# -- starting the ranks -------------------------------------------------------------------------------
def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, rank: int) -> torch.device:
    """A rank's device: its own GPU (NCCL needs one per process), or the CPU."""
    return torch.device("cuda", rank) if device.type == "cuda" else device


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_nproc(nproc: int, device: torch.device) -> None:
    """Reject a process count that cannot run, before any work starts. More CPU processes than
    cores is allowed (it is only slower), and said."""
    check_range("--nproc", nproc, 1)
    if nproc == 1:
        return
    if not dist.is_available():
        raise EmbedderError(f"--nproc {nproc}: this PyTorch build has no torch.distributed; use --nproc 1")
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise EmbedderError(f"--nproc {nproc}: {gpus} GPU(s) here, and NCCL needs one per process; "
                                f"use --nproc {gpus} or --device cpu")
    elif nproc > cpu_cores():
        warnings.warn(f"--nproc {nproc} is more than the {cpu_cores()} CPU cores here: training will be slower, "
                      "not faster", stacklevel=2)


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it when binding port 0). Another program
    could take it before rank 0 binds it; the run then fails with one line, and a retry works."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QueueProgress:
    """Rank 0's progress, sent to the parent, which drives the user's callback. Sent at most
    every 1% of a task (and at its end), so a fast loop does not flood the pipe."""

    def __init__(self, queue: Any):
        self.queue = queue
        self.last: dict[str, float] = {}

    def __call__(self, task: str, fraction: float) -> None:
        if fraction >= 1.0 or fraction - self.last.get(task, -1.0) >= 0.01:
            self.last[task] = fraction
            self.queue.put((task, fraction))


def _run_rank(rank: int, worker: Callable[..., Any], args: tuple, world: int, port: int, device: str,
              folder: str, queue: Any) -> None:
    """A child's main: join the process group, run `worker(rank, world, *args, progress=...)`,
    leave its result (or its error, as one line) in `folder` for the parent."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(max(1, cpu_cores() // world))  # N processes share the cores, not N × all of them
    here = rank_device(torch.device(device), rank)
    try:
        if here.type == "cuda":
            torch.cuda.set_device(here)
        dist.init_process_group(backend(here), rank=rank, world_size=world, timeout=TIMEOUT)
        result = worker(rank, world, *args, progress=_QueueProgress(queue) if rank == 0 else None)
        Path(folder, f"rank{rank}.json").write_text(json.dumps(result))
        # every rank done before any leaves: a group torn down while a peer still talks to it
        # aborts that peer in gloo's C++ threads (SIGABRT, about one run in four before this)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as e:  # left without leaving the group: its peers are stopped by the parent
        message = str(e) if isinstance(e, EmbedderError) else f"{type(e).__name__}: {e}"
        line = (message.strip().splitlines() or [type(e).__name__])[0]
        error = {"time": time.time(), "rank": rank, "message": line, "user": isinstance(e, EmbedderError)}
        Path(folder, f"rank{rank}.error.json").write_text(json.dumps(error))
        raise


def _failure(folder: Path, processes: Sequence[Any]) -> str:
    """The one line that explains a failed run. Usually one rank fails and the others fail after
    it, when its connection closes, or are stopped (SIGTERM) by the parent; so, in this order: a
    user mistake any rank raised, a rank that died on its own without a word (killed for memory,
    say), the earliest error recorded."""
    errors = [json.loads(p.read_text()) for p in folder.glob("rank*.error.json")]
    user = [e for e in errors if e["user"]]
    if user:
        return min(user, key=lambda e: e["time"])["message"]
    said = {e["rank"] for e in errors}
    for rank, p in enumerate(processes):
        code = p.exitcode
        if rank not in said and code not in (0, None, -signal.SIGTERM):
            try:
                how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            except ValueError:
                how = f"ended with status {code}"
            return f"training process {rank} {how}"
    if errors:
        first = min(errors, key=lambda e: e["time"])
        return f"training process {first['rank']} failed: {first['message']}"
    return "the training processes stopped before they finished"


def _drain(q: Any, progress: Progress | None) -> None:
    while True:
        try:
            task, fraction = q.get_nowait()
        except queue_lib.Empty:
            return
        report(progress, task, fraction)


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch(worker: Callable[..., Any], nproc: int, args: tuple, device: torch.device,
           progress: Progress | None = None) -> list[Any]:
    """Run `worker(rank, nproc, *args, progress=...)` in `nproc` new processes (torch.multiprocessing,
    spawn) joined in one process group on a free loopback port; returns each rank's result (any
    JSON value), in rank order.

    A rank that fails ends the run with one `EmbedderError` line (its own message for a user
    mistake, the exception's first line otherwise); the others are stopped, not left waiting.
    `worker`, and every argument, must be importable and picklable: spawn starts fresh Python
    processes, which re-import the caller's main module, so a script calling this needs the usual
    `if __name__ == "__main__":` guard.
    """
    check_range("--nproc", nproc, 1)
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # its "Terminating process" lines
    with tempfile.TemporaryDirectory(prefix="embedder-ddp-") as tmp:
        folder = Path(tmp)
        q = mp.get_context("spawn").Queue()
        # the children inherit the environment; DDP's C++ warnings (one per rank: "find_unused_parameters
        # ... did not find any unused parameters", true of some steps only) are not for a user's eyes
        with _environ(TORCH_CPP_LOG_LEVEL=os.environ.get("TORCH_CPP_LOG_LEVEL", "ERROR")):
            context = mp.start_processes(_run_rank, args=(worker, args, nproc, free_port(), str(device), tmp, q),
                                         nprocs=nproc, join=False, start_method="spawn")
        try:
            while not context.join(timeout=0.2, grace_period=GRACE_S):
                _drain(q, progress)
            _drain(q, progress)
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            raise EmbedderError(_failure(folder, context.processes)) from None
        finally:  # the parent's own failure (an interrupt, a progress callback raising) stops them too
            for p in context.processes:
                if p.is_alive():
                    p.terminate()
            for p in context.processes:
                p.join()
            q.close()
        if not all((folder / f"rank{r}.json").exists() for r in range(nproc)):  # an interrupt reaching a child alone
            raise EmbedderError(_failure(folder, context.processes))
        return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(nproc)]
