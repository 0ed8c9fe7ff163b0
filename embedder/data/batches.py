"""Batches of piece-id sequences for inference and training, in numpy alone.

Length-bucketed batches (sequences of similar length share a batch, so padding stays small) and
right padding. Kept free of torch so that the ONNX runtime (`embedder.onnx`) batches exactly as
`Model.encode` does without importing it; `encoders/batching.py` turns these into tensors.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .tokenizer import BOS, EOS, PAD

#: Padded pieces per inference batch at most: long texts come in fewer rows. A batch's
#: intermediate tensors stay small enough to be reused from the allocator's cache, which made
#: `Model.encode` 1.1x faster and took 0.25 GB off `embed encode`'s peak at 100k (benchmarks/RESULTS.md).
#: The CPU's choice in `device.Numerics` (`encode_tokens`), here for the runtimes without torch.
MAX_TOKENS = 4096


def buckets(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None,
            pool: int = 0, max_tokens: int = 0) -> list[np.ndarray]:
    """Index batches of similar length.

    Without `rng` (inference) everything is sorted by length. With it (training) the order is
    shuffled and sorted only within pools of `pool` batches, then the batches are shuffled: a
    contrastive loss needs varied in-batch negatives, which one global sort would freeze into
    the same groups every epoch. `pool=1` gives plain random batches; 0 sorts globally.
    `max_tokens` (inference only) also caps each batch's padded pieces.
    """
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        if max_tokens:
            return _cut_by_tokens(order, lengths, batch_size, max_tokens)
    else:
        order = rng.permutation(len(lengths))
        if pool != 1:
            size = len(order) if pool == 0 else pool * batch_size
            order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                    for chunk in np.array_split(order, max(1, -(-len(order) // size)))])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _cut_by_tokens(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Indices sorted by length cut into batches of at most `batch_size` rows and `max_tokens`
    padded pieces (a batch pads to its last, longest row; a text longer than the cap goes alone)."""
    widths = np.maximum(lengths[order], 1)
    batches, start = [], 0
    while start < len(order):
        end = min(start + batch_size, len(order))
        # rows start..i fit when (i - start + 1) * widths[i] <= max_tokens; widths only grow
        fits = np.flatnonzero((np.arange(1, end - start + 1) * widths[start:end]) <= max_tokens)
        end = start + (int(fits[-1]) + 1 if len(fits) else 1)
        batches.append(order[start:end])
        start = end
    return batches


def pad_ids(seqs: Sequence[np.ndarray], bos: bool = False, eos: bool = False, min_len: int = 1
            ) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (B, T) int64 ids and their int64 lengths; empty sequences keep one <pad> slot."""
    extra = int(bos) + int(eos)
    lens = [max(len(s) + extra, min_len) for s in seqs]
    out = np.full((len(seqs), max(lens)), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        row = ([BOS] if bos else []) + list(s) + ([EOS] if eos else [])
        out[i, :len(row)] = row
    return out, np.asarray(lens, dtype=np.int64)
