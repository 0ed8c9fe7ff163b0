"""Skip-gram word vectors with negative sampling, batched the BlazingText `batch_skipgram` way.

The first half of the `skipgram-birnn` encoder. Plain word2vec updates one (centre, context)
pair at a time with its own negatives: many tiny vector operations, each touching scattered
rows. Following Ji et al. 2016 ("Parallelizing Word2Vec in Shared and Distributed Memory") and
BlazingText, all context words of one centre word share the same K negatives, so one centre
word is a small dense problem: an (m x d) block of context "in" vectors against a
((K+1) x d) block of "out" vectors (the centre word, label 1, and the K negatives, label 0).
Logits, gradients and updates are three small matrix products whose rows stay in cache.

Two backends implement the same scheme:

* ``numba`` (the CPU default): a compiled kernel run by one Python thread per core, each over
  its own interleaved share of the corpus, all writing the shared weights without locks
  (Hogwild). Seeded runs with ``threads=1`` are bit-for-bit repeatable; with more threads the
  order of racing updates varies, so results differ slightly from run to run (as in word2vec,
  fastText and gensim).
* ``torch`` (the CUDA default, and available on the CPU with ``backend="torch"`` for testing):
  many centre words per step as batched matrix products, with ``index_add_`` scatters.

Both use word2vec's frequent-word subsampling, a dynamic (randomly shrunk) window, negatives
drawn from the unigram distribution raised to 0.75, and a learning rate that falls linearly
from ``lr`` to ``min_lr`` over all epochs. The unit is whatever the caller counts: the product
trains on SentencePiece piece ids, the benchmark on whitespace words.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from numba import njit

from .. import device as dev
from ..errors import EmbedderError
from ..progress import Progress, report

# Sentences longer than this are cut into pieces (gensim truncates at 10000 words instead);
# windows never cross a piece boundary. Keeps the per-thread buffers small and the work even.
MAX_PIECE = 10_000
# Pieces are grouped into work units of about this many tokens; each unit has its own random
# stream (derived from the seed, epoch and unit number), so results don't depend on which
# thread ran it.
UNIT_TOKENS = 10_000
# Logits are clipped here before the sigmoid (word2vec's MAX_EXP).
MAX_LOGIT = 6.0
_MAX_LOGIT32 = np.float32(MAX_LOGIT)

TASK = "skip-gram"  # the name it reports progress under


@dataclass
class SkipGramConfig:
    """Hyper-parameters; the defaults are word2vec's skip-gram defaults."""

    dim: int = 100
    window: int = 5
    negatives: int = 5
    sample: float = 1e-4
    min_count: int = 5
    epochs: int = 5
    lr: float = 0.025
    min_lr: float = 1e-4
    seed: int = 0
    threads: int = 0  # 0 = all cores

    def validate(self) -> None:
        """Reject settings that would silently train nothing or crash inside the kernel."""
        checks = [
            (self.dim >= 1, "dim must be at least 1"),
            (self.window >= 1, "window must be at least 1"),
            (self.negatives >= 1, "negatives must be at least 1"),
            (self.sample >= 0, "sample must be 0 (off) or positive"),
            (self.min_count >= 1, "min_count must be at least 1"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.lr > 0 and 0 <= self.min_lr <= self.lr, "need 0 <= min_lr <= lr and lr > 0"),
            (self.threads >= 0, "threads must be 0 (all cores) or positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise EmbedderError(f"skip-gram config: {message} (got {self})")


# --------------------------------------------------------------------------------------------
# Vocabulary and look-up
# --------------------------------------------------------------------------------------------


def nearest(
    vectors: np.ndarray, words: list[str], query: str | np.ndarray, k: int = 10, exclude: str | None = None
) -> list[tuple[str, float]]:
    """The `k` words whose vectors have the highest cosine with `query` (a word or a vector).

    A word query is left out of its own answer, as is the word `exclude`; all-zero rows (ids
    never trained) score 0.
    """
    if isinstance(query, str):
        try:
            qi = words.index(query)
        except ValueError:
            raise EmbedderError(f"nearest: {query!r} is not in the vocabulary") from None
        qv = vectors[qi]
    else:
        qi, qv = -1, np.asarray(query, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    qn = float(np.linalg.norm(qv))
    scores = vectors @ qv / np.maximum(norms * qn, 1e-12)
    left_out = [i for i in (qi, words.index(exclude) if exclude in words else -1) if i >= 0]
    scores[left_out] = -np.inf
    k = max(0, min(k, len(words) - len(set(left_out))))
    top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], dtype=np.int64)
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(words[i], float(scores[i])) for i in top]


