"""What every encoder is to the rest of the code: one small protocol, and the pieces they share.

An encoder is an `nn.Module` that turns padded token ids into per-token states and one pooled,
unit-length vector per utterance, knows its own training loss and how to batch the training
pairs for it, and may need a step before the training loop (skip-gram for the BiRNN). The model
folder, the training loop, encoding and the probes reach an encoder only through this class, so a
new encoder is one new module plus one line in `registry.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.pairs import PairCorpus
from ..errors import EmbedderError
from ..progress import Progress
from .batching import buckets, pair_batch
from .order import swap_batch

Batch = dict[str, torch.Tensor]


@dataclass
class Stage:
    """A further training stage over part of an encoder (the rest stays frozen), run by the same
    loop after the main one: what it trains, its loss, and how many updates it needs."""
    name: str                                     # its progress task and checkpoint name
    parameters: list[nn.Parameter]
    loss: Callable[[Batch], torch.Tensor]
    updates: int


class EncoderConfig:
    """Mixin for an encoder's dataclass config: `dim` (the vector size) and `max_len` (pieces read
    per utterance) are what the rest of the code may rely on; the folder stores `to_dict()`."""

    dim: int
    max_len: int

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]


class Encoder(nn.Module):
    kind: ClassVar[str]                      # the name in model folders and on the command line
    config_class: ClassVar[type]
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}   # training option -> the values it may take
    cfg: Any

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Reject training options this encoder cannot use, before any work starts."""
        for key, allowed in cls.choices.items():
            if key in options and options[key] not in allowed:
                raise EmbedderError(f"--{key} {options[key]!r}: expected one of {', '.join(allowed)}")

    @classmethod
    def configure(cls, vocab_size: int, options: Mapping[str, Any]):
        """The config for training with `options` (`dim` and the encoder's own keys)."""
        raise NotImplementedError

    @classmethod
    def build(cls, cfg) -> "Encoder":
        """A fresh module for `cfg` (a subclass may pick an implementation by the config)."""
        return cls(cfg)

    # -- inference --------------------------------------------------------------------------------
    def token_states(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, width) contextual states, one per piece."""
        raise NotImplementedError

    def vectors(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, dim) utterance vectors, before normalisation."""
        raise NotImplementedError

    def embed(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, dim) unit-length float32 vectors: cosine similarity is a dot product."""
        return F.normalize(self.vectors(src, lengths).float(), dim=-1)

    def generate(self, src: torch.Tensor, beam: int = 1) -> list[tuple[list[int], float]]:
        """Replies to one source (1, T) as (token ids, log-probability), best first, for encoders
        that have a decoder."""
        raise EmbedderError(f"the {self.kind} encoder has no decoder, so it cannot generate text")

    # -- training ---------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def batches(self, corpus: PairCorpus, idx: np.ndarray, batch_size: int, rng: np.random.Generator,
                shuffle: bool) -> Iterator[Batch]:
        """Training (shuffle=True) or validation batches of the pairs `idx`; `rng` draws the
        batches (when shuffling) and the word swaps."""
        raise NotImplementedError

    def prepare(self, corpus: PairCorpus, *, seed: int, device: torch.device, checkpoint_dir: Path | None,
                resume: bool, progress: Progress | None, options: Mapping[str, Any]) -> None:
        """Work before the training loop (none by default)."""

    def warmup_epochs(self, epochs: int) -> int:
        """Leading epochs that train only part of the encoder; early stopping waits past them."""
        return 0

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each training epoch (to freeze or unfreeze parts)."""

    def follow_up(self, updates: int) -> Stage | None:
        """A stage to run after a main training of `updates` updates whose length was chosen
        automatically (none by default)."""
        return None


def pooled(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and max over the valid positions: the mean keeps the whole, the max keeps salient parts."""
    m = mask.unsqueeze(-1).to(states.dtype)
    mean = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
    mx = states.masked_fill(~mask.unsqueeze(-1), torch.finfo(states.dtype).min).max(1).values
    return torch.cat([mean, mx], dim=-1)


def pair_batches(corpus: PairCorpus, idx: np.ndarray, batch_size: int, rng: np.random.Generator, shuffle: bool,
                 swap: str | None) -> Iterator[Batch]:
    """Batches of (source, target) pairs of similar length (sorted within pools of 8 batches when
    shuffling, so in-batch negatives vary between epochs); `swap` ("src" or "tgt") adds copies of
    that side with two words swapped, for the word-order objective."""
    for b in buckets(corpus.widths(idx), batch_size, rng if shuffle else None, pool=8):
        sel = corpus.pairs[idx[b]]
        src = [corpus.ids[i] for i in sel[:, 0]]
        tgt = [corpus.ids[i] for i in sel[:, 1]]
        batch = pair_batch(src, tgt)
        if swap is not None:
            batch.update(swap_batch(src if swap == "src" else tgt, corpus.word_starts, rng))
        yield batch
