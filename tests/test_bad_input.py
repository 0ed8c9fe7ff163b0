"""Every user mistake: one clear line on stderr naming the file, exit 1, nothing half-written."""

import json
import shutil

import pytest

from conftest import run_embed


def assert_clean_failure(proc, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("name, content, needle", [
    ("binary.txt", b"\x7fELF\x02\x01\x00\x00\x00\x00", "binary.txt:1: contains NUL bytes"),
    ("latin1.txt", "caf\u00e9 ol\u00e9?\n".encode("latin-1"), "latin1.txt:1: not valid UTF-8"),
    ("empty.txt", b"", "empty.txt: empty corpus"),
    ("long.txt", b"short?\n" + b"word " * 5000 + b"\n", "long.txt:2: line is 25,000 characters"),
])
def test_bad_corpus_leaves_no_output(tmp_path, name, content, needle):
    corpus = tmp_path / name
    corpus.write_bytes(content)
    proc = run_embed("encode", corpus, "--quiet", check=False)
    assert_clean_failure(proc, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no output, no temporaries


def test_missing_file_and_directory(tmp_path):
    assert_clean_failure(run_embed("encode", tmp_path / "nope.txt", check=False), "nope.txt: no such file")
    assert_clean_failure(run_embed("encode", tmp_path, check=False), "is a directory")


def test_model_from_another_version(example_out, tiny_corpus, tmp_path):
    shutil.copytree(example_out / "model", tmp_path / "m")
    mf = tmp_path / "m" / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["format_version"] = 99
    manifest["embedder_version"] = "9.0.0"
    mf.write_text(json.dumps(manifest))
    assert_clean_failure(run_embed("generate", tmp_path / "m", "hello", check=False),
                         "model folder format 99", "retrain")
    manifest["format_version"] = 3  # the last format whose vectors held the order score
    manifest["embedder_version"] = "0.1.0"
    mf.write_text(json.dumps(manifest))
    assert_clean_failure(run_embed("encode", tiny_corpus, "--model", tmp_path / "m", "-o", tmp_path / "o", check=False),
                         "model folder format 3", "retrain")
    assert not (tmp_path / "o").exists()
    assert_clean_failure(run_embed("generate", tmp_path / "nomodel", "hello", check=False), "no such model folder")


def test_damaged_model_and_index(example_out, tiny_corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(example_out / "model", tmp_path / "model")
    run_embed("encode", tiny_corpus, "--model", tmp_path / "model", "-o", out, "--quiet")
    index = out / "seq2seq.faiss"
    index.write_bytes(index.read_bytes()[:100])
    assert_clean_failure(run_embed("query", out, "phone", check=False), "seq2seq.faiss: not a readable FAISS index")
    weights = tmp_path / "model" / "seq2seq" / "model.safetensors"
    weights.write_bytes(b"garbage" * 10)
    assert_clean_failure(run_embed("query", out, "phone", check=False), "model.safetensors")


def test_bad_options(tiny_corpus, tmp_path):
    assert_clean_failure(run_embed("train", tiny_corpus, "-o", tmp_path / "m", "--device", "tpu", check=False),
                         "--device 'tpu'")
    assert_clean_failure(run_embed("train", tiny_corpus, "-o", tmp_path / "m", "--encoders", "bert", check=False),
                         "unknown encoder bert")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args, needle", [
    (["train", "{corpus}", "-o", "{tmp}/m", "--epochs", "-1"], "--epochs -1: must be at least 0"),
    (["train", "{corpus}", "-o", "{tmp}/m", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["train", "{corpus}", "-o", "{tmp}/m", "--dim", "1"], "--dim 1: must be at least 2"),
    (["train", "{corpus}", "-o", "{tmp}/m", "--vocab-size", "10"], "--vocab-size 10: must be at least 64"),
    (["encode", "{corpus}", "-o", "{tmp}/out", "--seed", "-3"], "--seed -3: must be at least 0"),
    (["export", "recordio", "{corpus}", "-o", "{tmp}/rec", "--val-fraction", "1.5"], "--val-fraction 1.5: must lie in"),
    (["evaluate", "{corpus}", "--holdout", "0"], "--holdout 0.0: must lie in (0.0, 1.0)"),
])
def test_numeric_options_are_range_checked(tiny_corpus, tmp_path, args, needle):
    args = [a.format(corpus=tiny_corpus, tmp=tmp_path) for a in args]
    assert_clean_failure(run_embed(*args, check=False), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == [tiny_corpus.name]  # nothing written


def test_help_mistakes_and_empty_texts_answer_without_loading_torch(tmp_path):
    """`embed --help`, typer's own refusals and an empty text come back at once: importing the
    package does not bring torch (about two seconds) until a model is needed."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys\nfrom cli.main import main\nsys.argv = sys.argv[1:]\ntry:\n    main()\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    for argv, said in ((["embed", "--help"], "Usage"), (["embed", "query", "--no-such-option"], "No such option"),
                       (["embed", "query", str(tmp_path), "  "], "the query text is empty"),
                       (["embed", "generate", str(tmp_path), ""], "the text to answer is empty")):
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT,
                              timeout=60)
        assert said in proc.stdout + proc.stderr, (argv, proc.stdout, proc.stderr)
        assert proc.stdout.strip().splitlines()[-1] == "False", (argv, proc.stdout, proc.stderr)
