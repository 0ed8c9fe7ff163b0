"""The word-order objective shared by both encoders.

A reconstruction or contrastive loss can be met by a vector that barely changes when two words
trade places: "the dog bit the man" and "the man bit the dog" share every word. So each
encoder also learns to spot copies of its training utterances with two words swapped. Its
answer is a feature of its own (`Model.order_score`, a column beside the vectors), never a
coordinate of the vector: a vector carries meaning only, so a cosine or a FAISS ranking is not
shifted by fluency, and the contrastive loss cannot reject a swapped copy through one scalar
(it must tell the copy apart in the geometry, where word order then lives).

The spotting is local, as the damage is: a small MLP scores each pair of neighbouring encoder
states, trained on which pairs the swap actually broke (as ELECTRA labels replaced tokens); one
label per sentence is too weak a signal to find the few pairs that changed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import cpu_bf16
from .batching import pad

ADJACENT = 0.75   # share of swaps between neighbouring words; the rest swap any two words
NO_PAIRS = -10.0  # the order logit of an utterance of one piece: nothing can be out of order


def swap_words(seqs: Sequence[np.ndarray], starts: np.ndarray, rng: np.random.Generator
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Copies with two words (whole groups of pieces) swapped, mostly neighbours, the rest any
    two; and for each copy, the indices t of the neighbour pairs (t, t+1) that the swap
    created. A sequence of one word swaps two of its pieces; one of a single piece stays."""
    copies, broken = [], []
    for s in seqs:
        cuts = np.flatnonzero(starts[s]) if len(s) else np.zeros(0, np.int64)
        if len(cuts) == 0 or cuts[0] != 0:
            cuts = np.r_[0, cuts]
        words = np.split(s, cuts[1:])
        if len(words) < 2:
            words = np.split(s, np.arange(1, len(s)))  # each piece a "word"
        if len(words) < 2:
            copies.append(s.copy())
            broken.append(np.zeros(0, np.int64))
            continue
        if rng.random() < ADJACENT:
            i = int(rng.integers(len(words) - 1))
            j = i + 1
        else:
            i, j = sorted(rng.choice(len(words), size=2, replace=False).tolist())
        words[i], words[j] = words[j], words[i]
        ends = np.cumsum([len(w) for w in words])
        begins = ends - np.array([len(w) for w in words])
        # the pairs on either side of each moved word: (piece before it, its first piece) and
        # (its last piece, the piece after it)
        edges = {begins[i] - 1, ends[i] - 1, begins[j] - 1, ends[j] - 1}
        copies.append(np.concatenate(words))
        broken.append(np.array(sorted(t for t in edges if 0 <= t < len(s) - 1), dtype=np.int64))
    return copies, broken


def pair_labels(broken: Sequence[np.ndarray], width: int) -> torch.Tensor:
    """(B, width) float targets: 1 at the neighbour pairs a swap created."""
    out = torch.zeros(len(broken), max(width, 0))
    for row, idx in enumerate(broken):
        out[row, torch.from_numpy(idx[idx < width])] = 1.0
    return out


def changed(seqs: Sequence[np.ndarray], copies: Sequence[np.ndarray]) -> torch.Tensor:
    """Which copies differ from their original (one piece, or "no no", cannot)."""
    return torch.tensor([not np.array_equal(a, b) for a, b in zip(seqs, copies)], dtype=torch.bool)


