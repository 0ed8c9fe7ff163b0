"""One training loop for every encoder: epochs, validation, early stopping, checkpoints, resume.

Kept deliberately plain (in the spirit of nanoGPT): the encoder supplies its batches and its loss
(`encoders.base.Encoder`); this file owns everything about the passage of time. Each epoch
reseeds from (seed, epoch), so a resumed run sees exactly the batches and dropout masks an
uninterrupted run would have.

With several processes (`distributed.py`, `--nproc`) the same loop runs in each, nanoGPT-style:
`ddp` says whether it does, `master` (rank 0) alone writes checkpoints and reports progress.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from .. import device as dev
from ..atomic import atomic_path
from ..data.corpus import hold_out_dialogues
from ..data.pairs import PairCorpus
from ..encoders.base import Batch, Encoder, Stage
from ..encoders.batching import to_device
from ..errors import EmbedderError
from ..progress import Progress, report
from .distributed import mean_over_ranks, rank_and_world, shard, sync_buffers, wrap

MIN_VAL_DIALOGUES = 20
# A checkpoint is written after an epoch once the time since the last one is this many times what
# the last one took to write, and always after the first and the last epoch: writing costs at most
# about 1/20 of the training time. Written after every epoch, they were a fifth of the README's
# first run (114 epochs of a few updates each, over the teacher's 30k-row vocabulary and its
# optimiser moments: benchmarks/RESULTS.md, "Checkpoints").
CHECKPOINT_RATIO = 20


@dataclass
class TrainConfig:
    epochs: int = 0              # 0 = chosen from the corpus size (see `auto_epochs`)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 3            # epochs without validation improvement before stopping
    val_fraction: float = 0.05   # of dialogues, held out for validation
    seed: int = 0
    device: str = "auto"
    clip: float = 1.0
    min_updates: int = 1000      # the auto epoch count aims for about this many updates


@dataclass
class History:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    stopped_early: bool = False
    updates: int = 0

    def summary(self) -> dict:
        return {"epochs": len(self.train_loss), "best_epoch": self.best_epoch + 1, "train_loss": self.train_loss,
                "val_loss": self.val_loss, "stopped_early": self.stopped_early, "updates": self.updates,
                "seconds": round(self.seconds, 2)}


class Diverged(EmbedderError):
    """Training met a loss or a gradient that is not a number, at a named step. Raised before the
    step is taken, so the checkpoint already written (of a finished epoch) holds finite weights and
    stays for `--resume`."""

    @dataclass
    class Where:
        encoder: str           # the encoder (or stage) in training
        epoch: int             # 1-based
        step: int              # 1-based, within the epoch
        steps: int             # in the epoch
        checkpoint: Path | None  # the last checkpoint written, where one was
        saved_epoch: int = 0     # 1-based: the epoch that checkpoint holds

    def __init__(self, where: "Diverged.Where", loss: torch.Tensor, parts: dict[str, torch.Tensor],
                 gradient: torch.Tensor | None = None):
        self.where = where
        self.parts = {k: float(v) for k, v in parts.items()}
        bad = [k for k, v in self.parts.items() if not math.isfinite(v)]
        terms = ", ".join(f"{k} {v:.4g}" for k, v in self.parts.items())
        if gradient is not None:
            self.part = "gradient"
            what = f"the gradient norm is {float(gradient)} (the loss, {float(loss):.4g}, was finite: {terms})"
        else:
            self.part = bad[0] if bad else "loss"
            others = ", ".join(f"{k} {v:.4g}" for k, v in self.parts.items() if k not in bad)
            names = ", ".join(bad[:-1]) + " and " + bad[-1] if len(bad) > 1 else "".join(bad)
            what = (f"the {names} term{'s are' if len(bad) > 1 else ' is'} "
                    f"{'/'.join(sorted({str(self.parts[k]) for k in bad}))}" + (f" ({others})" if others else "")
                    if bad else f"the loss is {float(loss)}")
        kept = (f"; the checkpoint of epoch {where.saved_epoch} is kept in {where.checkpoint.parent} "
                "(--resume continues from it)" if where.checkpoint else "; no epoch had finished, so nothing is kept")
        super().__init__(f"{where.encoder}: training diverged at epoch {where.epoch}, step {where.step} of "
                         f"{where.steps}: {what}{kept}")


    @classmethod
    def at(cls, name: str, epoch: int, step: int, steps: int, ckpt: Path | None, saved_epoch: int, model: Encoder,
           loss: torch.Tensor, gradient: torch.Tensor | None = None) -> "Diverged":
        """The error for 0-based `epoch` and `step`, with the model's loss terms of that step;
        `saved_epoch` is the 0-based epoch `ckpt` holds (-1: none written)."""
        where = cls.Where(name, epoch + 1, step + 1, steps, ckpt if saved_epoch >= 0 else None, saved_epoch + 1)
        return cls(where, loss, getattr(model, "loss_parts", {}), gradient)


def auto_epochs(n_examples: int, cfg: TrainConfig, cap: int = 30) -> int:
    """About `min_updates` optimiser steps: a small corpus is passed over many times, one of ~30k
    lines twice, a larger one once. Past that size training time grows only with the corpus."""
    if cfg.epochs:
        return cfg.epochs
    steps = max(1, math.ceil(n_examples / cfg.batch_size))
    return int(min(cap, max(1, round(cfg.min_updates / steps))))


def validation_mask(dialogue_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which examples are held out for validation, whole dialogues at a time. Fewer than
    `MIN_VAL_DIALOGUES` held out would make a validation loss too noisy to stop on; such small
    corpora train for the full epoch count instead."""
    n_val = int(len(np.unique(dialogue_ids)) * fraction)
    if n_val < MIN_VAL_DIALOGUES:
        return np.zeros(len(dialogue_ids), dtype=bool)
    return hold_out_dialogues(dialogue_ids, n_val, seed)


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: (v if k.endswith("_len") else to_device(v, device)) for k, v in batch.items()}


