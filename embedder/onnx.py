"""`Model.encode` without torch: an `embed export onnx` folder run by onnxruntime.

    from embedder.onnx import OnnxModel
    model = OnnxModel("model.onnx/")                 # numpy, sentencepiece and onnxruntime only
    X = model.encode(["How do I reset it?"], encoder="seq2seq")   # float32, unit rows

A deployment image then needs the `onnx` extra's onnxruntime (tens of MB) instead of torch
(hundreds). The calls, the batching (length buckets capped in padded pieces) and the results
are `Model`'s: vectors within 1e-4 and order scores within 1e-3 of it (`tests/test_onnx.py`).
Nothing here imports torch, and `embed serve --runtime onnx` serves such a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .data.batches import MAX_TOKENS, buckets, pad_ids
from .data.tokenizer import Tokenizer
from .errors import EmbedderError, check_range, check_text

DESCRIPTION = "onnx.json"
FORMAT = "embedder-onnx"
FORMAT_VERSION = 1


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_description(path: Path) -> dict:
    """`onnx.json` of an export folder, checked: one clear line for each way it can be wrong."""
    if not path.is_dir():
        raise EmbedderError(f"{path}: no such folder" if not path.exists() else f"{path}: not a folder")
    desc_path = path / DESCRIPTION
    if not desc_path.exists():
        raise EmbedderError(f"{path}: not an ONNX export folder (no {DESCRIPTION}; make one with "
                            "`embed export onnx MODEL -o DIR`)")
    try:
        desc = json.loads(desc_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmbedderError(f"{desc_path}: corrupt ({e})") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise EmbedderError(f"{desc_path}: not an embedder ONNX description")
    if desc.get("format_version") != FORMAT_VERSION:
        raise EmbedderError(f"{path}: ONNX export format {desc.get('format_version')!r}; this embedder reads "
                            f"format {FORMAT_VERSION}: export the model again")
    if not isinstance(desc.get("encoders"), dict) or not desc["encoders"]:
        raise EmbedderError(f"{desc_path}: lists no encoders")
    return desc


class OnnxModel:
    """The encoders of an ONNX export folder, with `Model`'s `encode`, `order_score`, `features`."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, verify: bool = True):
        """`threads`: onnxruntime's intra-op threads per call (None: its default, every core).
        `verify`: check every file against the SHA-256 recorded at export (a file copied in part,
        or from another export, is a clear error rather than wrong vectors)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise EmbedderError("the ONNX runtime needs the onnx extra: pip install 'embedder[onnx]'") from None
        self.path = Path(path)
        desc = read_description(self.path)
        self.description = desc
        files = {desc.get("tokenizer", "tokenizer.model"): desc.get("tokenizer_sha256")}
        files.update({e.get("file", f"{n}.onnx"): e.get("sha256") for n, e in desc["encoders"].items()})
        for name, digest in files.items():
            f = self.path / name
            if not f.exists():
                raise EmbedderError(f"{f}: missing (the export folder is incomplete)")
            if verify and digest and sha256(f) != digest:
                raise EmbedderError(f"{f}: does not match {DESCRIPTION} (modified, or from another export)")
        self.tokenizer = Tokenizer.load(self.path / desc.get("tokenizer", "tokenizer.model"))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {}
        for name, entry in desc["encoders"].items():
            try:
                self.sessions[name] = ort.InferenceSession(str(self.path / entry["file"]), options,
                                                           providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own types for a damaged graph
                raise EmbedderError(f"{self.path / entry['file']}: cannot load ({str(e).splitlines()[0]})") from None
        self.encoders = {name: entry for name, entry in desc["encoders"].items()}
        self.fingerprint = desc.get("model_fingerprint", "")

    def encoder(self, name: str) -> dict:
        if name not in self.encoders:
            raise EmbedderError(f"encoder {name!r} is not in this export (it has: {', '.join(self.encoders)})")
        return self.encoders[name]

    def dim(self, encoder: str) -> int:
        return int(self.encoder(encoder)["dim"])

    def tokens(self, texts: Sequence[str], encoder: str = "seq2seq") -> list[np.ndarray]:
        """The piece ids an encoder reads for each text (cut at its max_len), as `Model.tokens`."""
        return self.tokenizer.encode(texts, max_len=int(self.encoder(encoder)["max_len"]))

    def encode(self, texts: Sequence[str] | str, encoder: str = "seq2seq", batch_size: int = 256,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine similarity = dot product)."""
        return self.features(texts, encoder, batch_size, progress, order=False)[0]

    def order_score(self, texts: Sequence[str] | str, encoder: str = "seq2seq", batch_size: int = 256) -> np.ndarray:
        """float32 probabilities, one per text, that its words are out of natural order."""
        return self.features(texts, encoder, batch_size, order=True)[1]

    def features(self, texts: Sequence[str] | str, encoder: str = "seq2seq", batch_size: int = 256,
                 progress: Callable[[int], None] | None = None, order: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The vectors and the order scores from one pass (the graph computes both; `order` False
        leaves the scores NaN, as `Model.features` does)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.features_of_tokens(self.tokens(texts, encoder), encoder, batch_size, progress, order)

    def features_of_tokens(self, ids: Sequence[np.ndarray], encoder: str = "seq2seq", batch_size: int = 256,
                           progress: Callable[[int], None] | None = None, order: bool = True,
                           threads: int | None = None, max_tokens: int = MAX_TOKENS) -> tuple[np.ndarray, np.ndarray]:
        """`features` for texts already cut into pieces by `tokens`, in `Model`'s batches.
        (`threads` is accepted for `Model`'s signature; onnxruntime's own threads do the work.)"""
        check_range("batch_size", batch_size, 1)
        self.encoder(encoder)  # an unknown name: one line naming the ones there are
        session = self.sessions[encoder]
        vectors = np.zeros((len(ids), self.dim(encoder)), dtype=np.float32)
        scores = np.full(len(ids), np.nan, dtype=np.float32)
        for idx in buckets([len(x) for x in ids], batch_size, max_tokens=max_tokens):
            src, lens = pad_ids([ids[i] for i in idx])
            v, o = session.run(None, {"ids": src, "lengths": lens})
            vectors[idx] = v
            if order:
                scores[idx] = o
            if progress:
                progress(len(idx))
        return vectors, scores

    def replies(self, text: str, beam: int = 1, encoder: str = "seq2seq"):
        check_text(text, "the text to answer")
        raise EmbedderError("an ONNX export holds the encoders only; `embed generate` needs the model folder")
