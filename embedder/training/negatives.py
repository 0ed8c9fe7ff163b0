"""Hard negatives mined with the teacher: for each question, the texts it would most likely
mistake for its answer.

In-batch negatives are random utterances, almost all easy to reject: they teach the encoders to
tell topics apart, not to rank the close candidates of one question (several sentences on the
same subject, one of which answers it), which is what `embed query` and answer ranking ask. The
teacher knows which texts of the corpus look closest to a question; those it still ranks below
the question's own answer are candidates the student should learn to rank the same way. Texts
the corpus pairs with the same question (a second correct answer), and texts of the other role
(a question is not a candidate answer), are never taken.
"""

from __future__ import annotations

import numpy as np

from ..data.pairs import PairCorpus

MINED = 4              # negatives kept per pair; one is drawn per pair and epoch
MAX_PAIRS = 50_000     # pairs mined for (evenly drawn beyond that): the cost grows with pairs x pool
MAX_POOL = 200_000     # candidate texts searched (evenly drawn beyond that)
BLOCK = 1024           # pairs scored at a time, so memory stays at BLOCK x pool


def mine(corpus: PairCorpus, teacher: np.ndarray, seed: int, k: int = MINED,
         max_pairs: int = MAX_PAIRS, max_pool: int = MAX_POOL) -> np.ndarray:
    """(pairs, k) indices into `corpus.texts`, -1 where there is none: for each pair of two
    different texts, the `k` texts of its target's role that the teacher scores closest to its
    source while still below the target itself. Pairs of a text with itself get none."""
    n_texts = len(corpus.texts)
    out = np.full((len(corpus.pairs), k), -1, dtype=np.int64)
    # one id per distinct text: the same answer may be written in several dialogues
    first: dict[str, int] = {}
    canon = np.array([first.setdefault(t, i) for i, t in enumerate(corpus.texts)], dtype=np.int64)
    src, tgt = canon[corpus.pairs[:, 0]], canon[corpus.pairs[:, 1]]
    given = np.abs(np.asarray(teacher[:n_texts])).sum(1) > 0 if n_texts else np.zeros(0, bool)
    rows = np.flatnonzero((src != tgt) & given[src] & given[tgt])
    rng = np.random.default_rng([seed, 11])
    if len(rows) > max_pairs:
        rows = np.sort(rng.choice(rows, max_pairs, replace=False))
    pool = np.flatnonzero((canon == np.arange(n_texts)) & given)
    if len(pool) > max_pool:
        pool = np.sort(rng.choice(pool, max_pool, replace=False))
    if len(rows) == 0 or len(pool) == 0:
        return out
    where = np.full(n_texts, -1, dtype=np.int64)   # a distinct text's column in the pool
    where[pool] = np.arange(len(pool))
    answers: dict[int, list[int]] = {}             # every target each source is paired with
    for s, t in zip(src, tgt):
        answers.setdefault(int(s), []).append(int(t))
    P = np.asarray(teacher[pool], dtype=np.float32)
    pool_question = corpus.questions[pool]
    for start in range(0, len(rows), BLOCK):
        block = rows[start:start + BLOCK]
        Q = np.asarray(teacher[src[block]], dtype=np.float32)               # read once from the memory map
        S = Q @ P.T                                                          # (block, pool)
        positive = np.einsum("ij,ij->i", Q, np.asarray(teacher[tgt[block]], dtype=np.float32))
        S[S >= positive[:, None]] = -np.inf                                 # the teacher's own doubt: not a negative
        S[pool_question[None, :] != corpus.questions[tgt[block]][:, None]] = -np.inf
        for r, p in enumerate(block):
            for t in [int(src[p]), *answers[int(src[p])]]:
                if where[t] >= 0:
                    S[r, where[t]] = -np.inf
        kk = min(k, S.shape[1])
        top = np.argpartition(-S, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(S, top, 1), axis=1), 1)
        found = np.isfinite(np.take_along_axis(S, top, 1))
        out[block, :kk] = np.where(found, pool[top], -1)
    return out
