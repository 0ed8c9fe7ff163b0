"""Quality probes for the encoders, side by side with a bag-of-words baseline.

Each probe takes utterance rows and `methods` (name -> texts -> unit vectors) and returns a
JSON-serialisable result; `evaluate.py` decides which text they run on. The probes, each for every encoder and for TF-IDF + truncated SVD (the baseline):

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
  task (Conneau et al., 2018), sized for a held-out fifth of a small corpus: several copies
  per sentence steady the score (benchmarks/RESULTS.md). `order_shift` is the mean cosine distance between a sentence and its copy.
  For an encoder with a word-order scorer, `score_accuracy` is the same probe on its order score
  alone (the column beside the vectors) and `score_paired` the share of copies it scores as
  more out of order than their original.
- context: a built-in set of polysemous words (bank, charge, bat, ...; `context_probes.json`),
  three sentences per sense; the contextual vector of the word (encoder states averaged over its pieces) should be
  closer between uses of one sense than across senses. Reported as mean within-sense cosine minus
  mean cross-sense cosine: > 0 is context-sensitive; a static word vector gives exactly 0.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

BASELINE = "tfidf-svd"
FOLDS = 5
MRR_CUTOFF = 1000
SWAPS_PER_SENTENCE = 5   # word-order probe: swapped copies per sentence


def _context_probes() -> dict[str, tuple[list[str], list[str]]]:
    """word -> (three sentences of one sense, three of another); the word appears once per
    sentence, in lower case, between spaces, so its pieces are easy to find."""
    raw = json.loads((Path(__file__).with_name("context_probes.json")).read_text(encoding="utf-8"))
    return {word: (senses["sense_a"], senses["sense_b"]) for word, senses in raw.items()}


CONTEXT_PROBES = _context_probes()


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


def probe_retrieval(rows: list[dict], methods: dict) -> dict:
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
        X = enc(texts)
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


def probe_word_order(rows: list[dict], methods: dict, seed: int, copies: int = SWAPS_PER_SENTENCE,
                     scorers: dict | None = None) -> dict:
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
        if name in (scorers or {}):
            a, b = scorers[name](list(sentence_of))[sentence], scorers[name](swapped)
            out["results"][name]["score_accuracy"] = cv_accuracy(np.r_[a, b][:, None])
            out["results"][name]["score_paired"] = float(np.mean(b > a))
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


def contextual_word_vectors(model, encoder: str, sentences: Sequence[str], word: str) -> list[np.ndarray | None]:
    """The word's vector in each sentence: its pieces' encoder states, averaged."""
    import torch

    from ..encoders.batching import pad

    module = model.encoder(encoder)
    ids = model.tokenizer.encode(sentences, max_len=module.cfg.max_len)
    out: list[np.ndarray | None] = []
    with torch.inference_mode():
        src, lens = pad(ids)
        states = module.token_states(src.to(model.device), lens).float().cpu().numpy()
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
