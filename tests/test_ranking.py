"""Answer ranking with a teacher: the teacher's rankings as targets, and negatives it mines.

Teacher mode trailed its teacher most on ranking the candidate answers of a question by cosine
(`embed query`, `/search`). Two training terms aim at it: the teacher's in-batch rankings as a
listwise target, and negatives mined with the teacher (the texts it ranks just below a
question's answer) beside the random in-batch ones (benchmarks/RESULTS.md, issue 30)."""

import dataclasses
import zlib

import numpy as np
import pytest
import torch
from conftest import EXAMPLE

from embedder.data.corpus import QUESTION, read_corpus
from embedder.data.pairs import PairCorpus
from embedder.data.tokenizer import Tokenizer
from embedder.encoders.base import (
    WORD_TARGET_DIM,
    hard_negative_loss,
    listwise_distillation,
)
from embedder.encoders.registry import ENCODERS
from embedder.training.negatives import mine
from embedder.training.teacher_words import aligned

ANSWER = "answer"


def _at_cosines(cosines: list[float], seed: int = 0) -> np.ndarray:
    """Unit vectors whose cosines to the first are `cosines` (the first's own 1.0 included)."""
    rng = np.random.default_rng(seed)
    dim = len(cosines) + 1
    out = np.zeros((len(cosines), dim), np.float32)
    for i, c in enumerate(cosines):
        other = rng.normal(size=dim) * 1e-3
        other[0] = 0.0
        other[i + 1] = 1.0
        other /= np.linalg.norm(other)
        out[i] = c * np.eye(dim)[0] + np.sqrt(max(0.0, 1 - c * c)) * other
    return out


def test_mined_negatives_are_close_answers_never_a_second_answer_a_question_or_a_better_one():
    texts = ["what eats bamboo ?", "pandas eat bamboo .", "giant pandas live on bamboo .",
             "pandas are bears .", "what do pandas eat ?", "bamboo grows fast .", "the sea is deep .",
             "bamboo feeds the panda .", "pandas eat bamboo .", "lone line ."]
    cos = [1.0, 0.90, 0.85, 0.80, 0.95, 0.60, 0.10, 0.97, 0.90, 0.20]
    roles = [QUESTION, ANSWER, ANSWER, ANSWER, QUESTION, ANSWER, ANSWER, ANSWER, ANSWER, ANSWER]
    # dialogues: (0 -> 1), (0' -> 2): a second correct answer, written as its own dialogue with
    # the same question; the rest are lines of their own, paired with themselves
    texts.append(texts[0])
    cos.append(1.0)
    roles.append(QUESTION)
    pairs = np.array([[0, 1], [10, 2]] + [[i, i] for i in range(3, 10)])
    corpus = PairCorpus(texts, roles, pairs, np.arange(len(pairs)))
    teacher = _at_cosines(cos)
    hard = mine(corpus, teacher, seed=0, k=3)
    assert hard.shape == (len(pairs), 3)
    # the question's own answers (1, 2 and 8, the same text as 1) never; nor the other question
    # (4), nor the text the teacher ranks above the answer (7); closest first, a line of its own
    # (9) being a candidate like any other
    assert hard[0].tolist() == [3, 5, 9]
    assert hard[1].tolist() == [3, 5, 9]       # below the second answer's 0.85 too
    assert (hard[2:] == -1).all()              # a line paired with itself has none
    # nothing is left to mine once every candidate is excluded
    assert (mine(corpus, teacher, seed=0, k=3, max_pool=0) == -1).all()


def test_mining_is_capped_and_keeps_to_the_cap_evenly():
    n = 50
    texts = [f"question {i} ?" for i in range(n)] + [f"answer {i} ." for i in range(n)]
    roles = [QUESTION] * n + [ANSWER] * n
    pairs = np.array([[i, n + i] for i in range(n)])
    corpus = PairCorpus(texts, roles, pairs, np.arange(n))
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(2 * n, 8)).astype(np.float32)
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    teacher[n:] = teacher[:n] * 0.9 + teacher[n:] * 0.1       # each answer close to its question
    teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
    capped = mine(corpus, teacher, seed=0, k=2, max_pairs=10)
    assert ((capped >= 0).any(1)).sum() == 10
    assert set(capped[capped >= 0].tolist()) <= set(range(n, 2 * n))   # answers only


def test_listwise_term_is_the_teacher_s_ranking():
    rng = torch.Generator().manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(12, 16, generator=rng), dim=-1)
    same = listwise_distillation(teacher * 3.0, teacher)          # the scale of a vector does not matter
    shuffled = listwise_distillation(teacher[torch.randperm(12, generator=rng)], teacher)
    assert same < shuffled
    teacher[4] = 0.0                                              # an empty text: its row ranks nothing
    assert torch.isfinite(listwise_distillation(torch.randn(12, 16, generator=rng), teacher))


def test_a_mined_negative_closer_than_the_answer_costs_more():
    a = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.9, 0.436]])
    far, near = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.95, 0.31]])
    assert hard_negative_loss(a, t, near, 0.05) > hard_negative_loss(a, t, far, 0.05)


def _hashed_teacher(texts: list[str], dim: int = 24) -> np.ndarray:
    """A stand-in teacher with a real geometry: each word a fixed random vector, a text their sum."""
    out = np.zeros((len(texts), dim), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i] += np.random.default_rng(zlib.crc32(w.encode())).normal(size=dim)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(norms > 0, out / np.maximum(norms, 1e-9), 0.0).astype(np.float32)


