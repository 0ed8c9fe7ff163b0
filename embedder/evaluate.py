"""Quality probes for the encoders, side by side with a bag-of-words baseline (`embed evaluate`).

Given a corpus, whole dialogues are held out (seeded, 20% by default), a model is trained on the
rest and every probe runs on the held-out part only, so the numbers say how the encoders do on
text they have not seen. Given an `embed encode` output folder, its model is probed on its own
corpus; the report says that this is not a held-out measurement when the model was trained on
that corpus.

The probes, each for every encoder and for TF-IDF + truncated SVD (the baseline):

- qa_separation: 5-fold cross-validated logistic regression accuracy at telling questions from
  answers, with every "?" removed from the text before encoding, so punctuation cannot carry it.
- retrieval: each held-out question that is followed by an answer searches all other held-out
  utterances (FAISS exact inner product); MRR and recall@1/5/10 of its own answer.
- word_order: originals vs copies with two adjacent words swapped (up to 5 copies of each
  sentence, each at a different pair); cross-validated logistic regression, a sentence and its
  copies always in the same fold. 0.5 = blind to word order (a bag of words gives exactly 0.5,
  since the vectors are identical). `paired_accuracy` is the same probe on differences
  (original − copy vs copy − original): it asks whether one direction marks "in natural order"
  for every sentence, free of what the sentences are about. This is SentEval's bigram-shift
  task (Conneau et al., 2018), sized for a held-out fifth of a small corpus: with one copy per
  sentence a fold trained on ~115 rows of 257 features, and on the example corpus one model's
  paired score ranged 0.53-0.65 over three seeds for the swaps (0.61-0.63 with five copies).
  `order_shift` is the mean cosine distance between a sentence and its copy.
- context: a built-in set of polysemous words (bank, charge, bat, ...), three sentences per
  sense; the contextual vector of the word (encoder states averaged over its pieces) should be
  closer between uses of one sense than across senses. Reported as mean within-sense cosine minus
  mean cross-sense cosine: > 0 is context-sensitive; a static word vector gives exactly 0.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import EmbedderError

BASELINE = "tfidf-svd"
HOLDOUT = 0.2
FOLDS = 5
MRR_CUTOFF = 1000
MAX_UTTERANCES = 10_000   # beyond this, whole dialogues are sampled down (seeded)
SWAPS_PER_SENTENCE = 5   # word-order probe: swapped copies per sentence
MIN_EVAL = 20             # held-out utterances needed for the probes to mean anything

Progress = Callable[[str, float], None]

# -- the built-in context probe: word -> two senses -> three sentences each ---------------------
# The word appears once per sentence, in lower case, between spaces, so its pieces are easy to find.
CONTEXT_PROBES: dict[str, tuple[list[str], list[str]]] = {
    "bank": (["we sat on the bank of the river and watched the boats",
              "the grassy bank by the stream was covered in flowers",
              "the water rose over the muddy bank after the storm"],
             ["i need to pay the bank back for my loan",
              "the bank charges a fee for every transfer",
              "she opened a savings account at the bank downtown"]),
    "charge": (["how long does it take to charge the battery fully",
                "plug the cable in and charge your phone overnight",
                "the laptop will charge faster with the original adapter"],
               ["the police dropped the charge against him yesterday",
                "he pleaded guilty to the charge of theft in court",
                "the lawyer said the charge of fraud would not stick"]),
    "bat": (["he swung the bat and hit the ball over the fence",
             "a wooden bat is heavier than an aluminium one",
             "she bought a new cricket bat for the season"],
            ["a bat flew out of the cave at dusk",
             "the fruit bat hangs upside down when it sleeps",
             "we saw a bat hunting insects near the barn"]),
    "spring": (["the flowers bloom early in the spring after a mild winter",
                "we plant the vegetables every spring when it gets warm",
                "the birds return in spring from the south"],
               ["the old mattress has a broken spring that pokes out",
                "a spring inside the clock keeps it ticking",
                "the door closes by itself because of a strong spring in the hinge"]),
    "light": (["turn on the light in the kitchen please",
               "the light from the lamp was too bright to read",
               "the morning light came through the window"],
              ["the suitcase is light enough to carry upstairs",
               "this jacket is light but still very warm",
               "pack a light bag because we are walking far"]),
    "match": (["did you watch the football match last night",
               "our team won the match by two goals",
               "the tennis match lasted more than four hours"],
              ["strike a match to light the candle",
               "he lit the fire with a single match and some paper",
               "the wet match would not light in the wind"]),
    "pitch": (["the players ran onto the pitch before kickoff",
               "rain left the football pitch full of puddles",
               "the groundsman mowed the pitch before the game"],
              ["the singer could not reach the high pitch of the song",
               "she has perfect pitch and can name any note",
               "the pitch of the violin was slightly too low"]),
    "crane": (["a tall crane lifted the steel beams onto the roof",
               "the crane operator sits high above the building site",
               "they used a crane to load the containers onto the ship"],
              ["a white crane stood in the marsh looking for fish",
               "the crane spread its wings and flew over the lake",
               "we watched a crane wade slowly through the reeds"]),
    "mouse": (["my mouse stopped working so i cannot click anything",
               "plug the wireless mouse into the usb port",
               "move the mouse to the corner of the screen"],
              ["the cat caught a mouse in the garden",
               "a little mouse was eating the cheese in the cupboard",
               "we heard a mouse scratching behind the wall"]),
    "seal": (["a seal was lying on the rocks in the sun",
              "the baby seal swam close to the boat",
              "we saw a grey seal hunting fish near the harbour"],
             ["the seal on the jar keeps the air out",
              "break the seal before you pour the medicine",
              "the rubber seal around the window is leaking"]),
    "court": (["the judge entered the court and everyone stood up",
               "she will appear in court next week for the trial",
               "the court ruled that the contract was void"],
              ["we booked a tennis court for saturday morning",
               "the basketball court in the park has new hoops",
               "the players left the court after the final set"]),
    "bark": (["the dogs bark every time the postman comes",
              "why does my puppy bark at night",
              "the neighbours complained that the dogs bark too much"],
             ["the bark of the old oak tree is rough and thick",
              "beetles live under the bark of dead trees",
              "birch bark peels off in thin white strips"]),
    "plant": (["water the plant on the windowsill once a week",
               "this plant needs a lot of sun to grow",
               "a tomato plant can grow taller than a child"],
              ["the power plant supplies electricity to the whole city",
               "he works the night shift at the car plant",
               "the chemical plant was closed after the leak"]),
    "ring": (["he gave her a gold ring when they got engaged",
              "she lost her wedding ring while swimming",
              "the ring was too small to fit on my finger"],
             ["i heard the phone ring while i was in the shower",
              "the bells ring at noon every sunday",
              "wait for the doorbell to ring before you open"]),
}


# -- corpus and split ---------------------------------------------------------------------------
def _rows_from_corpus(corpus_paths) -> list[dict]:
    from .corpus import read_corpus

    return [{"id": u.id, "dialogue": u.dialogue, "position": u.position, "role": u.role, "text": u.text}
            for u in read_corpus(corpus_paths)]


def _split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    dialogues = sorted({r["dialogue"] for r in rows})
    if not 0.0 < fraction < 1.0:
        raise EmbedderError(f"holdout {fraction}: must be between 0 and 1")
    n_hold = int(round(len(dialogues) * fraction))
    if n_hold < 1 or n_hold >= len(dialogues):
        raise EmbedderError(f"the corpus has {len(dialogues)} dialogue(s): too few to hold "
                            f"{fraction:.0%} of them out and train on the rest")
    rng = np.random.default_rng(seed)
    held = set(rng.choice(dialogues, size=n_hold, replace=False).tolist())
    train = [r for r in rows if r["dialogue"] not in held]
    test = [r for r in rows if r["dialogue"] in held]
    return train, test


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


def _write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"text": r["text"], "role": r["role"], "dialogue": int(r["dialogue"])}) + "\n")


# -- the methods: text -> unit vectors ----------------------------------------------------------
class Baseline:
    """TF-IDF + truncated SVD: a bag of words squeezed to (at most) the encoders' size."""

    def __init__(self, fit_texts: Sequence[str], dim: int, seed: int):
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.tfidf = TfidfVectorizer(sublinear_tf=True)
        T = self.tfidf.fit_transform(list(fit_texts))
        self.dim = int(max(1, min(dim, T.shape[1] - 1, T.shape[0] - 1)))
        self.svd = TruncatedSVD(n_components=self.dim, random_state=seed)
        self.svd.fit(T)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return _unit(self.svd.transform(self.tfidf.transform(list(texts))))

    def word_vector(self, word: str) -> np.ndarray | None:
        """The word's static vector (its column of the SVD), the same in every context."""
        j = self.tfidf.vocabulary_.get(word)
        return None if j is None else self.svd.components_[:, j].astype(np.float32)


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


