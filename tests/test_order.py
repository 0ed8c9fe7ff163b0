"""The word-order objective: whole words trade places, the pairs a swap broke are labelled, and
the order coordinate of a trained model flags swaps in sentences it never saw."""

import numpy as np
import pytest

import embedder
from embedder.data.tokenizer import word_starts
from embedder.encoders.order import changed, swap_words
from embedder.evaluation.probes import CONTEXT_PROBES
from conftest import EXAMPLE, ORDER_ATOL, swap_adjacent_words

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


def test_order_score_flags_swapped_words_in_unseen_sentences(model):
    """The word-order score is higher for a copy with two neighbouring words swapped than for the
    sentence itself, on sentences that are not in the example corpus (the built-in context-probe
    sentences, 84 of them). A bag of words could not tell the two apart at all.

    Only seq2seq is held to it on this corpus: the BiRNN's scorer, trained on the example
    corpus's 344 lines, is too close to chance for 84 sentences to tell (it needs more text:
    see benchmarks/RESULTS.md)."""
    train_text = {line[2:].strip() for line in EXAMPLE.read_text().splitlines()}
    test_text = [s for senses in CONTEXT_PROBES.values() for sense in senses for s in sense]
    assert not set(test_text) & train_text
    pairs = _swapped(test_text, 2)
    a = model.order_score([p[0] for p in pairs], encoder="seq2seq")
    b = model.order_score([p[1] for p in pairs], encoder="seq2seq")
    assert len(pairs) == 84 and a.dtype == np.float32 and np.all((a >= 0) & (a <= 1) & (b >= 0) & (b <= 1))
    wins = float(np.mean(b > a))
    assert wins > 0.6, f"the swapped copy scored higher in only {wins:.0%} of the sentences"


def test_order_score_is_its_own_column_and_not_in_the_vector(model, example_out):
    """The score lives in a float32 column per encoder, named in the schema metadata, and equals
    `Model.order_score`; the vectors hold meaning only (every coordinate within the spread of the
    others, none pinned to the score), and still tell a sentence from its swapped copy."""
    import pyarrow.parquet as pq
    from embedder.storage.parquet import metadata

    path = example_out / "features.parquet"
    meta = metadata(path)
    t = pq.read_table(path)
    texts = t.column("text").to_pylist()[:50]
    for name, info in meta["encoders"].items():
        col = info["order_column"]
        assert t.schema.field(col).type == "float"
        np.testing.assert_allclose(t.column(col).to_numpy()[:50], model.order_score(texts, encoder=name), atol=ORDER_ATOL)
        X = model.encode(texts, encoder=name)
        assert X.shape[1] == model.dim(name) == info["dim"]
        score = model.order_score(texts, encoder=name)
        for j in range(X.shape[1]):  # the old layout's last coordinate was an affine map of the score
            assert abs(np.corrcoef(X[:, j], score)[0, 1]) < 0.99
        pairs = _swapped(texts, 3)
        A = model.encode([p[0] for p in pairs], encoder=name)
        B = model.encode([p[1] for p in pairs], encoder=name)
        assert np.all(np.sum(A * B, axis=1) < 0.9999), name  # the geometry sees the swap
    from embedder.features import load_features

    X, frame = load_features(example_out, encoders="seq2seq")
    assert "seq2seq_order" in frame and "skipgram_birnn_order" not in frame
    np.testing.assert_allclose(frame["seq2seq_order"].to_numpy()[:50], t.column("seq2seq_order").to_numpy()[:50])


def test_order_scorer_in_bfloat16_gives_the_float32_scores(model):
    """Scoring for inference multiplies the scorer's wide first layer in bfloat16 where the CPU
    does so natively; the probabilities are the float32 ones to within 0.01, and training keeps
    float32 (with gradients, the float32 path runs)."""
    import torch

    from embedder.encoders.batching import length_mask, pad

    texts = [s for senses in CONTEXT_PROBES.values() for sense in senses for s in sense]
    for name in model.encoders:
        module = model.encoder(name)
        if module.order is None:
            continue
        src, lens = pad(model.tokens(texts, encoder=name))
        captured = {}
        hook = module.order.norm.register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
        with torch.inference_mode():
            module.vectors_and_order(src, lens)
        hook.remove()
        scorer, states = module.order, captured["x"]
        mask = length_mask(lens, states.shape[1], states.device)
        with torch.no_grad():
            normed = scorer.norm(states)
            exact = scorer.pair(torch.cat([normed[:, :-1], normed[:, 1:]], -1)).squeeze(-1)
            low = scorer._pair_bf16(normed).squeeze(-1)
        valid = (mask[:, 1:] & mask[:, :-1])
        assert torch.sigmoid(exact[valid]).sub(torch.sigmoid(low[valid])).abs().max() < 0.01
        with torch.enable_grad():
            trained, _ = scorer.pair_logits(states.clone().requires_grad_(), mask)
        assert torch.allclose(trained.detach(), exact, atol=1e-5)
