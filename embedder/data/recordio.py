"""SageMaker RecordIO-protobuf: the `.rec` files that SageMaker's built-in algorithms read.

Three layers, each usable on its own:

1. **RecordIO framing** (MXNet / dmlc-core): per record a little-endian uint32 magic
   `0xced7230a`, a uint32 length word (lower 29 bits the length, upper 3 bits a continuation
   flag), the payload, zero padding up to a multiple of 4 bytes. MXNet's writer splits a
   payload wherever the magic word appears at a 4-byte-aligned position inside it (flags 1 =
   start, 2 = middle, 3 = end) so that a reader which seeks to the next magic word to find a
   record boundary (SageMaker shards files that way) is never fooled; the reader puts the
   magic words back. We do both, so our files are exactly what MXNet writes.
2. **`aialgs.data.Record`**, SageMaker's `record.proto`, built at import time from a
   `FileDescriptorProto` in a private descriptor pool: no protoc step, no clash with another
   copy of the same proto (the SageMaker SDK registers `record.proto` in the default pool).
3. **The layouts we exchange**: seq2seq token pairs (`features["source"]`,
   `features["target"]` as int32 tensors, with the vocab JSON beside them) and dense vectors
   (`features["values"]` float32 row, `label["values"]` float32 id, as the SageMaker SDK's
   `write_numpy_to_dense_tensor` writes them for k-NN and Linear Learner).

Readers stream (bounded memory whatever the file size) and report every problem as one
`EmbedderError` naming the file, the record number (counted from 1) and the byte offset.
Writers stream too and write through `atomic_path`, so a failure never leaves a partial file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import IO, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from ..atomic import atomic_path
from ..errors import EmbedderError
from .tokenizer import EOS, WORD_MARK

__all__ = [
    "MAGIC",
    "MAX_RECORD_BYTES",
    "RECORD_PROTO_FILE",
    "SPECIAL_TOKENS",
    "Float32Tensor",
    "Float64Tensor",
    "Int32Tensor",
    "Bytes",
    "Value",
    "Record",
    "Frame",
    "read_frames",
    "write_payloads",
    "read_records",
    "write_records",
    "write_pairs",
    "read_pairs",
    "check_ids",
    "write_vocab",
    "find_vocab",
    "detokenize",
    "read_vocab",
    "write_dense_vectors",
    "write_dense_vector_batches",
    "iter_dense_vectors",
    "read_dense_vectors",
]

# --------------------------------------------------------------------------------------------
# 1. RecordIO framing
# --------------------------------------------------------------------------------------------

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<II")
_LENGTH_BITS = 29
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
MAX_RECORD_BYTES = _LENGTH_MASK  # dmlc-core refuses records of 2**29 bytes or more
_WHOLE, _START, _MIDDLE, _END = 0, 1, 2, 3
_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")
_IO_BUFFER = 1 << 20


class Frame(NamedTuple):
    """One logical record of a RecordIO file: where it starts and what it holds."""

    number: int  # counted from 1, as a user counts records
    offset: int  # byte offset of the record's first header
    payload: bytes


def _error(path: object, number: int, offset: int, what: str) -> EmbedderError:
    return EmbedderError(f"{path}: record {number} (byte offset {offset}): {what}")


def _padded(length: int) -> int:
    return (length + 3) & ~3


def _open_for_reading(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb", buffering=_IO_BUFFER)
    except OSError as exc:
        raise EmbedderError(f"{path}: cannot open: {exc.strerror or exc}") from None


def read_frames(path: str | os.PathLike) -> Iterator[Frame]:
    """Yield the records of a RecordIO file one at a time, joining multi-part records.

    Streams: only one record is in memory at a time. Raises `EmbedderError` (file, record
    number, byte offset) for a wrong magic number, a truncated header, a length that runs past
    the end of the file, or a broken multi-part sequence.
    """
    path = Path(path)
    with _open_for_reading(path) as stream:
        yield from _frames(stream, path)


def _frames(stream: IO[bytes], path: Path) -> Iterator[Frame]:
    number, offset = 1, 0
    parts: list[bytes] = []  # pieces of a multi-part record read so far
    first_offset = 0  # where the current logical record began
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            if parts:
                raise _error(path, number, first_offset,
                             "the file ends inside a multi-part record (its end part is missing)")
            return
        if len(header) < _HEADER.size:
            raise _error(path, number, offset,
                         f"truncated header: {len(header)} of {_HEADER.size} bytes before the end of the file")
        magic, word = _HEADER.unpack(header)
        if magic != MAGIC:
            raise _error(path, number, offset, _wrong_magic(header, offset))
        flag, length = word >> _LENGTH_BITS, word & _LENGTH_MASK
        body = stream.read(_padded(length))
        if len(body) < length:
            raise _error(path, number, offset,
                         f"the header says {length} payload bytes but the file ends after "
                         f"{len(body)} (truncated file or corrupt length)")
        payload = body if len(body) == length else body[:length]
        here, offset = offset, offset + _HEADER.size + len(body)
        if flag == _WHOLE and not parts:  # the usual case, kept short
            yield Frame(number, here, payload)
            number += 1
            continue
        if not parts:
            first_offset = here
        complete = _join_part(parts, flag, payload, path, number, first_offset, here)
        if complete is not None:
            yield Frame(number, first_offset, complete)
            number += 1


def _wrong_magic(header: bytes, offset: int) -> str:
    found = _HEADER.unpack(header)[0]
    what = f"wrong magic number 0x{found:08x} (RecordIO records start with 0x{MAGIC:08x}); "
    if offset == 0 and header.startswith(b"\x1f\x8b"):
        return what + "the file looks gzip-compressed: decompress it first"
    return what + ("not a RecordIO file" if offset == 0 else "the file is damaged here")


def _join_part(parts: list[bytes], flag: int, payload: bytes, path: Path, number: int,
               first_offset: int, offset: int) -> bytes | None:
    """Add one part to `parts`; return the whole payload once the record is complete."""
    if flag == _WHOLE:
        if parts:
            raise _error(path, number, first_offset,
                         f"multi-part record interrupted at byte {offset} by a whole record")
        return payload
    if flag == _START:
        if parts:
            raise _error(path, number, first_offset,
                         f"multi-part record interrupted at byte {offset} by another start part")
        parts.append(payload)
        return None
    if flag not in (_MIDDLE, _END):
        raise _error(path, number, offset, f"unknown continuation flag {flag} (expected 0 to 3)")
    if not parts:
        kind = "middle" if flag == _MIDDLE else "end"
        raise _error(path, number, offset, f"a multi-part {kind} part with no start part before it")
    parts.append(payload)
    if flag == _MIDDLE:
        return None
    whole = _MAGIC_BYTES.join(parts)
    parts.clear()
    return whole


def _aligned_magic_positions(payload: bytes) -> list[int]:
    """Offsets (multiples of 4) where the magic word sits inside a payload."""
    found, start = [], 0
    while (i := payload.find(_MAGIC_BYTES, start)) != -1:
        if i % 4 == 0:
            found.append(i)
            start = i + 4
        else:
            start = i + 1
    return found


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    """Write one payload the way MXNet's RecordIOWriter does (splitting on aligned magic)."""
    cuts = _aligned_magic_positions(payload)
    begin = 0
    for k, cut in enumerate(cuts):
        stream.write(_HEADER.pack(MAGIC, ((_START if k == 0 else _MIDDLE) << _LENGTH_BITS) | (cut - begin)))
        stream.write(payload[begin:cut])  # aligned, so no padding is needed between parts
        begin = cut + 4
    tail = len(payload) - begin
    stream.write(_HEADER.pack(MAGIC, ((_END if cuts else _WHOLE) << _LENGTH_BITS) | tail))
    stream.write(payload[begin:] if begin else payload)
    stream.write(_PADDING[-tail % 4])


