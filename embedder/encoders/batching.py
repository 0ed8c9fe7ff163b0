"""Length-bucketed batches: sequences of similar length share a batch, so padding stays small."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.tokenizer import BOS, EOS, PAD


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


def pad(seqs: Sequence[np.ndarray], bos: bool = False, eos: bool = False, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) int64 ids and their lengths; empty sequences keep one <pad>-free slot."""
    extra = int(bos) + int(eos)
    lens = [max(len(s) + extra, min_len) for s in seqs]
    out = np.full((len(seqs), max(lens)), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        row = ([BOS] if bos else []) + list(s) + ([EOS] if eos else [])
        out[i, :len(row)] = row
    return torch.from_numpy(out), torch.tensor(lens, dtype=torch.int64)


def length_mask(lengths: torch.Tensor, width: int, device: torch.device) -> torch.Tensor:
    """(B, width) bool: True at each row's first `length` positions (the real pieces)."""
    return torch.arange(width, device=device)[None, :] < lengths.to(device)[:, None]


def stack_padded(seqs: Sequence[torch.Tensor], lengths: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded id batches of different widths as one batch: one encoder call instead of several."""
    width = max(s.shape[1] for s in seqs)
    return (torch.cat([torch.nn.functional.pad(s, (0, width - s.shape[1]), value=PAD) for s in seqs]),
            torch.cat(list(lengths)))


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pinned, non-blocking host-to-GPU copies; a no-op on the CPU."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t



def pair_batch(src: Sequence[np.ndarray], tgt: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """Tensors for a batch of (source, target) id sequences, used by every encoder."""
    s, sl = pad(src)
    t, tl = pad(tgt)
    t_in, _ = pad(tgt, bos=True)
    t_out, _ = pad(tgt, eos=True)
    return {"src": s, "src_len": sl, "tgt": t, "tgt_len": tl, "tgt_in": t_in, "tgt_out": t_out}
