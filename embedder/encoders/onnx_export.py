"""A trained model's encoders as ONNX graphs: `embed export onnx MODEL -o DIR`.

Users deploy sentence encoders through onnxruntime or an inference server, in images without
torch. Each encoder becomes one graph from padded piece ids and their lengths to the unit vector
and the order score (dynamic batch and length), written beside the SentencePiece model and a
small JSON (`onnx.json`) saying what goes in, what comes out, how to pad, and each file's
SHA-256. `embedder.onnx.OnnxModel` reads such a folder with numpy, sentencepiece and onnxruntime
alone.

The graphs come from torch's own exporter; before the folder is renamed into place, every graph
is run by onnxruntime on random piece sequences of mixed lengths and must give the vectors and
order scores the torch model gives (float32: the order scorer's bfloat16 CPU path is left out of
an export), so a folder that exists has been checked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import replace_dir
from ..data.batches import pad_ids
from ..data.tokenizer import PAD
from ..errors import EmbedderError, check_range
from ..onnx import DESCRIPTION, FORMAT, FORMAT_VERSION, sha256
from ..version import __version__
from .base import Encoder
from .model import TOKENIZER, Model
from .order import float32_scores

DEFAULT_OPSET = 17
OPSETS = (14, 20)  # GRU/LSTM, attention and the reductions used all export within these
VECTOR_ATOL = 1e-4
ORDER_ATOL = 1e-3


class InferenceGraph(nn.Module):
    """What an exported graph computes: ids (B, T) and lengths (B,) to unit vectors (B, dim) and
    order probabilities (B,). One padding column is appended inside the graph, so that the order
    scorer's neighbour pairs exist even for a batch of one-piece texts (their score is then the
    scorer's "nothing to put out of order", as in `Model.order_score`); padding changes no
    vector, since every encoder masks it."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = F.pad(ids, (0, 1), value=PAD)
        z, logit = self.encoder.vectors_and_order(ids, lengths, order=True)
        vector = F.normalize(z.float(), dim=-1)
        if logit is None:  # an encoder without a scorer: NaN, as `Model.features` gives
            return vector, torch.full_like(vector[:, 0], float("nan"))
        return vector, torch.sigmoid(logit.float())


