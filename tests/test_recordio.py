"""SageMaker RecordIO-protobuf: checked against SageMaker's own code, and against bad files.

The independent implementation is AWS's `sagemaker-training` toolkit (the library inside
SageMaker's training containers): its `recordio` module frames and reads records and writes
dense tensors (`_write_numpy_to_dense_tensor`, the same code as the SageMaker Python SDK v2's
`write_numpy_to_dense_tensor`), and its `record_pb2` is protoc's output for `record.proto`.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from embedder.data import recordio
from embedder.errors import EmbedderError

PAIRS = [
    ([5, 6, 7], [8, 9]),
    ([4], [4, 4, 4, 4, 4]),
    ([], [10]),  # an empty side survives as an empty sequence
    (list(range(4, 104)), [2, 11, 3]),
]


@pytest.fixture(scope="module")
def sm():
    """SageMaker's own RecordIO code, or a skip that says how to get it."""
    return pytest.importorskip(
        "sagemaker_training.recordio",
        reason="independent SageMaker implementation missing: pip install 'sagemaker-training>=5.1'")


@pytest.fixture(scope="module")
def sm_record(sm):
    from sagemaker_training.record_pb2 import Record

    return Record


def _their_records(sm, sm_record, path: Path) -> list:
    records = []
    with open(path, "rb") as f:
        for payload in sm._read_recordio(f):
            record = sm_record()
            record.ParseFromString(payload)
            records.append(record)
    return records


def _assert_pairs_equal(got, expected) -> None:
    assert len(got) == len(expected)
    for (gs, gt), (es, et) in zip(got, expected):
        assert np.array_equal(gs, np.asarray(es, dtype=np.int32)) and gs.dtype == np.int32
        assert np.array_equal(gt, np.asarray(et, dtype=np.int32)) and gt.dtype == np.int32


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---- against SageMaker's implementation -----------------------------------------------------


def test_record_proto_is_sagemakers_field_for_field(sm):
    from google.protobuf import descriptor_pb2
    from sagemaker_training import record_pb2

    theirs = descriptor_pb2.FileDescriptorProto.FromString(record_pb2.DESCRIPTOR.serialized_pb)
    assert recordio.RECORD_PROTO_FILE == theirs


def test_pairs_we_write_are_read_by_sagemaker(tmp_path, sm, sm_record):
    path = tmp_path / "train.rec"
    assert recordio.write_pairs(path, PAIRS) == len(PAIRS)
    records = _their_records(sm, sm_record, path)
    assert [list(r.features["source"].int32_tensor.values) for r in records] == [s for s, _ in PAIRS]
    assert [list(r.features["target"].int32_tensor.values) for r in records] == [t for _, t in PAIRS]
    assert all(sorted(r.features) == ["source", "target"] and not r.label for r in records)


def test_pairs_sagemaker_writes_are_read_by_us(tmp_path, sm, sm_record):
    # The layout of SageMaker seq2seq's create_vocab_proto.py, through SageMaker's own classes.
    buffer = io.BytesIO()
    for source, target in PAIRS:
        record = sm_record()
        record.features["source"].int32_tensor.values.extend(source)
        record.features["target"].int32_tensor.values.extend(target)
        sm._write_recordio(buffer, record.SerializeToString())
    path = tmp_path / "theirs.rec"
    path.write_bytes(buffer.getvalue())
    _assert_pairs_equal(list(recordio.read_pairs(path, vocab_size=200)), PAIRS)


def test_dense_vectors_are_byte_identical_to_sagemakers(tmp_path, sm):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 13)).astype(np.float32)
    ids = rng.permutation(10_000)[:50].astype(np.int64)
    ours = tmp_path / "ours.rec"
    assert recordio.write_dense_vectors(ours, ids, vectors) == 50
    theirs = io.BytesIO()
    sm._write_numpy_to_dense_tensor(theirs, vectors, ids.astype(np.float32))
    assert ours.read_bytes() == theirs.getvalue()


def test_dense_vectors_we_write_are_read_by_sagemaker(tmp_path, sm, sm_record):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((20, 7)).astype(np.float32)
    ids = np.arange(100, 120, dtype=np.int64)
    path = tmp_path / "vectors.rec"
    recordio.write_dense_vectors(path, ids, vectors)
    records = _their_records(sm, sm_record, path)
    got = np.array([r.features["values"].float32_tensor.values for r in records], dtype=np.float32)
    labels = [r.label["values"].float32_tensor.values[0] for r in records]
    assert np.array_equal(got, vectors)
    assert labels == ids.tolist()


