"""Batches as tensors: padding, masks and device copies around `data.batches` (numpy)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.batches import buckets, pad_ids  # noqa: F401 - buckets: imported from here too
from ..data.tokenizer import PAD


def pad(seqs: Sequence[np.ndarray], bos: bool = False, eos: bool = False, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) int64 ids and their lengths, as tensors (`data.batches.pad_ids`)."""
    ids, lens = pad_ids(seqs, bos, eos, min_len)
    return torch.from_numpy(ids), torch.from_numpy(lens)


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