# -- probe (a): question / answer separation ----------------------------------------------------
def _cv_accuracy(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, folds: int = FOLDS) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    acc = cross_val_score(clf, X, y, groups=groups, cv=cv, scoring="accuracy")
    return float(acc.mean()), float(acc.std())


def _folds_possible(y: np.ndarray, groups: np.ndarray) -> int:
    per_class = [len(np.unique(groups[y == c])) for c in np.unique(y)]
    return min([FOLDS, *per_class]) if len(per_class) == 2 else 0


def probe_qa(rows: list[dict], methods: dict, seed: int) -> dict:
    texts = [r["text"].replace("?", " ").strip() or r["text"] for r in rows]
    y = np.array([r["role"] == "question" for r in rows])
    groups = np.array([r["dialogue"] for r in rows])
    folds = _folds_possible(y, groups)
    out = {"n": len(rows), "questions": int(y.sum()), "answers": int((~y).sum()),
           "chance": float(max(y.mean(), 1 - y.mean())) if len(y) else None, "folds": folds}
    if folds < 2:
        out["skipped"] = "needs questions and answers in at least two dialogues each"
        return out
    out["results"] = {}
    for name, enc in methods.items():
        acc, std = _cv_accuracy(enc(texts), y, groups, seed, folds)
        out["results"][name] = {"accuracy": acc, "std": std}
    return out


