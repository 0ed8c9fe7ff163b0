"""A trained model: the tokenizer and its encoders, in a self-describing folder.

The folder holds a manifest (versions, configs, fingerprint), the SentencePiece model and, per
encoder, `config.json` + `model.safetensors`. Nothing in it is ever unpickled, so a model folder
from someone else is safe to load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .. import device as dev
from ..atomic import atomic_path
from ..data.tokenizer import Tokenizer
from ..errors import EmbedderError, check_range, check_text
from ..version import __version__
from .base import Encoder
from .batching import buckets, pad, to_device
from .registry import encoder_class

FORMAT = "embedder-model"
FORMAT_VERSION = 4  # bumped whenever saved weights stop fitting the code (history: benchmarks/RESULTS.md)
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.model"
# What makes a model folder open as `SentenceTransformer(folder, trust_remote_code=True)`: the module
# class (`embedder/sentence_transformers.py`) and which encoder it serves.
ST_MODULE = "embedder.sentence_transformers.EmbedderModule"
ST_CONFIG = "embedder_sentence_transformers.json"


def fingerprint(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@contextlib.contextmanager
def batch_runner(device: torch.device, batches: int, threads: int | None = None) -> Iterator[Callable]:
    """A `map` for inference batches. On the CPU it runs `threads` batches at once (default: torch's
    thread count), each on one thread with one core: a recurrent encoder's per-step matrix products
    are too small to share well between cores, and whole batches side by side made `Model.encode`
    1.2-1.3x faster on 2 cores (benchmarks/RESULTS.md). On a GPU, or for one batch, the built-in
    `map` in the caller's thread."""
    before = torch.get_num_threads()
    threads = before if threads is None else threads
    if device.type != "cpu" or threads < 2 or batches < 2:
        yield map
        return
    pool = ThreadPoolExecutor(min(threads, batches), thread_name_prefix="embedder-batch",
                              initializer=torch.set_num_threads, initargs=(1,))
    try:
        yield pool.map
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(before)  # threads started later take this count, not the workers' 1