@pytest.mark.parametrize("dtype, label_dtype", [(np.float32, np.float32), (np.float64, np.float64),
                                                (np.float64, np.int64)])
def test_dense_vectors_sagemaker_writes_are_read_by_us(tmp_path, sm, dtype, label_dtype):
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((30, 5)).astype(dtype)
    labels = np.arange(30, dtype=label_dtype) * 3
    buffer = io.BytesIO()
    sm._write_numpy_to_dense_tensor(buffer, vectors, labels)
    path = tmp_path / "theirs.rec"
    path.write_bytes(buffer.getvalue())
    ids, got = recordio.read_dense_vectors(path)
    assert ids.dtype == np.int64 and ids.tolist() == labels.astype(np.int64).tolist()
    assert got.dtype == np.float32 and np.array_equal(got, vectors.astype(np.float32))


def test_sagemaker_reads_our_multi_part_free_frames_identically(tmp_path, sm):
    payloads = [b"", b"a", b"ab", b"abc", b"abcd", b"abcde" * 99]
    path = tmp_path / "raw.rec"
    recordio.write_payloads(path, payloads)
    with open(path, "rb") as f:
        assert list(sm._read_recordio(f)) == payloads
    buffer = io.BytesIO()
    for payload in payloads:
        sm._write_recordio(buffer, payload)
    assert path.read_bytes() == buffer.getvalue()


# ---- our own round trips and format details -------------------------------------------------


def test_pairs_round_trip_keeps_every_pair(tmp_path):
    rng = np.random.default_rng(3)
    pairs = [(rng.integers(0, 8000, rng.integers(0, 40)), rng.integers(0, 8000, rng.integers(1, 40)))
             for _ in range(500)]
    path = tmp_path / "pairs.rec"
    assert recordio.write_pairs(path, iter(pairs), vocab_size=8000) == 500
    _assert_pairs_equal(list(recordio.read_pairs(path, vocab_size=8000)), pairs)


def test_dense_round_trip_in_batches(tmp_path):
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((100, 16)).astype(np.float32)
    ids = np.arange(100, dtype=np.int64) + 2**24 - 100  # the largest ids float32 keeps exactly
    batches = ((ids[i:i + 30], vectors[i:i + 30]) for i in range(0, 100, 30))
    path = tmp_path / "v.rec"
    assert recordio.write_dense_vector_batches(path, batches) == 100
    got_ids, got = recordio.read_dense_vectors(path)
    assert np.array_equal(got_ids, ids) and np.array_equal(got, vectors)


def test_empty_files(tmp_path):
    assert recordio.write_pairs(tmp_path / "p.rec", []) == 0
    assert list(recordio.read_pairs(tmp_path / "p.rec")) == []
    ids, vectors = recordio.read_dense_vectors(tmp_path / "p.rec")
    assert ids.shape == (0,) and vectors.shape == (0, 0)


def test_payload_holding_the_magic_word_is_split_like_mxnet(tmp_path):
    magic = struct.pack("<I", recordio.MAGIC)
    payload = b"abcd" + magic + magic + b"efgh" + magic + b"xy" + magic  # last one is unaligned
    path = tmp_path / "m.rec"
    recordio.write_payloads(path, [payload, b"tail"])
    # dmlc-core's layout, spelled out: start part, empty middle part, end part with the rest.
    expected = b"".join([
        struct.pack("<II", recordio.MAGIC, (1 << 29) | 4), b"abcd",
        struct.pack("<II", recordio.MAGIC, (2 << 29) | 0),
        struct.pack("<II", recordio.MAGIC, (2 << 29) | 4), b"efgh",
        struct.pack("<II", recordio.MAGIC, (3 << 29) | 6), b"xy" + magic, b"\0\0",
        struct.pack("<II", recordio.MAGIC, 4), b"tail",
    ])
    assert path.read_bytes() == expected
    frames = list(recordio.read_frames(path))
    assert [f.payload for f in frames] == [payload, b"tail"]
    assert [(f.number, f.offset) for f in frames] == [(1, 0), (2, len(expected) - 12)]


def test_vocab_layout_and_round_trip(tmp_path):
    pieces = ["<pad>", "<unk>", "<s>", "</s>", "▁the", "é", "\"quoted\""]
    path = tmp_path / "vocab.src.json"
    recordio.write_vocab(path, pieces)
    assert json.loads(path.read_text(encoding="utf-8")) == {p: i for i, p in enumerate(pieces)}
    assert "é" in path.read_text(encoding="utf-8")  # written as SageMaker does: UTF-8, not \u escapes
    assert recordio.read_vocab(path) == pieces


