"""The training data: every utterance once, and (utterance, successor) pairs as indices into them.

Both encoders learn from the same pairs (a question and its answer; the last utterance of a
dialogue paired with itself), so the corpus is read and tokenized once for all of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .corpus import QUESTION, Utterance, dialogues, training_pairs
from .tokenizer import Tokenizer


@dataclass
class PairCorpus:
    texts: list[str]
    roles: list[str]
    pairs: np.ndarray                  # (n, 2) indices into texts: source, target
    pair_dialogue: np.ndarray          # (n,) the dialogue of each pair, for the validation split
    ids: list[np.ndarray] | None = None      # token ids per text, once tokenized
    word_starts: np.ndarray | None = None    # which piece ids begin a word
    teacher: np.ndarray | None = None        # (texts, teacher dim) the teacher's unit vectors, if any
    # more texts that only the distillation reads (spans of the utterances, the vocabulary's words),
    # as token ids, with the teacher's vectors for them
    extra_ids: list[np.ndarray] | None = None
    extra_teacher: np.ndarray | None = None
    questions: np.ndarray | None = None      # (texts,) bool: which texts are questions (the role term)
    hard: np.ndarray | None = None           # (pairs, k) texts the teacher ranks just below each target, -1: none
    words: np.ndarray | None = None          # (rows, width) the teacher's state of each word of some texts ...
    word_spans: np.ndarray | None = None     # ... (texts, 2): each text's first and end row there

    @classmethod
    def from_utterances(cls, utterances: Iterable[Utterance]) -> "PairCorpus":
        texts, roles, pairs, pair_dialogue = [], [], [], []
        for dlg in dialogues(utterances):
            base, first = len(texts), dlg[0].id
            for u in dlg:
                texts.append(u.text)
                roles.append(u.role)
            for a, b in training_pairs(dlg):
                pairs.append((base + a.id - first, base + b.id - first))
                pair_dialogue.append(a.dialogue)
        return cls(texts, roles, np.asarray(pairs, dtype=np.int64).reshape(-1, 2), np.asarray(pair_dialogue))

    def __post_init__(self):
        if self.questions is None:
            self.questions = np.array([r == QUESTION for r in self.roles], dtype=bool)

    def tokenized(self, tokenizer: Tokenizer, max_len: int) -> "PairCorpus":
        return dataclasses.replace(self, ids=tokenizer.encode(self.texts, max_len=max_len),
                                   word_starts=tokenizer.word_starts())

    def lone(self) -> np.ndarray:
        """(n,) bool: the pairs whose dialogue is a single utterance (paired with itself, with no
        question or answer beside it)."""
        _, inverse, counts = np.unique(self.pair_dialogue, return_inverse=True, return_counts=True)
        return counts[inverse] == 1

    def widths(self, idx: np.ndarray) -> np.ndarray:
        """The longer side of each pair: it sets the padded width of the batch the pair joins, for
        an encoder that reads source and target together and for a decoder alike."""
        lengths = np.array([len(x) for x in self.ids])
        return np.maximum(lengths[self.pairs[idx, 0]], lengths[self.pairs[idx, 1]])
