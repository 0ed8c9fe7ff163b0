"""`embed evaluate`: the probes run end to end on real (small) models and land in sane ranges."""

import json

import numpy as np
import pytest
from rich.console import Console

from embedder.storage.encode import encode_corpus
from embedder.errors import EmbedderError
from cli.quality import table
from embedder.evaluation.evaluate import evaluate
from embedder.evaluation.probes import BASELINE, CONTEXT_PROBES, _find_word, probe_word_order
from conftest import EXAMPLE, run_embed, swap_adjacent_words

SUBJECTS = ["phone", "laptop", "bike", "kettle", "printer", "camera", "heater", "router"]
QUESTIONS = ["how do i clean the {}", "why is my {} so loud", "where can i repair a {}"]
ANSWERS = ["wipe the {} with a damp cloth", "the fan inside the {} needs oil", "the shop on main street fixes every {}"]


def _corpus(path):
    lines = []
    for s in SUBJECTS:
        for q, a in zip(QUESTIONS, ANSWERS):
            lines += [f"Q: {q.format(s)}?", f"A: {a.format(s)}.", ""]
    path.write_text("\n".join(lines))
    return path  # 24 dialogues, 48 utterances


def _check_ranges(report, methods):
    assert report["methods"] == methods
    p = report["probes"]
    for m in methods:
        qa = p["qa_separation"]["results"][m]
        assert 0.0 <= qa["accuracy"] <= 1.0
        r = p["retrieval"]["results"][m]
        assert 0.0 < r["mrr"] <= 1.0
        assert 0.0 <= r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= 1.0
        wo = p["word_order"]["results"][m]
        assert 0.0 <= wo["accuracy"] <= 1.0 and 0.0 <= wo["paired_accuracy"] <= 1.0
        assert -1.0 <= p["context"]["results"][m]["score"] <= 2.0
    # a bag of words cannot see word order or context at all: exactly blind
    assert p["word_order"]["results"][BASELINE]["accuracy"] == pytest.approx(0.5)
    assert p["word_order"]["results"][BASELINE]["paired_accuracy"] == pytest.approx(0.5)
    assert p["word_order"]["results"][BASELINE]["order_shift"] == pytest.approx(0.0, abs=1e-6)
    assert p["context"]["results"][BASELINE]["score"] == pytest.approx(0.0, abs=1e-6)
    json.dumps(report)  # JSON-serialisable as it is
    table(report)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """(report, corpus, model folder, encode output folder): one small held-out run, trained once."""
    root = tmp_path_factory.mktemp("evaluate")
    corpus = _corpus(root / "small.txt")
    report = evaluate([corpus], epochs=1, dim=16, holdout=0.5, device="cpu", seed=0, model_out=root / "model")
    encode_corpus([corpus], root / "out", model=root / "model", device="cpu")
    return report, corpus, root / "model", root / "out"


def test_evaluate_corpus_held_out(held_out):
    report = held_out[0]
    src = report["source"]
    assert src["held_out"] is True and src["dialogues_eval"] == 12 and src["utterances_eval"] == 24
    assert src["dialogues_train"] == 12 and src["utterances_train"] == 24
    _check_ranges(report, ["seq2seq", "skipgram-birnn", BASELINE])
    assert report["dims"] == {"seq2seq": 16, "skipgram-birnn": 16, BASELINE: 16}
    assert report["probes"]["retrieval"]["queries"] == 12
    console = Console(record=True, width=200)
    console.print(table(report))
    text = console.export_text()
    assert "Q/A separation" in text and "tfidf-svd" in text and "held out" in text


def test_evaluate_output_folder_is_not_held_out(held_out):
    # the model's training part is half of this corpus: the report must not call it held out
    report = evaluate(out_dir=held_out[3], device="cpu", encoders=["seq2seq"])
    assert report["source"]["held_out"] in (None, False) and report["source"]["utterances_eval"] == 48
    _check_ranges(report, ["seq2seq", BASELINE])


def test_evaluate_errors(tmp_path):
    with pytest.raises(EmbedderError, match="either a corpus or"):
        evaluate()
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("Q: how are you?\nA: fine thanks.\n")
    with pytest.raises(EmbedderError, match="too few"):
        evaluate([tiny])
    with pytest.raises(EmbedderError, match="no such file"):
        evaluate([tmp_path / "missing.txt"])
    with pytest.raises(EmbedderError, match="not an `embed encode` output folder"):
        evaluate(out_dir=tmp_path)