def _evaluate(model: Encoder, loss_fn: Callable[[Batch], torch.Tensor], batches: Iterable[Batch],
              device: torch.device) -> float:
    """The mean loss over the batches (over every rank's share of them, when there are several)."""
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), dev.autocast(device):
        for b in batches:
            total += float(loss_fn(_to(b, device))) * len(b["src"])
            n += len(b["src"])
    return mean_over_ranks(total, n, device)


def fit(
    model: Encoder,
    corpus: PairCorpus,
    cfg: TrainConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    stage: Stage | None = None,
) -> History:
    """Train `model` in place on the corpus's pairs; on return it holds the weights of its best
    validation epoch. With a `stage`, only the stage's parameters train, on its loss, for about
    its number of updates.

    With no validation batches (a corpus too small to hold any out) it trains every epoch and
    keeps the one with the lowest training loss: stopping on a noisy training loss would only
    stop early by chance.

    Run in each of several processes (`distributed.py`), every rank trains on its share of each
    epoch's batches with gradients averaged by DDP, and sees the same losses, so all stop together
    and end with the same weights; checkpoints and progress are rank 0's.
    """
    name = stage.name if stage else model.kind
    loss_fn = stage.loss if stage else model.loss
    device = dev.resolve(cfg.device)
    rank, world = rank_and_world()
    ddp, master = world > 1, rank == 0
    if not master:
        progress = None
    model.to(device)
    val_mask = validation_mask(corpus.pair_dialogue, cfg.val_fraction, cfg.seed)
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    val_batches = list(model.batches(corpus, val_idx, cfg.batch_size, np.random.default_rng(cfg.seed), shuffle=False))
    has_val = bool(val_batches)  # decided on the whole list: a rank's share may be empty
    if ddp:
        val_batches = val_batches[rank::world]  # no padding: nothing waits on validation, and the mean stays exact
    if stage:
        steps = math.ceil(max(1, math.ceil(len(train_idx) / cfg.batch_size)) / world)  # optimiser steps per epoch
        epochs = max(1, math.ceil(stage.updates / steps))
        trained = {id(p) for p in stage.parameters}
        for p in model.parameters():
            p.requires_grad_(id(p) in trained)
        min_epochs = cfg.patience
    else:
        epochs = auto_epochs(len(train_idx), cfg)
        min_epochs = model.warmup_epochs(epochs) + cfg.patience

    params = list(stage.parameters if stage else model.parameters())
    model.zero_grad(set_to_none=True)  # a stage must not clip against the main loop's last gradients
    # fused: one kernel per step over all parameters, not a dozen passes; on 2 CPU cores a step
    # over the 30k-row vocabulary of teacher mode went from 40 to 8 ms (benchmarks/RESULTS.md)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    # the learning rate falls to a tenth over the main training; a stage is short and keeps it
    decay = 0.0 if stage else 0.9
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 - decay * e / max(1, epochs))
    hist = History()
    best_state = None
    best_val = math.inf
    bad_epochs = 0
    start_epoch = 0
    saved_epoch, last_save, save_seconds = -1, time.perf_counter(), 0.0
    ckpt = checkpoint_dir / f"{name.replace(' ', '-')}.last.pt" if checkpoint_dir else None
    if resume and ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, best_val, bad_epochs = state["epoch"] + 1, state["best_val"], state["bad_epochs"]
        hist.train_loss, hist.val_loss, hist.best_epoch = state["train_loss"], state["val_loss"], state["best_epoch"]
        hist.updates = state["updates"]
        best_state = state["best_model"]
        saved_epoch = state["epoch"]
    objective = loss_fn
    if ddp:
        objective = wrap(model, loss_fn, device)  # over the parameters that train now (a stage's alone)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        if has_val and bad_epochs >= cfg.patience and epoch >= min_epochs:
            hist.stopped_early = True
            break
        dev.seed_everything(cfg.seed * 100_003 + epoch + 1_000_003 * rank)  # each rank its own dropout masks
        if stage is None:
            model.on_epoch_start(epoch, epochs)
        model.train()
        batches = list(model.batches(corpus, train_idx, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]),
                                     shuffle=True))
        if ddp:
            batches = shard(batches, rank, world)  # every rank drew the same list: the same seed everywhere
        total, n = 0.0, 0
        for i, b in enumerate(batches):
            b = _to(b, device)
            with dev.autocast(device):
                loss = objective(b)
            if not torch.isfinite(loss):
                raise Diverged.at(name, epoch, i, len(batches), ckpt, saved_epoch, model, loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip else math.inf)
            if not torch.isfinite(norm):  # the step would write NaN into the weights
                raise Diverged.at(name, epoch, i, len(batches), ckpt, saved_epoch, model, loss, gradient=norm)
            opt.step()
            total += float(loss.detach()) * len(b["src"])
            n += len(b["src"])
            hist.updates += 1
            report(progress, name, (epoch + (i + 1) / len(batches)) / epochs)
        sched.step()
        sync_buffers(model)
        hist.train_loss.append(mean_over_ranks(total, n, device))
        val = _evaluate(model, loss_fn, val_batches, device) if has_val else hist.train_loss[-1]
        hist.val_loss.append(val)
        if val < best_val - 1e-4:
            best_val, bad_epochs, hist.best_epoch = val, 0, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            bad_epochs += 1
        due = (epoch in (start_epoch, epochs - 1)
               or time.perf_counter() - last_save >= CHECKPOINT_RATIO * save_seconds)
        if ckpt and master and due:
            began = time.perf_counter()
            with atomic_path(ckpt) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch, "best_val": best_val,
                            "bad_epochs": bad_epochs, "train_loss": hist.train_loss,
                            "val_loss": hist.val_loss, "best_epoch": hist.best_epoch, "updates": hist.updates,
                            "best_model": best_state}, tmp)
            last_save = time.perf_counter()
            save_seconds, saved_epoch = last_save - began, epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    model.requires_grad_(True)  # a warm-up or a stage froze part of it
    model.eval()
    hist.seconds = time.perf_counter() - t0
    report(progress, name, 1.0)
    return hist
