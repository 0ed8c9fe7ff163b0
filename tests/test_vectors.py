"""`embed vectors`: texts on standard input, vectors on standard output, for shell pipelines;
and empty query texts rejected with one line by every command that takes one."""

import io
import json
import os
import select
import subprocess
import sys

import numpy as np
import pytest

import embedder
from conftest import ROOT, run_embed
from test_bad_input import assert_clean_failure

TEXTS = ["How do I charge my phone?", "Walk down the hill past the old mill.", "the dog bit the man"]


def _vectors(model_dir, *args: str, stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(f"printf %s {_shell_quote(stdin.decode())} | {sys.executable} -m cli.main vectors "
                          f"{model_dir} " + " ".join(args), shell=True, capture_output=True, cwd=ROOT, timeout=300)


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


@pytest.mark.parametrize("encoder", ["seq2seq", "skipgram-birnn"])
def test_piped_vectors_match_model_encode(example_out, encoder):
    model = embedder.load(example_out / "model", device="cpu")
    expected = model.encode(TEXTS, encoder=encoder)
    stdin = ("\n".join(TEXTS) + "\n").encode()
    tsv = _vectors(example_out / "model", "--encoder", encoder, "--device", "cpu", stdin=stdin)
    assert tsv.returncode == 0, tsv.stderr
    X = np.array([[float(x) for x in line.split("\t")] for line in tsv.stdout.decode().splitlines()], dtype=np.float32)
    np.testing.assert_allclose(X, expected, atol=1e-6)
    if encoder != "seq2seq":
        return  # the other formats write whatever vectors they are given: one encoder shows them
    jsonl = _vectors(example_out / "model", "--encoder", encoder, "--format", "jsonl", stdin=stdin)
    rows = [json.loads(line) for line in jsonl.stdout.decode().splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows], dtype=np.float32), expected, atol=1e-6)
    npy = _vectors(example_out / "model", "--encoder", encoder, "--format", "npy", stdin=stdin)
    np.testing.assert_allclose(np.load(io.BytesIO(npy.stdout), allow_pickle=False), expected, atol=1e-6)


def test_first_vector_comes_back_before_the_input_ends(example_out):
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "vectors", str(example_out / "model"), "--device", "cpu"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ})
    try:
        proc.stdin.write(b"where is the river bank?\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "no vector within 120 s while standard input was still open"
        first = proc.stdout.readline().decode()
        assert len(first.split("\t")) == 256
        proc.stdin.write(b"a second line\n")
        proc.stdin.close()
        assert len(proc.stdout.read().decode().splitlines()) == 1
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def test_empty_texts_are_refused(example_out):
    model = example_out / "model"
    assert_clean_failure(run_embed("query", example_out, "   ", check=False), "the query text is empty")
    assert_clean_failure(run_embed("generate", model, "", check=False), "the text to answer is empty")
    proc = _vectors(model, stdin=b"fine\n\nalso fine\n")
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr
    assert b"<stdin>:2: empty text" in proc.stderr
    assert len(proc.stdout.decode().splitlines()) == 1  # the line before it was answered
    bad = _vectors(model, "--format", "csv", stdin=b"x\n")
    assert bad.returncode == 1 and b"--format 'csv'" in bad.stderr