# -- probe (b): question -> its answer ----------------------------------------------------------
def _pairs(rows: list[dict]) -> list[tuple[int, int]]:
    """(question row, answer row) for each question followed by an answer in its dialogue."""
    at = {(r["dialogue"], r["position"]): i for i, r in enumerate(rows)}
    out = []
    for i, r in enumerate(rows):
        if r["role"] != "question":
            continue
        j = at.get((r["dialogue"], r["position"] + 1))
        if j is not None and rows[j]["role"] == "answer":
            out.append((i, j))
    return out


def probe_retrieval(rows: list[dict], methods: dict, vectors: dict | None = None) -> dict:
    import faiss

    pairs = _pairs(rows)
    n = len(rows)
    out = {"queries": len(pairs), "candidates": max(n - 1, 0), "cutoff": min(MRR_CUTOFF, max(n - 1, 0))}
    if not pairs or n < 3:
        out["skipped"] = "no question followed by an answer"
        return out
    m = n - 1
    out["chance"] = {"mrr": float(sum(1.0 / k for k in range(1, m + 1)) / m),
                     **{f"recall@{k}": min(1.0, k / m) for k in (1, 5, 10)}}
    texts = [r["text"] for r in rows]
    q = np.array([p[0] for p in pairs])
    a = np.array([p[1] for p in pairs])
    k = min(n, MRR_CUTOFF + 1)
    out["results"] = {}
    for name, enc in methods.items():
        X = vectors[name] if vectors and name in vectors else enc(texts)
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(np.ascontiguousarray(X, dtype=np.float32))
        _, ids = index.search(np.ascontiguousarray(X[q], dtype=np.float32), k)
        ranks = []
        for row, qi, ai in zip(ids, q, a):
            others = row[row != qi]
            hit = np.flatnonzero(others == ai)
            ranks.append(int(hit[0]) + 1 if len(hit) else math.inf)
        ranks = np.asarray(ranks, dtype=float)
        out["results"][name] = {"mrr": float(np.mean(1.0 / ranks)),
                                **{f"recall@{c}": float(np.mean(ranks <= c)) for c in (1, 5, 10)}}
    return out


# -- probe (c): word order ----------------------------------------------------------------------
_WORD = re.compile(r"[^\W_][\w'’-]*")


def adjacent_swaps(text: str) -> list[str]:
    """Every copy of `text` with one pair of adjacent, different words swapped in place
    (punctuation and spacing stay where they are), left to right."""
    spans = [m.span() for m in _WORD.finditer(text)]
    copies = []
    for i in range(len(spans) - 1):
        (s1, e1), (s2, e2) = spans[i], spans[i + 1]
        if text[e1:s2].isspace() and text[s1:e1].lower() != text[s2:e2].lower():
            copies.append(text[:s1] + text[s2:e2] + text[e1:s2] + text[s1:e1] + text[e2:])
    return copies


