"""One training loop for both encoders: epochs, validation, early stopping, checkpoints, resume.

Kept deliberately plain (in the spirit of nanoGPT): the encoder supplies batches and a loss;
this file owns everything about the passage of time. Each epoch reseeds from (seed, epoch), so
a resumed run sees exactly the batches and dropout masks an uninterrupted run would have.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from . import device as dev
from .atomic import atomic_path
from .batching import pad, to_device
from .errors import EmbedderError

Batch = dict[str, torch.Tensor]
MIN_VAL_DIALOGUES = 20


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


def auto_epochs(n_examples: int, cfg: TrainConfig, cap: int = 30) -> int:
    """About `min_updates` optimiser steps: a small corpus is passed over many times, one of ~30k
    lines twice, a larger one once. Past that size training time grows only with the corpus."""
    if cfg.epochs:
        return cfg.epochs
    steps = max(1, math.ceil(n_examples / cfg.batch_size))
    return int(min(cap, max(1, round(cfg.min_updates / steps))))


def split_dialogues(dialogue_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of examples held out for validation, whole dialogues at a time (so an
    answer never leaks into training through its question).

    Fewer than `MIN_VAL_DIALOGUES` held out would make a validation loss too noisy to stop on;
    such small corpora train for the full epoch count instead.
    """
    unique = np.unique(dialogue_ids)
    n_val = int(len(unique) * fraction)
    if n_val < MIN_VAL_DIALOGUES:
        return np.zeros(len(dialogue_ids), dtype=bool)
    rng = np.random.default_rng(seed)
    held = rng.choice(unique, size=n_val, replace=False)
    return np.isin(dialogue_ids, held)


def pair_batch(src: Sequence[np.ndarray], tgt: Sequence[np.ndarray]) -> Batch:
    """Tensors for a batch of (source, target) id sequences, used by both encoders."""
    s, sl = pad(src)
    t, tl = pad(tgt)
    t_in, _ = pad(tgt, bos=True)
    t_out, _ = pad(tgt, eos=True)
    return {"src": s, "src_len": sl, "tgt": t, "tgt_len": tl, "tgt_in": t_in, "tgt_out": t_out}


def pair_widths(data, idx: np.ndarray) -> np.ndarray:
    """The longer side of each pair: it sets the padded width of the batch the pair joins, for
    the encoder (which reads source and target together) and for the decoder alike."""
    lengths = np.array([len(x) for x in data.ids])
    return np.maximum(lengths[data.pairs[idx, 0]], lengths[data.pairs[idx, 1]])


def _to(batch: Batch, device: torch.device) -> Batch:
    return {k: (v if k.endswith("_len") else to_device(v, device)) for k, v in batch.items()}


def _evaluate(model: nn.Module, loss_fn, batches: Iterable[Batch], device: torch.device) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), dev.autocast(device):
        for b in batches:
            total += float(loss_fn(model, _to(b, device))) * len(b["src"])
            n += len(b["src"])
    return total / max(n, 1)


def fit(
    name: str,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    train_batches: Callable[[np.random.Generator], Iterable[Batch]],
    val_batches: Sequence[Batch],
    cfg: TrainConfig,
    epochs: int,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: Callable[[str, float], None] | None = None,
    on_epoch_start: Callable[[nn.Module, int], None] | None = None,
    min_epochs: int = 0,
) -> History:
    """Train `model` in place; on return it holds the weights of its best validation epoch.

    With no validation batches (a corpus too small to hold any out) it trains every epoch and
    keeps the one with the lowest training loss: stopping on a noisy training loss would only
    stop early by chance.
    """
    device = dev.resolve(cfg.device)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 - 0.9 * e / max(1, epochs))
    hist = History()
    best_state = None
    best_val = math.inf
    bad_epochs = 0
    start_epoch = 0
    ckpt = checkpoint_dir / f"{name}.last.pt" if checkpoint_dir else None
    if resume and ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, best_val, bad_epochs = state["epoch"] + 1, state["best_val"], state["bad_epochs"]
        hist.train_loss, hist.val_loss, hist.best_epoch = state["train_loss"], state["val_loss"], state["best_epoch"]
        best_state = state["best_model"]
    t0 = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        if val_batches and bad_epochs >= cfg.patience and epoch >= min_epochs:
            hist.stopped_early = True
            break
        dev.seed_everything(cfg.seed * 100_003 + epoch)
        if on_epoch_start:
            on_epoch_start(model, epoch)
        model.train()
        batches = list(train_batches(np.random.default_rng([cfg.seed, epoch])))
        total, n = 0.0, 0
        for i, b in enumerate(batches):
            b = _to(b, device)
            with dev.autocast(device):
                loss = loss_fn(model, b)
            if not torch.isfinite(loss):
                raise EmbedderError(f"{name}: training diverged (loss {float(loss)}) at epoch {epoch + 1}; "
                                    "try a lower learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            total += float(loss.detach()) * len(b["src"])
            n += len(b["src"])
            if progress:
                progress(name, (epoch + (i + 1) / len(batches)) / epochs)
        sched.step()
        hist.train_loss.append(total / max(n, 1))
        val = _evaluate(model, loss_fn, val_batches, device) if val_batches else hist.train_loss[-1]
        hist.val_loss.append(val)
        if val < best_val - 1e-4:
            best_val, bad_epochs, hist.best_epoch = val, 0, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            bad_epochs += 1
        if ckpt:
            with atomic_path(ckpt) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(), "epoch": epoch, "best_val": best_val,
                            "bad_epochs": bad_epochs, "train_loss": hist.train_loss,
                            "val_loss": hist.val_loss, "best_epoch": hist.best_epoch,
                            "best_model": best_state}, tmp)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist.seconds = time.perf_counter() - t0
    if progress:
        progress(name, 1.0)
    return hist