def test_reader_streams_records_before_a_later_fault(tmp_path):
    path = tmp_path / "late.rec"
    recordio.write_pairs(path, PAIRS)
    with open(path, "ab") as f:
        f.write(b"\x0a\x23")
    records = recordio.read_pairs(path)
    assert np.array_equal(next(records)[0], PAIRS[0][0])
    with pytest.raises(EmbedderError, match="record 5"):
        list(records)


# ---- bad files: one clear error naming the file and the record / byte offset ---------------


def _two_pair_file(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "bad.rec"
    recordio.write_pairs(path, PAIRS[:2])
    return path, path.read_bytes()


def _first_record_size(data: bytes) -> int:
    length = struct.unpack_from("<I", data, 4)[0] & ((1 << 29) - 1)
    return 8 + (length + 3) // 4 * 4


def _raises(path: Path, *fragments: str, read=lambda p: list(recordio.read_pairs(p))) -> str:
    with pytest.raises(EmbedderError) as caught:
        read(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_wrong_magic(tmp_path):
    path, data = _two_pair_file(tmp_path)
    second = _first_record_size(data)
    path.write_bytes(data[:second] + b"\0\0\0\0" + data[second + 4:])
    _raises(path, "record 2", f"byte offset {second}", "magic")


def test_not_recordio_at_all(tmp_path):
    path = tmp_path / "text.rec"
    path.write_text("hello world, this is text\n")
    _raises(path, "record 1", "byte offset 0", "magic")


def test_truncated_header(tmp_path):
    path, data = _two_pair_file(tmp_path)
    second = _first_record_size(data)
    path.write_bytes(data[:second + 5])
    _raises(path, "record 2", f"byte offset {second}", "truncated header")


def test_truncated_payload(tmp_path):
    path, data = _two_pair_file(tmp_path)
    path.write_bytes(data[:-9])
    _raises(path, "record 2", f"byte offset {_first_record_size(data)}", "file ends")


def test_length_beyond_end_of_file(tmp_path):
    path = tmp_path / "long.rec"
    path.write_bytes(struct.pack("<II", recordio.MAGIC, 1_000_000) + b"\0" * 16)
    _raises(path, "record 1", "byte offset 0", "1000000")


def test_unparseable_protobuf(tmp_path):
    path, data = _two_pair_file(tmp_path)
    garbage = b"\xff\xff\xff\xff"  # field 0 / a varint that never ends: not a protobuf
    path.write_bytes(data[:_first_record_size(data)] + struct.pack("<II", recordio.MAGIC, 4) + garbage)
    _raises(path, "record 2", f"byte offset {_first_record_size(data)}", "protobuf")


def test_orphan_continuation_parts(tmp_path):
    path = tmp_path / "parts.rec"
    path.write_bytes(struct.pack("<II", recordio.MAGIC, (3 << 29) | 4) + b"abcd")
    _raises(path, "record 1", "byte offset 0", "no start part", read=lambda p: list(recordio.read_frames(p)))
    path.write_bytes(struct.pack("<II", recordio.MAGIC, (1 << 29) | 4) + b"abcd")
    _raises(path, "record 1", "byte offset 0", "end part is missing",
            read=lambda p: list(recordio.read_frames(p)))


def test_missing_feature_and_wrong_tensor_type(tmp_path):
    record = recordio.Record()
    record.features["source"].int32_tensor.values.extend([4, 5])
    path = tmp_path / "one_side.rec"
    recordio.write_records(path, [record])
    _raises(path, "record 1", "byte offset 0", '"target"')
    record.features["target"].float32_tensor.values.extend([1.5])
    recordio.write_records(path, [record])
    _raises(path, "record 1", "float32_tensor", "int32_tensor")


def test_ids_outside_the_vocabulary(tmp_path):
    path = tmp_path / "ids.rec"
    recordio.write_pairs(path, [([4, 5], [6]), ([4, 99], [6])])
    _raises(path, "record 2", "99", "vocabulary", read=lambda p: list(recordio.read_pairs(p, vocab_size=50)))
    with pytest.raises(EmbedderError, match="record 3: target token id -1"):
        recordio.check_ids(np.array([4, -1]), 50, path, 3, "target")
    recordio.check_ids(np.array([0, 49]), 50, path, 1)


def test_write_pairs_refuses_ids_outside_the_vocabulary_and_leaves_no_file(tmp_path):
    target = tmp_path / "out.rec"
    with pytest.raises(EmbedderError, match=r"out\.rec: record 2: source token id 70"):
        recordio.write_pairs(target, [([4], [5]), ([70], [5])], vocab_size=60)
    assert _leftovers(tmp_path) == []


def test_failure_midway_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "out.rec"
    recordio.write_pairs(target, PAIRS)
    before = target.read_bytes()

    def pairs_then_crash():
        yield from PAIRS
        raise RuntimeError("tokenizer crashed")

    with pytest.raises(RuntimeError):
        recordio.write_pairs(target, pairs_then_crash())
    assert target.read_bytes() == before and _leftovers(tmp_path) == ["out.rec"]
    with pytest.raises(EmbedderError, match="dimension 3 differs"):
        recordio.write_dense_vector_batches(
            tmp_path / "v.rec", [(np.arange(2), np.zeros((2, 4))), (np.arange(2), np.zeros((2, 3)))])
    assert _leftovers(tmp_path) == ["out.rec"]


def test_dense_ids_beyond_float32_precision_are_refused(tmp_path):
    with pytest.raises(EmbedderError, match="record 2: id 16777217"):
        recordio.write_dense_vectors(tmp_path / "v.rec", np.array([1, 2**24 + 1]), np.zeros((2, 3)))
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not valid JSON"),
    ('["<pad>", "<unk>"]', "expected a JSON object"),
    ('{"<pad>": 0, "<unk>": 1, "<s>": 2}', "</s>=3"),
    ('{"<unk>": 0, "<pad>": 1, "<s>": 2, "</s>": 3}', "<pad>=0"),
    ('{"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "a": 3}', "id 3 is given to both"),
    ('{"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "a": 4, "a": 5}', "'a' appears twice"),
    ('{"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "a": 5}', "id 4 is missing"),
    ('{"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "a": "4"}', "must be integers"),
    ('{"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "a": true}', "must be integers"),
])
def test_bad_vocab_json(tmp_path, text, fragment):
    path = tmp_path / "vocab.src.json"
    path.write_text(text, encoding="utf-8")
    _raises(path, fragment, read=recordio.read_vocab)


