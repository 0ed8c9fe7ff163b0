"""The seq2seq encoder: an encoder-decoder whose encoder's context vector is the embedding.

The decoder must reproduce the next utterance (or the utterance itself) token by token, so the
encoder cannot get away with a bag of words: word order and context have to survive into its
states. Its output layer is an adaptive softmax (`nn.AdaptiveLogSoftmaxWithLoss`): SentencePiece
numbers pieces roughly by frequency, so the 1,024 commonest (most tokens of any text) get a
full-width softmax and the rare ones smaller, cheaper clusters, because a full softmax over the
vocabulary dominates a training step on a CPU. It is an exact distribution, not a sampled
approximation, so `embed generate` still decodes from true probabilities.

The context vector (mean- and max-pooled encoder states, projected) is both the embedding and
the decoder's starting state, so it is trained by the decoder's loss. A small in-batch
contrastive term pulls an utterance's vector toward its successor's, which is what makes a
question's nearest neighbour its answer; a copy of the utterance with two words swapped is one
more negative there, so word order shows in the geometry and not only in the separate
word-order score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.pairs import PairCorpus
from ..device import full_precision, run_rnn
from ..data.tokenizer import BOS, EOS, PAD
from ..progress import Progress
from .base import ROLE_WEIGHT, Batch, Encoder, EncoderConfig, Stage, info_nce, pair_batches, piece_start, pooled
from .batching import length_mask, stack_padded
from .order import OrderScorer, order_loss
from .rnn import BiRNN

ARCHS = ("gru", "transformer")
# Updates the decoder needs to learn a small corpus's replies well enough for `embed generate`;
# a corpus whose main training gives fewer gets decoder-only updates after it (benchmarks/RESULTS.md).
DECODER_UPDATES = 500


@dataclass
class Seq2SeqConfig(EncoderConfig):
    vocab_size: int
    arch: str = "gru"
    emb_dim: int = 128
    hidden: int = 128          # per direction for the GRU; d_model for the Transformer
    dim: int = 256             # the embedding size
    layers: int = 1            # GRU layers (Transformer: encoder and decoder layers, at least 2)
    heads: int = 4
    dropout: float = 0.1
    max_len: int = 64          # pieces per utterance seen by the encoder and produced by the decoder
    head_size: int = 1024      # pieces in the adaptive softmax's full-width head (the commonest ids)
    temperature: float = 0.05  # of the in-batch contrastive term
    contrastive_weight: float = 1.0
    order_weight: float = 1.0  # of the word-order objective (`order.py`); 0 turns it off
    order_negatives: bool = True  # swapped copies as hard negatives of the contrastive term
    self_views: bool = False      # in a file of sentences, each is decoded from a stretch of itself (`base.pair_batches`; training only)
    teacher_dim: int = 0       # the teacher's vector size (0: trained without a teacher)
    role_weight: float = 0.0     # of the role term (`base.ROLE_WEIGHT` in new models; 0: a model from before it)
    teacher_weight: float = 10.0  # of the distillation term (as the BiRNN's: benchmarks/RESULTS.md)
    distill_epochs: int = 0      # leading epochs that train on the teacher's terms alone (training only)
    word_weight: float = 0.0     # of the teacher's word states (`base.word_distillation`; training only)
    listwise_weight: float = 0.0  # of the teacher's in-batch rankings (`base.listwise_distillation`; training only)
    hard_weight: float = 0.0     # of the teacher-mined negatives (`base.hard_negative_loss`; training only)


def order_input(model: nn.Module, states: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """What the word-order scorer reads: the encoder states beside the piece embeddings."""
    return torch.cat([states, model.embedding(src).to(states.dtype)], -1)


def context(model: nn.Module, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The context vector: pooled states, projected."""
    return model.project(pooled(states, mask))


