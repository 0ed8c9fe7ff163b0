"""`embed evaluate`: how the encoders do on text they have not seen.

Given a corpus, whole dialogues are held out (seeded, 20% by default), a model is trained on the
rest and every probe (`probes.py`) runs on the held-out part only. Given an `embed encode`
output folder, its model is probed on its own corpus; the report says that this is not a
held-out measurement when the model was trained on that corpus.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.corpus import Utterance, check_paths, hold_out_dialogues, read_corpus
from ..encoders.registry import DEFAULT_ENCODERS
from ..errors import EmbedderError, check_range
from ..features import load_features
from ..progress import Progress
from ..progress import report as report_progress
from ..storage.collection import Collection
from ..training.teacher import check as check_teacher, load_teacher
from ..training.train import TrainOptions, train_on
from .probes import BASELINE, Baseline, probe_context, probe_qa, probe_retrieval, probe_word_order

HOLDOUT = 0.2
MAX_UTTERANCES = 10_000   # beyond this, whole dialogues are sampled down (seeded)
MIN_EVAL = 20             # held-out utterances needed for the probes to mean anything


def _row(u: Utterance) -> dict:
    return {"id": u.id, "dialogue": u.dialogue, "position": u.position, "role": u.role, "text": u.text}


def _split(utterances: list[Utterance], fraction: float, seed: int) -> tuple[list[Utterance], list[Utterance]]:
    """(train, held out), whole dialogues at a time."""
    check_range("--holdout", fraction, 0.0, 1.0, open_low=True, open_high=True)
    dialogue = np.array([u.dialogue for u in utterances])
    n_dialogues = len(np.unique(dialogue))
    n_hold = int(round(n_dialogues * fraction))
    if n_hold < 1 or n_hold >= n_dialogues:
        raise EmbedderError(f"the corpus has {n_dialogues} dialogue(s): too few to hold "
                            f"{fraction:.0%} of them out and train on the rest")
    held = hold_out_dialogues(dialogue, n_hold, seed)
    return ([u for u, h in zip(utterances, held) if not h], [u for u, h in zip(utterances, held) if h])


def _cap(rows: list[dict], limit: int, seed: int) -> list[dict]:
    if len(rows) <= limit:
        return rows
    rng = np.random.default_rng(seed + 1)
    dialogues = np.unique([r["dialogue"] for r in rows])
    rng.shuffle(dialogues)
    by = {}
    for r in rows:
        by.setdefault(r["dialogue"], []).append(r)
    out: list[dict] = []
    for d in dialogues:
        if len(out) >= limit:
            break
        out += by[d]
    out.sort(key=lambda r: r["id"])
    return out


def _held_out(model, texts: Sequence[str]) -> tuple[bool | None, str]:
    """Whether the model's training files (as its manifest records them) share no text with
    `texts`: True, False, or None when the training files are not recorded or not readable."""
    paths = model.manifest.get("training", {}).get("options", {}).get("corpus", [])
    if not paths:
        return None, "the model's training data is not recorded: these may not be held-out numbers"
    if not all(Path(p).is_file() for p in paths):
        return None, ("the model's training files are gone, so overlap with this corpus cannot be checked: "
                      "these may not be held-out numbers")
    try:
        seen = {hash(u.text) for u in read_corpus(paths)}
    except EmbedderError:
        return None, "the model's training files cannot be read: these may not be held-out numbers"
    overlap = float(np.mean([hash(t) in seen for t in texts])) if texts else 0.0
    if overlap == 0.0:
        return True, "held out: none of these utterances is in the model's training files"
    return False, (f"NOT held out: {overlap:.0%} of these utterances are in the model's training data, so "
                   "the numbers flatter it (evaluate the corpus itself for held-out numbers)")


def evaluate(
    corpus_paths: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    holdout: float = HOLDOUT,
    encoders: Sequence[str] | None = None,
    epochs: int = 0,
    dim: int = 256,
    device: str = "auto",
    model_out: str | os.PathLike | None = None,
    max_utterances: int = MAX_UTTERANCES,
    seed: int = 0,
    teacher: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> dict:
    """Run every probe; returns a JSON-serialisable report.

    teacher: a sentence-transformers model (folder, or all-MiniLM-L6-v2) probed as one more
    column, for comparison; it is not trained with.

    corpus_paths: train on (1 - holdout) of the dialogues, probe the held-out ones. The model is
    trained in a temporary folder, or in `model_out` if given (kept).
    out_dir: an `embed encode` output folder; its model is probed on its own corpus.
    """
    t0 = time.perf_counter()
    if (corpus_paths is None) == (out_dir is None):
        raise EmbedderError("evaluate: give either a corpus or an `embed encode` output folder")
    report: dict = {"seed": seed}
    if teacher is not None:
        check_teacher(teacher)  # a missing extra fails before any training
    with tempfile.TemporaryDirectory(prefix="embed-evaluate-") as tmp:
        if corpus_paths is not None:
            if isinstance(corpus_paths, (str, os.PathLike)):
                corpus_paths = [corpus_paths]
            files = check_paths(corpus_paths)
            train_part, test_part = _split(list(read_corpus(files)), holdout, seed)
            if len(test_part) < MIN_EVAL:
                raise EmbedderError(f"only {len(test_part)} utterances would be held out "
                                    f"(at least {MIN_EVAL} are needed): give a larger corpus")
            options = TrainOptions(encoders=encoders or DEFAULT_ENCODERS, dim=dim, epochs=epochs, seed=seed,
                                   device=device)
            model = train_on(train_part, model_out or Path(tmp) / "model", options, progress=progress)
            names = list(model.encoders)
            test_rows = [_row(u) for u in test_part]
            fit_texts = [u.text for u in train_part]
            report["source"] = {
                "corpus": [str(f) for f in files], "held_out": True,
                "note": f"trained on {1 - holdout:.0%} of the dialogues, probed on the other {holdout:.0%}",
                "dialogues_train": len({u.dialogue for u in train_part}),
                "dialogues_eval": len({u.dialogue for u in test_part}),
                "utterances_train": len(train_part)}
            report["model"] = {"path": str(model_out) if model_out else None, "fingerprint": model.fingerprint,
                               "training": model.manifest.get("training", {}).get("history", {})}
        else:
            coll = Collection(out_dir, device=device)
            model = coll.model
            names = [n for n in coll.encoders if n in model.encoders]
            if encoders:
                names = list(encoders)
                for n in names:
                    model.encoder(n)  # an unknown name fails here, naming the ones there are
            _, meta = load_features(out_dir, encoders=names[:1] or None)
            rows = meta[["id", "dialogue", "position", "role", "text"]].to_dict("records")
            test_rows = rows
            fit_texts = [r["text"] for r in rows]
            held, note = _held_out(model, [r["text"] for r in rows])
            corpus = [str(Path(p)) for p in coll.manifest.get("corpus", [])]
            report["source"] = {"out_dir": str(out_dir), "corpus": corpus, "held_out": held, "note": note}
            report["model"] = {"path": str(model.path), "fingerprint": model.fingerprint}
        rows = _cap(test_rows, max_utterances, seed)
        report["source"]["utterances_eval"] = len(rows)
        report_progress(progress, "probes", 0.0)
        dims = {n: model.dim(n) for n in names}
        baseline = Baseline(fit_texts, max(dims.values()), seed)
        dims[BASELINE] = baseline.dim
        methods = {n: (lambda texts, n=n: model.encode(list(texts), encoder=n)) for n in names}
        methods[BASELINE] = baseline.encode
        if teacher is not None:
            t = load_teacher(teacher, device)
            methods[t.name] = lambda texts: t.encode(list(texts))
            dims[t.name] = t.dim
            report["teacher"] = t.describe()
        report["methods"] = list(methods)
        report["dims"] = dims
        probes = {}
        probes["qa_separation"] = probe_qa(rows, methods, seed)
        report_progress(progress, "probes", 0.25)
        probes["retrieval"] = probe_retrieval(rows, methods)
        report_progress(progress, "probes", 0.5)
        scorers = {n: (lambda texts, n=n: model.order_score(list(texts), encoder=n)) for n in names
                   if model.encoder(n).order is not None}
        probes["word_order"] = probe_word_order(rows, methods, seed, scorers=scorers)
        report_progress(progress, "probes", 0.75)
        probes["context"] = probe_context(model, names, baseline)
        report_progress(progress, "probes", 1.0)
        report["probes"] = probes
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