def test_vocab_not_utf8_and_bad_pieces(tmp_path):
    path = tmp_path / "vocab.trg.json"
    path.write_bytes(b'{"\xff": 0}')
    _raises(path, "UTF-8", read=recordio.read_vocab)
    with pytest.raises(EmbedderError, match="must start with"):
        recordio.write_vocab(tmp_path / "v.json", ["a", "<unk>", "<s>", "</s>"])
    with pytest.raises(EmbedderError, match="appears twice"):
        recordio.write_vocab(tmp_path / "v.json", ["<pad>", "<unk>", "<s>", "</s>", "x", "x"])
    assert _leftovers(tmp_path) == ["vocab.trg.json"]


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.rec", "cannot open")


def test_write_pairs_refuses_ids_that_are_not_int32(tmp_path):
    for bad in ([2**31], [1.5], ["a"]):
        with pytest.raises(EmbedderError, match=r"out\.rec: record 2: token ids must be int32"):
            recordio.write_pairs(tmp_path / "out.rec", [([4], [5]), (bad, [5])])
    with pytest.raises(EmbedderError, match="record 1: token ids must be int32"):
        recordio.write_pairs(tmp_path / "out.rec", [(["a"], [5])], vocab_size=10)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("label", [float("nan"), float("inf"), 2.5])
def test_dense_label_that_is_not_an_integer(tmp_path, label):
    record = recordio.Record()
    record.features["values"].float32_tensor.values.extend([1.0, 2.0])
    record.label["values"].float32_tensor.values.append(label)
    path = tmp_path / "v.rec"
    recordio.write_records(path, [record])
    _raises(path, "record 1", "byte offset 0", "one integer id", read=recordio.read_dense_vectors)


def test_dense_vectors_of_different_lengths_and_sparse_rows(tmp_path):
    records = []
    for dim in (3, 4):
        record = recordio.Record()
        record.features["values"].float32_tensor.values.extend([0.5] * dim)
        record.label["values"].float32_tensor.values.append(dim)
        records.append(record)
    path = tmp_path / "v.rec"
    recordio.write_records(path, records)
    _raises(path, "record 2", "4 values, earlier records have 3", read=recordio.read_dense_vectors)
    records[1].features["values"].float32_tensor.keys.extend([0, 1, 2, 3])
    recordio.write_records(path, records)
    _raises(path, "record 2", "sparse", read=recordio.read_dense_vectors)


def test_gzipped_recordio_gets_a_hint(tmp_path):
    import gzip

    path, data = _two_pair_file(tmp_path)
    path.write_bytes(gzip.compress(data))
    _raises(path, "record 1", "byte offset 0", "gzip")
