"""The skipgram-birnn encoder: skip-gram piece vectors read by a bidirectional RNN.

Skip-gram (BlazingText-style batched negatives, `skipgram.py`) learns what each SentencePiece
piece means from all the text the user gives. A BiGRU/BiLSTM then reads those vectors in order,
so the utterance vector depends on word order and context, not just on which words occur. It is
trained so that an utterance picks out its successor (a question its answer) among the other
utterances of the batch; a copy of the successor with two words swapped is added as a hard
negative, which only the geometry can reject, and the word-order scorer of `order.py` learns
which neighbour pairs such a copy broke: a contrastive loss alone lets the RNN drift toward a
bag of words.

Units are SentencePiece pieces, shared with the seq2seq encoder: an unseen word still splits
into known pieces, so every input gets a vector, and one vocabulary serves every file format.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_path
from ..data.pairs import PairCorpus
from ..data.tokenizer import EOS, PAD, WORD_MARK
from ..data.word2vec import save_word2vec
from ..errors import EmbedderError, check_range
from ..progress import Progress
from .base import ROLE_WEIGHT, Batch, Encoder, EncoderConfig, info_nce, masked_mean, pair_batches, piece_start, pooled
from .batching import length_mask, stack_padded
from .order import OrderScorer, order_loss
from .rnn import BiRNN

RNNS = ("gru", "lstm")
SKIPGRAM_SCALE = 1.0   # mean row norm of skip-gram's teacher-derived start (its own random start is ±0.5/dim)
# How the RNN states become one vector: their plain mean, or their mean and max side by side.
# "auto" takes the mean without a teacher (answer ranking +0.09 MAP, STS +0.04, word order +0.02)
# and the mean and max with one (there the mean left ranking and STS level, raised word order
# 0.04 and cost the pair classifier 0.03-0.07 MAP): benchmarks/RESULTS.md, "Mean pooling".
POOLINGS = ("mean", "meanmax", "attention")
# With a teacher, the word vectors start from its piece vectors cut down by PCA: at 100 wide too
# much of them was lost (benchmarks/RESULTS.md, "Wider input vectors with a teacher").
TEACHER_WORD_DIM = 256
# Skip-gram's window without a teacher, when the RNN reads skip-gram's own vectors: 20 words
# (word2vec's dynamic window, so 10 on average) instead of 5 make them carry what a sentence is
# about, as a bag of words does. Trained on STS's sentences, cosine Pearson rose 0.518 -> 0.560
# and the ridge 0.666 -> 0.685; on the Q/A corpus STS rose +0.07 and TREC QA moved within its
# seed noise (benchmarks/RESULTS.md, "Sentence pairs without a teacher"). With a teacher the
# RNN reads the teacher's piece vectors and skip-gram's serve the neighbours: 5 as before.
WINDOW_ALONE = 20


@dataclass
class BiRNNConfig(EncoderConfig):
    vocab_size: int
    word_dim: int = 100          # skip-gram vector size
    hidden: int = 128            # per direction
    dim: int = 256               # the embedding size
    rnn: str = "gru"
    layers: int = 1
    pooling: str = "meanmax"
    dropout: float = 0.1
    max_len: int = 64
    temperature: float = 0.05
    freeze_epochs: int = 2       # word vectors stay as skip-gram made them for these epochs
    tune_words: bool = True      # False: the word vectors stay as they started throughout (training only)
    order_negatives: bool = True
    order_weight: float = 1.0    # of the word-order objective (`order.py`); 0 turns it off
    mean_words: bool = True      # add the mean word vector to the pooled RNN states
    self_views: bool = False     # in a file of sentences, each is found from a stretch of itself (`base.pair_batches`; training only)
    # skip-gram settings
    window: int = 5
    negatives: int = 5
    sample: float = 1e-3         # word2vec's own default; 1e-4 starves a small corpus of its common words
    sg_epochs: int = 0           # 0: enough passes for ~2M training tokens, within [5, 50]
    teacher_dim: int = 0         # the teacher's vector size (0: trained without a teacher)
    role_weight: float = 0.0     # of the role term (`base.ROLE_WEIGHT` in new models; 0: a model from before it)
    teacher_weight: float = 10.0  # of the distillation term (1 left STS lower: benchmarks/RESULTS.md)
    distill_epochs: int = 0      # leading epochs that train on the teacher's terms alone (training only)
    word_weight: float = 0.0     # of the teacher's word states (`base.word_distillation`; training only)
    listwise_weight: float = 0.0  # of the teacher's in-batch rankings (`base.listwise_distillation`; training only)
    hard_weight: float = 0.0     # of the teacher-mined negatives (`base.hard_negative_loss`; training only)


class BiRNNEncoder(Encoder):
    kind = "skipgram-birnn"
    config_class = BiRNNConfig
    choices = {"rnn": RNNS, "pooling": ("auto",) + POOLINGS}

    @classmethod
    def configure(cls, vocab_size: int, options: Mapping[str, Any]) -> BiRNNConfig:
        extra = {}
        if options.get("init_vectors") is not None:  # word vectors from a file set the width
            extra["word_dim"] = options["init_vectors"].shape[1]
        elif options.get("teacher_dim"):
            extra["word_dim"] = TEACHER_WORD_DIM
        pooling = options.get("pooling", "auto")
        if pooling == "auto":
            pooling = "meanmax" if options.get("teacher_dim") else "mean"
        return BiRNNConfig(vocab_size=vocab_size, dim=options["dim"], rnn=options.get("rnn", "gru"),
                           pooling=pooling, teacher_dim=options.get("teacher_dim", 0), role_weight=ROLE_WEIGHT,
                           self_views=not options.get("teacher_dim"),
                           window=5 if options.get("teacher_dim") else WINDOW_ALONE, **extra)

    def __init__(self, cfg: BiRNNConfig):
        super().__init__(cfg)
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.word_dim, padding_idx=PAD)
        # the skip-gram vectors as trained, kept for `embed neighbors` and word2vec export
        self.register_buffer("skipgram", torch.zeros(cfg.vocab_size, cfg.word_dim))
        self.rnn = BiRNN(cfg.rnn, cfg.word_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)
        width = 2 * cfg.hidden
        self.attn = nn.Linear(width, 1) if cfg.pooling == "attention" else None
        features = (2 * width if cfg.pooling == "meanmax" else width) + (cfg.word_dim if cfg.mean_words else 0)
        # Batch norm removes the component every utterance shares (tanh states pool to similar
        # values), without which all vectors start nearly parallel and the contrastive loss stalls.
        self.norm = nn.BatchNorm1d(features)
        # the order scorer reads the word vectors beside the RNN states: bigram oddities are
        # visible in the vectors of two neighbouring words from the first step
        self.order = OrderScorer(width + cfg.word_dim) if cfg.order_weight > 0 else None
        self.project = nn.Linear(features, cfg.dim)
        self.add_word_head(width)

    def token_states(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.rnn(self.embedding(src), lengths)

    def vectors_and_order(self, src: torch.Tensor, lengths: torch.Tensor, order: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        z, (seen, mask) = self(src, lengths)
        return z, (self.order(seen, mask) if order and self.order is not None else None)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Utterance vectors (B, dim), and what the order scorer reads (B, T, 2H + word_dim):
        the RNN states and the word vectors, with their mask."""
        x = self.drop(self.embedding(src))
        states = self.rnn(x, lengths)
        mask = length_mask(lengths, src.shape[1], src.device)
        if self.cfg.pooling == "mean":
            parts = [masked_mean(states, mask)]
        elif self.attn is None:
            parts = [pooled(states, mask)]
        else:
            w = self.attn(states).squeeze(-1).masked_fill(~mask, torch.finfo(states.dtype).min).softmax(-1)
            parts = [torch.bmm(w.unsqueeze(1), states).squeeze(1)]
        if self.cfg.mean_words:  # a lexical signal from the first step, which the RNN refines
            parts.append(masked_mean(x, mask))
        z = self.project(self.norm(torch.cat(parts, -1)))
        return z, (torch.cat([states, x], -1), mask)

    # -- training ---------------------------------------------------------------------------------
    def batches(self, corpus: PairCorpus, idx: np.ndarray, batch_size: int, rng: np.random.Generator,
                shuffle: bool) -> Iterator[Batch]:
        swap = "tgt" if self.cfg.order_negatives or self.cfg.order_weight > 0 else None
        return pair_batches(corpus, idx, batch_size, rng, shuffle, swap=swap, views="tgt" if self.cfg.self_views else None,
                            hard=self.cfg.hard_weight > 0)

    def objective(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """In-batch InfoNCE (both directions) with word-swapped successors as extra negatives, plus
        the word-order objective on the successors and their swapped copies.

        The utterances, their successors and the swapped copies are read as one batch (one RNN call,
        one set of batch-norm statistics): on a CPU that is much cheaper than three calls."""
        n = len(batch["src"])
        keys = ["src", "tgt"] + [k for k in ("swap", "extra", "hard") if k in batch]
        ids, lengths = stack_padded([batch[k] for k in keys], [batch[f"{k}_len"] for k in keys])
        z, (seen, mask) = self(ids, lengths)
        at = dict(zip(keys, np.cumsum([0] + [len(batch[k]) for k in keys])))  # each part's first row
        u = F.normalize(z.float(), dim=-1)
        a, b = u[:n], u[n:2 * n]
        hard = u[2 * n:3 * n] if "swap" in batch and self.cfg.order_negatives else None
        total = self.part("contrastive", info_nce(a, b, self.cfg.temperature, hard, batch.get("swap_changed")))
        if self.order is not None and "swap" in batch:
            wt, ws = batch["tgt"].shape[1], batch["swap"].shape[1]
            b_states = (seen[n:2 * n, :wt], mask[n:2 * n, :wt])
            s_states = (seen[2 * n:3 * n, :ws], mask[2 * n:3 * n, :ws])
            total = total + self.part("order", self.cfg.order_weight * order_loss(
                self.order, b_states, s_states, batch["swap_pairs"], batch["swap_changed"]))
        z = torch.cat([z[:2 * n]] + [z[at[k]:at[k] + len(batch[k])] for k in ("extra", "hard") if k in batch])
        return total, z, seen[..., :2 * self.cfg.hidden]

    def prepare(self, corpus: PairCorpus, *, seed: int, device: torch.device, checkpoint_dir: Path | None,
                resume: bool, progress: Progress | None, options: Mapping[str, Any]) -> None:
        """Skip-gram on every utterance (kept with the checkpoints, so a resumed run skips it); the
        RNN then starts from those vectors, centred. With a teacher, skip-gram starts from the
        teacher's piece vectors and the RNN reads them (skip-gram's own serve `embed neighbors`,
        the word2vec export, and the pieces the teacher has no vector for)."""
        path = checkpoint_dir / "skipgram.npy" if checkpoint_dir else None
        pieces = options.get("teacher_pieces")
        # what the teacher makes of each piece, in the word width, rows of mean norm 1 (NaN: none)
        start = piece_start(pieces, self.cfg.word_dim, 1.0) if pieces is not None else None
        if resume and path and path.exists():
            vectors = np.load(path, allow_pickle=False)
        else:
            init = start * SKIPGRAM_SCALE if start is not None else options.get("init_vectors")
            vectors = train_word_vectors(corpus.ids, self.cfg, seed, device, init, progress)
            if path:
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, vectors, allow_pickle=False)
        inputs = centred(vectors)
        if start is not None:
            # the RNN reads the teacher's piece vectors (at the skip-gram vectors' scale): skip-gram
            # on a small corpus rewrites what it started from, and STS fell from 0.720 to 0.615 when
            # the RNN read skip-gram's version instead (benchmarks/RESULTS.md)
            trained = np.abs(inputs).sum(1) > 0
            scale = float(np.linalg.norm(inputs[trained], axis=1).mean()) if trained.any() else 1.0
            given = ~np.isnan(start).any(1)
            inputs[given] = start[given] * scale
        with torch.no_grad():
            self.skipgram.copy_(torch.from_numpy(vectors))
            self.embedding.weight.copy_(torch.from_numpy(inputs))

    def warmup_epochs(self, epochs: int) -> int:
        """The word vectors stay as skip-gram made them for the first epochs; a short run still
        tunes them in its later half."""
        return min(self.cfg.freeze_epochs, epochs // 2)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        super().on_epoch_start(epoch, epochs)
        self.embedding.weight.requires_grad_(self.cfg.tune_words and epoch >= self.warmup_epochs(epochs))


def sg_epochs(n_tokens: int, cfg: BiRNNConfig) -> int:
    if cfg.sg_epochs:
        return cfg.sg_epochs
    return int(min(50, max(5, math.ceil(2_000_000 / max(n_tokens, 1)))))


def train_word_vectors(ids: list[np.ndarray], cfg: BiRNNConfig, seed: int, device: torch.device,
                       init: np.ndarray | None = None, progress: Progress | None = None) -> np.ndarray:
    counts = np.bincount(np.concatenate(ids) if ids else np.zeros(0, np.int64),
                         minlength=cfg.vocab_size)[: cfg.vocab_size]
    counts[:4] = 0  # specials never appear as words
    # imported here: the skip-gram kernel brings numba, 0.1 s of every encode and query start
    from .skipgram import SkipGramConfig, train_skipgram

    n_tokens = int(counts.sum())
    sg = SkipGramConfig(dim=cfg.word_dim, window=cfg.window, negatives=cfg.negatives, sample=cfg.sample,
                        min_count=1, epochs=sg_epochs(n_tokens, cfg), seed=seed,
                        threads=1)  # one Hogwild thread: a seed then gives identical vectors
    return train_skipgram(ids, counts, sg, device=device, init=init, progress=progress)


def centred(vectors: np.ndarray) -> np.ndarray:
    """The trained rows minus their mean (untrained rows stay zero). Skip-gram vectors share one
    large common direction, so to the RNN every word first looks alike; removing it (as in Mu &
    Viswanath's "all-but-the-top") leaves what tells words apart."""
    out = vectors.copy()
    trained = np.abs(vectors).sum(1) > 0
    if trained.any():
        out[trained] -= vectors[trained].mean(0)
    return out


def word_vectors(model, whole_words: bool = True) -> tuple[list[str], np.ndarray]:
    """A model's skip-gram vectors as (words, matrix): whole-word pieces with SentencePiece's word
    marker removed (what word2vec tools expect), or every piece as it is."""
    pieces = model.tokenizer.pieces()
    vecs = model.encoder(BiRNNEncoder.kind).skipgram.detach().cpu().numpy()
    keep = [i for i, p in enumerate(pieces) if i > EOS and (not whole_words or (p.startswith(WORD_MARK) and len(p) > 1))]
    words = [pieces[i][1:] if whole_words else pieces[i] for i in keep]
    return words, vecs[keep]


def export_word2vec(model, dest: str | os.PathLike, binary: bool | None = None, pieces: bool = False) -> int:
    """Write the skip-gram vectors as word2vec text (`.txt`/`.vec`) or binary (`.bin`)."""
    words, vectors = word_vectors(model, whole_words=not pieces)
    if binary is None:
        binary = Path(dest).suffix.lower() == ".bin"
    save_word2vec(dest, words, vectors, binary=binary)
    return len(words)


def neighbors(model, word: str, k: int = 10) -> list[tuple[str, float]]:
    """Nearest words to `word` by skip-gram cosine; any word works, since an unseen one is the
    mean of its pieces' vectors (as fastText sums its character n-grams)."""
    check_range("-k", k, 1)
    ids = model.tokenizer.encode([word])[0]
    if len(ids) == 0 or not word.strip():
        raise EmbedderError(f"{word!r}: nothing to look up")
    query = model.encoder(BiRNNEncoder.kind).skipgram.detach().cpu().numpy()[ids].mean(0)
    words, vectors = word_vectors(model, whole_words=True)
    from .skipgram import nearest  # imported here, as in train_word_vectors

    return nearest(vectors, words, query, k, exclude=model.tokenizer.decode(ids).strip())
