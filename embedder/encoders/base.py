"""What every encoder is to the rest of the code: one small protocol, and the pieces they share.

An encoder is an `nn.Module` that turns padded token ids into per-token states and one pooled,
unit-length vector per utterance (and, from the same pass, a word-order score), knows its own
training objectives and how to batch the training pairs for them, and may need a step before
the training loop (skip-gram for the BiRNN). The model folder, the training loop, encoding and
the probes reach an encoder only through this class, so a new encoder is one new module plus
one line in `registry.py`.

Two terms are added here, once, for every encoder, to whatever its own `objective` returns: the
role term (questions and answers kept apart along one direction of the vector space) and, when
the training corpus carries a teacher's vectors (a sentence-transformers model), the distillation.
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
from .batching import buckets, pad, pair_batch
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
    per utterance) are what the rest of the code may rely on, `teacher_dim` (0: no teacher) and
    `teacher_weight` what the distillation needs, `role_weight` the role term (0 in the configs of
    models trained before it existed); the folder stores `to_dict()`."""

    dim: int
    max_len: int
    teacher_dim: int
    teacher_weight: float
    role_weight: float

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]


class Encoder(nn.Module):
    kind: ClassVar[str]                      # the name in model folders and on the command line
    config_class: ClassVar[type]
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}   # training option -> the values it may take
    cfg: Any
    order: nn.Module | None                  # the word-order scorer, or None (every encoder sets it)

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        # maps a vector to the teacher's width, for the distillation only: encoding never uses it
        self.teacher_head = nn.Linear(cfg.dim, cfg.teacher_dim) if cfg.teacher_dim else None
        # reads the role off a unit vector, for the role term only: encoding never uses it
        self.role_head = nn.Linear(cfg.dim, 1) if cfg.role_weight > 0 else None

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

    def vectors_and_order(self, src: torch.Tensor, lengths: torch.Tensor, order: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, dim) utterance vectors before normalisation, and (B,) word-order logits (None for an
        encoder without a scorer, or when `order` is False), from one pass."""
        raise NotImplementedError

    def vectors(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, dim) utterance vectors, before normalisation."""
        return self.vectors_and_order(src, lengths, order=False)[0]

    def embed(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, dim) unit-length float32 vectors: cosine similarity is a dot product."""
        return F.normalize(self.vectors(src, lengths).float(), dim=-1)

    def generate(self, src: torch.Tensor, beam: int = 1) -> list[tuple[list[int], float]]:
        """Replies to one source (1, T) as (token ids, log-probability), best first, for encoders
        that have a decoder."""
        raise EmbedderError(f"the {self.kind} encoder has no decoder, so it cannot generate text")

    # -- training ---------------------------------------------------------------------------------
    def objective(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's own training loss, and the un-normalised vectors the distillation reads:
        the batch's sources, targets and (where the batch has them) `extra` texts, stacked in
        that order. An encoder reads `extra` in the same pass as the rest (`DISTILLED`)."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> torch.Tensor:
        """The encoder's objectives, plus the role term and, where the batch has teacher vectors,
        the distillation. Each weighted term is also kept, by name, in `loss_parts`."""
        self.loss_parts = {}
        total, z = self.objective(batch)
        if self.role_head is not None and "src_question" in batch:
            n = len(batch["src"])
            questions = torch.cat([batch["src_question"], batch["tgt_question"]])
            total = total + self.part("role", self.cfg.role_weight * role_loss(z[:2 * n], self.role_head, questions))
        if self.teacher_head is not None and "src_teacher" in batch:
            target = torch.cat([batch[f"{k}_teacher"] for k in DISTILLED if f"{k}_teacher" in batch])
            total = total + self.part("distillation",
                                      self.cfg.teacher_weight * distillation(z, self.teacher_head, target))
        return total

    def part(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """`value`, kept as the loss term `name` of the current step: when a loss turns NaN or
        infinite, the training loop names the term that did (`loss_parts`, reset by `loss`)."""
        parts = self.__dict__.setdefault("loss_parts", {})
        parts[name] = value.detach()
        return value

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


def piece_start(teacher_pieces: np.ndarray, width: int, scale: float) -> np.ndarray:
    """Starting piece vectors from the teacher's: reduced to `width` by PCA, rows of mean norm
    `scale`; NaN rows for the pieces the teacher gave nothing (the specials), which keep the
    encoder's own start."""
    given = np.abs(teacher_pieces).sum(1) > 0
    out = np.full((len(teacher_pieces), width), np.nan, dtype=np.float32)
    X = teacher_pieces[given].astype(np.float64)
    if len(X) == 0:
        return out
    X -= X.mean(0)
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    Y = np.zeros((len(X), width))
    Y[:, :min(width, len(vt))] = X @ vt[:width].T
    Y *= scale / max(float(np.linalg.norm(Y, axis=1).mean()), 1e-12)
    out[given] = Y
    return out