# --------------------------------------------------------------------------------------------
# Corpus preparation shared by both backends
# --------------------------------------------------------------------------------------------


@dataclass
class _Corpus:
    """The corpus as one flat id array, cut into pieces (no window crosses a piece boundary)."""

    tokens: np.ndarray  # int32 (n_tokens,)
    piece_bounds: np.ndarray  # int64 (n_pieces + 1,): piece i is tokens[b[i]:b[i+1]]
    unit_bounds: np.ndarray  # int64 (n_units + 1,): unit j is pieces ub[j]..ub[j+1]

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])


def _flatten(sentences: Sequence[np.ndarray], vocab_size: int) -> _Corpus:
    """Concatenate sentences and cut long ones, so work splits evenly across threads."""
    arrays = [np.asarray(s) for s in sentences]
    lens = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    tokens = (
        np.concatenate(arrays).astype(np.int32, copy=False) if arrays else np.zeros(0, np.int32)
    )
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got {tokens.min()}..{tokens.max()}")
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if lens.size else lens
    n_pieces = (lens + MAX_PIECE - 1) // MAX_PIECE
    owner = np.repeat(np.arange(lens.size), n_pieces)
    within = np.arange(owner.size) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    piece_starts = starts[owner] + within * MAX_PIECE
    piece_bounds = np.append(piece_starts, tokens.size).astype(np.int64)
    unit_of_piece = piece_starts // UNIT_TOKENS
    new_unit = np.flatnonzero(np.diff(unit_of_piece, prepend=-1) != 0)
    unit_bounds = np.append(new_unit, piece_starts.size).astype(np.int64)
    return _Corpus(np.ascontiguousarray(tokens), piece_bounds, unit_bounds)


def _keep_probability(counts: np.ndarray, config: SkipGramConfig) -> np.ndarray:
    """word2vec's subsampling: keep a word of count c with p = (sqrt(c/t) + 1) * t/c.

    t = sample * (total count of trainable words). Untrainable ids get p = 0.
    """
    counts = counts.astype(np.float64)
    valid = counts >= max(config.min_count, 1)
    p = np.where(valid, 1.0, 0.0)
    if config.sample > 0:
        t = config.sample * counts[valid].sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            sub = (np.sqrt(counts / t) + 1.0) * t / counts
        p = np.where(valid, np.minimum(sub, 1.0), 0.0)
    return p


def _noise_weights(counts: np.ndarray, config: SkipGramConfig) -> np.ndarray:
    """Negative-sampling weights: count^0.75 for trainable ids, 0 for the rest."""
    c = counts.astype(np.float64)
    return np.where(c >= max(config.min_count, 1), c, 0.0) ** 0.75