def write_payloads(path: str | os.PathLike, payloads: Iterable[bytes]) -> int:
    """Write each payload as one RecordIO record; atomic (all or nothing). Returns the count."""
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=_IO_BUFFER) as stream:
        for count, payload in enumerate(payloads, 1):
            if len(payload) > MAX_RECORD_BYTES:
                raise EmbedderError(
                    f"{path}: record {count}: {len(payload)} bytes is more than RecordIO's limit "
                    f"of {MAX_RECORD_BYTES} bytes per record")
            _write_frame(stream, payload)
    return count


# --------------------------------------------------------------------------------------------
# 2. aialgs.data.Record (SageMaker's record.proto)
# --------------------------------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _field(message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int,
           label: int = _F.LABEL_OPTIONAL, type_name: str = "", packed: bool = False,
           oneof: int | None = None) -> None:
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name
    if packed:
        field.options.packed = True
    if oneof is not None:
        field.oneof_index = oneof


def _map_entry(record: descriptor_pb2.DescriptorProto, name: str) -> str:
    entry = record.nested_type.add(name=name)
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=".aialgs.data.Value")
    return f".aialgs.data.Record.{name}"


def _record_proto_file() -> descriptor_pb2.FileDescriptorProto:
    """SageMaker's record.proto (proto2, package aialgs.data), field for field."""
    file = descriptor_pb2.FileDescriptorProto(name="record.proto", package="aialgs.data")
    for name, kind in (("Float32Tensor", _F.TYPE_FLOAT), ("Float64Tensor", _F.TYPE_DOUBLE),
                       ("Int32Tensor", _F.TYPE_INT32)):
        tensor = file.message_type.add(name=name)
        _field(tensor, "values", 1, kind, _F.LABEL_REPEATED, packed=True)
        _field(tensor, "keys", 2, _F.TYPE_UINT64, _F.LABEL_REPEATED, packed=True)
        _field(tensor, "shape", 3, _F.TYPE_UINT64, _F.LABEL_REPEATED, packed=True)
    raw = file.message_type.add(name="Bytes")
    _field(raw, "value", 1, _F.TYPE_BYTES, _F.LABEL_REPEATED)
    _field(raw, "content_type", 2, _F.TYPE_STRING)
    value = file.message_type.add(name="Value")
    value.oneof_decl.add(name="value")
    for name, number, type_name in (("float32_tensor", 2, "Float32Tensor"),
                                    ("float64_tensor", 3, "Float64Tensor"),
                                    ("int32_tensor", 7, "Int32Tensor"), ("bytes", 9, "Bytes")):
        _field(value, name, number, _F.TYPE_MESSAGE, type_name=f".aialgs.data.{type_name}", oneof=0)
    record = file.message_type.add(name="Record")
    features = _map_entry(record, "FeaturesEntry")
    label = _map_entry(record, "LabelEntry")
    _field(record, "features", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, type_name=features)
    _field(record, "label", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, type_name=label)
    for name, number in (("uid", 3), ("metadata", 4), ("configuration", 5)):
        _field(record, name, number, _F.TYPE_STRING)
    file.options.java_package = "com.amazonaws.aialgorithms.proto"
    file.options.java_outer_classname = "RecordProtos"
    return file