def pooled(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and max over the valid positions: the mean keeps the whole, the max keeps salient parts."""
    m = mask.unsqueeze(-1).to(states.dtype)
    mean = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
    mx = states.masked_fill(~mask.unsqueeze(-1), torch.finfo(states.dtype).min).max(1).values
    return torch.cat([mean, mx], dim=-1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float, hard: torch.Tensor | None = None,
             hard_keep: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric in-batch InfoNCE on unit rows: row i of `a` must pick row i of `b` among all rows
    of `b`, and the other way round. `hard` (B, dim) gives each row of `a` one more candidate to
    reject (a copy of its partner with two words swapped), where `hard_keep` says the copy differs:
    since the vector holds no separate order flag, only the geometry can tell that copy apart."""
    labels = torch.arange(len(a), device=a.device)
    logits = a @ b.T / temperature
    forward = logits
    if hard is not None:
        extra = (a * hard).sum(-1, keepdim=True) / temperature
        if hard_keep is not None:
            extra = extra.masked_fill(~hard_keep.to(a.device)[:, None], float("-inf"))
        forward = torch.cat([logits, extra], 1)
    return 0.5 * (F.cross_entropy(forward, labels) + F.cross_entropy(logits.T, labels))


# The role term's weight in new models. Question-to-answer training pulls each question toward its
# answer, and nothing else asks the vector to say which is which: before this term a linear probe
# read the role off the pooled states at 0.99 and off the projected vector at 0.69 on the bundled
# corpus (benchmarks/RESULTS.md).
ROLE_WEIGHT = 1.0


def role_loss(z: torch.Tensor, head: nn.Module, questions: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a linear read of the role off each unit vector: questions and
    answers end up on either side of one direction, which a cosine or a probe can use, while the
    contrastive term still pulls each question toward its own answer."""
    logits = head(F.normalize(z.float(), dim=-1)).squeeze(-1)
    return F.binary_cross_entropy_with_logits(logits, questions.to(logits.device, logits.dtype))


DISTILLED = ("src", "tgt", "extra")   # the batch entries the distillation reads, in this order

# the in-batch similarity structure's weight beside the cosine to each teacher vector
STRUCTURE_WEIGHT = 0.5


def distillation(z: torch.Tensor, head: nn.Module, target: torch.Tensor) -> torch.Tensor:
    """How far the vectors are from the teacher's: 1 − cosine between each vector (projected to
    the teacher's width) and the teacher's unit vector, plus the squared error between the
    batch's cosine matrices in the vector space itself and the teacher's, so the cosines a user
    computes on the vectors follow the teacher's relatedness and not only the projection does."""
    target = target.float()
    p = F.normalize(head(z.float()), dim=-1)
    pointwise = (1.0 - (p * target).sum(-1)).mean()
    u = F.normalize(z.float(), dim=-1)
    # each row's squared errors summed over the batch (a mean over all B² entries would leave
    # every cosine a gradient too small to compete with the contrastive term)
    structure = ((u @ u.T - target @ target.T) ** 2).sum(-1).mean()
    return pointwise + STRUCTURE_WEIGHT * structure


VIEWS_MIN_LONE = 0.75   # share of single-line dialogues from which `pair_batches` reads them through views


def stretch(ids: np.ndarray, starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random run of whole words, a quarter to a half of them, from an utterance of four or more
    words (a shorter one as it is): a second view of the same utterance that shares its meaning
    but few of its words. Longer runs (half to four fifths, two thirds to all but one) left the
    BiRNN further behind a bag of words on sentence relatedness (benchmarks/RESULTS.md)."""
    words = np.flatnonzero(starts[ids])
    if len(words) == 0 or words[0] != 0:
        words = np.r_[0, words]
    n = len(words)
    if n < 4:
        return ids
    size = int(rng.integers(max(2, n // 4), max(3, n // 2) + 1))
    first = int(rng.integers(0, n - size + 1))
    end = words[first + size] if first + size < n else len(ids)
    return ids[words[first]:end]


def pair_batches(corpus: PairCorpus, idx: np.ndarray, batch_size: int, rng: np.random.Generator, shuffle: bool,
                 swap: str | None, views: str | None = None) -> Iterator[Batch]:
    """Batches of (source, target) pairs of similar length (sorted within pools of 8 batches when
    shuffling, so in-batch negatives vary between epochs); `swap` ("src" or "tgt") adds copies of
    that side with two words swapped, for the word-order objective. With `views` ("src" or
    "tgt"), a line that is a dialogue of its own (every line of a corpus of single sentences)
    has that side of its pair with itself replaced by a stretch of itself (`stretch`) when
    shuffling: matching an utterance to itself teaches nothing of what its words mean, while
    finding it from part of its words (or, for a decoder, writing it out from part) does. That
    is done where such lines are most of the corpus (`VIEWS_MIN_LONE`), a file of sentences
    rather than of dialogues: on question/answer text with single lines among the dialogues,
    the encoders ranked answers lower with it (benchmarks/RESULTS.md, "Sentence pairs without a
    teacher")."""
    lone = corpus.lone() if views and shuffle else None
    if lone is not None and lone.mean() < VIEWS_MIN_LONE:
        lone = None
    for b in buckets(corpus.widths(idx), batch_size, rng if shuffle else None, pool=8):
        sel = corpus.pairs[idx[b]]
        src = [corpus.ids[i] for i in sel[:, 0]]
        tgt = [corpus.ids[i] for i in sel[:, 1]]
        if lone is not None:
            cut = [stretch(t, corpus.word_starts, rng) if alone else t
                   for t, alone in zip(src if views == "src" else tgt, lone[idx[b]])]
            src, tgt = (cut, tgt) if views == "src" else (src, cut)
        batch = pair_batch(src, tgt)
        batch["src_question"] = torch.from_numpy(corpus.questions[sel[:, 0]])
        batch["tgt_question"] = torch.from_numpy(corpus.questions[sel[:, 1]])
        if corpus.teacher is not None:
            batch["src_teacher"] = torch.from_numpy(corpus.teacher[sel[:, 0]])
            batch["tgt_teacher"] = torch.from_numpy(corpus.teacher[sel[:, 1]])
        if corpus.extra_teacher is not None and len(corpus.extra_ids):
            pick = rng.integers(len(corpus.extra_ids), size=len(sel))
            batch["extra"], batch["extra_len"] = pad([corpus.extra_ids[i] for i in pick])
            batch["extra_teacher"] = torch.from_numpy(corpus.extra_teacher[pick])
        if swap is not None:
            batch.update(swap_batch(src if swap == "src" else tgt, corpus.word_starts, rng))
        yield batch