def swap_adjacent_words(text: str, rng: np.random.Generator) -> str | None:
    """`text` with one random pair of adjacent, different words swapped; None when there is none."""
    copies = adjacent_swaps(text)
    return copies[int(rng.integers(len(copies)))] if copies else None


def probe_word_order(rows: list[dict], methods: dict, seed: int, copies: int = SWAPS_PER_SENTENCE) -> dict:
    """Originals vs swapped copies, up to `copies` per sentence (every adjacent pair when it has
    fewer). Several copies per sentence give the probe several times the examples from the same
    held-out text; a sentence and all its copies stay in one fold, so no fold is tested on a
    sentence it was trained on."""
    rng = np.random.default_rng(seed + 2)
    sentence_of: dict[str, int] = {}   # the same text twice is one sentence, in one fold
    pair_sentence, swapped = [], []      # each copy, and the sentence it was made from
    for r in rows:
        if r["text"] in sentence_of or len(_WORD.findall(r["text"])) < 3:
            continue
        found = adjacent_swaps(r["text"])
        if found:
            sentence_of[r["text"]] = len(sentence_of)
        for i in sorted(rng.permutation(len(found))[:copies]):
            pair_sentence.append(sentence_of[r["text"]])
            swapped.append(found[i])
    n = len(swapped)
    out = {"sentences": len(sentence_of), "pairs": n, "chance": 0.5}
    if len(sentence_of) < FOLDS:
        out["skipped"] = "fewer than 5 sentences of three or more words"
        return out
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    sentence = np.array(pair_sentence, dtype=np.int64)
    groups = np.r_[sentence, sentence]
    perm = np.random.default_rng(seed + 3).permutation(2 * n)
    out["results"] = {}
    for name, enc in methods.items():
        A = enc(list(sentence_of))[sentence]
        B = enc(swapped)
        # a copy whose vector equals its original's up to float rounding (a bag of words, encoded
        # in another batch) is the same vector: the scaler would blow the rounding up to a signal
        B = np.where(np.isclose(A, B, rtol=1e-5, atol=1e-7), A, B)

        def cv_accuracy(X: np.ndarray) -> float:
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
            return float(cross_val_score(clf, X[perm], y[perm], groups=groups[perm],
                                         cv=GroupKFold(n_splits=FOLDS), scoring="accuracy").mean())

        shift = float(np.mean(1.0 - np.sum(_unit(A) * _unit(B), axis=1)))
        out["results"][name] = {"accuracy": cv_accuracy(np.vstack([A, B])),
                                # paired: one direction in which every original differs from its copy?
                                "paired_accuracy": cv_accuracy(np.vstack([A - B, B - A])),
                                "order_shift": max(shift, 0.0)}
    return out


# -- probe (d): the same word in two senses -----------------------------------------------------
def _word_groups(pieces: list[str]) -> list[list[int]]:
    """Piece positions grouped into words (SentencePiece marks a word's start with ▁)."""
    groups: list[list[int]] = []
    for i, p in enumerate(pieces):
        if p.startswith("▁") or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def _find_word(pieces: list[str], word: str) -> list[int] | None:
    for g in _word_groups(pieces):
        text = "".join(pieces[i] for i in g).replace("▁", "")
        if text.strip(".,;:!?'\"").lower() == word:
            return [i for i in g if pieces[i] != "▁"] or g
    return None


def token_states(module, src, lengths):
    """Contextual vectors (B, T, width) for every piece: the encoder's states."""
    if getattr(module, "kind", None) == "seq2seq":
        return module.encode(src, lengths)[0]
    if hasattr(module, "embedding") and hasattr(module, "rnn"):  # skipgram-birnn: BiRNN over piece vectors
        return module.rnn(module.embedding(src), lengths)
    raise EmbedderError(f"encoder kind {getattr(module, 'kind', '?')!r}: no token states to probe")


