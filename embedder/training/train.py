"""Training a model: the tokenizer first, then each encoder through the one loop.

The model folder is written only when every encoder has finished; per-epoch checkpoints (and
the tokenizer they depend on) live in `MODEL_DIR/checkpoints/` from the start, so `resume=True`
picks up an interrupted run where it stopped. A finished run removes them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from .. import device as dev
from ..atomic import atomic_path
from ..data.corpus import Utterance, read_corpus
from ..data.pairs import PairCorpus
from ..data.tokenizer import MIN_VOCAB, Tokenizer
from ..data.word2vec import piece_init
from ..encoders.model import Model
from ..encoders.registry import DEFAULT_ENCODERS, ENCODERS
from ..errors import EmbedderError, check_range
from ..progress import Progress
from .loop import TrainConfig, fit


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
    """Train the tokenizer and the chosen encoders on the corpus files; save and return the model.

    `arch` is the seq2seq architecture (gru | transformer); `rnn` (gru | lstm) and `pooling`
    (meanmax | attention) shape the skipgram-birnn encoder.
    """
    if isinstance(corpus, (str, os.PathLike)):
        corpus = [corpus]
    return train_on(read_corpus(corpus, vocab=vocab), out, corpus_files=corpus, encoders=encoders, dim=dim,
                    arch=arch, epochs=epochs, batch_size=batch_size, seed=seed, device=device, vocab_size=vocab_size,
                    resume=resume, init_vectors=init_vectors, rnn=rnn, pooling=pooling, progress=progress)


def train_on(
    utterances: Iterable[Utterance],
    out: str | os.PathLike,
    *,
    corpus_files: Sequence[str | os.PathLike] | None = None,
    encoders: Sequence[str] = DEFAULT_ENCODERS,
    dim: int = 256,
    arch: str = "gru",
    epochs: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    vocab_size: int | None = None,
    resume: bool = False,
    init_vectors: str | os.PathLike | None = None,
    rnn: str = "gru",
    pooling: str = "meanmax",
    progress: Progress | None = None,
) -> Model:
    """`train` on utterances already in memory (`corpus_files` names where they came from, for
    the manifest and for `resume`'s check that the same data is used)."""
    _check(encoders=encoders, dim=dim, arch=arch, epochs=epochs, batch_size=batch_size, seed=seed, device=device,
           vocab_size=vocab_size, rnn=rnn, pooling=pooling, out=out)
    out = Path(out)
    data = PairCorpus.from_utterances(utterances)
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    options = {"corpus": [str(Path(c).resolve()) for c in corpus_files or []], "encoders": list(encoders),
               "dim": dim, "arch": arch, "epochs": epochs, "batch_size": batch_size, "seed": seed,
               "vocab_size": vocab_size, "init_vectors": str(init_vectors) if init_vectors else None,
               "rnn": rnn, "pooling": pooling}
    _options_check(ckpt, options, resume)

    tok_path = ckpt / "tokenizer.model"
    if resume and tok_path.exists():
        tokenizer = Tokenizer.load(tok_path)
    else:
        tokenizer = Tokenizer.train(data.texts, vocab_size=vocab_size, seed=seed)
        with atomic_path(tok_path) as tmp:
            tokenizer.save(tmp)
    encoder_options = {"dim": dim, "arch": arch, "rnn": rnn, "pooling": pooling,
                       "init_vectors": piece_init(tokenizer, init_vectors) if init_vectors is not None else None}
    configs = {name: ENCODERS[name].configure(len(tokenizer), encoder_options) for name in encoders}
    data = data.tokenized(tokenizer, max_len=max(cfg.max_len for cfg in configs.values()))
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device=device)

    trained, history = {}, {}
    for name, cfg in configs.items():
        dev.seed_everything(seed)  # initial weights depend on the seed alone
        module = ENCODERS[name].build(cfg)
        module.prepare(data, seed=seed, device=dev.resolve(device), checkpoint_dir=ckpt, resume=resume,
                       progress=progress, options=encoder_options)
        history[name] = fit(module, data, tcfg, ckpt, resume, progress).summary()
        trained[name] = module
    model = Model(tokenizer, trained, device=device)
    extra = {"training": {"options": options, "utterances": len(data.texts), "pairs": int(len(data.pairs)),
                          "history": history}}
    model.save(out, extra=extra)
    shutil.rmtree(ckpt, ignore_errors=True)  # only an unfinished run needs them
    return model


def _check(*, encoders: Sequence[str], dim: int, arch: str, epochs: int, batch_size: int, seed: int, device: str,
           vocab_size: int | None, rnn: str, pooling: str, out: str | os.PathLike) -> None:
    """Every option checked before any work starts."""
    unknown = [e for e in encoders if e not in ENCODERS]
    if unknown or not encoders:
        raise EmbedderError(f"unknown encoder {', '.join(unknown) or '(none)'}; "
                            f"choose from {', '.join(ENCODERS)}")
    for name in encoders:
        ENCODERS[name].check_options({"arch": arch, "rnn": rnn, "pooling": pooling})
    check_range("--dim", dim, 2)
    check_range("--epochs", epochs, 0)
    check_range("--batch-size", batch_size, 1)
    check_range("--seed", seed, 0)
    if vocab_size is not None:
        check_range("--vocab-size", vocab_size, MIN_VOCAB)
    dev.resolve(device)  # fail on a missing GPU before any work
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmbedderError(f"{out}: exists and is not a folder")

