"""Moving data between embedder and what users already have: SageMaker seq2seq `.rec` files
with their vocab JSON, SageMaker dense-vector records, and word2vec / BlazingText vectors.

`recordio.py` and `word2vec.py` know the file formats; this module knows what our corpora,
tokenizer and models mean in those formats.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq

from . import recordio, storage
from .corpus import ANSWER, QUESTION, check_paths, dialogues, read_corpus
from .errors import EmbedderError
from .tokenizer import EOS, Tokenizer
from .word2vec import load_word2vec, save_word2vec

SRC_VOCAB, TRG_VOCAB = "vocab.src.json", "vocab.trg.json"
WORD_MARK = "\u2581"  # SentencePiece's word-start marker


# -- SageMaker seq2seq: .rec pairs + vocab ---------------------------------------------------

def find_vocab(rec: Path, vocab: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The source and target vocab files for a `.rec` file: the one given (its `vocab.trg.json`
    sibling for targets, when there is one), else those beside the file or in `../vocab/`."""
    if vocab is not None:
        src = Path(vocab)
        if not src.is_file():
            raise EmbedderError(f"{src}: vocabulary file not found")
        trg = src.with_name(TRG_VOCAB)
        return src, trg if (src.name == SRC_VOCAB and trg.is_file()) else src
    for folder in (rec.parent, rec.parent.parent / "vocab"):
        if (folder / SRC_VOCAB).is_file():
            trg = folder / TRG_VOCAB
            return folder / SRC_VOCAB, trg if trg.is_file() else folder / SRC_VOCAB
    raise EmbedderError(f"{rec}: no {SRC_VOCAB} beside it or in ../vocab/; pass --vocab")


def detokenize(tokens: Sequence[str], ids: np.ndarray) -> str:
    """Token ids back to text: SentencePiece pieces are glued at their word marks, whole-word
    vocabularies (SageMaker's own preprocessing) are joined with spaces."""
    words = [tokens[i] for i in ids if i > EOS]
    if any(w.startswith(WORD_MARK) for w in words):
        return "".join(words).replace(WORD_MARK, " ").strip()
    return " ".join(words)


def read_rec_dialogues(path: Path, vocab: str | os.PathLike | None = None) -> Iterator[list[tuple[str, str, str]]]:
    """Each record becomes a two-turn dialogue (question → answer), as the corpus reader wants."""
    src_vocab, trg_vocab = find_vocab(path, vocab)
    src_tokens = recordio.read_vocab(src_vocab)
    trg_tokens = src_tokens if trg_vocab == src_vocab else recordio.read_vocab(trg_vocab)
    for n, (source, target) in enumerate(recordio.read_pairs(path), start=1):
        recordio.check_ids(source, len(src_tokens), path, n, "source")
        recordio.check_ids(target, len(trg_tokens), path, n, "target")
        where = f"{path}:record {n}"
        q, a = detokenize(src_tokens, source), detokenize(trg_tokens, target)
        if not q or not a:
            raise EmbedderError(f"{where}: empty source or target text")
        yield [(q, QUESTION, where), (a, ANSWER, where)]


def export_recordio(corpus: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                    tokenizer: Tokenizer | None = None, val_fraction: float = 0.05,
                    seed: int = 0, vocab: str | None = None) -> dict:
    """`train.rec` + `val.rec` (utterance → next utterance, as token ids) and the vocab JSON
    files, laid out for SageMaker seq2seq's train / validation / vocab channels."""
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
    recordio.write_vocab(out / SRC_VOCAB, pieces)
    recordio.write_vocab(out / TRG_VOCAB, pieces)
    return {"train": n_train, "val": n_val, "vocab_size": len(pieces), "out": str(out)}


def import_recordio(rec: str | os.PathLike, dest: str | os.PathLike, vocab: str | None = None) -> int:
    """A `.rec` file as a `.tsv` corpus (question<TAB>answer), for reading or editing."""
    from .atomic import atomic_path

    rec = check_paths([rec])[0]
    n = 0
    with atomic_path(dest) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for (q, _, _), (a, _, _) in read_rec_dialogues(rec, vocab):
            f.write(f"{q}\t{a}\n")
            n += 1
    return n


def export_recordio_vectors(out_dir: str | os.PathLike, dest: str | os.PathLike,
                            encoder: str | None = None) -> int:
    """The vectors of an `embed encode` output as dense float32 records (label = Parquet id),
    the input SageMaker's k-NN and Linear Learner take. Streams one row group at a time."""
    features = Path(out_dir) / storage.FEATURES
    meta = storage.metadata(features)
    names = list(meta["encoders"])
    encoder = encoder or names[0]
    if encoder not in names:
        raise EmbedderError(f"{features}: no vectors for encoder {encoder!r} (it has: {', '.join(names)})")
    col = meta["encoders"][encoder]["column"]
    pf = pq.ParquetFile(features)

    def batches():
        for b in pf.iter_batches(columns=["id", col], batch_size=8192):
            X = b.column(1).flatten().to_numpy(zero_copy_only=False).reshape(b.num_rows, -1)
            yield b.column(0).to_numpy(), X.astype(np.float32, copy=False)

    return recordio.write_dense_vector_batches(dest, batches())


# -- word2vec / BlazingText vectors ------------------------------------------------------------

def piece_init(tokenizer: Tokenizer, path: str | os.PathLike) -> np.ndarray:
    """Initial skip-gram vectors from a word2vec/BlazingText/fastText file: a whole-word piece
    takes its word's vector (case-insensitive, as our tokenizer folds case); rows with no
    match are NaN, which the trainer reads as 'no initial vector'."""
    words, vectors = load_word2vec(path)
    lookup: dict[str, int] = {}
    for i, w in enumerate(words):
        lookup.setdefault(w.lower(), i)
    pieces = tokenizer.pieces()
    init = np.full((len(pieces), vectors.shape[1]), np.nan, dtype=np.float32)
    matched = 0
    for pid, p in enumerate(pieces):
        if pid <= EOS:
            continue
        key = p[1:] if p.startswith(WORD_MARK) else p
        row = lookup.get(key)
        if row is not None and key:
            init[pid] = vectors[row]
            matched += 1
    if matched == 0:
        raise EmbedderError(f"{path}: none of its {len(words):,} words is in this corpus's vocabulary")
    return init


def word_vectors(model, whole_words: bool = True) -> tuple[list[str], np.ndarray]:
    from .birnn import word_vectors as wv

    return wv(model.encoder("skipgram-birnn"), model.tokenizer, whole_words)


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
    module = model.encoder("skipgram-birnn")
    ids = model.tokenizer.encode([word])[0]
    if len(ids) == 0:
        raise EmbedderError(f"{word!r}: nothing to look up")
    table = module.skipgram.detach().cpu().numpy()
    query = table[ids].mean(0)
    words, vectors = word_vectors(model, whole_words=True)
    scores = vectors @ query / np.maximum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(query), 1e-12)
    norm_word = model.tokenizer.decode(ids).strip()
    order = [i for i in np.argsort(-scores) if words[i] != norm_word]
    return [(words[i], float(scores[i])) for i in order[:k]]
