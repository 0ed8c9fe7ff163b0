"""FAISS indexes over unit vectors, whose ids are the Parquet `id`s.

Small collections get an exact inner-product index (cosine, since rows are unit length). Large
ones get an inverted file of product-quantised codes (about 72 bytes a vector in memory, not 1 KB)
whose candidates are re-ranked with the exact vectors read from disk (`vectors.VectorStore`), so
memory stays bounded and recall stays near exact. Any FAISS index factory string overrides the
choice; compressed codes (PQ, SQ, LSH) are always re-ranked.

The index is trained on a uniform sample of the whole corpus, after every vector is on disk, and
its search settings (`nprobe`, `efSearch`, re-rank depth) are chosen by measuring recall against
exact search on a sample of the collection; they are recorded in the manifest and can be
overridden per query with a string like FAISS's own: `"nprobe=64,rerank=200"`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from ..errors import EmbedderError
from .vectors import VectorStore, read_ids, write_ids

#: Up to this many vectors an exact search is fast enough and has perfect recall.
EXACT_LIMIT = 100_000
#: The recall@10 (against exact search, on held-out queries) that the chosen search settings must
#: reach, unless `embed encode --target-recall` says otherwise; the fastest setting that reaches it wins.
TARGET_RECALL = 0.95
#: Speed-up over exact search that an approximate index is built to give at that recall; below it,
#: a finer code is tried and the shortfall is recorded (`tune`, `storage.encode`).
SPEEDUP_GOAL = 10.0
SETTINGS = ("nprobe", "efSearch", "rerank")
_DIGEST = np.dtype((np.void, 16))  # one row's BLAKE2 digest (`find_copies`)


def auto_factory(n: int, dim: int) -> str:
    """Exact search up to `EXACT_LIMIT` vectors; above, an inverted file of 4-bit fast-scan PQ codes
    (half a byte per 2 dimensions) with about 4·√n lists, re-ranked from disk. On a million
    distinct vectors this reached recall@10 0.96–0.99 at 10–18× exact search, where `IVF1024,PQ32`
    needed re-ranks four times deeper for 0.96–0.99 at 2–4.5× (benchmarks/RESULTS.md)."""
    if n <= EXACT_LIMIT:
        return "Flat"
    nlist = 1 << int(round(np.log2(4 * np.sqrt(n))))  # 4,096 lists at 1M
    return f"IVF{nlist},PQ{_fastscan_m(dim)}x4fs"


def finer_factory(factory: str, dim: int) -> str | None:
    """The automatic index with codes twice as fine (a byte per 2 dimensions instead of half a
    byte, i.e. `PQ{dim}x4fs`), for data whose neighbours the coarse codes blur so much that only a
    deep re-rank finds them; None where there is no finer automatic step."""
    m = re.fullmatch(r"IVF(\d+),PQ(\d+)x4fs", factory)
    if not m or int(m.group(2)) >= dim:
        return None
    return f"IVF{m.group(1)},PQ{dim}x4fs"


def check_target(target: float) -> float:
    from ..errors import check_range

    check_range("--target-recall", target, 0, 1, open_low=True)
    return float(target)


def _fastscan_m(dim: int) -> int:
    """Sub-quantisers for 4-bit fast-scan PQ: an even divisor of the dimension, about 2 dimensions
    each (fast scan packs codes in pairs)."""
    even = [m for m in range(2, dim + 1, 2) if dim % m == 0] or [dim]
    return min(even, key=lambda m: abs(m - dim / 2))


def reranks(factory: str) -> bool:
    """Whether an index of this factory string stores lossy codes, so needs exact re-ranking."""
    return bool(re.search(r"PQ|SQ|LSH|RaBitQ", factory))


def index_filename(encoder: str) -> str:
    return f"{encoder}.faiss"


def parse_settings(text: str | None, where: str = "--search") -> dict[str, int]:
    """`"nprobe=64,rerank=200"` → {"nprobe": 64, "rerank": 200}; a bad one is one clear line."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in SETTINGS or not value.strip().isdigit() or int(value) < 1:
            raise EmbedderError(f"{where} {part!r}: expected NAME=N with N ≥ 1 and NAME one of "
                                f"{', '.join(SETTINGS)}")
        out[key] = int(value)
    return out


