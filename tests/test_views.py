"""A file of single sentences: each is learnt from a stretch of itself, not matched to itself.

Without a teacher, on a corpus of sentences with no dialogues, every training pair was a line
paired with itself, which the contrastive terms solve by identity; the encoders trailed a fitted
bag of words on sentence relatedness (benchmarks/sentence_pairs.py). Such lines are now read
through a stretch of their words, where they are most of the corpus."""

import dataclasses

import numpy as np

import embedder
from embedder.data.corpus import read_corpus
from embedder.data.pairs import PairCorpus
from embedder.data.tokenizer import Tokenizer
from embedder.encoders.base import VIEWS_MIN_LONE, pair_batches, stretch
from conftest import EXAMPLE

SENTENCES = [
    "a man is playing a large flute on the stage", "a woman is slicing an onion in the kitchen",
    "two dogs are running through the deep snow", "the kids are playing football in the park",
    "a cat is sleeping on the warm windowsill", "a boy rides his red bicycle down the hill",
    "the chef is cooking rice in a big pan", "an old man is reading a newspaper outside",
]


def _corpus(tmp_path, text: str) -> PairCorpus:
    path = tmp_path / "c.txt"
    path.write_text(text)
    data = PairCorpus.from_utterances(read_corpus([path]))
    return data.tokenized(Tokenizer.train(data.texts, vocab_size=120, seed=0), max_len=64)


def _words(ids: np.ndarray, starts: np.ndarray) -> list[tuple[int, ...]]:
    cuts = [i for i in range(len(ids)) if starts[ids[i]] or i == 0] + [len(ids)]
    return [tuple(ids[a:b]) for a, b in zip(cuts, cuts[1:])]


def test_a_stretch_is_a_run_of_whole_words(tmp_path):
    data = _corpus(tmp_path, "".join(f"{s}\n\n" for s in SENTENCES))
    rng = np.random.default_rng(0)
    for ids in data.ids:
        words = _words(ids, data.word_starts)
        for _ in range(20):
            part = _words(stretch(ids, data.word_starts, rng), data.word_starts)
            assert max(2, len(words) // 4) <= len(part) <= max(3, len(words) // 2) < len(words)
            assert any(words[i:i + len(part)] == part for i in range(len(words)))  # contiguous, whole words
    short = np.concatenate(_words(data.ids[0], data.word_starts)[:3])  # three words: too short to cut
    assert np.array_equal(stretch(short, data.word_starts, rng), short)


def test_a_file_of_sentences_is_read_through_stretches_and_dialogues_are_not(tmp_path):
    sentences = _corpus(tmp_path, "".join(f"{s}\n\n" for s in SENTENCES))
    assert sentences.lone().all()
    idx = np.arange(len(sentences.pairs))
    seen = 0
    for batch in pair_batches(sentences, idx, 8, np.random.default_rng(0), shuffle=True, swap=None, views="tgt"):
        assert (batch["tgt_len"] < batch["src_len"]).all()  # every sentence here has 8+ words
        seen += len(batch["src"])
    assert seen == len(SENTENCES)
    # evaluation batches (no shuffling) and encoders that ask for no views read each line whole
    for shuffle, views in ((False, "tgt"), (True, None)):
        for batch in pair_batches(sentences, idx, 8, np.random.default_rng(0), shuffle=shuffle, swap=None, views=views):
            assert (batch["tgt_len"] == batch["src_len"]).all()

    dialogues = _corpus(tmp_path, EXAMPLE.read_text())  # question/answer dialogues: no views at all
    assert dialogues.lone().mean() < VIEWS_MIN_LONE
    idx = np.arange(len(dialogues.pairs))
    with_views = list(pair_batches(dialogues, idx, 32, np.random.default_rng(1), True, "src", views="src"))
    without = list(pair_batches(dialogues, idx, 32, np.random.default_rng(1), True, "src", views=None))
    for a, b in zip(with_views, without):
        assert all(np.array_equal(a[k], b[k]) for k in ("src", "tgt", "swap"))


def test_new_models_without_a_teacher_use_views_and_older_configs_do_not(tmp_path):
    from embedder.encoders.birnn import BiRNNConfig, BiRNNEncoder
    from embedder.encoders.seq2seq import Seq2Seq, Seq2SeqConfig

    for cls in (BiRNNEncoder, Seq2Seq):
        assert cls.configure(100, {"dim": 16}).self_views
        assert not cls.configure(100, {"dim": 16, "teacher_dim": 384}).self_views  # the teacher teaches meaning
    for config in (BiRNNConfig, Seq2SeqConfig):  # a config.json from before the field: as it was trained
        fields = {f.name: f for f in dataclasses.fields(config)}
        assert fields["self_views"].default is False
    path = tmp_path / "s.txt"
    path.write_text("".join(f"{s}\n\n" for s in SENTENCES * 4))
    model = embedder.train(path, tmp_path / "m", epochs=2, dim=16, seed=0, device="cpu")
    assert all(m.cfg.self_views for m in model.encoders.values())
    X = model.encode(SENTENCES, encoder="skipgram-birnn")
    assert np.isfinite(X).all() and X.shape == (len(SENTENCES), 16)