class Model:
    """Tokenizer + encoders. `encode()` is the entry point outside code relies on."""

    def __init__(self, tokenizer: Tokenizer, encoders: dict[str, Encoder],
                 manifest: dict | None = None, device: str = "auto"):
        self.tokenizer = tokenizer
        self.encoders = encoders
        self.manifest = manifest or {}
        self.path: Path | None = None  # the folder it was loaded from or saved to
        self.device = dev.resolve(device)
        for m in self.encoders.values():
            m.to(self.device).eval()

    @property
    def fingerprint(self) -> str:
        return self.manifest.get("fingerprint", "")

    def dim(self, encoder: str) -> int:
        return self.encoder(encoder).cfg.dim

    def encoder(self, name: str) -> Encoder:
        """The torch module of one encoder; an unknown name is a clear error."""
        if name not in self.encoders:
            raise EmbedderError(f"encoder {name!r} is not in this model (it has: {', '.join(self.encoders)})")
        return self.encoders[name]

    def encode(self, texts: Sequence[str] | str, encoder: str = "seq2seq", batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine similarity = dot product)."""
        return self.features(texts, encoder, batch_size, progress, order=False)[0]

    def order_score(self, texts: Sequence[str] | str, encoder: str = "seq2seq", batch_size: int | None = None) -> np.ndarray:
        """float32 probabilities, one per text, that its words are out of natural order (two
        swapped, say). A feature of its own, beside the vector and never inside it."""
        return self.features(texts, encoder, batch_size, order=True)[1]

    def features(self, texts: Sequence[str] | str, encoder: str = "seq2seq", batch_size: int | None = None,
                 progress: Callable[[int], None] | None = None, order: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The vectors and the order scores from one pass over the texts (the scores are NaN for an
        encoder without a scorer, and when `order` is False)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.features_of_tokens(self.tokens(texts, encoder), encoder, batch_size, progress, order)

    def tokens(self, texts: Sequence[str], encoder: str = "seq2seq") -> list[np.ndarray]:
        """The piece ids an encoder reads for each text (cut at its max_len)."""
        return self.tokenizer.encode(texts, max_len=self.encoder(encoder).cfg.max_len)

    def features_of_tokens(self, ids: Sequence[np.ndarray], encoder: str = "seq2seq", batch_size: int | None = None,
                           progress: Callable[[int], None] | None = None, order: bool = True,
                           threads: int | None = None, max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`features` for texts already cut into pieces by `tokens` (the service counts them too).
        `threads`: CPU threads running batches side by side (None: torch's count; 1: one batch at a
        time in this thread, on torch's own threads). `batch_size` and `max_tokens`: texts and
        padded pieces per batch at most (0 pieces: no cap, only rows); None takes the device's
        (`device.Numerics`), so the GPU runs the large batches it needs and the CPU ones its
        caches hold."""
        choice = dev.numerics(self.device)
        batch_size = batch_size or choice.encode_batch
        max_tokens = choice.encode_tokens if max_tokens is None else max_tokens
        module = self.encoder(encoder)
        vectors = np.zeros((len(ids), module.cfg.dim), dtype=np.float32)
        scores = np.full(len(ids), np.nan, dtype=np.float32)

        def run(idx: np.ndarray) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
            src, lens = pad([ids[i] for i in idx])
            with torch.inference_mode(), dev.autocast(self.device):  # both are per thread
                z, logit = module.vectors_and_order(to_device(src, self.device), lens, order=order)
                return idx, F.normalize(z.float(), dim=-1), logit

        held: list[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]] = []  # results still on the device

        def collect() -> None:  # one wait for the device and one copy for all the held batches
            if not held:
                return
            idx = np.concatenate([h[0] for h in held])
            vectors[idx] = torch.cat([h[1] for h in held]).cpu().numpy()
            if held[0][2] is not None:
                scores[idx] = torch.sigmoid(torch.cat([h[2] for h in held]).float()).cpu().numpy()
            held.clear()

        batches = buckets([len(x) for x in ids], batch_size, max_tokens=max_tokens)
        with batch_runner(self.device, len(batches), threads) as run_each:
            for idx, z, logit in run_each(run, batches):
                if not choice.collect_rows:  # the CPU: no torch op here, where it would wake torch's
                    vectors[idx] = z.cpu().numpy()  # thread pool beside the batch threads (6-9% slower)
                    if logit is not None:
                        scores[idx] = torch.sigmoid(logit.float()).cpu().numpy()
                else:
                    held.append((idx, z, logit))
                    if sum(len(h[0]) for h in held) >= choice.collect_rows:
                        collect()
                if progress:
                    progress(len(idx))
            collect()
        return vectors, scores

    def generate(self, text: str, beam: int = 1, encoder: str = "seq2seq") -> str:
        """The decoder's reply to `text` (greedy for beam=1)."""
        return self.replies(text, beam, encoder)[0][0]

    def replies(self, text: str, beam: int = 1, encoder: str = "seq2seq") -> list[tuple[str, float]]:
        """Every finished beam as (reply, log-probability), best first."""
        check_range("--beam", beam, 1)
        check_text(text, "the text to answer")
        module = self.encoder(encoder)
        ids = self.tokenizer.encode([text], max_len=module.cfg.max_len)[0]
        src, _ = pad([ids])
        found = module.generate(src.to(self.device), beam=beam)
        return [(self.tokenizer.decode(seq), float(score)) for seq, score in found]

    # -- the folder ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, extra: dict | None = None) -> None:
        """Write into `path` (created if needed); the manifest goes last, so a folder without
        one is visibly incomplete."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / TOKENIZER) as tmp:
            self.tokenizer.save(tmp)
        files = [path / TOKENIZER]
        entries = {}
        for name, module in self.encoders.items():
            sub = path / name
            sub.mkdir(exist_ok=True)
            with atomic_path(sub / "config.json") as tmp:
                tmp.write_text(json.dumps({"kind": module.kind, **module.cfg.to_dict()}, indent=2))
            with atomic_path(sub / "model.safetensors") as tmp:
                state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
                save_file(state, str(tmp), metadata={"embedder": __version__})
            files += [sub / "config.json", sub / "model.safetensors"]
            entries[name] = {"kind": module.kind, "path": name, "dim": module.cfg.dim}
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "embedder_version": __version__,
            "torch_version": torch.__version__, "python": platform.python_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tokenizer": TOKENIZER, "vocab_size": len(self.tokenizer), "encoders": entries,
            "fingerprint": fingerprint(files), **(extra or {}),
        }
        write_sentence_transformers(path, next(iter(self.encoders)))
        with atomic_path(path / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2))
        self.manifest = manifest
        self.path = path


def write_sentence_transformers(folder: Path, encoder: str) -> None:
    """The files that make a model folder open in sentence-transformers, serving `encoder`."""
    files = {
        "modules.json": [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE}],
        ST_CONFIG: {"encoder": encoder},
        "config_sentence_transformers.json": {"similarity_fn_name": "cosine", "prompts": {},
                                              "default_prompt_name": None},
    }
    for name, content in files.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_text(json.dumps(content, indent=2))


def read_manifest(path: Path) -> dict:
    if not path.exists():
        raise EmbedderError(f"{path}: no such model folder")
    if not path.is_dir():
        raise EmbedderError(f"{path}: is a file, not a model folder")
    mf = path / MANIFEST
    if not mf.exists():
        raise EmbedderError(f"{path}: not an embedder model folder (no {MANIFEST}; "
                            "was its training interrupted?)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmbedderError(f"{mf}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EmbedderError(f"{mf}: not an embedder model manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise EmbedderError(f"{path}: model folder format {manifest.get('format_version')!r} "
                            f"(embedder {manifest.get('embedder_version', '?')}); this embedder "
                            f"{__version__} reads format {FORMAT_VERSION}: retrain the model")
    return manifest


def _load_encoder(sub: Path, kind_name: str) -> Encoder:
    try:
        cfg_raw = json.loads((sub / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmbedderError(f"{sub / 'config.json'}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmbedderError(f"{sub / 'config.json'}: corrupt ({e})") from None
    kind = encoder_class(cfg_raw.pop("kind", kind_name), where=str(sub))
    try:
        cfg = kind.config_class(**cfg_raw)
    except TypeError as e:
        raise EmbedderError(f"{sub / 'config.json'}: does not match this embedder version ({e})") from None
    module = kind.build(cfg)
    weights = sub / "model.safetensors"
    try:
        state = load_file(str(weights))
        module.load_state_dict(state)
    except FileNotFoundError:
        raise EmbedderError(f"{weights}: missing") from None
    except Exception as e:  # safetensors raises its own error type for a damaged file
        raise EmbedderError(f"{weights}: corrupt or incompatible weights ({str(e).splitlines()[0]})") from None
    return module


def load(path: str | os.PathLike, device: str = "auto", verify: bool = True) -> Model:
    """Load a model folder written by `Model.save` (or `embed train`)."""
    path = Path(path)
    manifest = read_manifest(path)
    tokenizer = Tokenizer.load(path / manifest.get("tokenizer", TOKENIZER))
    encoders = {}
    files = [path / manifest.get("tokenizer", TOKENIZER)]
    for name, entry in manifest.get("encoders", {}).items():
        sub = path / entry.get("path", name)
        module = _load_encoder(sub, entry.get("kind", name))
        encoders[name] = module
        files += [sub / "config.json", sub / "model.safetensors"]
    if not encoders:
        raise EmbedderError(f"{path / MANIFEST}: lists no encoders")
    if verify and manifest.get("fingerprint") and fingerprint(files) != manifest["fingerprint"]:
        raise EmbedderError(f"{path}: files do not match the manifest's fingerprint "
                            "(modified or partly copied model folder)")
    model = Model(tokenizer, encoders, manifest, device=device)
    model.path = path
    return model
