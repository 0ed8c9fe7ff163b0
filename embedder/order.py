"""The word-order objective shared by both encoders.

A reconstruction or contrastive loss can be met by a vector that barely changes when two words
trade places: "the dog bit the man" and "the man bit the dog" share every word. So each
encoder also learns to tell an utterance from a copy with two words swapped, through one
linear unit on the (unit-length) embedding itself. That puts "reads in natural order" on one
fixed direction of the vector space, which a downstream linear model can pick up without
being shown a swapped copy of the sentence it is scoring.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ADJACENT = 0.75   # share of swaps between neighbouring words; the rest swap any two words


def word_starts(pieces: Sequence[str]) -> np.ndarray:
    """Which piece ids begin a word (SentencePiece marks them with ▁)."""
    return np.array([p.startswith("▁") for p in pieces], dtype=bool)


def swap_words(seqs: Sequence[np.ndarray], starts: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Copies with two different words (whole pieces groups) swapped: mostly neighbours, the
    rest any two. A sequence of fewer than two words swaps two pieces instead, or stays as is."""
    out = []
    for s in seqs:
        cuts = np.flatnonzero(starts[s]) if len(s) else np.zeros(0, np.int64)
        if len(cuts) == 0 or cuts[0] != 0:
            cuts = np.r_[0, cuts]
        words = np.split(s, cuts[1:])
        if len(words) < 2:
            t = s.copy()
            if len(t) >= 2:
                i = int(rng.integers(len(t) - 1))
                t[i], t[i + 1] = t[i + 1], t[i]
            out.append(t)
            continue
        if rng.random() < ADJACENT:
            i = int(rng.integers(len(words) - 1))
            j = i + 1
        else:
            i, j = sorted(rng.choice(len(words), size=2, replace=False).tolist())
        words[i], words[j] = words[j], words[i]
        out.append(np.concatenate(words))
    return out


def changed(seqs: Sequence[np.ndarray], swapped: Sequence[np.ndarray]) -> torch.Tensor:
    """Which copies differ from their original (a one-piece or "no no" utterance cannot)."""
    return torch.tensor([not np.array_equal(a, b) for a, b in zip(seqs, swapped)], dtype=torch.bool)


def order_loss(head: torch.nn.Linear, original: torch.Tensor, swapped: torch.Tensor,
               keep: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of `head` telling unit-length originals (1) from swapped copies (0),
    over the rows where the copy differs from its original (`keep`)."""
    keep = keep.to(original.device)
    if not bool(keep.any()):
        return original.new_zeros(())
    o = head(F.normalize(original[keep].float(), dim=-1)).squeeze(-1)
    s = head(F.normalize(swapped[keep].float(), dim=-1)).squeeze(-1)
    return 0.5 * (F.binary_cross_entropy_with_logits(o, torch.ones_like(o))
                  + F.binary_cross_entropy_with_logits(s, torch.zeros_like(s)))