def contextual_word_vectors(model, encoder: str, sentences: Sequence[str], word: str) -> list[np.ndarray | None]:
    """The word's vector in each sentence: its pieces' encoder states, averaged."""
    import torch

    from .batching import pad

    module = model.encoder(encoder)
    ids = model.tokenizer.encode(sentences, max_len=module.cfg.max_len)
    out: list[np.ndarray | None] = []
    with torch.inference_mode():
        src, lens = pad(ids)
        states = token_states(module, src.to(model.device), lens).float().cpu().numpy()
    for row, seq in zip(states, ids):
        pieces = [model.tokenizer.sp.id_to_piece(int(t)) for t in seq]
        pos = _find_word(pieces, word)
        out.append(None if pos is None else row[pos].mean(0))
    return out


def _within_minus_across(vecs_a: list[np.ndarray], vecs_b: list[np.ndarray]) -> tuple[float, float]:
    A, B = _unit(np.stack(vecs_a)), _unit(np.stack(vecs_b))

    def mean_pairs(M):
        S = M @ M.T
        iu = np.triu_indices(len(M), 1)
        return S[iu]

    within = float(np.mean(np.r_[mean_pairs(A), mean_pairs(B)]))
    across = float(np.mean(A @ B.T))
    return within, across


def probe_context(model, encoders: Sequence[str], baseline: Baseline | None,
                  probes: dict = CONTEXT_PROBES) -> dict:
    results: dict[str, dict] = {}
    per_word: dict[str, dict] = {}

    def record(name: str, word: str, va, vb):
        va = [v for v in va if v is not None]
        vb = [v for v in vb if v is not None]
        if len(va) < 2 or len(vb) < 2:
            return
        within, across = _within_minus_across(va, vb)
        per_word.setdefault(word, {})[name] = round(within - across, 4)
        results.setdefault(name, {"_w": [], "_a": []})
        results[name]["_w"].append(within)
        results[name]["_a"].append(across)

    for word, (sense_a, sense_b) in probes.items():
        for name in encoders:
            vecs = contextual_word_vectors(model, name, [*sense_a, *sense_b], word)
            record(name, word, vecs[:len(sense_a)], vecs[len(sense_a):])
        if baseline is not None:
            # a bag of words has one vector per word, whatever the context (zero if unseen)
            v = baseline.word_vector(word)
            v = baseline.encode([word])[0] if v is None else v
            record(BASELINE, word, [v] * len(sense_a), [v] * len(sense_b))
    out = {"words": len(probes), "sentences_per_sense": 3, "static_vector": 0.0, "results": {}}
    for name, r in results.items():
        w, a = np.array(r["_w"]), np.array(r["_a"])
        d = w - a
        score = float(d.mean())
        out["results"][name] = {"score": 0.0 if abs(score) < 1e-6 else score,
                                "within": float(w.mean()), "across": float(a.mean()),
                                "words_positive": int((d > 1e-6).sum()), "words": len(d)}
    out["per_word"] = per_word
    return out


def _held_out(model, texts: Sequence[str]) -> tuple[bool | None, str]:
    """Whether the model's training files (as its manifest records them) share no text with
    `texts`: True, False, or None when the training files are not recorded or not readable."""
    from .corpus import read_corpus

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


