"""The teacher's word states: word-level targets for the distillation.

A sentence vector is one target per text, and a few thousand texts are too few examples of the
teacher's geometry for a student to generalise from. The teacher's contextual token states give
tens of targets per text instead: for each whitespace word, the mean of its last-layer states over
the WordPieces it was split into (all-MiniLM-L6-v2's sentence vector is itself the mean of those
states). The student reads the same words as SentencePiece pieces; its states over each word's
pieces, through a learned projection, are pulled toward these (`encoders/base.word_distillation`),
so the two tokenizers meet at whole words, which both keep.

The states are cut down by PCA (fitted on the first chunk of words) to `WORD_TARGET_DIM` and kept
as float16, and only a bounded number of texts get them, so memory stays small on any corpus.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .. import device as dev
from ..encoders.base import WORD_TARGET_DIM
from ..progress import Progress, report
from .teacher import CHUNK, Teacher

MAX_WORD_TEXTS = 20_000   # texts given word-level targets (evenly drawn beyond that)
WORDS = re.compile(r"\S+")


def word_states(teacher: Teacher, texts: Sequence[str], seed: int, progress: Progress | None = None,
                limit: int = MAX_WORD_TEXTS) -> tuple[np.ndarray, np.ndarray]:
    """(rows, WORD_TARGET_DIM) float16 targets, one row per whitespace word of each chosen text
    (a zero row for a word the teacher gave no state, past its length limit), and (texts, 2) the
    first and end row of each text's words (equal for a text without targets)."""
    chosen = np.arange(len(texts))
    if len(chosen) > limit:
        chosen = np.sort(np.random.default_rng([seed, 12]).choice(len(texts), limit, replace=False))
    counts = np.zeros(len(texts), dtype=np.int64)
    counts[chosen] = [len(texts[i].split()) for i in chosen]
    ends = np.cumsum(counts)
    spans = np.stack([ends - counts, ends], 1)
    out = np.zeros((int(ends[-1]) if len(ends) else 0, WORD_TARGET_DIM), dtype=np.float16)
    module = teacher.model[0]
    tokenizer, max_tokens = module.tokenizer, module.max_seq_length
    mean = basis = None
    batch = [i for i in chosen if counts[i]]
    for start in range(0, len(batch), CHUNK):
        rows = batch[start:start + CHUNK]
        chunk = [texts[i] for i in rows]
        states = teacher.model.encode(chunk, output_value="token_embeddings", batch_size=dev.numerics(teacher.device).teacher_batch,
                                      convert_to_numpy=False, show_progress_bar=False)
        offsets = tokenizer(chunk, truncation=True, max_length=max_tokens, return_offsets_mapping=True)["offset_mapping"]
        words = [_per_word(t, np.asarray(s.float().cpu().numpy()), o) for t, s, o in zip(chunk, states, offsets)]
        if basis is None:  # PCA from the first chunk's words: enough of them to fix the main directions
            sample = np.concatenate([w[np.abs(w).sum(1) > 0] for w in words]).astype(np.float64)
            mean = sample.mean(0)
            basis = np.linalg.svd(sample - mean, full_matrices=False)[2][:WORD_TARGET_DIM].T
        for i, w in zip(rows, words):
            given = np.abs(w).sum(1) > 0
            reduced = np.zeros((len(w), WORD_TARGET_DIM))
            reduced[given, :basis.shape[1]] = (w[given] - mean) @ basis
            out[spans[i, 0]:spans[i, 1]] = reduced
        report(progress, "teacher words", min(1.0, (start + len(rows)) / max(len(batch), 1)))
    return out, spans


def _per_word(text: str, states: np.ndarray, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """The mean state over each whitespace word's WordPieces (the specials, whose offsets are
    empty, belong to no word)."""
    starts = np.array([m.start() for m in WORDS.finditer(text)])
    out = np.zeros((len(starts), states.shape[1]), dtype=np.float32)
    n = np.zeros(len(starts))
    for state, (a, b) in zip(states, offsets):
        if b <= a:
            continue
        w = int(np.searchsorted(starts, a, side="right")) - 1
        if w >= 0:
            out[w] += state
            n[w] += 1
    out[n > 0] /= n[n > 0, None]
    return out


def aligned(spans: np.ndarray, ids: list[np.ndarray], starts: np.ndarray, max_len: int) -> np.ndarray:
    """`spans` with the texts whose pieces do not fall into the same words emptied: a text read in
    full must have as many words in pieces as in whitespace, a truncated one no more."""
    out = spans.copy()
    for i, x in enumerate(ids):
        n = int(out[i, 1] - out[i, 0])
        if n == 0:
            continue
        words = int(starts[x].sum()) + (0 if len(x) and starts[x[0]] else 1) if len(x) else 0
        if words > n or (len(x) < max_len and words != n):
            out[i, 1] = out[i, 0]
    return out