def _hashed_words(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in word targets: each word's vector from its own hash and its left neighbour's (a
    word's state depends on its context, as a teacher's does)."""
    rows, spans = [], []
    for t in texts:
        ws = t.lower().split()
        spans.append((len(rows), len(rows) + len(ws)))
        for i, w in enumerate(ws):
            left = ws[i - 1] if i else ""
            v = np.random.default_rng(zlib.crc32(w.encode())).normal(size=WORD_TARGET_DIM)
            rows.append(v + 0.5 * np.random.default_rng(zlib.crc32(left.encode())).normal(size=WORD_TARGET_DIM))
    return np.asarray(rows, np.float16), np.asarray(spans, np.int64)


@pytest.mark.parametrize("kind", ["skipgram-birnn", "seq2seq"])
def test_a_tiny_teacher_run_lowers_each_new_term_and_keeps_the_vectors_shape(kind):
    torch.manual_seed(0)
    data = PairCorpus.from_utterances(read_corpus([EXAMPLE]))
    data = data.tokenized(Tokenizer.train(data.texts, vocab_size=300, seed=0), max_len=64)
    teacher = _hashed_teacher(data.texts)
    words, spans = _hashed_words(data.texts)
    data = dataclasses.replace(data, teacher=teacher, hard=mine(data, teacher, seed=0), words=words,
                               word_spans=aligned(spans, data.ids, data.word_starts, 64))
    assert (data.hard >= 0).any() and (data.word_spans[:, 1] > data.word_spans[:, 0]).mean() > 0.9
    cls = ENCODERS[kind]
    small = {"word_dim": 32} if kind == "skipgram-birnn" else {"emb_dim": 32}   # a quick run
    cfg = dataclasses.replace(cls.configure(300, {"dim": 32, "teacher_dim": teacher.shape[1]}),
                              hidden=32, listwise_weight=1.0, hard_weight=1.0, word_weight=1.0, **small)
    module = cls.build(cfg)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    idx = np.arange(len(data.pairs))
    seen: dict[str, list[float]] = {"listwise": [], "hard": [], "words": []}
    for epoch in range(8):
        parts = {k: [] for k in seen}
        for batch in module.batches(data, idx, 32, rng, shuffle=True):
            loss = module.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for k in parts:
                if k in module.loss_parts:
                    parts[k].append(float(module.loss_parts[k]))
        for k in seen:
            assert parts[k], f"no {k} term in epoch {epoch}"
            seen[k].append(float(np.mean(parts[k])))
    for k, values in seen.items():
        assert values[-1] < 0.85 * values[0], (k, values)
    module.eval()
    ids = torch.from_numpy(np.stack([np.pad(x[:10], (0, 10 - len(x[:10]))) for x in data.ids[:5]]))
    lengths = torch.tensor([min(len(x), 10) for x in data.ids[:5]])
    assert module.embed(ids, lengths).shape == (5, 32)


def test_distillation_first_trains_on_the_teacher_alone_and_validates_on_everything():
    data = PairCorpus.from_utterances(read_corpus([EXAMPLE]))
    data = data.tokenized(Tokenizer.train(data.texts, vocab_size=300, seed=0), max_len=64)
    data = dataclasses.replace(data, teacher=_hashed_teacher(data.texts))
    cls = ENCODERS["skipgram-birnn"]
    cfg = dataclasses.replace(cls.configure(300, {"dim": 32, "teacher_dim": 24}), word_dim=32, hidden=32,
                              distill_epochs=2)
    module = cls.build(cfg)
    batch = next(iter(module.batches(data, np.arange(len(data.pairs)), 16, np.random.default_rng(0), shuffle=True)))
    for epoch, teacher_only in ((0, True), (1, True), (2, False)):
        module.on_epoch_start(epoch, 8)
        module.train()
        loss = module.loss(batch)
        assert torch.isclose(loss, module.loss_parts["distillation"]) == teacher_only
        module.eval()   # validation reads every term, so the best epoch is chosen on all of them
        assert not torch.isclose(module.loss(batch), module.loss_parts["distillation"])


@pytest.mark.parametrize("tune", [True, False])
def test_the_word_vectors_stay_as_they_started_when_asked(tune):
    """`tune_words=False` keeps the BiRNN's input vectors (the teacher's pieces, cut by PCA) as
    they started for the whole training, so the words the corpus never holds stay in the same
    space as those it does (benchmarks/RESULTS.md, issue 30); by default they are tuned after
    the first epochs."""
    torch.manual_seed(0)
    data = PairCorpus.from_utterances(read_corpus([EXAMPLE]))
    data = data.tokenized(Tokenizer.train(data.texts, vocab_size=300, seed=0), max_len=64)
    data = dataclasses.replace(data, teacher=_hashed_teacher(data.texts))
    cls = ENCODERS["skipgram-birnn"]
    cfg = dataclasses.replace(cls.configure(300, {"dim": 32, "teacher_dim": 24}), word_dim=32, hidden=32,
                              tune_words=tune)
    module = cls.build(cfg)
    start = module.embedding.weight.detach().clone()
    rnn_start = module.rnn.forward_rnns[0].weight_ih_l0.detach().clone()
    epochs = 4
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3, fused=True)   # as `training/loop.py` builds it
    batch = next(iter(module.batches(data, np.arange(len(data.pairs)), 16, np.random.default_rng(0), shuffle=True)))
    module.train()
    for epoch in range(epochs):
        module.on_epoch_start(epoch, epochs)
        opt.zero_grad(set_to_none=True)
        module.loss(batch).backward()
        opt.step()
    moved = (module.embedding.weight.detach() - start).abs().max().item()
    assert (moved > 0) == tune, moved
    assert not torch.equal(module.rnn.forward_rnns[0].weight_ih_l0.detach(), rnn_start)   # the rest trains either way
