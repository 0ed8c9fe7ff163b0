"""Training a model: the tokenizer first, then each encoder through the one loop.

The model folder is written only when every encoder has finished; per-epoch checkpoints (and
the tokenizer they depend on) live in `MODEL_DIR/checkpoints/` from the start, so `resume=True`
picks up an interrupted run where it stopped. A finished run removes them.

With `nproc` > 1 (`--nproc`), everything up to the training loop (tokenizer, teacher vectors,
skip-gram word vectors) still runs once, in this process; the encoders then train in `nproc`
new processes with DistributedDataParallel (`distributed.py`), all starting from the weights
prepared here, and rank 0 writes the model folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from .. import device as dev
from ..atomic import atomic_path
from ..data.corpus import Utterance, read_corpus
from ..data.pairs import PairCorpus
from ..data.tokenizer import MIN_VOCAB, Tokenizer
from ..data.word2vec import piece_init
from ..encoders.base import Encoder
from ..encoders.model import Model, load
from ..encoders.registry import DEFAULT_ENCODERS, ENCODERS
from ..errors import EmbedderError, check_range
from ..progress import Progress
from . import distributed
from .loop import TrainConfig, fit
from .negatives import mine as mine_negatives
from .teacher import check as check_teacher
from .teacher import choose as choose_teacher
from .teacher import load_teacher, reads_wordpiece, teacher_vectors, vocabulary
from .teacher_words import aligned, word_states


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


@dataclass
class TrainOptions:
    """Everything that shapes a trained model; recorded in its manifest, and compared on resume."""
    encoders: Sequence[str] = DEFAULT_ENCODERS
    dim: int = 256
    arch: str = "gru"                 # seq2seq: gru | transformer
    rnn: str = "gru"                  # skipgram-birnn: gru | lstm
    pooling: str = "auto"             # skipgram-birnn: auto | mean | meanmax | attention
    epochs: int = 0                   # 0: chosen from the corpus size
    batch_size: int = 64
    seed: int = 0
    vocab_size: int | None = None     # None: chosen from the corpus size
    init_vectors: str | None = None   # a word2vec/BlazingText/fastText file for skip-gram to start from
    teacher: str | None = None        # a sentence-transformers model folder, all-MiniLM-L6-v2, auto or none
    device: str = "auto"              # not recorded: it does not change what is learnt
    nproc: int = 1                    # training processes (DDP); recorded when above 1: it changes the batches

    def __post_init__(self) -> None:
        self.encoders = list(self.encoders)  # as JSON gives it back, so a resumed run compares equal
        self.teacher = choose_teacher(self.teacher)  # auto and none resolved once, before anything is recorded

    def check(self) -> None:
        """Every option checked before any work starts, each failure one line naming the option."""
        unknown = [e for e in self.encoders if e not in ENCODERS]
        if unknown or not self.encoders:
            raise EmbedderError(f"unknown encoder {', '.join(unknown) or '(none)'}; "
                                f"choose from {', '.join(ENCODERS)}")
        for name in self.encoders:
            ENCODERS[name].check_options({"arch": self.arch, "rnn": self.rnn, "pooling": self.pooling})
        check_range("--dim", self.dim, 2)
        check_range("--epochs", self.epochs, 0)
        check_range("--batch-size", self.batch_size, 1)
        check_range("--seed", self.seed, 0)
        if self.vocab_size is not None:
            check_range("--vocab-size", self.vocab_size, MIN_VOCAB)
        if self.teacher is not None:
            if self.init_vectors is not None:
                raise EmbedderError("--teacher and --init-vectors both give the starting piece vectors; choose one")
            check_teacher(self.teacher)
        distributed.check_nproc(self.nproc, dev.resolve(self.device))  # also fails on a missing GPU before any work


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
    pooling: str = "auto",
    teacher: str | os.PathLike | None = None,
    nproc: int = 1,
    progress: Progress | None = None,
) -> Model:
    """Train the tokenizer and the chosen encoders on the corpus files; save and return the model.

    `arch` is the seq2seq architecture (gru | transformer); `rnn` (gru | lstm) and `pooling`
    (auto: mean without a teacher, mean and max with one | mean | meanmax | attention) shape the
    skipgram-birnn encoder. `teacher`, a sentence-transformers model folder or "all-MiniLM-L6-v2"
    (the `teacher` extra), is learnt from by both encoders;
    the trained model encodes without it. "auto" (the command line's default) is
    all-MiniLM-L6-v2 where the extra is installed and otherwise no teacher, with a
    `NoTeacherWarning`; None or "none" is no teacher. `nproc` > 1 trains the encoders in that many processes
    of this machine with PyTorch DDP (gloo on the CPU, one GPU each with NCCL); see
    `training/distributed.py` for what that changes. A script that uses it needs the
    `if __name__ == "__main__":` guard, since the processes re-import the script.
    """
    if isinstance(corpus, (str, os.PathLike)):
        corpus = [corpus]
    options = TrainOptions(encoders=encoders, dim=dim, arch=arch, rnn=rnn, pooling=pooling, epochs=epochs,
                           batch_size=batch_size, seed=seed, vocab_size=vocab_size,
                           init_vectors=str(init_vectors) if init_vectors else None,
                           teacher=str(teacher) if teacher else None, device=device, nproc=nproc)
    return train_on(read_corpus(corpus, vocab=vocab), out, options, corpus_files=corpus, resume=resume,
                    progress=progress)


def train_on(
    utterances: Iterable[Utterance],
    out: str | os.PathLike,
    options: TrainOptions,
    *,
    corpus_files: Sequence[str | os.PathLike] = (),
    resume: bool = False,
    progress: Progress | None = None,
) -> Model:
    """`train` on utterances already in memory or streamed by the caller (`corpus_files` names
    where they came from, for the manifest and for `resume`'s check that the data is the same)."""
    options.check()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EmbedderError(f"{out}: exists and is not a folder")
    data = PairCorpus.from_utterances(utterances)
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    recorded = {"corpus": [str(Path(c).resolve()) for c in corpus_files],
                **{k: v for k, v in asdict(options).items() if k not in ("device", "nproc")}}
    if options.nproc > 1:  # it changes the batches; left out at 1, so one-process runs record what they always did
        recorded["nproc"] = options.nproc
    _options_check(ckpt, recorded, resume)

    teacher = load_teacher(options.teacher, options.device) if options.teacher else None
    # with a WordPiece teacher, its vocabulary (`teacher.vocabulary`); otherwise SentencePiece's own
    vocabulary_from = "teacher" if teacher and reads_wordpiece(teacher) else "corpus"
    tok_path = ckpt / "tokenizer.model"
    if resume and tok_path.exists():
        tokenizer = Tokenizer.load(tok_path)
    else:
        if vocabulary_from == "teacher":
            tokenizer = Tokenizer.from_pieces(data.texts, vocabulary(teacher, data.texts, options.vocab_size),
                                              seed=options.seed)
        else:
            tokenizer = Tokenizer.train(data.texts, vocab_size=options.vocab_size, seed=options.seed)
        with atomic_path(tok_path) as tmp:
            tokenizer.save(tmp)
    init = piece_init(tokenizer, options.init_vectors) if options.init_vectors else None
    encoder_options = {"dim": options.dim, "arch": options.arch, "rnn": options.rnn, "pooling": options.pooling,
                       "init_vectors": init}
    teacher_info = None
    if teacher:
        tv = teacher_vectors(teacher, data.texts, tokenizer, ckpt, resume, progress, seed=options.seed)
        data = dataclasses.replace(data, teacher=tv.texts, extra_teacher=tv.extra)
        encoder_options.update(teacher_dim=teacher.dim, teacher_pieces=tv.pieces)
        teacher_info = {**teacher.describe(), "cost": tv.cost}
    configs = {name: ENCODERS[name].configure(len(tokenizer), encoder_options) for name in options.encoders}
    max_len = max(cfg.max_len for cfg in configs.values())
    data = data.tokenized(tokenizer, max_len=max_len)
    if options.teacher:  # the distillation-only texts, cut as the utterances are
        data = dataclasses.replace(data, extra_ids=tokenizer.encode(tv.extra_texts, max_len=max_len))
        if any(cfg.hard_weight > 0 for cfg in configs.values()):
            data = dataclasses.replace(data, hard=mine_negatives(data, tv.texts, seed=options.seed))
        if any(cfg.word_weight > 0 for cfg in configs.values()):
            words, spans = word_states(teacher, data.texts, options.seed, progress)
            data = dataclasses.replace(data, words=words,
                                       word_spans=aligned(spans, data.ids, data.word_starts, max_len))
    del teacher  # training never calls it again: free its memory
    tcfg = TrainConfig(epochs=options.epochs, batch_size=options.batch_size, seed=options.seed, device=options.device)

    trained, history = {}, {}
    for name, cfg in configs.items():
        dev.seed_everything(options.seed)  # initial weights depend on the seed alone
        module = ENCODERS[name].build(cfg)
        module.prepare(data, seed=options.seed, device=dev.resolve(options.device), checkpoint_dir=ckpt,
                       resume=resume, progress=progress, options=encoder_options)
        if options.nproc == 1:
            history.update(_fit_encoder(name, module, data, tcfg, ckpt, resume, progress,
                                        follow_up=options.epochs == 0))
        trained[name] = module
    training = {"options": recorded, "utterances": len(data.texts), "pairs": int(len(data.pairs)),
                "history": history, "teacher": teacher_info,
                "tokenizer": {"pieces": len(tokenizer), "from": vocabulary_from}}
    if options.nproc == 1:
        model = Model(tokenizer, trained, device=options.device)
        model.save(out, extra={"training": training})
    else:
        prepared = ckpt / "prepared.pt"  # the ranks' common start: skip-gram ran once, here
        with atomic_path(prepared) as tmp:
            torch.save({name: module.state_dict() for name, module in trained.items()}, tmp)
        job = _RankJob(data=data, configs=configs, tcfg=tcfg, checkpoint_dir=ckpt, resume=resume,
                       follow_up=options.epochs == 0, out=out, training=training)
        distributed.launch(_train_rank, options.nproc, (job,), dev.resolve(options.device), progress)
        model = load(out, device=options.device)
    shutil.rmtree(ckpt, ignore_errors=True)  # only an unfinished run needs them
    return model


def _fit_encoder(name: str, module: Encoder, data: PairCorpus, tcfg: TrainConfig, ckpt: Path, resume: bool,
                 progress: Progress | None, follow_up: bool) -> dict[str, dict]:
    """One encoder through the loop, then its follow-up stage where the encoder asks for one and
    the epoch count was chosen automatically (`--epochs N` means just that); their histories."""
    hist = fit(module, data, tcfg, ckpt, resume, progress)
    history = {name: hist.summary()}
    stage = module.follow_up(hist.updates) if follow_up else None
    if stage is not None:
        history[stage.name] = fit(module, data, tcfg, ckpt, resume, progress, stage=stage).summary()
    return history


@dataclass
class _RankJob:
    """What every training process needs, sent to it once when it starts."""
    data: PairCorpus                  # tokenized
    configs: dict[str, Any]           # encoder name -> its config
    tcfg: TrainConfig
    checkpoint_dir: Path              # holds the tokenizer, the prepared weights and the checkpoints
    resume: bool
    follow_up: bool
    out: Path
    training: dict                    # the manifest's "training" entry, less the histories


def _train_rank(rank: int, world: int, job: _RankJob, progress: Progress | None = None) -> dict:
    """One of `--nproc` processes: train every encoder from the prepared weights on this rank's
    share of the batches; rank 0 then writes the model folder, after every rank has shown that it
    holds the same weights (their digests are recorded in the manifest)."""
    device = distributed.rank_device(dev.resolve(job.tcfg.device), rank)
    tcfg = dataclasses.replace(job.tcfg, device=str(device))
    prepared = torch.load(job.checkpoint_dir / "prepared.pt", map_location="cpu", weights_only=True)
    trained, history = {}, {}
    for name, cfg in job.configs.items():
        module = ENCODERS[name].build(cfg)
        module.load_state_dict(prepared[name])
        history.update(_fit_encoder(name, module, job.data, tcfg, job.checkpoint_dir, job.resume, progress,
                                    job.follow_up))
        trained[name] = module
    digests = distributed.gather(distributed.state_digest(trained))
    if rank == 0:
        if len(set(digests)) != 1:
            raise RuntimeError(f"the {world} training processes ended with different weights")
        tokenizer = Tokenizer.load(job.checkpoint_dir / "tokenizer.model")
        training = {**job.training, "history": history,
                    "distributed": {"processes": world, "backend": distributed.backend(device), "weights": digests}}
        Model(tokenizer, trained, device=str(device)).save(job.out, extra={"training": training})
    return {"weights": digests[rank]}