def output_layer(cfg: Seq2SeqConfig, width: int) -> nn.AdaptiveLogSoftmaxWithLoss:
    """The decoder's softmax: the commonest pieces in a full-width head, the rest in two tail
    clusters of a quarter and a sixteenth of the width (cutoffs past the vocabulary are dropped)."""
    cutoffs = [c for c in (cfg.head_size, 4 * cfg.head_size) if c < cfg.vocab_size - 1]
    if not cutoffs:  # a vocabulary smaller than the head: one cluster of one piece keeps the API
        cutoffs = [cfg.vocab_size - 1]
    return nn.AdaptiveLogSoftmaxWithLoss(width, cfg.vocab_size, cutoffs, div_value=4.0)


class Seq2Seq(Encoder):
    """The encoder-decoder on the encoder protocol; `build` picks the GRU or Transformer variant."""

    kind = "seq2seq"
    config_class = Seq2SeqConfig
    choices = {"arch": ARCHS}

    @classmethod
    def configure(cls, vocab_size: int, options: Mapping[str, Any]) -> Seq2SeqConfig:
        return Seq2SeqConfig(vocab_size=vocab_size, arch=options.get("arch", "gru"), dim=options["dim"],
                             teacher_dim=options.get("teacher_dim", 0), role_weight=ROLE_WEIGHT,
                             self_views=not options.get("teacher_dim"))

    @classmethod
    def build(cls, cfg: Seq2SeqConfig) -> "Seq2Seq":
        return {"gru": GRUSeq2Seq, "transformer": TransformerSeq2Seq}[cfg.arch](cfg)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor):
        """Encoder states (B, T, width), their mask, and the un-normalised context vector (B, dim)."""
        raise NotImplementedError

    def decode(self, memory, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder outputs (B, T, H) for inputs that start with <s>; `self.out`
        turns them into log-probabilities over the vocabulary."""
        raise NotImplementedError

    def token_states(self, src: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encode(src, lengths)[0]

    def vectors_and_order(self, src: torch.Tensor, lengths: torch.Tensor, order: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        states, mask, z = self.encode(src, lengths)
        if not order or self.order is None:
            return z, None
        return z, self.order(order_input(self, states, src), mask)

    def batches(self, corpus: PairCorpus, idx: np.ndarray, batch_size: int, rng: np.random.Generator,
                shuffle: bool) -> Iterator[Batch]:
        return pair_batches(corpus, idx, batch_size, rng, shuffle, swap="src" if self.cfg.order_weight > 0 else None,
                            views="src" if self.cfg.self_views else None, hard=self.cfg.hard_weight > 0)

    def objective(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Next-utterance cross-entropy (teacher forcing), the contrastive pull toward it (a
        swapped copy of the source being one more negative), and the word-order objective on the
        source and that copy.

        The source, the target and the swapped copy go through the encoder as one batch: on a CPU
        three small calls cost far more than one three times the size."""
        cfg = self.cfg
        src, n = batch["src"], len(batch["src"])
        parts = {"src": src, "tgt": batch["tgt"]}
        if self.order is not None and "swap" in batch:
            parts["swap"] = batch["swap"]
        for k in ("extra", "hard"):
            if k in batch:
                parts[k] = batch[k]
        ids, lengths = stack_padded(list(parts.values()), [batch[f"{k}_len"] for k in parts])
        states, mask, z = self.encode(ids, lengths)
        ends = np.cumsum([len(v) for v in parts.values()])
        enc = {k: (states[e - len(v):e, :v.shape[1]], mask[e - len(v):e, :v.shape[1]], z[e - len(v):e])
               for e, (k, v) in zip(ends, parts.items())}
        h = self.decode(enc["src"], batch["tgt_in"])
        keep = batch["tgt_out"].ne(PAD)
        with full_precision(h):
            total = self.part("decoder", self.out(h[keep].float(), batch["tgt_out"][keep]).loss)
        if cfg.contrastive_weight > 0 and n >= 2:
            u = {k: F.normalize(v[2].float(), dim=-1) for k, v in enc.items()}
            hard = u.get("swap") if cfg.order_negatives else None
            total = total + self.part("contrastive", cfg.contrastive_weight * info_nce(
                u["tgt"], u["src"], cfg.temperature, hard, batch.get("swap_changed")))
        if "swap" in enc:
            original = (order_input(self, enc["src"][0], src), enc["src"][1])
            copy = (order_input(self, enc["swap"][0], batch["swap"]), enc["swap"][1])
            total = total + self.part("order", cfg.order_weight * order_loss(
                self.order, original, copy, batch["swap_pairs"], batch["swap_changed"]))
        return total, torch.cat([z[:2 * n]] + [enc[k][2] for k in ("extra", "hard") if k in enc]), states

    def prepare(self, corpus: PairCorpus, *, seed: int, device: torch.device, checkpoint_dir: Path | None,
                resume: bool, progress: Progress | None, options: Mapping[str, Any]) -> None:
        """With a teacher, the piece embeddings start from the teacher's piece vectors (at the scale
        of the embedding's own random start)."""
        if options.get("teacher_pieces") is None:
            return
        width = self.embedding.weight.shape[1]
        start = torch.from_numpy(piece_start(options["teacher_pieces"], width, math.sqrt(width)))
        given = ~start.isnan().any(1)
        given[PAD] = False
        with torch.no_grad():
            self.embedding.weight[given] = start[given].to(self.embedding.weight)

    def follow_up(self, updates: int) -> Stage | None:
        """On a small corpus the main training ends long before the decoder can reproduce its
        replies; more updates of the decoder alone fix that without moving a single vector."""
        if updates >= DECODER_UPDATES:
            return None
        frozen = {id(p) for p in self.encoder_parameters()} | {id(p) for h in self.training_heads() for p in h.parameters()}
        decoder = [p for p in self.parameters() if id(p) not in frozen]
        return Stage(f"{self.kind} decoder", decoder, self.decoder_loss, DECODER_UPDATES - updates)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """What makes the vectors: the piece embeddings, the encoder, the projection, the order scorer."""
        parts = [self.embedding, self.encoder, self.project] + ([self.order] if self.order is not None else [])
        return [p for part in parts for p in part.parameters()]

    def decoder_loss(self, batch: Batch) -> torch.Tensor:
        """Next-utterance cross-entropy alone, through an encoder that is not being trained."""
        with torch.no_grad():
            memory = self.encode(batch["src"], batch["src_len"])
        h = self.decode(memory, batch["tgt_in"])
        keep = batch["tgt_out"].ne(PAD)
        self.loss_parts = {}
        with full_precision(h):
            return self.part("decoder", self.out(h[keep].float(), batch["tgt_out"][keep]).loss)

    @torch.inference_mode()
    def generate(self, src: torch.Tensor, beam: int = 1, max_len: int | None = None) -> list[tuple[list[int], float]]:
        """Decode one source (1, T): the hypotheses with their log-probabilities, best first. The
        whole prefix is re-read each step: utterances are short, and it keeps one code path for
        both architectures. beam=1 is greedy decoding."""
        max_len = max_len or self.cfg.max_len
        states, mask, z = self.encode(src, torch.tensor([src.shape[1]], device=src.device))
        beams: list[tuple[list[int], float]] = [([BOS], 0.0)]
        done: list[tuple[list[int], float]] = []
        for _ in range(max_len + 1):
            prefixes = torch.tensor([b[0] for b in beams], device=src.device)
            n = len(beams)
            memory = (states.expand(n, -1, -1), mask.expand(n, -1), z.expand(n, -1))
            logp = self.out.log_prob(self.decode(memory, prefixes)[:, -1].float())
            logp[:, PAD] = -math.inf
            logp[:, BOS] = -math.inf
            cand = (torch.tensor([b[1] for b in beams], device=src.device)[:, None] + logp).flatten()
            top = cand.topk(min(beam * 2, cand.numel()))
            nxt = []
            for score, idx in zip(top.values.tolist(), top.indices.tolist()):
                b, tok = divmod(idx, logp.shape[1])
                seq = beams[b][0] + [tok]
                (done if tok == EOS else nxt).append((seq, score))
                if len(nxt) == beam:
                    break
            beams = nxt
            # extending a hypothesis only lowers its score, so once the best finished one beats
            # every open one, nothing can overtake it
            if not beams or (done and max(d[1] for d in done) >= max(b[1] for b in beams)):
                break
        ranked = sorted(done or beams, key=lambda s: -s[1])
        return [([t for t in seq[1:] if t != EOS], score) for seq, score in ranked]


class GRUSeq2Seq(Seq2Seq):
    """Bidirectional GRU encoder; GRU decoder with Luong attention over the encoder states."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__(cfg)
        h2 = 2 * cfg.hidden
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.emb_dim, padding_idx=PAD)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = BiRNN("gru", cfg.emb_dim, cfg.hidden, cfg.layers, cfg.dropout)
        self.order = OrderScorer(h2 + cfg.emb_dim) if cfg.order_weight > 0 else None
        self.project = nn.Linear(2 * h2, cfg.dim)
        self.add_word_head(h2)
        self.init_state = nn.Linear(cfg.dim, cfg.hidden)
        self.decoder = nn.GRU(cfg.emb_dim, cfg.hidden, batch_first=True)
        self.attn_key = nn.Linear(h2, cfg.hidden, bias=False)
        self.combine = nn.Linear(cfg.hidden + h2, cfg.hidden)
        self.out = output_layer(cfg, cfg.hidden)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor):
        """Encoder states (B, T, 2H), their mask, and the un-normalised context vector (B, dim)."""
        x = self.drop(self.embedding(src))
        states = self.encoder(x, lengths)
        mask = length_mask(lengths, src.shape[1], src.device)
        return states, mask, context(self, states, mask)

    def decode(self, memory, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder outputs (B, T, H) for inputs that start with <s>; `self.out`
        turns them into log-probabilities over the vocabulary."""
        states, mask, z = memory
        h0 = torch.tanh(self.init_state(z)).unsqueeze(0)
        y = run_rnn(self.decoder, self.drop(self.embedding(tgt_in)), h0.contiguous())
        scores = torch.bmm(y, self.attn_key(states).transpose(1, 2))
        scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        ctx = torch.bmm(scores.softmax(-1), states)
        return self.drop(torch.tanh(self.combine(torch.cat([y, ctx], -1))))


class PositionalEncoding(nn.Module):
    def __init__(self, d: int, max_len: int):
        super().__init__()
        pos = torch.arange(max_len + 2).unsqueeze(1)
        div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
        pe = torch.zeros(max_len + 2, d)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: d // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[1]].to(x.dtype)


class TransformerSeq2Seq(Seq2Seq):
    """Transformer encoder-decoder on the same interface; the context vector is prepended to the
    decoder's memory so the decoder's loss still trains it."""

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__(cfg)
        d = cfg.hidden
        layers = max(2, cfg.layers)
        self.embedding = nn.Embedding(cfg.vocab_size, d, padding_idx=PAD)
        self.pos = PositionalEncoding(d, cfg.max_len + 2)
        self.drop = nn.Dropout(cfg.dropout)
        enc = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, cfg.dropout, batch_first=True, norm_first=True)
        dec = nn.TransformerDecoderLayer(d, cfg.heads, 4 * d, cfg.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(dec, layers)
        self.order = OrderScorer(2 * d) if cfg.order_weight > 0 else None
        self.project = nn.Linear(2 * d, cfg.dim)
        self.add_word_head(d)
        self.unproject = nn.Linear(cfg.dim, d)
        self.out = output_layer(cfg, d)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor):
        mask = length_mask(lengths, src.shape[1], src.device)
        x = self.drop(self.pos(self.embedding(src) * math.sqrt(self.cfg.hidden)))
        states = self.encoder(x, src_key_padding_mask=~mask)
        return states, mask, context(self, states, mask)

    def decode(self, memory, tgt_in: torch.Tensor) -> torch.Tensor:
        states, mask, z = memory
        mem = torch.cat([self.unproject(z).unsqueeze(1), states], 1)
        mem_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        t = tgt_in.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tgt_in.device), 1)
        y = self.drop(self.pos(self.embedding(tgt_in) * math.sqrt(self.cfg.hidden)))
        y = self.decoder(y, mem, tgt_mask=causal, tgt_key_padding_mask=tgt_in.eq(PAD),
                         memory_key_padding_mask=~mem_mask)
        return y
