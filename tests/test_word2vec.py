"""word2vec file I/O: round trips through gensim, and clear errors for damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder.errors import EmbedderError
from embedder.data.word2vec import load_word2vec, save_word2vec

gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
KeyedVectors = gensim_kv.KeyedVectors

WORDS = ["the", "bank", "river", "café", "▁piece", "naïve", "x"]


def sample_vectors(n: int = len(WORDS), dim: int = 7) -> np.ndarray:
    rng = np.random.default_rng(3)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v[0, 0] = np.float32(1e-38)  # extremes that a careless float format would round
    v[1, 1] = np.float32(3.4028235e38)
    v[2, 2] = np.float32(1 / 3)
    return v


@pytest.mark.parametrize("binary", [False, True])
def test_gensim_reads_ours_exactly(tmp_path: Path, binary: bool) -> None:
    path = tmp_path / "v.bin"
    vectors = sample_vectors()
    save_word2vec(path, WORDS, vectors, binary=binary)
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert kv.index_to_key == WORDS
    np.testing.assert_array_equal(kv.vectors, vectors)


@pytest.mark.parametrize("binary", [False, True])
def test_we_read_gensim_files_exactly(tmp_path: Path, binary: bool) -> None:
    path = tmp_path / "g.vec"
    vectors = sample_vectors()
    kv = KeyedVectors(vector_size=vectors.shape[1])
    kv.add_vectors(WORDS, vectors)
    kv.save_word2vec_format(str(path), binary=binary)
    words, loaded = load_word2vec(path)
    assert words == WORDS
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, vectors)


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip_ours(tmp_path: Path, binary: bool) -> None:
    path = tmp_path / "ours"
    vectors = sample_vectors(dim=100)
    save_word2vec(path, WORDS, vectors, binary=binary)
    words, loaded = load_word2vec(path)
    assert words == WORDS
    np.testing.assert_array_equal(loaded, vectors)


def test_fasttext_vec_and_headerless_text(tmp_path: Path) -> None:
    vec = tmp_path / "ft.vec"  # fastText writes a trailing space after the last value
    vec.write_text("2 3\nhello 0.1 0.2 0.3 \nworld -1 2.5e-3 4 \n", encoding="utf-8")
    words, v = load_word2vec(vec)
    assert words == ["hello", "world"]
    np.testing.assert_allclose(v, [[0.1, 0.2, 0.3], [-1, 2.5e-3, 4]], rtol=1e-7)
    glove = tmp_path / "glove.txt"
    glove.write_text("hello 0.1 0.2 0.3\r\nworld -1 0 4\r\n", encoding="utf-8")
    words, v = load_word2vec(glove)
    assert words == ["hello", "world"] and v.shape == (2, 3)


def test_save_is_atomic_and_rejects_unwritable_words(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    save_word2vec(path, ["a"], np.ones((1, 2)), binary=False)
    with pytest.raises(EmbedderError, match="word 1"):
        save_word2vec(path, ["a", "b c"], np.ones((2, 2)), binary=False)
    assert load_word2vec(path)[0] == ["a"]  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["v.txt"]  # no temporary left behind


BAD_TEXT = {
    "bad header": (b"two 3\na 1 2 3\n", r"v\.txt:1: bad header"),
    "empty file": (b"", r"v\.txt:1: bad header"),
    "too few values": (b"2 3\na 1 2 3\nb 1 2\n", r"v\.txt:3: expected a word and 3 numbers, found 2"),
    "too many values": (b"1 3\na 1 2 3 4\n", r"v\.txt:2: expected a word and 3 numbers, found 4"),
    "not a number": (b"2 2\na 1 2\nb 1 zwei\n", r"v\.txt:3: 'zwei' is not a number"),
    "truncated": (b"3 2\na 1 2\nb 1 2\n", r"v\.txt:4: file ends after 2 of 3 words"),
    "not utf-8": (b"2 2\na 1 2\n\xff\xfeb 1 2\n", r"v\.txt:3: not valid UTF-8"),
    "extra lines": (b"1 2\na 1 2\nb 3 4\n", r"v\.txt:3: more lines than the 1 words"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_bad_text_files_name_file_and_line(tmp_path: Path, case: str) -> None:
    content, message = BAD_TEXT[case]
    path = tmp_path / "v.txt"
    path.write_bytes(content)
    with pytest.raises(EmbedderError, match=message):
        load_word2vec(path)


def _binary(words: list[bytes], dim: int) -> bytes:
    out = f"{len(words)} {dim}\n".encode()
    for i, w in enumerate(words):
        out += w + b" " + np.full(dim, i, dtype="<f4").tobytes() + b"\n"
    return out


def test_bad_binary_files_name_file_and_word(tmp_path: Path) -> None:
    path = tmp_path / "v.bin"
    good = _binary([b"alpha", b"beta", b"gamma"], 4)
    path.write_bytes(good[:-10])
    with pytest.raises(EmbedderError, match=r"v\.bin: word 3 of 3 .*truncated"):
        load_word2vec(path)
    path.write_bytes(_binary([b"alpha", b"b\xffta"], 4))
    with pytest.raises(EmbedderError, match=r"v\.bin: word 2 of 2 .*not valid UTF-8"):
        load_word2vec(path)
    path.write_bytes(good.replace(b"3 4\n", b"3 5\n", 1))  # header lies about the dimension
    with pytest.raises(EmbedderError, match=r"v\.bin: word \d of 3"):
        load_word2vec(path)
    path.write_bytes(good + b"junk")
    with pytest.raises(EmbedderError, match=r"v\.bin: byte \d+: data after the 3 words"):
        load_word2vec(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="nope.vec: cannot read"):
        load_word2vec(tmp_path / "nope.vec")
