"""Length-bucketed batches: sequences of similar length share a batch, so padding stays small."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .tokenizer import BOS, EOS, PAD


def buckets(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index batches of similar length. With `rng`, batches are shuffled (and ties broken randomly)
    so training still sees a different order each epoch."""
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def pad(seqs: Sequence[np.ndarray], bos: bool = False, eos: bool = False, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) int64 ids and their lengths; empty sequences keep one <pad>-free slot."""
    extra = int(bos) + int(eos)
    lens = [max(len(s) + extra, min_len) for s in seqs]
    out = np.full((len(seqs), max(lens)), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        row = ([BOS] if bos else []) + list(s) + ([EOS] if eos else [])
        out[i, :len(row)] = row
    return torch.from_numpy(out), torch.tensor(lens, dtype=torch.int64)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pinned, non-blocking host-to-GPU copies; a no-op on the CPU."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t

