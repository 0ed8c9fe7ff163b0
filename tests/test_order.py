"""The word-order objective: whole words trade places, and a downstream linear model can tell
natural order from a swapped copy on sentences the encoders never saw."""

import numpy as np
import pytest

import embedder
from embedder.evaluate import CONTEXT_PROBES, swap_adjacent_words
from embedder.order import changed, swap_words, word_starts
from conftest import EXAMPLE

PIECES = ["<pad>", "<unk>", "<s>", "</s>", "▁the", "▁dog", "▁b", "it", "▁man", "▁", "?"]


def _words(ids):
    text = "".join(PIECES[i] for i in ids)
    return text.replace("▁", " ").split()


def test_swap_words_moves_whole_words():
    starts = word_starts(PIECES)
    s = np.array([4, 5, 6, 7, 4, 8])  # ▁the ▁dog ▁b it ▁the ▁man: "bit" is two pieces
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        copies, broken = swap_words([s], starts, rng)
        t, pairs = copies[0], broken[0]
        words = _words(t)
        if " ".join(words) == "the bit dog the man":
            # ▁the | ▁b it | ▁dog | ▁the: the pairs on either side of each moved word broke
            assert pairs.tolist() == [0, 2, 3]
        assert sorted(words) == sorted(["the", "dog", "bit", "the", "man"])  # no word torn apart
        seen.add(" ".join(words))
    assert "the bit dog the man" in seen and "the man bit the dog" in seen  # neighbours and any two
    assert "the dog bit the man" in seen  # "the" with "the": a swap that changes nothing


def test_swap_words_short_and_unchangeable():
    starts = word_starts(PIECES)
    rng = np.random.default_rng(0)
    one_word = np.array([6, 7])          # "bit": swaps its two pieces
    copies, broken = swap_words([one_word], starts, rng)
    assert copies[0].tolist() == [7, 6] and broken[0].tolist() == [0]
    single = np.array([5])
    empty = np.zeros(0, dtype=np.int64)
    copies, broken = swap_words([single, empty], starts, rng)
    assert copies[0].tolist() == [5] and copies[1].tolist() == [] and [len(b) for b in broken] == [0, 0]
    assert changed([single, empty, one_word], [single, empty, np.array([7, 6])]).tolist() == [False, False, True]


@pytest.fixture(scope="module")
def model(example_out):
    return embedder.load(example_out / "model", device="cpu")


def _swapped(sentences, seed):
    rng = np.random.default_rng(seed)
    pairs = [(s, swap_adjacent_words(s, rng)) for s in sentences]
    return [p for p in pairs if p[1] is not None]


@pytest.mark.parametrize("encoder", ["seq2seq", "skipgram-birnn"])
def test_linear_model_tells_natural_order_on_unseen_sentences(model, encoder):
    """Fit a logistic regression on the example corpus (originals vs copies with two neighbouring
    words swapped) and score sentences that are not in it: the built-in context-probe sentences.
    A bag of words scores exactly 0.5 here; the encoders must do clearly better."""
    from sklearn.linear_model import LogisticRegression

    train_text = [line[2:].strip() for line in EXAMPLE.read_text().splitlines() if len(line.split()) >= 4]
    test_text = [s for senses in CONTEXT_PROBES.values() for sense in senses for s in sense]
    assert not set(test_text) & set(train_text)

    def xy(pairs):
        X = np.vstack([model.encode([a for a, _ in pairs], encoder=encoder),
                       model.encode([b for _, b in pairs], encoder=encoder)])
        return X, np.r_[np.ones(len(pairs)), np.zeros(len(pairs))]

    X, y = xy(_swapped(train_text, 0) + _swapped(train_text, 1))
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(X, y)
    Xt, yt = xy(_swapped(test_text, 2))
    acc = clf.score(Xt, yt)
    assert acc > 0.6, f"{encoder}: word-order accuracy {acc:.3f} on unseen sentences"