def _probe_batches(vocab: int, max_len: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random piece sequences of mixed lengths (1 to max_len), in a few batch shapes."""
    rng = np.random.default_rng(seed)
    out = []
    for rows in (1, 7, 64):
        seqs = [rng.integers(4, vocab, size=int(rng.integers(1, max_len + 1))) for _ in range(rows)]
        out.append(pad_ids(seqs))
    return out


def _verify(graph: InferenceGraph, path: Path, vocab: int, max_len: int) -> None:
    """The written graph, run by onnxruntime, against the torch module it came from."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise EmbedderError("embed export onnx needs the onnx extra: pip install 'embedder[onnx]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a graph that fails here is reported by the caller, not logged
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for ids, lengths in _probe_batches(vocab, max_len):
        with torch.no_grad(), float32_scores():
            v_ref, o_ref = (t.numpy() for t in graph(torch.from_numpy(ids), torch.from_numpy(lengths)))
        v, o = session.run(None, {"ids": ids, "lengths": lengths})
        dv = float(np.abs(v - v_ref).max())
        do = float(np.nanmax(np.abs(o - o_ref))) if np.isfinite(o_ref).any() else 0.0
        if not (dv <= VECTOR_ATOL and do <= ORDER_ATOL):
            raise RuntimeError(f"{path.name}: onnxruntime differs from torch by {dv:.2e} (vectors), "
                               f"{do:.2e} (order scores) on a batch of {len(ids)}")


def _export(graph: InferenceGraph, path: Path, opset: int, vocab: int, max_len: int) -> str:
    """Write `graph` to `path` with the first of torch's exporters whose graph onnxruntime runs
    as torch does (`_verify`); which one it was. The TorchScript exporter maps GRU and LSTM onto
    ONNX's own RNN operators, but traces the Transformer's attention with the example's batch
    size fixed in its reshapes; the dynamo exporter keeps those dynamic, but fixed the length of a
    GRU BiRNN it unrolled. So each encoder takes the one that verifies."""
    ids, lengths = (torch.from_numpy(a) for a in pad_ids([np.arange(4, 9), np.arange(4, 7)]))
    failures = []
    for exporter in ("torchscript", "dynamo"):
        shapes = {"dynamic_axes": {"ids": {0: "batch", 1: "length"}, "lengths": {0: "batch"},
                                   "vector": {0: "batch"}, "order": {0: "batch"}}}
        version = opset
        if exporter == "dynamo":  # one file (no external weights); it writes opset 18 at the least
            batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
            shapes = {"dynamic_shapes": ({0: batch, 1: length}, {0: batch}), "external_data": False}
            version = max(opset, 18)
        try:
            with torch.no_grad(), warnings.catch_warnings(), _no_fused_attention(), _quiet():
                warnings.simplefilter("ignore")  # the exporters' notes on shapes they keep dynamic
                torch.onnx.export(graph, (ids, lengths), str(path), input_names=["ids", "lengths"],
                                  output_names=["vector", "order"], opset_version=version,
                                  dynamo=exporter == "dynamo", **shapes)
            _verify(graph, path, vocab, max_len)
            return exporter
        except EmbedderError:
            raise
        except Exception as e:  # an exporter that cannot, or whose graph computes something else
            failures.append(f"{exporter}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    raise RuntimeError(f"{path.name}: no exporter gave a graph that onnxruntime runs as torch does ({'; '.join(failures)})")


def _opset_of(path: Path) -> int:
    """The default-domain opset the graph was written with (the dynamo exporter may convert)."""
    import onnx

    return int(next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain in ("", "ai.onnx")))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The dynamo exporter prints its progress to standard output, and logs a warning for each
    torchvision operator it cannot register; a command's output is its own."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _no_fused_attention() -> Iterator[None]:
    """The Transformer's plain layers: its fused inference kernel (`_transformer_encoder_layer_fwd`)
    has no ONNX form. The same arithmetic, so the vectors are the same."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def export_onnx(model: Model, out: str | os.PathLike, encoders: Sequence[str] | None = None,
                opset: int = DEFAULT_OPSET) -> dict:
    """Write `model`'s encoders (all, or those named) as ONNX graphs into the folder `out`, with
    the tokenizer and `onnx.json`; returns that description. The folder appears complete or not
    at all (an existing one is replaced only when the new one is done)."""
    try:
        import onnx  # noqa: F401 - torch's exporters serialise through it
        import onnxscript  # noqa: F401 - and the dynamo exporter translates through this
    except ImportError:
        raise EmbedderError("embed export onnx needs the onnx extra: pip install 'embedder[onnx]'") from None
    check_range("--opset", opset, *OPSETS)
    names = list(encoders) if encoders else list(model.encoders)
    for name in names:
        model.encoder(name)  # an unknown name: one line naming the ones there are
    out = Path(out)
    if out.exists() and not (out / DESCRIPTION).exists():
        raise EmbedderError(f"{out}: exists and is not an ONNX export folder; choose a new -o")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.tokenizer.save(tmp / TOKENIZER)
        described = {}
        for name in names:
            module = model.encoder(name)
            graph = InferenceGraph(module).to("cpu").eval()
            path = tmp / f"{name}.onnx"
            exporter = _export(graph, path, opset, len(model.tokenizer), module.cfg.max_len)
            described[name] = {
                "file": path.name, "sha256": sha256(path), "kind": module.kind, "dim": module.cfg.dim,
                "max_len": module.cfg.max_len, "opset": _opset_of(path), "exporter": exporter,
            }
        description = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "embedder_version": __version__,
            "model_fingerprint": model.fingerprint, "tokenizer": TOKENIZER,
            "tokenizer_sha256": sha256(tmp / TOKENIZER),
            "inputs": {"ids": "int64 [batch, length]: SentencePiece ids of tokenizer.model, cut at the encoder's "
                              "max_len, right-padded with pad_id",
                       "lengths": "int64 [batch]: each row's number of pieces (at least 1)"},
            "outputs": {"vector": "float32 [batch, dim]: unit length (cosine = dot product)",
                        "order": "float32 [batch]: probability that the words are out of natural order "
                                 "(NaN where the encoder has no scorer)"},
            "padding": {"pad_id": PAD, "side": "right", "min_length": 1,
                        "empty_text": "one pad piece, length 1"},
            "encoders": described,
        }
        (tmp / DESCRIPTION).write_text(json.dumps(description, indent=2))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for module in model.encoders.values():  # exported on the CPU; back where the model runs
            module.to(model.device)
    return description
