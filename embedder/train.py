"""Training a model from corpus files: tokenizer first, then each encoder.

The model folder is written only when every encoder has finished; per-epoch checkpoints (and
the tokenizer they depend on) live in `MODEL_DIR/checkpoints/` from the start, so `resume=True`
picks up an interrupted run where it stopped. A finished run removes them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import device as dev
from . import seq2seq
from .atomic import atomic_path
from .batching import buckets
from .corpus import dialogues, read_corpus, training_pairs
from .errors import EmbedderError
from .model import ENCODER_KINDS, Model
from .order import swap_batch, word_starts
from .tokenizer import Tokenizer
from .training import TrainConfig, auto_epochs, fit, pair_batch, pair_widths, split_dialogues

DEFAULT_ENCODERS = ("seq2seq", "skipgram-birnn")
Progress = Callable[[str, float], None]


@dataclass
class CorpusData:
    """The tokenized corpus: utterances as id arrays and training pairs as index pairs."""
    texts: list[str]
    roles: list[str]
    ids: list[np.ndarray]
    pairs: np.ndarray          # (n, 2) indices into texts: source, target
    pair_dialogue: np.ndarray  # (n,) dialogue of each pair, for the validation split


def read_pairs(corpus: Sequence[str | os.PathLike], vocab: str | os.PathLike | None = None
               ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    texts, roles, pairs, pair_dialogue = [], [], [], []
    for dlg in dialogues(read_corpus(corpus, vocab=vocab)):
        base = len(texts)
        first = dlg[0].id
        for u in dlg:
            texts.append(u.text)
            roles.append(u.role)
        for a, b in training_pairs(dlg):
            pairs.append((base + a.id - first, base + b.id - first))
            pair_dialogue.append(a.dialogue)
    return texts, roles, np.asarray(pairs, dtype=np.int64).reshape(-1, 2), np.asarray(pair_dialogue)


def train_seq2seq(data: CorpusData, cfg: seq2seq.Seq2SeqConfig, tcfg: TrainConfig, starts: np.ndarray,
                  checkpoint_dir: Path | None, resume: bool, progress: Progress | None):
    dev.seed_everything(tcfg.seed)  # initial weights depend on the seed alone
    model = seq2seq.build(cfg)
    val_mask = split_dialogues(data.pair_dialogue, tcfg.val_fraction, tcfg.seed)
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)

    def batches_of(idx: np.ndarray, rng=None):
        swap_rng = rng if rng is not None else np.random.default_rng(tcfg.seed)
        for b in buckets(pair_widths(data, idx), tcfg.batch_size, rng, pool=8):
            sel = data.pairs[idx[b]]
            src = [data.ids[i] for i in sel[:, 0]]
            batch = pair_batch(src, [data.ids[i] for i in sel[:, 1]])
            if cfg.order_weight > 0:
                batch.update(swap_batch(src, starts, swap_rng))
            yield batch

    epochs = auto_epochs(len(train_idx), tcfg)
    hist = fit("seq2seq", model, seq2seq.loss, lambda rng: batches_of(train_idx, rng),
               list(batches_of(val_idx)), tcfg, epochs, checkpoint_dir, resume, progress)
    return model, hist


def _options_check(checkpoint_dir: Path, options: dict, resume: bool) -> None:
    """A resumed run must use the settings of the run it continues."""
    path = checkpoint_dir / "options.json"
    if resume and path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(options) if before.get(k) != options.get(k))
        if changed:
            raise EmbedderError(f"{checkpoint_dir}: --resume with different settings ({', '.join(changed)}); "
                                "resume with the original settings or train afresh")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(options, indent=2, sort_keys=True))


def train(
    corpus: Sequence[str | os.PathLike] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    encoders: Sequence[str] = DEFAULT_ENCODERS,
    dim: int = 256,
    arch: str = "gru",
    epochs: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    vocab_size: int | None = None,
    resume: bool = False,
    vocab: str | os.PathLike | None = None,
    init_vectors: str | os.PathLike | None = None,
    rnn: str = "gru",
    pooling: str = "meanmax",
    progress: Progress | None = None,
) -> Model:
    """Train the tokenizer and the chosen encoders on `corpus`; save and return the model.

    `arch` is the seq2seq architecture (gru | transformer); `rnn` (gru | lstm) and `pooling`
    (meanmax | attention) shape the skipgram-birnn encoder.
    """
    if isinstance(corpus, (str, os.PathLike)):
        corpus = [corpus]
    unknown = [e for e in encoders if e not in ENCODER_KINDS]
    if unknown or not encoders:
        raise EmbedderError(f"unknown encoder {', '.join(unknown) or '(none)'}; "
                            f"choose from {', '.join(ENCODER_KINDS)}")
    if arch not in seq2seq.ARCHS:
        raise EmbedderError(f"--arch {arch!r}: expected one of {', '.join(seq2seq.ARCHS)}")
    from .birnn import POOLINGS, RNNS
    if rnn not in RNNS:
        raise EmbedderError(f"--rnn {rnn!r}: expected one of {', '.join(RNNS)}")
    if pooling not in POOLINGS:
        raise EmbedderError(f"--pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
    if dim < 2:
        raise EmbedderError(f"--dim {dim}: must be at least 2")
    dev.resolve(device)  # fail on a missing GPU before any work
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmbedderError(f"{out}: exists and is not a folder")
    texts, roles, pairs, pair_dialogue = read_pairs(corpus, vocab)
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    options = {"corpus": [str(Path(c).resolve()) for c in corpus], "encoders": list(encoders), "dim": dim,
               "arch": arch, "epochs": epochs, "batch_size": batch_size, "seed": seed, "vocab_size": vocab_size,
               "init_vectors": str(init_vectors) if init_vectors else None, "rnn": rnn, "pooling": pooling}
    _options_check(ckpt, options, resume)

    tok_path = ckpt / "tokenizer.model"
    if resume and tok_path.exists():
        tokenizer = Tokenizer.load(tok_path)
    else:
        tokenizer = Tokenizer.train(texts, vocab_size=vocab_size, seed=seed)
        with atomic_path(tok_path) as tmp:
            tokenizer.save(tmp)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device=device)
    s2s_cfg = seq2seq.Seq2SeqConfig(vocab_size=len(tokenizer), arch=arch, dim=dim)
    data = CorpusData(texts, roles, tokenizer.encode(texts, max_len=s2s_cfg.max_len), pairs, pair_dialogue)

    trained, history = {}, {}
    for name in encoders:
        if name == "seq2seq":
            module, hist = train_seq2seq(data, s2s_cfg, tcfg, word_starts(tokenizer.pieces()), ckpt, resume,
                                         progress)
        else:
            from . import birnn
            init, overrides = None, {"rnn": rnn, "pooling": pooling}
            if init_vectors is not None:
                from .interop import piece_init
                init = piece_init(tokenizer, init_vectors)
                overrides["word_dim"] = init.shape[1]
            module, hist = birnn.train_encoder(data, tokenizer, dim, tcfg, ckpt, resume, progress,
                                               init_vectors=init, **overrides)
        trained[name] = module
        history[name] = {"epochs": len(hist.train_loss), "best_epoch": hist.best_epoch + 1,
                         "train_loss": hist.train_loss, "val_loss": hist.val_loss,
                         "stopped_early": hist.stopped_early, "seconds": round(hist.seconds, 2)}
    model = Model(tokenizer, trained, device=device)
    extra = {"training": {"options": options, "utterances": len(texts), "pairs": int(len(pairs)),
                          "history": history}}
    model.save(out, extra=extra)
    shutil.rmtree(ckpt, ignore_errors=True)  # only an unfinished run needs them
    return model
