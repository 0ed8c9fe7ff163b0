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

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .data.batches import MAX_TOKENS, buckets, pad_ids
from .data.tokenizer import Tokenizer
from .errors import EmbedderError, check_range

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


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class OnnxModel:
    """The encoders of an ONNX export folder, with `Model`'s `encode`, `order_score`, `features`."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, verify: bool = True):
        """`threads`: batches run side by side, each on one core (None: every core). As with
        `Model`, a recurrent encoder's per-step products are too small to share between cores:
        two batches at once on two cores ran 1.3x faster than one batch on both
        (benchmarks/RESULTS.md, "ONNX"). `verify`: check every file against the SHA-256 recorded at export (a file copied in part,
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
        self.threads = threads or _cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
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
        """`features` for texts already cut into pieces by `tokens`, in `Model`'s batches, `threads`
        of them side by side (None: the model's). Without `order` the graph's scorer is not run."""
        check_range("batch_size", batch_size, 1)
        self.encoder(encoder)  # an unknown name: one line naming the ones there are
        session = self.sessions[encoder]
        outputs = ["vector", "order"] if order else ["vector"]
        vectors = np.zeros((len(ids), self.dim(encoder)), dtype=np.float32)
        scores = np.full(len(ids), np.nan, dtype=np.float32)

        def run(idx: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
            src, lens = pad_ids([ids[i] for i in idx])
            return idx, session.run(outputs, {"ids": src, "lengths": lens})  # releases the GIL

        batches = buckets([len(x) for x in ids], batch_size, max_tokens=max_tokens)
        workers = min(threads or self.threads, len(batches))
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            for idx, out in (pool.map(run, batches) if pool else map(run, batches)):
                vectors[idx] = out[0]
                if order:
                    scores[idx] = out[1]
                if progress:
                    progress(len(idx))
        return vectors, scores
