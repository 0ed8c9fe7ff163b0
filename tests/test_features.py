"""features.parquet → (X, meta), and the scikit-learn transformer, on a small model trained once."""

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

import embedder
from embedder.storage.encode import encode_corpus
from embedder.errors import EmbedderError
from embedder.features import load_features
from embedder.sklearn import EmbeddingTransformer

# Short dialogues in two topics; enough lines for a 3-fold split of questions vs answers.
TOPICS = {
    "phone": ("how do i charge my phone", "plug the cable into the wall socket"),
    "bank": ("can i get a loan from the bank", "fill in the form at the counter"),
    "river": ("where is the river bank", "walk down the hill past the mill"),
    "match": ("who won the football match", "the home team won by two goals"),
    "light": ("how do i turn on the light", "press the switch by the door"),
    "court": ("when is the tennis court free", "it is free every morning"),
}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(model folder, encode output folder): both encoders, dim 32, two epochs."""
    root = tmp_path_factory.mktemp("small")
    corpus = root / "small.txt"
    lines = []
    for i in range(3):
        for q, a in TOPICS.values():
            lines += [f"Q: {q} {'today' if i == 1 else 'now' if i == 2 else ''}".rstrip() + "?", f"A: {a}.", ""]
    corpus.write_text("\n".join(lines))
    model = embedder.train([corpus], out=root / "model", dim=32, epochs=2, seed=0, device="cpu")
    encode_corpus([corpus], root / "out", model=model, device="cpu")
    return root / "model", root / "out"


def test_load_features_shapes(small):
    _, out = small
    X, meta = load_features(out)
    assert X.dtype == np.float32 and X.shape == (36, 64)
    assert list(meta.columns) == ["id", "dialogue", "position", "role", "text", "seq2seq_order",
                                  "skipgram_birnn_order"]
    assert meta["seq2seq_order"].between(0, 1).all() and meta["skipgram_birnn_order"].dtype == np.float32
    assert set(meta["role"]) == {"question", "answer"} and meta["id"].tolist() == list(range(36))
    X1, _ = load_features(out / "features.parquet", encoders="seq2seq")
    X2, _ = load_features(out, encoders=["skipgram_birnn"])  # the column name works too
    np.testing.assert_array_equal(np.hstack([X1, X2]), X)
    X21, _ = load_features(out, encoders=["skipgram-birnn", "seq2seq"])
    np.testing.assert_array_equal(X21, np.hstack([X2, X1]))
    np.testing.assert_allclose(np.linalg.norm(X1, axis=1), 1.0, atol=1e-5)


def test_load_features_errors(small, tmp_path):
    _, out = small
    with pytest.raises(EmbedderError, match=r"no vectors for encoder 'bert'.*seq2seq.*skipgram-birnn"):
        load_features(out, encoders="bert")
    with pytest.raises(EmbedderError, match="no such file"):
        load_features(tmp_path / "nowhere")
    with pytest.raises(EmbedderError, match="no features.parquet"):
        load_features(tmp_path)
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(EmbedderError, match="not a readable Parquet file"):
        load_features(tmp_path / "bad.parquet")


def test_transformer_matches_model(small):
    model_dir, out = small
    t = EmbeddingTransformer(str(model_dir), encoder="skipgram-birnn", batch_size=4)
    assert t.fit(["anything"]) is t
    texts = ["how do i charge my phone?", "press the switch by the door."]
    X = t.transform(texts)
    assert X.dtype == np.float32 and X.shape == (2, 32)
    np.testing.assert_allclose(X, embedder.load(model_dir, device="cpu").encode(texts, encoder="skipgram-birnn"),
                               atol=1e-5)
    import pandas as pd
    np.testing.assert_allclose(t.transform(pd.Series(texts)), X, atol=1e-6)
    np.testing.assert_allclose(t.transform(np.array(texts)), X, atol=1e-6)
    assert t.transform([]).shape == (0, 32)
    names = t.get_feature_names_out()
    assert len(names) == 32 and names[0] == "skipgram_birnn_0"


def test_transformer_input_errors(small):
    model_dir, _ = small
    t = EmbeddingTransformer(str(model_dir))
    with pytest.raises(EmbedderError, match="one string"):
        t.transform("just one text")
    with pytest.raises(EmbedderError, match="item 1 is int"):
        t.transform(["fine", 3])
    with pytest.raises(EmbedderError, match="not in this model"):
        EmbeddingTransformer(str(model_dir), encoder="bert").fit(["x"])
    with pytest.raises(EmbedderError, match="no such model folder"):
        EmbeddingTransformer("/nonexistent/model").fit(["x"])
    # scikit-learn's convention: bad input is a ValueError, so generic callers catch it too
    with pytest.raises(ValueError, match="1-D sequence"):
        t.transform([["a", "b"], ["c", "d"]])


def test_transformer_params_clone_pickle(small):
    model_dir, _ = small
    t = EmbeddingTransformer(str(model_dir), encoder="seq2seq", batch_size=8)
    assert t.get_params() == {"model_dir": str(model_dir), "encoder": "seq2seq", "batch_size": 8, "device": "auto"}
    t.set_params(encoder="skipgram-birnn")
    assert t.encoder == "skipgram-birnn"
    c = clone(t)
    assert c is not t and c.get_params() == t.get_params()
    X = t.fit_transform(["where is the river bank?"])
    blob = pickle.dumps(t)
    assert len(blob) < 2000  # the torch model stays behind
    u = pickle.loads(blob)
    np.testing.assert_allclose(u.transform(["where is the river bank?"]), X, atol=1e-6)


def test_pipeline_cross_val_on_raw_text(small):
    model_dir, out = small
    _, meta = load_features(out)
    texts = meta["text"].str.replace("?", "", regex=False)
    y = (meta["role"] == "question").to_numpy()
    pipe = Pipeline([("embed", EmbeddingTransformer(str(model_dir))), ("clf", LogisticRegression(max_iter=1000))])
    scores = cross_val_score(pipe, texts, y, cv=StratifiedKFold(3, shuffle=True, random_state=0), n_jobs=2)
    assert scores.shape == (3,) and all(0.0 <= s <= 1.0 for s in scores)
    pipe.fit(texts.tolist(), y)
    assert pipe.predict(["how do i charge my phone"]).shape == (1,)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_png(small, tmp_path):
    pytest.importorskip("matplotlib")
    from embedder.evaluation.plot import plot

    _, out = small
    drawn = plot(out, tmp_path / "e.png", encoder="skipgram-birnn", width=640, height=481)
    assert _png_size(Path(drawn["output"])) == (640, 481)
    assert drawn["encoder"] == "skipgram-birnn" and drawn["format"] == "png"
    assert not list(tmp_path.glob(".*tmp"))
    drawn = plot(out, tmp_path / "pca.png", width=300, height=200, method="PCA", color="dialogue")
    assert _png_size(Path(drawn["output"])) == (300, 200) and drawn["map"] == "PCA"
    with pytest.raises(EmbedderError, match="no vectors for encoder"):
        plot(out, tmp_path / "x.png", encoder="nope")
    with pytest.raises(EmbedderError, match="no column 'label'"):
        plot(out, tmp_path / "x.png", color="label")
    with pytest.raises(EmbedderError, match="--width 50"):
        plot(out, tmp_path / "x.png", width=50)
    assert not (tmp_path / "x.png").exists()


def _features_with_a_role_direction(path, n=400, dim=64, seed=0):
    """A features file whose roles differ along one direction only, hidden under larger noise in
    every other direction, plus a user's label column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from embedder.storage.parquet import FeatureWriter

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2 == 0
    X = rng.normal(size=(n, dim)) * 3.0
    X[:, 7] = np.where(y, 1.0, -1.0) + rng.normal(scale=0.3, size=n)  # the only role signal
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    path.mkdir()
    w = FeatureWriter(path / "features.parquet", {"seq2seq": dim}, "test")
    w.write({"id": np.arange(n), "dialogue": np.arange(n) // 2, "position": np.arange(n) % 2,
             "role": np.where(y, "question", "answer"), "text": [f"utterance {i}" for i in range(n)]}, {"seq2seq": X})
    w.close()
    t = pq.read_table(path / "features.parquet")
    pq.write_table(t.append_column("label", pa.array(np.arange(n) % 3)), path / "features.parquet")
    return path