def test_swap_keeps_punctuation_in_place():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = swap_adjacent_words("Can we fish from the bank, here?", rng)
        assert s.endswith("?") and "," in s and sorted(s.replace(",", "").replace("?", "").split()) == \
            sorted("Can we fish from the bank here".split())
        assert s != "Can we fish from the bank, here?"
    assert swap_adjacent_words("yes yes", rng) is None
    assert swap_adjacent_words("ok.", rng) is None


def test_context_probe_set_is_well_formed():
    for word, senses in CONTEXT_PROBES.items():
        assert len(senses) == 2
        for sentences in senses:
            assert len(sentences) == 3
            for s in sentences:
                assert s.split().count(word) == 1, (word, s)
    # the word is found among SentencePiece pieces, split or whole
    assert _find_word(["▁the", "▁ba", "nk", "▁is"], "bank") == [1, 2]
    assert _find_word(["▁the", "▁", "bank", "▁is"], "bank") == [2]
    assert _find_word(["▁the", "▁river"], "bank") is None


@pytest.mark.slow
def test_evaluate_example_corpus_held_out():
    """A full training run on 80% of the example corpus, probed on the other 20% (72 sentences,
    356 swapped copies): seq2seq sees word order, TF-IDF doesn't."""
    report = evaluate([EXAMPLE], device="cpu", seed=0)
    _check_ranges(report, ["seq2seq", "skipgram-birnn", BASELINE])
    p = report["probes"]
    assert p["word_order"]["sentences"] == 72 and p["word_order"]["pairs"] > 300
    # one direction of seq2seq's vectors tells an unseen sentence from its swapped copy (measured
    # 0.56-0.63 over training seeds and swaps; the bag of words is exactly 0.5, and two standard
    # errors over 356 pairs are 0.05). The BiRNN's scorer learns too little order from 272
    # training utterances in its 120 updates to pass this (0.50-0.56): on the 7k-sentence
    # benchmark it is the better of the two.
    assert p["word_order"]["results"]["seq2seq"]["paired_accuracy"] > 0.55
    for m in ("seq2seq", "skipgram-birnn"):
        assert p["word_order"]["results"][m]["order_shift"] > 1e-3  # swaps move the vectors
        assert p["qa_separation"]["results"][m]["accuracy"] > 0.6
        assert p["retrieval"]["results"][m]["mrr"] > 2 * p["retrieval"]["chance"]["mrr"]
    assert p["context"]["results"]["seq2seq"]["score"] > 0.0


def test_cli_evaluate_and_plot_on_output_folder(held_out, tmp_path):
    """The commands as a user runs them (registered in cli/main.py)."""
    pytest.importorskip("matplotlib")
    from cli.main import app

    if not any(getattr(c.callback, "__name__", "") == "evaluate" for c in app.registered_commands):
        pytest.skip("embed evaluate / plot are not registered in cli/main.py yet")
    out = held_out[3]
    report = json.loads(run_embed("evaluate", out, "--json", "--device", "cpu", "--encoders", "seq2seq").stdout)
    assert report["methods"] == ["seq2seq", BASELINE] and report["source"]["held_out"] in (None, False)
    run_embed("plot", out, "-o", tmp_path / "e.png", "--width", "320", "--height", "240")
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_embed("plot", out, "--encoder", "nope", "-o", tmp_path / "x.png", check=False)
    assert bad.returncode == 1 and "no vectors for encoder" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.png").exists()


def test_word_order_probe_is_blind_for_a_dense_bag_of_words():
    """A bag of words through dense float maths: a sentence and its swapped copy, encoded in
    different batches, may differ in the last bits. The probe must still call it blind (0.5),
    not learn the rounding."""
    from sklearn.feature_extraction.text import CountVectorizer

    rng = np.random.default_rng(0)
    rows = [{"text": " ".join(rng.choice(["the", "dog", "bit", "a", "man", "saw", "cat", "ran", "far", "home"],
                                         size=int(rng.integers(4, 9))))} for _ in range(60)]
    counts = CountVectorizer(token_pattern=r"[^\W_][\w'’-]*").fit([r["text"] for r in rows])
    W = rng.normal(size=(len(counts.vocabulary_), 32)).astype(np.float32)

    def dense_bag(texts):
        X = counts.transform(texts).toarray().astype(np.float32)
        return X @ W if len(texts) % 2 else (X * 1.0000001) @ W  # rounding differs between batches

    report = probe_word_order(rows, {"bag": dense_bag}, seed=0)
    assert report["pairs"] > report["sentences"]  # several copies per sentence
    r = report["results"]["bag"]
    assert r["accuracy"] == pytest.approx(0.5) and r["paired_accuracy"] == pytest.approx(0.5)