def _initial_vectors(
    vocab_size: int, config: SkipGramConfig, init: np.ndarray | None, trainable: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """word2vec's start: "in" vectors uniform in +-0.5/dim, "out" vectors zero.

    Rows of `init` that are not NaN replace the random start (so a model can be warm-started
    from vectors trained elsewhere). Ids that are never trained end up all-zero, unless `init`
    gives them a row, so that they carry no made-up signal.
    """
    rng = np.random.default_rng(config.seed)
    w_in = ((rng.random((vocab_size, config.dim), dtype=np.float32) - 0.5) / config.dim).astype(
        np.float32
    )
    given = np.zeros(vocab_size, dtype=bool)
    if init is not None:
        init = np.asarray(init, dtype=np.float32)
        if init.shape != (vocab_size, config.dim):
            raise EmbedderError(
                f"skip-gram init vectors have shape {init.shape}, expected {(vocab_size, config.dim)}"
            )
        given = ~np.isnan(init).any(axis=1)
        w_in[given] = init[given]
    w_in[~trainable & ~given] = 0.0
    w_out = np.zeros((vocab_size, config.dim), dtype=np.float32)
    return w_in, w_out


# --------------------------------------------------------------------------------------------
# numba backend
# --------------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_ALWAYS = np.int64(1 << 32)  # a keep threshold meaning "keep whatever the random bits"


@njit(inline="always", cache=True)
def _rand(state):
    """splitmix64: returns (new state, 64 random bits). Tiny, fast, and good enough here."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return state, z ^ (z >> np.uint64(31))


@njit(cache=True)
def _build_alias(weights):
    """Vose's alias table over the ids with positive weight: O(1) draws, two small arrays.

    A cumulative table (word2vec uses 10^8 entries) would cost a cache miss per negative.
    Thresholds are 32-bit integers to compare against raw random bits.
    """
    ids = np.flatnonzero(weights > 0).astype(np.int32)
    n = ids.shape[0]
    w = weights[ids]
    scaled = w * (n / w.sum())
    thresh = np.zeros(n, dtype=np.int64)
    alias = np.arange(n).astype(np.int32)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        lg = large[nl - 1]
        thresh[s] = np.int64(scaled[s] * 4294967296.0)
        alias[s] = lg
        scaled[lg] = scaled[lg] + scaled[s] - 1.0
        if scaled[lg] < 1.0:
            nl -= 1
            small[ns] = lg
            ns += 1
    for i in range(nl):
        thresh[large[i]] = _ALWAYS
    for i in range(ns):  # only left over through rounding: treat as full
        thresh[small[i]] = _ALWAYS
    return ids, thresh, alias


@njit(inline="always", cache=True)
def _draw_negative(state, ids, thresh, alias):
    state, r = _rand(state)
    n = np.uint64(ids.shape[0])
    slot = np.int64(((r >> np.uint64(32)) * n) >> np.uint64(32))
    if np.int64(r & _LOW32) < thresh[slot]:
        return state, ids[slot]
    return state, ids[alias[slot]]


# sigmoid(x) tabulated on [-MAX_LOGIT, MAX_LOGIT], as in word2vec: one exp per logit would
# cost as much as the arithmetic around it.
SIGMOID_STEPS = 1024
_SIGMOID = (
    1.0 / (1.0 + np.exp(-(np.arange(SIGMOID_STEPS + 1) / SIGMOID_STEPS * 2 - 1) * MAX_LOGIT))
).astype(np.float32)
_SIGMOID_SCALE = np.float32(SIGMOID_STEPS / (2 * MAX_LOGIT))


@njit(inline="always", fastmath=True, cache=True)
def _update_block(w_in, w_out, ctx, m, outs, k1, lr, grad, rows_in, rows_out):
    """One centre word: m context "in" rows against k1 "out" rows (centre first, then negatives).

    grad = lr * (label - sigmoid(in @ out.T)); in += grad @ out; out += grad.T @ in. The rows
    are first copied into small contiguous blocks, so both updates use the old values (one
    minibatch step, whatever ids repeat) and the inner loops run on cache-resident memory.
    """
    dim = w_in.shape[1]
    for a in range(m):
        src = w_in[ctx[a]]
        dst = rows_in[a]
        for d in range(dim):
            dst[d] = src[d]
    for b in range(k1):
        src = w_out[outs[b]]
        dst = rows_out[b]
        for d in range(dim):
            dst[d] = src[d]
    for a in range(m):
        row = rows_in[a]
        for b in range(k1):
            col = rows_out[b]
            f = np.float32(0.0)
            for d in range(dim):
                f += row[d] * col[d]
            if f >= _MAX_LOGIT32:
                s = np.float32(1.0)
            elif f <= -_MAX_LOGIT32:
                s = np.float32(0.0)
            else:
                s = _SIGMOID[np.int64((f + _MAX_LOGIT32) * _SIGMOID_SCALE)]
            label = np.float32(1.0) if b == 0 else np.float32(0.0)
            grad[a, b] = (label - s) * lr
    for a in range(m):
        dst = w_in[ctx[a]]
        for b in range(k1):
            g = grad[a, b]
            col = rows_out[b]
            for d in range(dim):
                dst[d] += g * col[d]
    for b in range(k1):
        dst = w_out[outs[b]]
        for a in range(m):
            g = grad[a, b]
            row = rows_in[a]
            for d in range(dim):
                dst[d] += g * row[d]


@njit(nogil=True, fastmath=True, cache=True)
def _train_share(
    w_in, w_out, tokens, piece_bounds, unit_bounds, keep_thresh,
    neg_ids, neg_thresh, neg_alias,
    worker, n_workers, epoch, epochs, window, negatives, lr0, min_lr, seed, done,
):  # fmt: skip
    """One thread's share of one epoch: units worker, worker + n_workers, ...

    The learning rate follows each piece's position in the whole run (epoch and token
    offset), not the order threads happen to reach it, so the schedule is the same for any
    thread count.
    """
    n_tokens = tokens.shape[0]
    total = np.float64(n_tokens) * epochs
    k1 = negatives + 1
    buf = np.empty(MAX_PIECE, dtype=np.int32)
    ctx = np.empty(2 * window, dtype=np.int32)
    outs = np.empty(k1, dtype=np.int32)
    grad = np.empty((2 * window, k1), dtype=np.float32)
    rows_in = np.empty((2 * window, w_in.shape[1]), dtype=np.float32)
    rows_out = np.empty((k1, w_in.shape[1]), dtype=np.float32)
    n_units = unit_bounds.shape[0] - 1
    uwindow = np.uint64(window)
    for unit in range(worker, n_units, n_workers):
        state = np.uint64(seed) * _MIX1 + np.uint64(epoch) * _MIX2 + np.uint64(unit) * _GOLDEN
        state, _ = _rand(state)
        for piece in range(unit_bounds[unit], unit_bounds[unit + 1]):
            lo = piece_bounds[piece]
            hi = piece_bounds[piece + 1]
            progress = (np.float64(epoch) * n_tokens + lo) / total
            lr = np.float32(max(min_lr, lr0 - (lr0 - min_lr) * progress))
            n = 0
            for i in range(lo, hi):  # drop untrainable ids; subsample frequent ones
                w = tokens[i]
                thresh = keep_thresh[w]
                if thresh == 0:
                    continue
                if thresh < _ALWAYS:  # only draw when it matters: fewer draws, same stream
                    state, r = _rand(state)
                    if np.int64(r & _LOW32) >= thresh:
                        continue
                buf[n] = w
                n += 1
            for i in range(n):
                state, r = _rand(state)
                reach = window - np.int64(r % uwindow)
                m = 0
                for j in range(max(0, i - reach), min(n, i + reach + 1)):
                    if j != i:
                        ctx[m] = buf[j]
                        m += 1
                if m == 0:
                    continue
                centre = buf[i]
                outs[0] = centre
                for b in range(1, k1):
                    neg = centre
                    for _ in range(8):  # a negative equal to the centre would be label noise
                        state, neg = _draw_negative(state, neg_ids, neg_thresh, neg_alias)
                        if neg != centre:
                            break
                    outs[b] = neg
                _update_block(w_in, w_out, ctx, m, outs, k1, lr, grad, rows_in, rows_out)
            done[worker] += hi - lo


def _resolve_threads(threads: int) -> int:
    if threads > 0:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _train_numba(
    corpus: _Corpus,
    keep_p: np.ndarray,
    noise: np.ndarray,
    w_in: np.ndarray,
    w_out: np.ndarray,
    config: SkipGramConfig,
    progress: Progress | None,
) -> None:
    """Run the kernel on one thread per core per epoch (Hogwild); report progress meanwhile."""
    keep_thresh = np.floor(keep_p * 4294967296.0).astype(np.int64)
    keep_thresh[keep_p >= 1.0] = _ALWAYS
    neg_ids, neg_thresh, neg_alias = _build_alias(noise)
    n_workers = min(_resolve_threads(config.threads), max(1, len(corpus.unit_bounds) - 1))
    done = np.zeros(n_workers, dtype=np.int64)
    total = corpus.n_tokens * config.epochs

    def share(worker: int, epoch: int) -> None:
        _train_share(
            w_in, w_out, corpus.tokens, corpus.piece_bounds, corpus.unit_bounds, keep_thresh,
            neg_ids, neg_thresh, neg_alias,
            worker, n_workers, epoch, config.epochs, config.window, config.negatives,
            np.float32(config.lr), np.float32(config.min_lr), config.seed & 0xFFFFFFFFFFFF, done,
        )  # fmt: skip

    def tick() -> None:
        report(progress, TASK, min(1.0, done.sum() / total))

    for epoch in range(config.epochs):
        # Even one worker runs in its own thread, so this thread can report progress and
        # take Ctrl-C meanwhile; with one worker the result is still exactly repeatable.
        _run_threads([lambda w=w: share(w, epoch) for w in range(n_workers)], tick)
        tick()
        _check_finite(bool(np.isfinite(w_in).all() and np.isfinite(w_out).all()), epoch, config)


def _check_finite(finite: bool, epoch: int, config: SkipGramConfig) -> None:
    """Stop at the epoch where the vectors stop being numbers, saying so, rather than hand an
    encoder vectors of NaN that would surface later as a loss of NaN far from the cause."""
    if not finite:
        raise EmbedderError(f"skip-gram: the word vectors diverged (not finite) in epoch {epoch + 1} of "
                            f"{config.epochs} (learning rate {config.lr}); try a lower learning rate")


def _run_threads(jobs: list[Callable[[], None]], tick: Callable[[], None]) -> None:
    """Run jobs in threads (the kernel releases the GIL), ticking progress while they run."""
    errors: list[BaseException] = []

    def guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(job,), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.5)
            tick()
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------------------------
# torch backend (CUDA; also runs on the CPU for testing)
# --------------------------------------------------------------------------------------------

# A step takes at most 1/TORCH_MIN_STEPS of an epoch's (subsampled) tokens. On the bundled
# corpus (5k pieces) one batch of 4,096 held nearly the whole epoch: fifty epochs were fifty
# steps, each adding up every occurrence of a word from the same stale rows, and the vectors grew
# to norms of 1e13 (float16 RNNs on CUDA then overflowed: the NaN of the GPU training issue).
# At 16+ steps an epoch the torch backend's neighbours agree with the numba kernel's as much as
# two seeds of the kernel agree with each other (benchmarks/RESULTS.md, "GPU").
TORCH_MIN_STEPS = 16
TORCH_MIN_BATCH = 64
# A row touched by more centres than this in one step takes a bounded step (`_torch_step`): a
# safety net for whatever the batch size leaves (WordSim-353 on BBC x4 unchanged at 32: 0.395).
ROW_HITS = 32
# Tokens subsampled and laid out per segment, bounding memory for any corpus size.
TORCH_SEGMENT = 4_000_000


def _train_torch(
    corpus: _Corpus,
    keep_p: np.ndarray,
    noise: np.ndarray,
    w_in_np: np.ndarray,
    w_out_np: np.ndarray,
    config: SkipGramConfig,
    device: str,
    progress: Progress | None,
    batch: int,
) -> np.ndarray:
    """The same batched scheme as the kernel, as torch tensor ops: `batch` centre words per step.

    Each centre's contexts (up to 2*window, masked by the dynamic window and piece bounds) form
    a (batch, 2w, d) block, the centre plus K negatives a (batch, K+1, d) block; logits and
    both gradients are `bmm`s and the updates are `index_add_` scatters. The corpus stays in
    host memory and goes to the device one segment at a time. Everything is float32: no
    autocast, because an update is lr * gradient, about 1e-4 of a weight, which half precision
    would round away, and these small matrix products gain little from tensor cores.
    """
    import torch

    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(config.seed)
    w_in = torch.from_numpy(w_in_np).to(dev)
    w_out = torch.from_numpy(w_out_np).to(dev)
    keep = torch.from_numpy(keep_p).to(dev, torch.float32)
    noise_cdf = torch.from_numpy(np.cumsum(noise) / noise.sum()).to(dev, torch.float64)
    n_vocab = len(noise) - 1
    w = config.window
    offsets = torch.cat([torch.arange(-w, 0), torch.arange(1, w + 1)]).to(dev)
    labels = torch.zeros(config.negatives + 1, device=dev)
    labels[0] = 1.0
    n_tokens = corpus.n_tokens
    total = float(n_tokens * config.epochs)
    seg_bounds = _segments(corpus.piece_bounds, TORCH_SEGMENT)
    batch = torch_batch(float(keep_p[corpus.tokens].sum()), batch)

    for epoch in range(config.epochs):
        for lo, hi in zip(seg_bounds[:-1], seg_bounds[1:]):
            tokens, piece_of = _segment_arrays(corpus, lo, hi, dev)
            kept = torch.rand(hi - lo, generator=gen, device=dev) < keep[tokens]
            where = torch.nonzero(kept).squeeze(1)
            seq = tokens[where]
            pieces = piece_of[where]
            n = seq.shape[0]
            for start in range(0, n, batch):
                centres = torch.arange(start, min(start + batch, n), device=dev)
                # position for the lr schedule, interpolated so the GPU need not sync per step
                done = epoch * n_tokens + lo + (hi - lo) * start / max(n, 1)
                lr = max(config.min_lr, config.lr - (config.lr - config.min_lr) * done / total)
                reach = w - torch.randint(0, w, (centres.shape[0], 1), generator=gen, device=dev)
                pos = centres[:, None] + offsets[None, :]
                ok = (pos >= 0) & (pos < n) & (offsets.abs()[None, :] <= reach)
                pos = pos.clamp(0, max(n - 1, 0))
                ok &= pieces[pos] == pieces[centres][:, None]
                ctx = seq[pos]
                centre = seq[centres]
                u = torch.rand(centres.shape[0], config.negatives, generator=gen, device=dev)
                negs = torch.searchsorted(noise_cdf, u.double(), right=True).clamp_(max=n_vocab)
                outs = torch.cat([centre[:, None], negs], dim=1)
                use_out = torch.cat([torch.ones_like(centre[:, None], dtype=torch.bool),
                                     negs != centre[:, None]], dim=1)  # fmt: skip
                _torch_step(w_in, w_out, ctx, ok, outs, use_out, labels, lr, ROW_HITS)
            report(progress, TASK, min(1.0, (epoch * n_tokens + hi) / total))
        _check_finite(bool(torch.isfinite(w_in).all() and torch.isfinite(w_out).all()), epoch, config)
    return w_in.cpu().numpy()


def torch_batch(kept_tokens: float, batch: int) -> int:
    """Centre words per step for an epoch of about `kept_tokens` tokens after subsampling: `batch`
    (`device.Numerics.skipgram_batch` by default: larger batches feed the GPU better, but every
    occurrence of a word in a batch adds its gradient computed from the same stale rows, so very
    large ones overshoot on frequent words; a few thousand is a safe middle), or fewer where that would leave under `TORCH_MIN_STEPS` steps an epoch."""
    return int(min(batch, max(TORCH_MIN_BATCH, math.ceil(kept_tokens / TORCH_MIN_STEPS))))


def _torch_step(w_in, w_out, ctx, ok, outs, use_out, labels, lr: float, row_hits: int) -> None:  # noqa: ANN001
    """One batched SGNS step; masked context slots and dropped negatives get zero gradient.

    All of a step's gradients are computed from the same rows, then summed. Where a row occurs
    many times in one step (a frequent word as a context, or drawn as a negative by hundreds of
    centres), the sum is hundreds of steps taken from one stale point: a sequential trainer would
    have seen the row move after each, and the sum overshoots, back and forth, until the vectors
    overflow (the CUDA NaN of the bundled corpus: norms of 1e13 after 50 such epochs). So a row
    hit by more than `row_hits` centres in a step takes the mean of its updates times `row_hits`:
    exactly the plain sum for rows hit less often (most rows), a bounded step for the rest.
    """
    import torch

    d = w_in.shape[1]
    rows_in = w_in.index_select(0, ctx.reshape(-1)).view(*ctx.shape, d)  # (B, 2w, d)
    rows_out = w_out.index_select(0, outs.reshape(-1)).view(*outs.shape, d)  # (B, K+1, d)
    logits = torch.bmm(rows_in, rows_out.transpose(1, 2)).clamp_(-MAX_LOGIT, MAX_LOGIT)
    mask = (ok[:, :, None] & use_out[:, None, :]).to(logits.dtype)
    grad = (labels - torch.sigmoid(logits)) * mask * lr  # (B, 2w, K+1)
    d_in = torch.bmm(grad, rows_out)
    d_out = torch.bmm(grad.transpose(1, 2), rows_in)
    # how many centres touch each row in this step (as a context, or as an output of a centre
    # with at least one context), and each occurrence's share of its row's bounded step
    in_hits = ok.to(w_in.dtype)
    out_hits = (use_out & ok.any(1, keepdim=True)).to(w_in.dtype)
    in_scale = _hit_scale(ctx, in_hits, w_in.shape[0], row_hits)
    out_scale = _hit_scale(outs, out_hits, w_out.shape[0], row_hits)
    w_in.index_add_(0, ctx.reshape(-1), (d_in * in_scale[..., None]).reshape(-1, d))
    w_out.index_add_(0, outs.reshape(-1), (d_out * out_scale[..., None]).reshape(-1, d))


def _hit_scale(ids, hits, n_rows: int, row_hits: int):  # noqa: ANN001
    """Per occurrence in `ids`: min(1, row_hits / hits of its row in this step)."""
    import torch

    per_row = torch.zeros(n_rows, dtype=hits.dtype, device=hits.device)
    per_row.index_add_(0, ids.reshape(-1), hits.reshape(-1))
    return (row_hits / per_row.clamp(min=1.0)).clamp_(max=1.0)[ids]


def _segment_arrays(corpus: _Corpus, lo: int, hi: int, dev):  # noqa: ANN001
    """Token ids of tokens[lo:hi] and the piece each belongs to, as int64 tensors on `dev`."""
    import torch

    bounds = corpus.piece_bounds
    first, last = np.searchsorted(bounds, [lo, hi])
    piece_of = np.repeat(np.arange(first, last), np.diff(bounds[first : last + 1]))
    tokens = torch.from_numpy(corpus.tokens[lo:hi]).to(dev, torch.int64)
    return tokens, torch.from_numpy(piece_of).to(dev)


def _segments(piece_bounds: np.ndarray, size: int) -> list[int]:
    """Token offsets cutting the corpus at piece boundaries into runs of about `size` tokens."""
    cuts = [0]
    for b in piece_bounds[1:]:
        if b - cuts[-1] >= size:
            cuts.append(int(b))
    if cuts[-1] != int(piece_bounds[-1]):
        cuts.append(int(piece_bounds[-1]))
    return cuts


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _backend(device: str, backend: str) -> tuple[str, str]:
    """(device, backend) made concrete: numba on the CPU unless told otherwise, torch on CUDA."""
    if backend not in ("auto", "numba", "torch"):
        raise EmbedderError(f"skip-gram backend must be auto, numba or torch, not {backend!r}")
    resolved = dev.resolve(device)
    if resolved.type == "cuda":
        if backend == "numba":
            raise EmbedderError("skip-gram: the numba backend runs on the CPU only")
        return str(resolved), "torch"
    return "cpu", (dev.numerics(resolved).skipgram_backend if backend == "auto" else backend)


def train_skipgram(
    sentences: Sequence[np.ndarray],
    counts: np.ndarray,
    config: SkipGramConfig,
    device: str = "cpu",
    progress: Progress | None = None,
    init: np.ndarray | None = None,
    *,
    backend: str = "auto",
    batch: int | None = None,
) -> np.ndarray:
    """Train skip-gram "in" vectors, shape (len(counts), dim), float32.

    `sentences` are int32 id arrays; `counts[i]` is how often id i occurs in the corpus (it
    drives subsampling and the negative distribution). Ids with count < min_count are never a
    centre, context or negative; their rows come back all-zero (or as given by `init`).
    `backend` is "auto" (the device's choice, `device.numerics`: numba on the CPU, torch on CUDA
    and under the GPU's numerics), "numba" or "torch"; `batch` is the torch backend's centre words
    per step at most (None: the device's choice). Progress is reported as the task "skip-gram".
    """
    config.validate()
    counts = np.asarray(counts, dtype=np.int64)
    vocab_size = counts.shape[0]
    device, backend = _backend(str(device), backend)
    corpus = _flatten(sentences, vocab_size)
    keep_p = _keep_probability(counts, config)
    noise = _noise_weights(counts, config)
    trainable = keep_p > 0
    w_in, w_out = _initial_vectors(vocab_size, config, init, trainable)
    if not trainable.any() or corpus.n_tokens == 0:
        report(progress, TASK, 1.0)
        return w_in
    report(progress, TASK, 0.0)
    if backend == "numba":
        _train_numba(corpus, keep_p, noise, w_in, w_out, config, progress)
        return w_in
    with _torch_cpu_threads(device, config.threads):
        return _train_torch(corpus, keep_p, noise, w_in, w_out, config, device, progress,
                            batch or dev.numerics(device).skipgram_batch)


@contextlib.contextmanager
def _torch_cpu_threads(device: str, threads: int) -> Iterator[None]:
    """On the CPU, run torch ops on `threads` intra-op threads (1 when threads=0).

    The torch backend's ops are many small gathers, bmms and scatters, for which several OpenMP
    threads spend more time waiting for each other than working (see benchmarks/RESULTS.md).
    Torch's thread count is process-wide, so it is restored afterwards.
    """
    if device != "cpu":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = [
    "SkipGramConfig",
    "nearest",
    "train_skipgram",
]
