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
    distill_epochs: int
    word_weight: float
    listwise_weight: float
    hard_weight: float
    temperature: float
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
        self.word_head: nn.Module | None = None   # maps a word's states to the teacher's (`word_distillation`)

    def training_heads(self) -> list[nn.Module]:
        """The parts that serve a training term only, never the vectors."""
        return [h for h in (self.teacher_head, self.role_head, self.word_head) if h is not None]

    def add_word_head(self, width: int) -> None:
        """The projection the word targets need, for an encoder whose per-piece states are `width`
        wide (called by the subclass, which knows it)."""
        if self.cfg.word_weight > 0 and self.cfg.teacher_dim:
            self.word_head = nn.Linear(width, WORD_TARGET_DIM)

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
    def objective(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder's own training loss; the un-normalised vectors the distillation reads: the
        batch's sources, targets and (where the batch has them) `extra` and `hard` texts, stacked
        in that order (`DISTILLED`), read in the same pass as the rest; and that pass's per-piece
        states, whose first rows are the sources' and then the targets' (the word targets read
        them)."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> torch.Tensor:
        """The encoder's objectives, plus the role term and, where the batch has teacher vectors,
        the distillation. Each weighted term is also kept, by name, in `loss_parts`."""
        self.loss_parts = {}
        total, z, states = self.objective(batch)
        own = not (self.training and self.__dict__.get("distilling", False))
        if not own:
            total = total * 0.0   # the teacher's terms alone for now (validation still reads them all)
        if own and self.role_head is not None and "src_question" in batch:
            n = len(batch["src"])
            questions = torch.cat([batch["src_question"], batch["tgt_question"]])
            total = total + self.part("role", self.cfg.role_weight * role_loss(z[:2 * n], self.role_head, questions))
        if self.cfg.hard_weight > 0 and "hard" in batch:
            n, m = len(batch["src"]), len(batch["hard"])
            total = total + self.part("hard", self.cfg.hard_weight * hard_negative_loss(
                z[:n], z[n:2 * n], z[len(z) - m:], self.cfg.temperature))
        if self.word_head is not None and "src_words" in batch:
            n = len(batch["src"])
            sides = [(states[i * n:(i + 1) * n, :batch[k].shape[1]], batch[f"{k}_word_of"], batch[f"{k}_words"])
                     for i, k in enumerate(("src", "tgt"))]
            total = total + self.part("words", self.cfg.word_weight * word_distillation(sides, self.word_head))
        if self.teacher_head is not None and "src_teacher" in batch:
            target = torch.cat([batch[f"{k}_teacher"] for k in DISTILLED if f"{k}_teacher" in batch])
            total = total + self.part("distillation",
                                      self.cfg.teacher_weight * distillation(z, self.teacher_head, target))
            if self.cfg.listwise_weight > 0:
                total = total + self.part("listwise", self.cfg.listwise_weight * listwise_distillation(z, target))
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
        """Called before each training epoch (to freeze or unfreeze parts, and to start the
        encoder's own objectives after the distillation-only epochs)."""
        self.distilling = self.cfg.teacher_dim > 0 and epoch < min(self.cfg.distill_epochs, epochs // 2)

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


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean over the valid positions (B, T, W) -> (B, W)."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


def pooled(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and max over the valid positions: the mean keeps the whole, the max keeps salient parts."""
    mean = masked_mean(states, mask)   # first: autograd sums the gradients in the order the graph was built
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


# the batch entries the distillation reads, in this order (and the order of the vectors an
# encoder's `objective` returns: the mined negatives, when the batch has them, come last)
DISTILLED = ("src", "tgt", "extra", "hard")

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


WORD_TARGET_DIM = 128   # the width the teacher's word states are cut to (`training/teacher_words.py`)


def word_distillation(sides: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], head: nn.Module) -> torch.Tensor:
    """1 − cosine between each word's mean state over its pieces, through `head`, and the
    teacher's state of that word; `sides` holds, per side of the pairs, the states (B, T, W), each
    piece's word (B, T; −1: padding) and the targets (B, words, WORD_TARGET_DIM; zero rows: none)."""
    losses = []
    for states, word_of, targets in sides:
        b, t, w = states.shape
        k = targets.shape[1]
        word_of = word_of.to(states.device)[:, :t]
        valid = (word_of >= 0) & (word_of < k)
        slot = (word_of.clamp(0, max(k - 1, 0)) + torch.arange(b, device=states.device)[:, None] * k)[valid]
        sums = states.new_zeros(b * k, w).index_add(0, slot, states[valid])
        counts = states.new_zeros(b * k).index_add(0, slot, torch.ones_like(slot, dtype=states.dtype))
        target = targets.to(states.device).float().reshape(b * k, -1)
        keep = (counts > 0) & (target.abs().sum(-1) > 0)
        if keep.any():
            p = head((sums[keep] / counts[keep, None]).float())
            losses.append(1.0 - F.cosine_similarity(p, target[keep], dim=-1))
    if not losses:
        return sides[0][0].sum() * 0.0
    return torch.cat(losses).mean()


def hard_negative_loss(src: torch.Tensor, tgt: torch.Tensor, hard: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each source must pick its own target among the batch's targets and the batch's mined
    negatives (`training/negatives.py`): the texts the teacher ranks just below the answer, which
    random in-batch negatives almost never are."""
    a = F.normalize(src.float(), dim=-1)
    candidates = F.normalize(torch.cat([tgt, hard]).float(), dim=-1)
    labels = torch.arange(len(a), device=a.device)
    return F.cross_entropy(a @ candidates.T / temperature, labels)


LISTWISE_TEMPERATURE = 0.05   # as the contrastive term's: the ranking at the scale the encoders are trained at


def listwise_distillation(z: torch.Tensor, target: torch.Tensor, temperature: float = LISTWISE_TEMPERATURE) -> torch.Tensor:
    """The teacher's rankings as targets: for each text of the batch, the KL divergence from the
    teacher's softmax over its cosines to every other text to the student's softmax over its
    own (itself left out; 0 when the rankings agree at this temperature). The squared error of
    `distillation` weighs every cosine alike; this weighs the top of each ranking, where a
    question's best answers are, most."""
    target = target.float()
    u = F.normalize(z.float(), dim=-1)
    eye = torch.eye(len(u), dtype=torch.bool, device=u.device)
    student = (u @ u.T / temperature).masked_fill(eye, float("-inf")).log_softmax(-1)
    teacher = (target @ target.T / temperature).masked_fill(eye, float("-inf")).log_softmax(-1)
    keep = target.abs().sum(-1) > 0          # an empty text's zero row ranks nothing
    kl = (teacher.exp() * (teacher - student)).masked_fill(eye, 0.0).sum(-1)
    return kl[keep].mean() if keep.any() else kl.sum() * 0.0


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


def word_targets(corpus: PairCorpus, texts: list[np.ndarray], rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """For a side of a batch: each piece's word (B, T; −1 past the text) and the teacher's state of
    each word (B, words, WORD_TARGET_DIM), zero rows for a text without targets (a view cut
    from it, one that did not align, one past the cap)."""
    width = max((len(x) for x in texts), default=1)
    word_of = np.full((len(texts), max(width, 1)), -1, dtype=np.int64)
    spans = corpus.word_spans[rows]
    k = max(1, int((spans[:, 1] - spans[:, 0]).max(initial=0)))
    targets = np.zeros((len(texts), k, corpus.words.shape[1]), dtype=np.float32)
    for i, (x, (a, e)) in enumerate(zip(texts, spans)):
        if e <= a or len(x) == 0 or x is not corpus.ids[rows[i]]:
            continue
        starts = corpus.word_starts[x].astype(np.int64)
        starts[0] = 1
        word_of[i, :len(x)] = np.cumsum(starts) - 1
        targets[i, :e - a] = corpus.words[a:e]
    return torch.from_numpy(word_of), torch.from_numpy(targets)


def pair_batches(corpus: PairCorpus, idx: np.ndarray, batch_size: int, rng: np.random.Generator, shuffle: bool,
                 swap: str | None, views: str | None = None, hard: bool = False) -> Iterator[Batch]:
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
    teacher"). With `hard`, each pair with mined negatives (`corpus.hard`) brings one of them,
    drawn at random, as `hard` (with its teacher vector)."""
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
        if corpus.words is not None:
            for side, texts, rows in (("src", src, sel[:, 0]), ("tgt", tgt, sel[:, 1])):
                batch[f"{side}_word_of"], batch[f"{side}_words"] = word_targets(corpus, texts, rows)
        if hard and corpus.hard is not None:
            mined = [int(rng.choice(row[row >= 0])) for row in corpus.hard[idx[b]] if (row >= 0).any()]
            if mined:
                batch["hard"], batch["hard_len"] = pad([corpus.ids[i] for i in mined])
                if corpus.teacher is not None:
                    batch["hard_teacher"] = torch.from_numpy(np.asarray(corpus.teacher[mined]))
        if swap is not None:
            batch.update(swap_batch(src if swap == "src" else tgt, corpus.word_starts, rng))
        yield batch