RECORD_PROTO_FILE = _record_proto_file()
_POOL = descriptor_pool.DescriptorPool()  # private: the SageMaker SDK fills the default pool
_POOL.AddSerializedFile(RECORD_PROTO_FILE.SerializeToString())


def _message_class(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"aialgs.data.{name}"))


Float32Tensor = _message_class("Float32Tensor")
Float64Tensor = _message_class("Float64Tensor")
Int32Tensor = _message_class("Int32Tensor")
Bytes = _message_class("Bytes")
Value = _message_class("Value")
Record = _message_class("Record")


def read_records(path: str | os.PathLike) -> Iterator[tuple[Frame, Message]]:
    """Yield `(frame, Record)` for each record; a payload that does not parse is an error."""
    path = Path(path)
    for frame in read_frames(path):
        record = Record()
        try:
            record.ParseFromString(frame.payload)
        except DecodeError as exc:
            raise _error(path, frame.number, frame.offset,
                         f"not a valid aialgs.data.Record protobuf ({exc})") from None
        yield frame, record


def write_records(path: str | os.PathLike, records: Iterable[Message]) -> int:
    """Serialise each `Record` into one RecordIO record; atomic. Returns the count."""
    return write_payloads(path, (record.SerializeToString() for record in records))


def _tensor_values(value: Message, expected: tuple[str, ...], path: Path, frame: Frame,
                   where: str) -> Message | None:
    """The tensor inside a `Value`, checked to be one of `expected` (None if the Value is empty)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind not in expected:
        raise _error(path, frame.number, frame.offset,
                     f"{where} holds a {kind}, expected {' or '.join(expected)}")
    return getattr(value, kind)


# --------------------------------------------------------------------------------------------
# 3a. seq2seq token pairs and their vocabulary
# --------------------------------------------------------------------------------------------

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")


def check_ids(ids: np.ndarray, vocab_size: int, path: str | os.PathLike, record_no: int,
              field: str = "source") -> None:
    """Raise `EmbedderError` naming file, record and value if any id is outside [0, vocab_size)."""
    ids = np.asarray(ids)
    if ids.size == 0:
        return
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        i = int(bad[0])
        raise EmbedderError(
            f"{path}: record {record_no}: {field} token id {int(ids[i])} at position {i} is outside "
            f"the vocabulary (0..{vocab_size - 1}); {bad.size} such id(s) in this record")


def _ids_outside(ids: Sequence[int], vocab_size: int) -> bool:
    """Cheap range test (plain min/max beat numpy on the short lists of a token sequence)."""
    return len(ids) > 0 and (min(ids) < 0 or max(ids) >= vocab_size)


def _as_int_list(ids: Sequence[int]) -> list[int]:
    return ids.tolist() if isinstance(ids, np.ndarray) else list(ids)


def _pair_payload(record: Message, source: list[int], target: list[int]) -> bytes:
    record.Clear()
    for name, ids in (("source", source), ("target", target)):
        tensor = record.features[name].int32_tensor
        if ids:
            tensor.values.extend(ids)
        else:
            tensor.SetInParent()  # an empty sequence stays an (empty) int32 tensor
    return record.SerializeToString()


def write_pairs(path: str | os.PathLike, pairs: Iterable[tuple[Sequence[int], Sequence[int]]],
                vocab_size: int | None = None) -> int:
    """Write (source ids, target ids) pairs in SageMaker seq2seq's training layout.

    Each record holds `features["source"]` and `features["target"]` as `int32_tensor` values,
    as SageMaker's own `create_vocab_proto.py` writes them. With `vocab_size`, ids outside the
    vocabulary stop the write (and no file is left); ids must be int32 in any case.
    Streams; atomic. Returns the count.
    """
    path = Path(path)

    def payloads() -> Iterator[bytes]:
        record = Record()
        for number, (source, target) in enumerate(pairs, 1):
            try:
                source, target = _as_int_list(source), _as_int_list(target)
                if vocab_size is not None:
                    for name, ids in (("source", source), ("target", target)):
                        if _ids_outside(ids, vocab_size):
                            check_ids(np.asarray(ids, dtype=np.int64), vocab_size, path, number, name)
                payload = _pair_payload(record, source, target)
            except (TypeError, ValueError) as exc:  # protobuf refuses non-integers and non-int32
                raise EmbedderError(f"{path}: record {number}: token ids must be int32 integers ({exc})") from None
            yield payload

    return write_payloads(path, payloads())


def read_pairs(path: str | os.PathLike, vocab_size: int | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (source, target) int32 arrays from a SageMaker seq2seq `.rec` file, streaming.

    Errors name the file, record number and byte offset: an unparseable protobuf, a missing
    "source" or "target" feature, a tensor that is not int32, or (with `vocab_size`) an id
    outside the vocabulary.
    """
    path = Path(path)
    for frame, record in read_records(path):
        source = _int_feature(record, "source", path, frame)
        target = _int_feature(record, "target", path, frame)
        if vocab_size is not None:
            for name, ids in (("source", source), ("target", target)):
                if _ids_outside(ids, vocab_size):
                    check_ids(np.asarray(ids), vocab_size, path, frame.number, name)
        yield np.array(source, dtype=np.int32), np.array(target, dtype=np.int32)


