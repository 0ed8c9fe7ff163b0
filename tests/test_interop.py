"""SageMaker interoperability through the command line, checked with SageMaker's own reader."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from embedder.data import recordio
from embedder.data.corpus import read_corpus
from embedder.data.tokenizer import Tokenizer
from conftest import EXAMPLE, run_embed
from test_bad_input import assert_clean_failure


@pytest.fixture(scope="module")
def sm():
    return pytest.importorskip("sagemaker_training.recordio",
                               reason="pip install 'sagemaker-training>=5.1' for the independent reader")


def _their_ids(sm, path):
    from sagemaker_training.record_pb2 import Record

    out = []
    with open(path, "rb") as f:
        for payload in sm._read_recordio(f):
            r = Record()
            r.ParseFromString(payload)
            out.append((list(r.features["source"].int32_tensor.values), list(r.features["target"].int32_tensor.values)))
    return out


def test_corpus_to_rec_and_back_keeps_every_pair(tmp_path, sm):
    exported = json.loads(run_embed("export", "recordio", EXAMPLE, "-o", tmp_path / "rec", "--val-fraction", "0.1",
                                    "--json").stdout)
    assert exported["train"] > exported["val"] > 0
    for name in ("train.rec", "val.rec", "vocab.src.json", "vocab.trg.json"):
        assert (tmp_path / "rec" / name).exists()
    pieces = recordio.read_vocab(tmp_path / "rec" / "vocab.src.json")
    assert pieces[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    ours = list(recordio.read_pairs(tmp_path / "rec" / "train.rec")) + list(recordio.read_pairs(tmp_path / "rec" / "val.rec"))
    theirs = _their_ids(sm, tmp_path / "rec" / "train.rec") + _their_ids(sm, tmp_path / "rec" / "val.rec")
    assert [(list(s), list(t)) for s, t in ours] == theirs
    # every (utterance → next utterance) pair of the corpus comes back, as the tokenizer normalises text
    utts = list(read_corpus([EXAMPLE]))
    texts = [u.text for u in utts]
    tok = Tokenizer.train(texts, seed=0)
    norm = lambda t: tok.decode(tok.encode([t])[0])
    expected = sorted((norm(a.text), norm(b.text)) for a, b in zip(utts, utts[1:]) if a.dialogue == b.dialogue)
    imported = json.loads(run_embed("import", "recordio", tmp_path / "rec" / "train.rec", "-o", tmp_path / "train.tsv",
                                    "--json").stdout)
    assert imported == {"pairs": exported["train"], "output": str(tmp_path / "train.tsv")}
    run_embed("import", "recordio", tmp_path / "rec" / "val.rec", "-o", tmp_path / "val.tsv")
    back = [tuple(l.split("\t")) for p in ("train.tsv", "val.tsv") for l in (tmp_path / p).read_text().splitlines()]
    assert sorted(back) == expected


def test_train_and_encode_from_rec(tmp_path):
    rec_dir = tmp_path / "rec"
    pairs = [([4, 5, 6], [7, 8]), ([9, 10], [11, 12])]
    recordio.write_pairs(rec_dir / "train.rec", pairs)
    recordio.write_vocab(rec_dir / "vocab.src.json",
                         ["<pad>", "<unk>", "<s>", "</s>", "how", "do", "i", "plug", "it", "where", "is", "the", "bank"])
    texts = [u.text for u in read_corpus([rec_dir / "train.rec"])]
    assert texts == ["how do i", "plug it", "where is", "the bank"]
    run_embed("train", rec_dir / "train.rec", "--vocab", rec_dir / "vocab.src.json", "-o", tmp_path / "m",
              "--epochs", "1", "--vocab-size", "1000", "--quiet")
    run_embed("encode", rec_dir / "train.rec", "--model", tmp_path / "m", "-o", tmp_path / "out", "--quiet")
    assert pq.read_table(tmp_path / "out" / "features.parquet").num_rows == 4


def test_vectors_as_dense_records(example_out, tmp_path, sm):
    run_embed("export", "recordio-vectors", example_out, "-o", tmp_path / "v.rec", "--encoder", "skipgram-birnn")
    t = pq.read_table(example_out / "features.parquet", columns=["id", "skipgram_birnn"])
    X = np.stack(t.column("skipgram_birnn").to_numpy(zero_copy_only=False))
    ids, Y = recordio.read_dense_vectors(tmp_path / "v.rec")
    np.testing.assert_array_equal(ids, t.column("id").to_numpy())
    np.testing.assert_array_equal(Y, X)
    from sagemaker_training.record_pb2 import Record
    with open(tmp_path / "v.rec", "rb") as f:
        first = next(iter(sm._read_recordio(f)))
    r = Record()
    r.ParseFromString(first)
    np.testing.assert_array_equal(np.asarray(r.features["values"].float32_tensor.values, np.float32), X[0])
    assert r.label["values"].float32_tensor.values[0] == ids[0]


def test_bad_rec_files_through_the_cli(tmp_path):
    vocab = ["<pad>", "<unk>", "<s>", "</s>", "a", "b"]
    recordio.write_vocab(tmp_path / "vocab.src.json", vocab)
    recordio.write_pairs(tmp_path / "ok.rec", [([4], [5]), ([4, 5], [5])])
    data = (tmp_path / "ok.rec").read_bytes()
    (tmp_path / "magic.rec").write_bytes(b"\x00" * 4 + data[4:])
    assert_clean_failure(run_embed("encode", tmp_path / "magic.rec", check=False), "magic.rec", "record 1")
    (tmp_path / "cut.rec").write_bytes(data[:-6])
    assert_clean_failure(run_embed("encode", tmp_path / "cut.rec", check=False), "cut.rec", "record 2")
    recordio.write_pairs(tmp_path / "oov.rec", [([4], [5]), ([4, 99], [5])])
    assert_clean_failure(run_embed("encode", tmp_path / "oov.rec", check=False), "oov.rec", "record 2")
    assert not list(tmp_path.glob("*.embed"))