class Copies:
    """Which ids hold a vector identical to another's: the index keeps one of each (the first),
    and a search hands back the others beside it, at the same score.

    Question-and-answer logs repeat themselves (the same question asked a thousand times, the
    same canned answer): a copy adds nothing to an index but memory, and it crowds out of a
    candidate list the other texts an approximate search must weigh."""

    def __init__(self, kept: np.ndarray, copy: np.ndarray):
        order = np.argsort(kept, kind="stable")
        self.kept, self.copy = kept[order].astype(np.int64), copy[order].astype(np.int64)

    def __len__(self) -> int:
        return len(self.copy)

    def expand(self, D: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each hit followed by its copies (same score), cut to k per query."""
        D_out = np.full((len(I), k), -np.inf, dtype=np.float32)
        I_out = np.full((len(I), k), -1, dtype=np.int64)
        for q in range(len(I)):
            ids, scores = [], []
            for d, i in zip(D[q], I[q]):
                if i < 0 or len(ids) >= k:
                    break
                lo, hi = np.searchsorted(self.kept, [i, i + 1])
                group = [int(i), *self.copy[lo:hi][: k - len(ids) - 1].tolist()]
                ids += group
                scores += [d] * len(group)
            D_out[q, :len(ids)], I_out[q, :len(ids)] = scores, ids
        return D_out, I_out

    def save(self, path: str | os.PathLike) -> None:
        write_ids(path, np.stack([self.kept, self.copy], axis=1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Copies":
        pairs = read_ids(path)
        return cls(pairs[:, 0], pairs[:, 1])


def find_copies(store: VectorStore) -> Copies:
    """Rows whose vector is byte-for-byte another's, found by a 128-bit BLAKE2 digest of each row.
    Equal digests are taken as equal rows: the chance that two different vectors among a billion
    share one is about 1e-21, far below that of a memory error, and reading every candidate pair
    back to compare them cost 12 of the 17 seconds this took at 1M rows (benchmarks/RESULTS.md)."""
    id_parts, digest_parts = [np.zeros(0, np.int64)], [np.zeros(0, _DIGEST)]
    for ids, X in store.chunks():
        row = memoryview(np.ascontiguousarray(X)).cast("B")
        width = X.shape[1] * X.itemsize
        digests = b"".join(hashlib.blake2b(row[a:a + width], digest_size=_DIGEST.itemsize).digest()
                           for a in range(0, len(row), width))
        id_parts.append(ids)
        digest_parts.append(np.frombuffer(digests, dtype=_DIGEST))
    ids, digests = np.concatenate(id_parts), np.concatenate(digest_parts)
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    kept = ids[first[inverse.ravel()]]
    dup = np.flatnonzero(kept != ids)
    return Copies(kept[dup], ids[dup])


class VectorIndex:
    """A FAISS index plus, for compressed codes, the exact vectors that re-rank its candidates,
    and the copies of indexed vectors it leaves out."""

    def __init__(self, index: faiss.Index, store: VectorStore | None = None,
                 settings: dict[str, int] | None = None, copies: Copies | None = None):
        self.faiss = index
        self.store = store
        self.settings = dict(settings or {})
        self.copies = copies

    @property
    def ntotal(self) -> int:
        return int(self.faiss.ntotal)

    def add_with_ids(self, X: np.ndarray, ids: np.ndarray) -> None:
        X = np.ascontiguousarray(X, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.faiss.add_with_ids(X, ids)
        if self.store is not None:
            self.store.add(ids, X)

    def search(self, Q: np.ndarray, k: int, settings: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n, k), best first; missing neighbours have id -1."""
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        s = {**self.settings, **(settings or {})}
        depth = max(k, s.get("rerank", k)) if self.store is not None else k
        D, I = self.faiss.search(Q, depth, params=_faiss_params(self.faiss, s))
        if self.store is not None:
            D, I = _rerank(Q, I, self.store, k)
        if self.copies is not None and len(self.copies):
            D, I = self.copies.expand(D, I, k)
        return D, I


def _faiss_params(index: faiss.Index, s: dict[str, int]):
    """Per-call search parameters, so concurrent searches with other settings do not collide."""
    if faiss.try_extract_index_ivf(index) is not None:
        return faiss.SearchParametersIVF(nprobe=s.get("nprobe", 16))
    if _is_hnsw(index):
        return faiss.SearchParametersHNSW(efSearch=s.get("efSearch", 64))
    return None


def _is_hnsw(index: faiss.Index) -> bool:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return isinstance(inner, faiss.IndexHNSW)


def _rerank(Q: np.ndarray, I: np.ndarray, store: VectorStore, k: int) -> tuple[np.ndarray, np.ndarray]:
    D_out = np.full((len(Q), k), -np.inf, dtype=np.float32)
    I_out = np.full((len(Q), k), -1, dtype=np.int64)
    for q, cand in enumerate(I):
        cand = cand[cand >= 0]
        if not len(cand):
            continue
        exact = store.get(cand) @ Q[q]
        top = np.argsort(-exact, kind="stable")[:k]
        D_out[q, :len(top)], I_out[q, :len(top)] = exact[top], cand[top]
    return D_out, I_out


def new(dim: int, factory: str) -> faiss.Index:
    """An empty index; inverted files hold ids themselves, other kinds get an id map."""
    try:
        inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise EmbedderError(f"index factory {factory!r}: {str(e).strip().splitlines()[-1]}") from None
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is None:
        return faiss.IndexIDMap(inner)
    ivf = faiss.downcast_index(ivf)
    if hasattr(ivf, "do_polysemous_training"):  # for Hamming pre-filtering, which re-ranking makes moot;
        ivf.do_polysemous_training = False     # it is most of the training time
        ivf.pq.cp.niter = 10
    return inner


def train_size(index: faiss.Index, n: int) -> int:
    """Vectors to train on: 40 per inverted list (FAISS warns below 39), at least 64k for PQ."""
    ivf = faiss.try_extract_index_ivf(index)
    want = max(65536, 40 * ivf.nlist) if ivf is not None else 65536
    return min(n, want)


def build(store: VectorStore, factory: str, progress: Callable[[float], None] | None = None,
          copies: Copies | None = None) -> faiss.Index:
    """Train on a uniform sample of the store, then add every vector, a chunk at a time (all but
    the `copies`, when given)."""
    index = new(store.dim, factory)
    n = store.rows
    left_out = copies.copy if copies is not None else np.zeros(0, np.int64)
    if not index.is_trained:
        sample = store.sample(train_size(index, n))
        try:
            index.train(sample)
        except RuntimeError as e:
            raise EmbedderError(f"index {factory!r}: cannot train on {len(sample)} vectors "
                                f"({str(e).strip().splitlines()[-1]}); use a smaller index or Flat") from None
        del sample
    done = 0
    for ids, X in store.chunks():
        keep = ~np.isin(ids, left_out, assume_unique=True)
        index.add_with_ids(np.ascontiguousarray(X[keep]), ids[keep])
        done += len(ids)
        if progress:
            progress(done / max(n, 1))
    return index


def exact_topk(store: VectorStore, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact (scores, ids) of the k best rows for each query, streaming the store from disk."""
    best_D = np.full((len(Q), k), -np.inf, dtype=np.float32)
    best_I = np.full((len(Q), k), -1, dtype=np.int64)
    for ids, X in store.chunks(rows=8192):  # small blocks: the scores of a block are all it holds
        S = Q @ X.T
        top = np.argpartition(-S, min(k, S.shape[1]) - 1, axis=1)[:, :k]
        D = np.concatenate([best_D, np.take_along_axis(S, top, 1)], axis=1)
        I = np.concatenate([best_I, ids[top]], axis=1)
        part = np.argpartition(-D, k - 1, axis=1)[:, :k]
        best_D, best_I = np.take_along_axis(D, part, 1), np.take_along_axis(I, part, 1)
    order = np.argsort(-best_D, axis=1, kind="stable")
    return np.take_along_axis(best_D, order, 1), np.take_along_axis(best_I, order, 1)


def recall(store: VectorStore, Q: np.ndarray, I: np.ndarray, exact_D: np.ndarray) -> float:
    """Tie-aware recall@k: a returned id counts when its exact score reaches the k-th exact score
    (corpora repeat texts, so many ids can share the k-th place)."""
    k = exact_D.shape[1]
    hits = 0
    for q in range(len(Q)):
        got = I[q][I[q] >= 0][:k]
        if len(got):
            hits += int(np.sum(store.get(got) @ Q[q] >= exact_D[q, -1] - 1e-5))
    return hits / (k * len(Q))


def tune(index: VectorIndex, store: VectorStore, k: int = 10, queries: int = 400,
         target: float = TARGET_RECALL) -> dict:
    """The fastest search settings whose recall@k against exact search reaches `target` on queries
    like real ones (`_queries`), timed here; the most thorough tried when none does. Returns them
    with the recall they measured, the target, their speed-up over exact search (`_exact_seconds`),
    and a `note` when the target was missed or reached only below `SPEEDUP_GOAL`."""
    check_target(target)
    ivf = faiss.try_extract_index_ivf(index.faiss)
    if ivf is not None:
        probes = [p for p in (4, 8, 16, 32, 64, 128, 192, 256, 384, 512) if p <= ivf.nlist] or [ivf.nlist]
        depths = (50, 100, 150, 200, 300, 400, 800, 1600) if index.store is not None else (None,)
        # for each nprobe, the shallowest re-rank depth that reaches the target
        ladders = [[{"nprobe": p, **({"rerank": d} if d else {})} for d in depths] for p in probes]
    elif _is_hnsw(index.faiss):
        depths = (50, 100, 200, 400) if index.store is not None else (None,)
        ladders = [[{"efSearch": e, **({"rerank": d} if d else {})} for d in depths]
                   for e in (16, 32, 64, 128, 256, 512, 1024)]
    else:  # exact, or a kind without search settings
        return {}
    Q = _queries(store.sample(queries, seed=1))
    exact_D, _ = exact_topk(store, Q, k)
    best: tuple[float, dict, float] | None = None  # (seconds, settings, recall)
    fallback: tuple[float, dict] = (-1.0, ladders[-1][-1])
    for ladder in ladders:
        previous = None
        for step, s in enumerate(ladder):
            seconds, I = _timed(index, Q, k, s)
            if best is not None and seconds > 1.5 * best[0]:
                break  # each later step costs more still, and so does the next ladder's first
            r = recall(store, Q, I, exact_D)
            if r > fallback[0]:
                fallback = (r, s)
            if r >= target:
                seconds = min(seconds, _timed(index, Q, k, s)[0])  # the choice rests on this: timed twice
                if best is None or seconds < best[0]:
                    best = (seconds, s, r)
                break
            if previous is not None and r - previous < (target - r) / 10:
                break  # re-ranking deeper barely helps: these probes do not reach the neighbours
            previous = r
        else:
            continue
        if step == 0:  # this ladder's cheapest step reached the target or was too slow: so would
            break      # the next ladder's, with more probes
    chosen, measured = (best[1], best[2]) if best else (fallback[1], fallback[0])
    seconds = best[0] if best else min(_timed(index, Q, k, chosen)[0] for _ in range(2))
    speedup = _exact_seconds(store, Q, k) / max(seconds, 1e-9)
    out = {**chosen, f"recall_at_{k}": round(measured, 4), "target_recall": target, "speedup": round(speedup, 1)}
    if best is None:
        out["note"] = f"no setting tried reached recall@{k} {target} (best: {measured:.3f} at {speedup:.1f}x exact search)"
    elif speedup < SPEEDUP_GOAL:
        out["note"] = (f"the fastest setting that reaches recall@{k} {target} is {speedup:.1f}x exact search, "
                       f"short of {SPEEDUP_GOAL:.0f}x")
    return out


def _exact_seconds(store: VectorStore, Q: np.ndarray, k: int, sample: int = 65536, block: int = 8192) -> float:
    """What an exact search of `Q` over the whole store takes in memory (batched matrix products
    and a top-k, in blocks as `exact_topk` does), from a sample of its rows, timed twice, scaled to
    the store. In blocks: one 65k-row product and its top-k held ~0.5 GB at once and raised
    `embed encode`'s peak at 1M from 0.93 to 1.51 GB."""
    X = store.sample(min(sample, store.rows), seed=2)

    def once() -> float:
        t = time.perf_counter()
        for a in range(0, len(X), block):
            S = Q @ X[a:a + block].T
            np.argpartition(-S, min(k, S.shape[1]) - 1, axis=1)[:, :k]
        return time.perf_counter() - t

    return min(once(), once()) * store.rows / max(len(X), 1)


def _timed(index: VectorIndex, Q: np.ndarray, k: int, settings: dict) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    _, I = index.search(Q, k, settings)
    return time.perf_counter() - t, I


def _queries(X: np.ndarray, seed: int = 1) -> np.ndarray:
    """Queries like real ones, which are not in the collection: half are its own vectors moved
    by noise, half lie between two of them (a new text whose nearest neighbours are several
    texts, none close). A collection's own vectors find themselves too easily and flatter an
    approximate index, and more so when texts repeat: all copies of a text are found together."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=X.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    half = len(X) // 2
    Q = np.concatenate([X[:half] + 0.3 * noise[:half],
                        X[half:] + np.roll(X[half:], 1, axis=0) + 0.3 * noise[half:]])
    return (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)


def save(index: VectorIndex | faiss.Index, path: str | os.PathLike) -> None:
    faiss.write_index(index.faiss if isinstance(index, VectorIndex) else index, str(path))


def read(path: str | os.PathLike) -> faiss.Index:
    path = Path(path)
    if not path.exists():
        raise EmbedderError(f"{path}: missing (was `embed encode` run with this encoder?)")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise EmbedderError(f"{path}: not a readable FAISS index (corrupt or truncated: "
                            f"{str(e).strip().splitlines()[-1][:120]})") from None


def load(path: str | os.PathLike, store: VectorStore | None = None,
         settings: dict[str, int] | None = None, copies: Copies | None = None) -> VectorIndex:
    """An index file with its re-ranking store, recorded settings and copies (older folders: none)."""
    return VectorIndex(read(path), store, settings, copies)