def _int_feature(record: Message, name: str, path: Path, frame: Frame) -> list[int]:
    """The ids of feature `name` as a list (the caller checks them and makes the array)."""
    if name not in record.features:
        present = ", ".join(sorted(record.features)) or "none"
        raise _error(path, frame.number, frame.offset,
                     f'no "{name}" feature (features present: {present}); '
                     "a seq2seq record needs both source and target")
    tensor = _tensor_values(record.features[name], ("int32_tensor",), path, frame, f'feature "{name}"')
    return [] if tensor is None else tensor.values[:]  # a list: quick to range-check and convert


def write_vocab(path: str | os.PathLike, pieces: Sequence[str]) -> None:
    """Write `pieces` (id order) as SageMaker seq2seq's vocab JSON: `{"<pad>": 0, ...}`.

    The first four pieces must be SageMaker's special tokens in their fixed order, because
    the algorithm pads, masks and starts/stops decoding by those ids.
    """
    path = Path(path)
    if tuple(pieces[:4]) != SPECIAL_TOKENS:
        raise EmbedderError(f"{path}: a SageMaker vocabulary must start with {', '.join(SPECIAL_TOKENS)} "
                            f"(ids 0-3); got {list(pieces[:4])}")
    vocab: dict[str, int] = {}
    for index, piece in enumerate(pieces):
        if piece in vocab:
            raise EmbedderError(f"{path}: token {piece!r} appears twice (ids {vocab[piece]} and {index})")
        vocab[piece] = index
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(vocab, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def read_vocab(path: str | os.PathLike) -> list[str]:
    """Read a SageMaker seq2seq vocab JSON (token -> id) into a list of tokens in id order.

    Checks what training relies on: a JSON object of string -> integer, the four special
    tokens at ids 0-3, no token or id twice, and ids 0..n-1 without gaps.
    """
    path = Path(path)
    vocab = _load_vocab_json(path)
    by_id: dict[int, str] = {}
    for token, index in vocab:
        if isinstance(index, bool) or not isinstance(index, int):
            raise EmbedderError(f"{path}: token {token!r} has id {index!r}; ids must be integers")
        if index in by_id:
            raise EmbedderError(f"{path}: id {index} is given to both {by_id[index]!r} and {token!r}")
        by_id[index] = token
    missing = [i for i in range(len(by_id)) if i not in by_id]
    if missing:
        raise EmbedderError(f"{path}: ids must run 0..{len(by_id) - 1} without gaps; "
                            f"id {missing[0]} is missing (largest id {max(by_id)})")
    tokens = [by_id[i] for i in range(len(by_id))]
    if tuple(tokens[:4]) != SPECIAL_TOKENS:
        wanted = ", ".join(f"{t}={i}" for i, t in enumerate(SPECIAL_TOKENS))
        raise EmbedderError(f"{path}: SageMaker seq2seq needs {wanted}; found {tokens[:4]}")
    return tokens


def _load_vocab_json(path: Path) -> tuple[tuple[str, object], ...]:
    def pairs_without_repeats(items: list[tuple[str, object]]) -> tuple[tuple[str, object], ...]:
        seen: set[str] = set()
        for token, _ in items:
            if token in seen:
                raise EmbedderError(f"{path}: token {token!r} appears twice")
            seen.add(token)
        return tuple(items)  # a tuple marks "was a JSON object" (arrays stay lists)

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EmbedderError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise EmbedderError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    try:
        vocab = json.loads(text, object_pairs_hook=pairs_without_repeats)
    except json.JSONDecodeError as exc:
        raise EmbedderError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(vocab, tuple):
        raise EmbedderError(f"{path}: expected a JSON object of token -> id, found {type(vocab).__name__}")
    return vocab


# --------------------------------------------------------------------------------------------
# 3b. dense vectors for k-NN / Linear Learner
# --------------------------------------------------------------------------------------------

_FLOAT32_EXACT = 2**24  # every integer up to this is exact in float32


def _dense_record(record: Message, vector: np.ndarray, label: float) -> bytes:
    record.Clear()
    record.features["values"].float32_tensor.values.extend(vector.tolist())
    record.label["values"].float32_tensor.values.append(label)
    return record.SerializeToString()


def _checked_batch(path: Path, first: int, ids: np.ndarray, vectors: np.ndarray,
                   dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids)
    vectors = np.asarray(vectors, dtype=np.float32)
    where = f"{path}: rows from record {first}"
    if vectors.ndim != 2:
        raise EmbedderError(f"{where}: vectors must be a 2-D array (rows x dim), got shape {vectors.shape}")
    if ids.shape != (vectors.shape[0],):
        raise EmbedderError(f"{where}: {ids.shape} ids for {vectors.shape[0]} vectors; need one id per row")
    if dim is not None and vectors.shape[1] != dim:
        raise EmbedderError(f"{where}: dimension {vectors.shape[1]} differs from the earlier rows' {dim}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise EmbedderError(f"{where}: ids must be integers, got {ids.dtype}")
    out_of_range = np.flatnonzero(np.abs(ids.astype(np.int64)) > _FLOAT32_EXACT)
    if out_of_range.size:
        i = int(out_of_range[0])
        raise EmbedderError(f"{path}: record {first + i}: id {int(ids[i])} cannot be stored exactly in "
                            f"the float32 label SageMaker reads (|id| <= {_FLOAT32_EXACT}); renumber the ids")
    return ids, vectors


def write_dense_vector_batches(path: str | os.PathLike,
                               batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
    """Write `(ids, vectors)` batches, one record per row, in the SageMaker SDK's dense layout.

    Each record: `features["values"]` = float32_tensor with the row, `label["values"]` =
    float32_tensor `[id]` (what `write_numpy_to_dense_tensor` writes, and what k-NN and
    Linear Learner train on). Streams batch by batch; atomic. Returns the number of rows.
    """
    path = Path(path)

    def payloads() -> Iterator[bytes]:
        record, number, dim = Record(), 1, None
        for ids, vectors in batches:
            ids, vectors = _checked_batch(path, number, ids, vectors, dim)
            dim = vectors.shape[1]
            for label, vector in zip(ids.tolist(), vectors):
                yield _dense_record(record, vector, float(label))
            number += len(ids)

    return write_payloads(path, payloads())


def write_dense_vectors(path: str | os.PathLike, ids: np.ndarray, vectors: np.ndarray) -> int:
    """Write one record per row of `vectors`, labelled with its id (see write_dense_vector_batches)."""
    return write_dense_vector_batches(path, [(ids, vectors)])


def iter_dense_vectors(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(id, float32 vector)` per record of a dense RecordIO-protobuf file, streaming.

    Accepts float32/float64/int32 tensors (SageMaker writes any of them); the label must be a
    single integer-valued number. Sparse records (with keys) are refused, not guessed at.
    """
    path = Path(path)
    dim = None
    for frame, record in read_records(path):
        vector = _dense_features(record, path, frame)
        if dim is not None and vector.shape[0] != dim:
            raise _error(path, frame.number, frame.offset,
                         f"vector has {vector.shape[0]} values, earlier records have {dim}")
        dim = vector.shape[0]
        yield _dense_label(record, path, frame), vector


_NUMERIC = ("float32_tensor", "float64_tensor", "int32_tensor")


def _dense_features(record: Message, path: Path, frame: Frame) -> np.ndarray:
    if "values" not in record.features:
        raise _error(path, frame.number, frame.offset, 'no "values" feature (the dense-vector layout)')
    tensor = _tensor_values(record.features["values"], _NUMERIC, path, frame, 'feature "values"')
    if tensor is None:
        return np.empty(0, dtype=np.float32)
    if len(tensor.keys):
        raise _error(path, frame.number, frame.offset, "sparse tensor (it has keys); only dense vectors are read")
    return np.array(tensor.values, dtype=np.float32)


def _dense_label(record: Message, path: Path, frame: Frame) -> int:
    if "values" not in record.label:
        raise _error(path, frame.number, frame.offset, 'no "values" label: each vector needs its id as label')
    tensor = _tensor_values(record.label["values"], _NUMERIC, path, frame, 'label "values"')
    values = () if tensor is None else tensor.values
    if len(values) == 1 and math.isfinite(values[0]) and int(values[0]) == values[0]:
        return int(values[0])
    raise _error(path, frame.number, frame.offset, f"label must be one integer id, got {list(values)}")


def read_dense_vectors(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole dense file into `(ids int64 [n], vectors float32 [n, dim])`."""
    ids: list[int] = []
    rows: list[np.ndarray] = []
    for label, vector in iter_dense_vectors(path):
        ids.append(label)
        rows.append(vector)
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
    return np.asarray(ids, dtype=np.int64), np.stack(rows)


# -- the vocab files that go with seq2seq `.rec` files ------------------------------------------

SRC_VOCAB, TRG_VOCAB = "vocab.src.json", "vocab.trg.json"


def find_vocab(rec: Path, vocab: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The source and target vocab files for a `.rec` file: the one given (its `vocab.trg.json`
    sibling for targets, when there is one), else those beside the file or in `../vocab/`."""
    if vocab is not None:
        src = Path(vocab)
        if not src.is_file():
            raise EmbedderError(f"{src}: vocabulary file not found")
        trg = src.with_name(TRG_VOCAB)
        return src, trg if (src.name == SRC_VOCAB and trg.is_file()) else src
    for folder in (rec.parent, rec.parent.parent / "vocab"):
        if (folder / SRC_VOCAB).is_file():
            trg = folder / TRG_VOCAB
            return folder / SRC_VOCAB, trg if trg.is_file() else folder / SRC_VOCAB
    raise EmbedderError(f"{rec}: no {SRC_VOCAB} beside it or in ../vocab/; pass --vocab")


def detokenize(tokens: Sequence[str], ids: np.ndarray) -> str:
    """Token ids back to text: SentencePiece pieces are glued at their word marks, whole-word
    vocabularies (SageMaker's own preprocessing) are joined with spaces."""
    words = [tokens[i] for i in ids if i > EOS]
    if any(w.startswith(WORD_MARK) for w in words):
        return "".join(words).replace(WORD_MARK, " ").strip()
    return " ".join(words)