# -- the whole evaluation -----------------------------------------------------------------------
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
    progress: Progress | None = None,
) -> dict:
    """Run every probe; returns a JSON-serialisable report (see `table()` for a printable one).

    corpus_paths: train on (1 - holdout) of the dialogues, probe the held-out ones. The model is
    trained in a temporary folder, or in `model_out` if given (kept).
    out_dir: an `embed encode` output folder; its model is probed on its own corpus.
    """
    t0 = time.perf_counter()
    if (corpus_paths is None) == (out_dir is None):
        raise EmbedderError("evaluate: give either a corpus or an `embed encode` output folder")
    step = (lambda name, f: progress(name, f)) if progress else (lambda name, f: None)
    report: dict = {"seed": seed}
    with tempfile.TemporaryDirectory(prefix="embed-evaluate-") as tmp:
        if corpus_paths is not None:
            from .corpus import check_paths
            from .train import DEFAULT_ENCODERS, train

            if isinstance(corpus_paths, (str, os.PathLike)):
                corpus_paths = [corpus_paths]
            files = check_paths(corpus_paths)
            rows = _rows_from_corpus(files)
            train_rows, test_rows = _split(rows, holdout, seed)
            if len(test_rows) < MIN_EVAL:
                raise EmbedderError(f"only {len(test_rows)} utterances would be held out "
                                    f"(at least {MIN_EVAL} are needed): give a larger corpus")
            part = Path(tmp) / "train.jsonl"
            _write_jsonl(train_rows, part)
            import torch

            threads = torch.get_num_threads()
            model = train([part], model_out or Path(tmp) / "model", encoders=list(encoders or DEFAULT_ENCODERS),
                          dim=dim, epochs=epochs, seed=seed, device=device, progress=progress)
            torch.set_num_threads(threads)  # training takes every core; the probes keep the caller's setting
            names = list(model.encoders)
            fit_texts = [r["text"] for r in train_rows]
            report["source"] = {
                "corpus": [str(f) for f in files], "held_out": True,
                "note": f"trained on {1 - holdout:.0%} of the dialogues, probed on the other {holdout:.0%}",
                "dialogues_train": len({r["dialogue"] for r in train_rows}),
                "dialogues_eval": len({r["dialogue"] for r in test_rows}),
                "utterances_train": len(train_rows)}
            report["model"] = {"path": str(model_out) if model_out else None, "fingerprint": model.fingerprint,
                               "training": model.manifest.get("training", {}).get("history", {})}
        else:
            from .encode import Collection
            from .features import load_features

            coll = Collection(out_dir, device=device)
            model = coll.model
            names = [n for n in coll.encoders if n in model.encoders]
            if encoders:
                names = [n for n in encoders if model.encoder(n) is not None]
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
        step("probes", 0.0)
        dims = {n: model.dim(n) for n in names}
        baseline = Baseline(fit_texts, max(dims.values()), seed)
        dims[BASELINE] = baseline.dim
        methods = {n: (lambda texts, n=n: model.encode(list(texts), encoder=n)) for n in names}
        methods[BASELINE] = baseline.encode
        report["methods"] = list(methods)
        report["dims"] = dims
        probes = {}
        probes["qa_separation"] = probe_qa(rows, methods, seed)
        step("probes", 0.25)
        probes["retrieval"] = probe_retrieval(rows, methods)
        step("probes", 0.5)
        probes["word_order"] = probe_word_order(rows, methods, seed)
        step("probes", 0.75)
        probes["context"] = probe_context(model, names, baseline)
        step("probes", 1.0)
        report["probes"] = probes
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


# -- printing -----------------------------------------------------------------------------------
ROWS = [
    ("qa_separation", "accuracy", "Q/A separation, acc (no '?')"),
    ("retrieval", "mrr", "Q → its answer, MRR"),
    ("retrieval", "recall@1", "Q → its answer, R@1"),
    ("retrieval", "recall@5", "Q → its answer, R@5"),
    ("retrieval", "recall@10", "Q → its answer, R@10"),
    ("word_order", "accuracy", "word order, acc (0.5 blind)"),
    ("word_order", "paired_accuracy", "word order, paired acc"),
    ("word_order", "order_shift", "word order, 1 − cos"),
    ("context", "score", "context, within − across"),
]


def _chance(probe: dict, metric: str):
    c = probe.get("chance")
    if isinstance(c, dict):
        return c.get(metric)
    if metric in ("accuracy",):
        return c
    return None


def table(report: dict):
    """A rich Table: one row per probe metric, one column per method (and chance)."""
    from rich.table import Table

    src = report.get("source", {})
    t = Table(title=f"embed evaluate — {src.get('utterances_eval', '?')} utterances "
                    f"({'held out' if src.get('held_out') else 'not held out' if src.get('held_out') is False else 'held-out unknown'})",
              caption=src.get("note"), show_edge=False)
    t.add_column("probe")
    for m in report["methods"]:
        t.add_column(f"{m}\n{report['dims'][m]}-d", justify="right")
    t.add_column("chance", justify="right", style="dim")
    for probe_name, metric, label in ROWS:
        probe = report["probes"].get(probe_name, {})
        res = probe.get("results")
        if not res:
            t.add_row(label, *["—"] * len(report["methods"]), probe.get("skipped", ""))
            continue
        cells = []
        for m in report["methods"]:
            v = res.get(m, {}).get(metric)
            cells.append("—" if v is None else f"{v + 0.0:.3f}".replace("-0.000", "0.000"))
        ch = _chance(probe, metric)
        if probe_name == "context":
            ch = 0.0
        cells.append("" if ch is None else f"{ch:.3f}")
        t.add_row(label, *cells)
    return t
