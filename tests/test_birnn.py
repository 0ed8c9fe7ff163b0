"""The skipgram-birnn encoder in the product: order-aware vectors, word-vector files, neighbours."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import embedder
from embedder.data.word2vec import piece_init
from conftest import EXAMPLE, run_embed
from test_pipeline import _answers_found


def test_both_columns_and_both_indexes(example_out):
    t = pq.read_table(example_out / "features.parquet")
    assert {"seq2seq", "skipgram_birnn"} <= set(t.column_names)
    assert (example_out / "seq2seq.faiss").exists() and (example_out / "skipgram-birnn.faiss").exists()
    meta = json.loads(t.schema.metadata[b"embedder"])
    assert set(meta["encoders"]) == {"seq2seq", "skipgram-birnn"}


def test_question_finds_its_answer_with_birnn(example_out):
    assert _answers_found(example_out, "skipgram-birnn") >= 0.8


def test_word_order_changes_the_vector(example_out):
    model = embedder.load(example_out / "model")
    a, b = "the dog bit the man", "the man bit the dog"
    X = model.encode([a, b], encoder="skipgram-birnn")
    assert float(X[0] @ X[1]) < 0.99
    # ... while a bag of their word vectors cannot tell them apart
    table = model.encoders["skipgram-birnn"].skipgram.numpy()
    ia, ib = model.tokenizer.encode([a, b])
    assert sorted(ia.tolist()) == sorted(ib.tolist())
    np.testing.assert_allclose(table[ia].mean(0), table[ib].mean(0), atol=1e-6)


def test_vectors_load_in_gensim_and_match(example_out, tmp_path):
    from gensim.models import KeyedVectors

    model = embedder.load(example_out / "model")
    table = model.encoders["skipgram-birnn"].skipgram.numpy()
    pieces = model.tokenizer.pieces()
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        run_embed("export", "word2vec", example_out / "model", "-o", tmp_path / name)
        kv = KeyedVectors.load_word2vec_format(str(tmp_path / name), binary=binary)
        assert len(kv) > 100
        for word in ("bank", "phone", "dog"):
            np.testing.assert_allclose(kv[word], table[pieces.index("\u2581" + word)], rtol=1e-6, atol=1e-7)


def test_neighbors_cli(example_out):
    hits = json.loads(run_embed("neighbors", example_out / "model", "bank", "-k", "5", "--json").stdout)
    assert len(hits) == 5 and all(h["word"] != "bank" for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]
    unseen = json.loads(run_embed("neighbors", example_out / "model", "bankzzqx", "-k", "3", "--json").stdout)
    assert len(unseen) == 3  # an unseen word still has a vector, from its pieces


def test_init_vectors_from_a_word2vec_file(tiny_corpus, tmp_path):
    from embedder.data.tokenizer import Tokenizer
    from embedder.data.word2vec import save_word2vec

    vec = tmp_path / "blazingtext.vec"
    rng = np.random.default_rng(0)
    words = ["Phone", "bank", "river", "zebra"]
    save_word2vec(vec, words, rng.normal(size=(4, 16)).astype(np.float32), binary=False)
    tok = Tokenizer.train([l for l in tiny_corpus.read_text().splitlines() if l], vocab_size=80)
    init = piece_init(tok, vec)
    assert init.shape == (len(tok), 16)
    matched = [p for i, p in enumerate(tok.pieces()) if np.isfinite(init[i]).all()]
    assert matched and all(p.lstrip("\u2581") in {"phone", "bank", "river"} for p in matched)
    assert np.isnan(init[:4]).all()
    model = embedder.train([tiny_corpus], out=tmp_path / "m", encoders=["skipgram-birnn"], epochs=1,
                           init_vectors=vec)
    assert model.encoders["skipgram-birnn"].cfg.word_dim == 16
    with pytest.raises(embedder.EmbedderError, match="none of its"):
        save_word2vec(tmp_path / "other.vec", ["qqqq"], np.ones((1, 4), np.float32), binary=False)
        piece_init(tok, tmp_path / "other.vec")


def test_pooling_is_the_mean_without_a_teacher_and_mean_and_max_with_one():
    """`auto` (the default) picks what measured best on each path (benchmarks/RESULTS.md, "Mean
    pooling"); an explicit choice is kept either way, and a wrong one is refused by name."""
    from embedder.encoders.birnn import BiRNNEncoder

    assert BiRNNEncoder.configure(500, {"dim": 32}).pooling == "mean"
    assert BiRNNEncoder.configure(500, {"dim": 32, "teacher_dim": 384}).pooling == "meanmax"
    assert BiRNNEncoder.configure(500, {"dim": 32, "pooling": "mean", "teacher_dim": 384}).pooling == "mean"
    assert BiRNNEncoder.configure(500, {"dim": 32, "pooling": "attention"}).pooling == "attention"
    with pytest.raises(embedder.EmbedderError, match="--pooling 'max': expected one of auto, mean, meanmax, attention"):
        BiRNNEncoder.check_options({"pooling": "max"})


@pytest.mark.parametrize("rnn,pooling", [("lstm", "attention"), ("gru", "meanmax")])
def test_other_cells_and_poolings(tiny_corpus, tmp_path, rnn, pooling):
    """An LSTM with attention pooling, and the mean and max that a teacher's models get: each
    trains, changes with word order and loads back as it was."""
    model = embedder.train([tiny_corpus], out=tmp_path / "m", encoders=["skipgram-birnn"], epochs=2,
                           rnn=rnn, pooling=pooling, dim=32)
    X = model.encode(["the dog bit the man", "the man bit the dog"], encoder="skipgram-birnn")
    assert X.shape == (2, 32) and not np.array_equal(X[0], X[1])  # order alone changes the vector
    again = embedder.load(tmp_path / "m")
    assert (again.encoders["skipgram-birnn"].cfg.rnn, again.encoders["skipgram-birnn"].cfg.pooling) == (rnn, pooling)
    np.testing.assert_array_equal(again.encode(["a b c"], encoder="skipgram-birnn"),
                                  model.encode(["a b c"], encoder="skipgram-birnn"))
    with pytest.raises(embedder.EmbedderError, match="--rnn 'rnn'"):
        embedder.train([tiny_corpus], out=tmp_path / "x", rnn="rnn")


def _mean_cosine(m: np.ndarray) -> float:
    unit = m / np.linalg.norm(m, axis=1, keepdims=True)
    return float(np.mean(unit @ unit.T))


def test_centring_removes_the_shared_direction_and_export_keeps_the_raw_vectors(example_out):
    """`centred` (what the BiRNN's embedding starts from) removes the direction that skip-gram
    vectors share and leaves unseen pieces at zero; the vectors the model keeps for
    `embed neighbors` and word2vec export are the skip-gram ones as trained."""
    from embedder.encoders.birnn import centred

    vectors = np.array([[1.0, 2.0], [3.0, 2.0], [0.0, 0.0]])
    out = centred(vectors)
    np.testing.assert_allclose(out, [[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # an unseen piece stays zero
    assert vectors[0, 0] == 1.0  # the input is not modified
    model = embedder.load(example_out / "model")
    sg = model.encoder("skipgram-birnn").skipgram.numpy()
    # the pieces skip-gram trained: those the corpus uses (the teacher's vocabulary holds many more)
    texts = [line[2:].strip() for line in EXAMPLE.read_text().splitlines() if line.strip()]
    trained = np.unique(np.concatenate(model.tokenizer.encode(texts)))
    sg = sg[trained]
    trained = np.abs(sg).sum(1) > 0
    # kept raw: they share a direction (0.34 from the teacher's start, as the README's job trains; over 0.3 without)...
    assert _mean_cosine(sg[trained]) > 0.15
    assert abs(_mean_cosine(centred(sg)[trained])) < 0.05  # ...which centring removes