def test_plot_role_panel_finds_the_separating_direction(tmp_path):
    """The role panel's axis is the one direction that tells questions from answers, and its
    title's accuracy is that probe's cross-validated accuracy; the neighbourhood map alone would
    show nothing of it."""
    pytest.importorskip("matplotlib")
    from embedder.evaluation.plot import plot, role_axes

    out = _features_with_a_role_direction(tmp_path / "f")
    X, meta = load_features(out)
    roles = meta["role"].to_numpy()
    R, acc = role_axes(X, roles, meta["dialogue"].to_numpy())
    assert acc > 0.9
    q = roles == "question"
    assert min(R[q, 0].min(), R[~q, 0].min()) < 0 < max(R[q, 0].max(), R[~q, 0].max())
    assert abs(R[q, 0].mean() - R[~q, 0].mean()) > 2 * (R[q, 0].std() + R[~q, 0].std()) / 2
    drawn = plot(out, tmp_path / "l.png", color="label", width=400, height=200)
    assert drawn["role_accuracy"] == pytest.approx(acc) and drawn["color"] == "label"
    assert _png_size(Path(drawn["output"])) == (400, 200)


def test_plot_of_the_bundled_corpus_shows_questions_apart_from_answers(example_out, tmp_path):
    """What a new user's first plot says: on the README's first output, the role panel's probe
    tells questions from answers (cross-validated over whole dialogues), for both encoders. The
    role term of training keeps that direction in the vector: without it the probe read 0.69."""
    pytest.importorskip("matplotlib")
    from embedder.evaluation.plot import plot

    for encoder in ("seq2seq", "skipgram-birnn"):
        drawn = plot(example_out, tmp_path / f"{encoder}.png", encoder=encoder, width=640, height=320)
        assert drawn["role_accuracy"] > 0.8, (encoder, drawn["role_accuracy"])
        assert _png_size(Path(drawn["output"])) == (640, 320)


def test_plot_html_is_a_standalone_page_with_hover_text(small, tmp_path):
    pytest.importorskip("plotly")
    from embedder.evaluation.plot import plot

    _, out = small
    drawn = plot(out, tmp_path / "e.html", width=900, height=450)
    page = (tmp_path / "e.html").read_text(encoding="utf-8")
    assert drawn["format"] == "html" and page.lstrip().lower().startswith("<!doctype html>")
    assert '<script src="http' not in page and "Plotly.newPlot" in page  # plotly.js inlined: works offline
    assert "where is the river bank?" in page  # hover text
    assert "linear probe accuracy" in page
