"""Picking the device, and every choice that goes with it, in one place.

The GPU and the CPU do not run the same arithmetic: on CUDA the training loop and encoding run
under bfloat16 autocast, cuDNN's RNNs under autocast run in float16 whatever autocast's dtype
(ATen's `_cudnn_rnn` autocast wrapper casts to half), and skip-gram runs the batched torch
backend instead of the numba kernel. CI and most development machines have no GPU, so that
arithmetic must also run on the CPU, where tests can train through it: set
`EMBEDDER_NUMERICS=gpu` (or use `gpu_numerics()`) and a CPU run takes the GPU's choices, float16
RNNs included. `Numerics` is the list of those choices; `numerics(device)` gives them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .errors import EmbedderError

DEVICES = ("auto", "cpu", "cuda")


def resolve(device: str | torch.device = "auto") -> torch.device:
    """`auto` is CUDA when there is a GPU, else the CPU; asking for CUDA without one is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EmbedderError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise EmbedderError(f"--device {name!r}: expected one of {', '.join(DEVICES)}")


NUMERICS_ENV = "EMBEDDER_NUMERICS"   # "gpu": a CPU run takes the GPU's numerics (for tests)


@dataclass(frozen=True)
class Numerics:
    """The arithmetic a device trains and encodes with."""
    autocast: torch.dtype | None     # autocast's dtype in training and encoding (None: float32)
    rnn: torch.dtype | None          # the dtype RNNs run in under autocast (None: autocast decides)
    skipgram_backend: str            # "numba" (the CPU kernel) or "torch" (batched, as on CUDA)
    skipgram_batch: int              # the torch backend's centre words per step
    teacher_batch: int = 128         # texts per teacher (sentence-transformers) forward pass
    encode_batch: int = 256          # texts per encoding batch at most (`Model.encode`'s default)
    encode_tokens: int = 4096        # padded pieces per encoding batch at most (0: rows alone; `data.batches.MAX_TOKENS`)
    collect_rows: int = 0            # encoding results kept on the device, copied back together (0: each batch's at once)
    serve_batch: int = 16            # texts `embed serve` gathers from concurrent requests into one model call


CPU = Numerics(autocast=None, rnn=None, skipgram_backend="numba", skipgram_batch=4096)
# bfloat16 autocast needs no loss scaling; cuDNN's autocast runs RNNs in float16 regardless.
# Encoding: the CPU's piece cap is sized for its caches; on an H200 it kept batches near 200 rows,
# and 4,096 rows with no cap ran the model part about twice as fast (measured by the filer of
# issue 29; our own GPU figures await a GPU session: benchmarks/RESULTS.md, "GPU").
GPU = Numerics(autocast=torch.bfloat16, rnn=torch.float16, skipgram_backend="torch", skipgram_batch=4096,
               teacher_batch=512, encode_batch=4096, encode_tokens=0, collect_rows=65536, serve_batch=512)
# collect_rows: a batch's `.cpu()` waits for the GPU to finish it, so the CPU cannot pad and send
# the next batch meanwhile; kept on the GPU (65,536 x 256 float32: 64 MiB), the results of many
# batches cost one wait and one copy, and the CPU runs ahead of the GPU in between.
# serve_batch: on the CPU a model call's cost grows with its rows, and 16 kept p99 near 20 ms
# under 32 clients (benchmarks/RESULTS.md, "Serving"); a GPU call costs nearly the same for 16
# rows as for hundreds, so 32 clients' 32-text requests should share a call rather than take one
# each (512 rows at the issue filer's ~90k texts/s is ~6 ms). Not yet measured on a GPU:
# `benchmarks/gpu.py` serves with it.


def gpu_numerics_on_cpu() -> bool:
    """Whether CPU runs take the GPU's numerics (`EMBEDDER_NUMERICS=gpu`)."""
    value = os.environ.get(NUMERICS_ENV, "").strip().lower()
    if value not in ("", "cpu", "gpu", "auto"):
        raise EmbedderError(f"{NUMERICS_ENV}={value!r}: expected gpu (the GPU's numerics on the CPU) or auto")
    return value == "gpu"


def numerics(device: str | torch.device) -> Numerics:
    """The arithmetic `device` runs: the GPU's on CUDA, and on the CPU under `EMBEDDER_NUMERICS=gpu`."""
    if resolve(device).type == "cuda" or gpu_numerics_on_cpu():
        return GPU
    return CPU


@contextlib.contextmanager
def gpu_numerics() -> Iterator[None]:
    """Within the block, CPU runs take the GPU's numerics (the variable is restored after)."""
    before = os.environ.get(NUMERICS_ENV)
    os.environ[NUMERICS_ENV] = "gpu"
    try:
        yield
    finally:
        if before is None:
            del os.environ[NUMERICS_ENV]
        else:
            os.environ[NUMERICS_ENV] = before


def autocast(device: torch.device):
    """The device's autocast (bfloat16 on CUDA, and on the CPU under the GPU's numerics), or none."""
    dtype = numerics(device).autocast
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def full_precision(t: torch.Tensor):
    """A block that runs in float32 whatever autocast is on for `t`'s device. For the adaptive
    softmax's loss: under CUDA's autocast its log-softmax would run in float32 anyway, but the
    CPU's autocast leaves it in bfloat16 and then fails to copy that into float32 output; in
    float32 on both, the GPU's numerics run on the CPU as they do on CUDA."""
    return torch.autocast(t.device.type, enabled=False)


def run_rnn(rnn: torch.nn.Module, x: torch.Tensor, *state: torch.Tensor) -> torch.Tensor:
    """`rnn(x, *state)`'s outputs. On CUDA under autocast cuDNN casts the RNN to float16 itself; on the CPU
    under the GPU's numerics this does the same (weights and input cast to float16, gradients
    flowing back to the float32 weights), so that what overflows float16 on a GPU overflows in a
    CPU test too. Elsewhere it is the plain call."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        dtype = numerics(x.device).rnn
        if dtype is not None:
            with torch.autocast("cpu", enabled=False):
                weights = {k: v.to(dtype) for k, v in rnn.named_parameters()}
                out = torch.func.functional_call(rnn, weights, (x.to(dtype), *(h.to(dtype) for h in state)))[0]
                # float32 holds the float16 values exactly; the CPU's autocast rejects float16 inputs
                return out.float()
    return rnn(x, *state)[0]


@functools.cache
def cpu_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX). Elsewhere bfloat16 is
    emulated and slower than float32, so it is only used where this holds."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume not
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