def swap_batch(seqs: Sequence[np.ndarray], starts: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """The batch entries `order_loss` needs for `seqs`: their swapped copies (`swap`,
    `swap_len`), the pairs each swap broke (`swap_pairs`) and which copies changed."""
    copies, broken = swap_words(seqs, starts, rng)
    swap, swap_len = pad(copies)
    return {"swap": swap, "swap_len": swap_len, "swap_pairs": pair_labels(broken, swap.shape[1] - 1),
            "swap_changed": changed(seqs, copies)}


_exact = {"on": 0}


@contextlib.contextmanager
def float32_scores() -> Iterator[None]:
    """Within the block, order scores are computed in float32 on every CPU: what an ONNX export
    computes, and what `Model.order_score` gives on a CPU without bfloat16. Process-wide (the
    batches of one `Model.features` call run on pool threads), so meant for checks and exports,
    not for a server's request path."""
    _exact["on"] += 1
    try:
        yield
    finally:
        _exact["on"] -= 1


def _bf16_inference(states: torch.Tensor) -> bool:
    """Scoring without gradients on a CPU that multiplies bfloat16 natively (on a GPU, autocast
    already does). Training keeps float32, and so does an ONNX export (onnxruntime's CPU kernels
    multiply no bfloat16) and `float32_scores`."""
    return (not torch.is_grad_enabled() and states.device.type == "cpu" and states.dtype == torch.float32
            and cpu_bf16() and not _exact["on"] and not torch.onnx.is_in_onnx_export())


class OrderScorer(nn.Module):
    """Scores each neighbour pair of encoder states for "these two do not belong in this order";
    the utterance's order logit is its worst pair."""

    def __init__(self, width: int, hidden: int = 128):
        super().__init__()
        # Each position is layer-normed first, so both encoders' inputs reach the MLP on one
        # scale (skip-gram vectors and seq2seq's embeddings differ in norm several-fold).
        self.norm = nn.LayerNorm(width)
        self.pair = nn.Sequential(nn.Linear(2 * width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def pair_logits(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T-1) logits, one per neighbour pair, and which pairs lie inside the utterance."""
        states = self.norm(states)
        if _bf16_inference(states):
            logits = self._pair_bf16(states)
        else:
            logits = self.pair(torch.cat([states[:, :-1], states[:, 1:]], -1))
        return logits.squeeze(-1).float(), mask[:, 1:] & mask[:, :-1]

    def _pair_bf16(self, states: torch.Tensor) -> torch.Tensor:
        """The pair MLP with its wide first layer multiplied in bfloat16 (float32 sums): that layer
        reads twice the state width for every pair and made the scorer a quarter of `embed
        encode`'s model time in float32; this way the scorer runs about 2.5x faster on a CPU with
        native bfloat16 (benchmarks/RESULTS.md, "Scale"), and the order probabilities stay within
        0.01 of float32 (tests/test_order.py)."""
        first, last = self.pair[0], self.pair[2]
        width = states.shape[-1]
        # the first layer reads [left, right]: its two halves applied to every state once, then
        # each pair sums its left state's share and its right neighbour's (no pair copies made)
        halves = torch.cat([first.weight[:, :width], first.weight[:, width:]]).to(torch.bfloat16)
        shares = F.linear(states.to(torch.bfloat16), halves)
        hidden = shares[:, :-1, :len(first.weight)].float() + shares[:, 1:, len(first.weight):] + first.bias
        return last(F.relu(hidden))

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) logits that the utterance has words out of order."""
        logits, valid = self.pair_logits(states, mask)
        if logits.shape[1] == 0:
            return logits.new_full((len(logits),), NO_PAIRS)
        return logits.masked_fill(~valid, NO_PAIRS).amax(-1).clamp(min=NO_PAIRS)


def order_loss(scorer: OrderScorer, original: tuple[torch.Tensor, torch.Tensor],
               copy: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-pair binary cross-entropy: every pair of an original is in order, and the pairs of a
    copy are out of order exactly where `labels` says. Rows whose copy equals its original
    (`keep` False) are left out."""
    keep = keep.to(original[0].device)
    lo, vo = scorer.pair_logits(*original)
    lc, vc = scorer.pair_logits(*copy)
    labels = labels.to(lc.device)[:, : lc.shape[1]]
    vo, vc = vo & keep[:, None], vc & keep[:, None]
    logits = torch.cat([lo[vo], lc[vc]])
    targets = torch.cat([torch.zeros_like(lo[vo]), labels[vc]])
    if not logits.numel():  # no copy changed
        return logits.sum()
    # a few broken pairs among many sound ones: weigh the two kinds equally, or the scorer
    # learns "never broken" first and takes hundreds of steps to move off it
    pos = targets.sum().clamp(min=1.0)
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=(len(targets) - pos) / pos)
