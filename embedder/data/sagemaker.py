"""Corpora to and from SageMaker seq2seq's `.rec` files: utterance → next utterance as token ids,
with the vocab JSON files that SageMaker's vocab channel takes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_path
from ..errors import EmbedderError, check_range
from . import recordio
from .corpus import check_paths, dialogues, read_corpus
from .tokenizer import Tokenizer


def export_recordio(corpus: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                    tokenizer: Tokenizer | None = None, val_fraction: float = 0.05,
                    seed: int = 0, vocab: str | None = None) -> dict:
    """`train.rec` + `val.rec` (utterance → next utterance, as token ids) and the vocab JSON
    files, laid out for SageMaker seq2seq's train / validation / vocab channels."""
    check_range("--val-fraction", val_fraction, 0.0, 1.0, open_high=True)
    files = check_paths(corpus)
    if tokenizer is None:
        tokenizer = Tokenizer.train([u.text for u in read_corpus(files, vocab=vocab)], seed=seed)
    rng = np.random.default_rng(seed)
    train_pairs, val_pairs = [], []
    for dlg in dialogues(read_corpus(files, vocab=vocab)):
        if len(dlg) < 2:
            continue
        ids = tokenizer.encode([u.text for u in dlg])
        bucket = val_pairs if rng.random() < val_fraction else train_pairs
        bucket.extend((ids[i], ids[i + 1]) for i in range(len(dlg) - 1))
    if not train_pairs:
        raise EmbedderError(f"{files[0]}: no dialogue has two utterances, so there are no "
                            "source → target pairs to export")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_train = recordio.write_pairs(out / "train.rec", train_pairs, vocab_size=len(tokenizer))
    n_val = recordio.write_pairs(out / "val.rec", val_pairs, vocab_size=len(tokenizer))
    pieces = tokenizer.pieces()
    recordio.write_vocab(out / recordio.SRC_VOCAB, pieces)
    recordio.write_vocab(out / recordio.TRG_VOCAB, pieces)
    return {"train": n_train, "val": n_val, "vocab_size": len(pieces), "out": str(out)}


def import_recordio(rec: str | os.PathLike, dest: str | os.PathLike, vocab: str | None = None) -> int:
    """A `.rec` file as a `.tsv` corpus (question<TAB>answer), for reading or editing."""
    if Path(rec).suffix.lower() != ".rec":
        raise EmbedderError(f"{rec}: not a .rec file")
    utterances = read_corpus([rec], vocab=vocab)
    n = 0
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for q, a in zip(utterances, utterances):  # each record is one two-turn dialogue
            f.write(f"{q.text}\t{a.text}\n")
            n += 1
    return n
