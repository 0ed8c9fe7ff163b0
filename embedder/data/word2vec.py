"""word2vec-format vector files: the lingua franca of word-vector tools.

Text format: a header line "N D", then N lines "word v1 ... vD". Binary format: the same
header line, then per word its UTF-8 bytes, a space, D little-endian float32 values and a
newline. gensim, word2vec, fastText (`.vec`) and BlazingText (`vectors.txt`) all read or write
these, so exporting here lets users take our vectors anywhere, and loading lets them start
from vectors trained elsewhere.

Floats in text files are written with 9 significant digits, which is enough for every float32
to read back bit-identical. Files are written under a temporary name and renamed when
complete. Loading tells text from binary by itself and reports any damage as an
`EmbedderError` naming the file and the line (text) or word number (binary).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import EmbedderError
from .tokenizer import EOS, WORD_MARK, Tokenizer

_FLOAT32_LE = np.dtype("<f4")


def save_word2vec(
    path: str | os.PathLike, words: list[str], vectors: np.ndarray, binary: bool
) -> None:
    """Write `words` and their rows of `vectors` in word2vec text or binary format."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise EmbedderError(
            f"{path}: need one vector row per word; got {len(words)} words and shape {vectors.shape}"
        )
    for i, word in enumerate(words):
        if not word or any(ch.isspace() for ch in word):
            raise EmbedderError(
                f"{path}: word {i} ({word!r}) is empty or contains whitespace, "
                "which the word2vec format cannot hold"
            )
    n, dim = vectors.shape
    rows = vectors.astype(_FLOAT32_LE, copy=False)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(f"{n} {dim}\n".encode("ascii"))
        if binary:
            for word, row in zip(words, rows):
                f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
        else:
            template = " ".join(["%.9g"] * dim)
            for word, row in zip(words, rows):
                f.write(f"{word} {template % tuple(row.tolist())}\n".encode("utf-8"))


def load_word2vec(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a word2vec text or binary file (also fastText `.vec`, BlazingText `.txt`).

    Returns the words in file order and a float32 array of shape (N, D). A text file without
    the "N D" header (GloVe style) is accepted too; its D comes from the first line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EmbedderError(f"{path}: cannot read vector file ({exc.strerror or exc})") from None
    first_end = data.find(b"\n")
    first_line = data if first_end < 0 else data[:first_end]
    header = _parse_header(path, first_line)
    if header is None:
        return _read_text(path, data, None, 0)
    n, dim = header
    body = first_end + 1 if first_end >= 0 else len(data)
    if _looks_binary(data, body, dim):
        return _read_binary(path, data, body, n, dim)
    return _read_text(path, data, header, body)


def _parse_header(path: Path, line: bytes) -> tuple[int, int] | None:
    """(N, D) from a header line; None if the line is a vector line (a headerless file)."""
    fields = line.split()
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[0]), int(fields[1])
    if len(fields) >= 3 and all(_is_number(x.decode("latin-1")) for x in fields[1:]):
        return None  # "word v1 v2 ...": GloVe-style, no header
    shown = line[:60].decode("utf-8", errors="replace")
    raise EmbedderError(f'{path}:1: bad header {shown!r}: expected "<word count> <dimensions>"')


def _looks_binary(data: bytes, body: int, dim: int) -> bool:
    """True unless the first record after the header is clean UTF-8 text.

    Raw float32 bytes practically always include control bytes or invalid UTF-8, while a text
    record never does; deciding on this (rather than on the record parsing) means a damaged
    text file still gets a text error naming its line.
    """
    end = data.find(b"\n", body, body + 4 * dim + 4096)
    record = data[body : end if end >= 0 else body + 4 * dim + 4096]
    try:
        text = record.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any(ord(ch) < 32 and ch not in "\t\r" for ch in text)


def _read_text(
    path: Path, data: bytes, header: tuple[int, int] | None, body: int
) -> tuple[list[str], np.ndarray]:
    """Parse text records line by line, so an error can name its line."""
    lines = data[body:].split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()  # the final newline
    first_line_no = 2 if header else 1
    dim = header[1] if header else len(lines[0].rstrip().split(b" ")) - 1
    if header and len(lines) < header[0]:
        raise EmbedderError(
            f"{path}:{first_line_no + len(lines)}: file ends after {len(lines)} of "
            f"{header[0]} words (truncated?)"
        )
    if header and any(line.strip() for line in lines[header[0] :]):
        extra = header[0] + first_line_no
        raise EmbedderError(f"{path}:{extra}: more lines than the {header[0]} words the header promises")
    words: list[str] = []
    vectors = np.empty((len(lines) if not header else header[0], dim), dtype=np.float32)
    for i, raw in enumerate(lines[: vectors.shape[0]]):
        where = f"{path}:{first_line_no + i}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EmbedderError(f"{where}: not valid UTF-8") from None
        fields = text.rstrip().split(" ")
        if len(fields) != dim + 1:
            raise EmbedderError(f"{where}: expected a word and {dim} numbers, found {len(fields) - 1} numbers")
        try:
            vectors[i] = np.array(fields[1:], dtype=np.float32)
        except ValueError:
            bad = next(x for x in fields[1:] if not _is_number(x))
            raise EmbedderError(f"{where}: {bad!r} is not a number") from None
        words.append(fields[0])
    return words, vectors


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_binary(path: Path, data: bytes, pos: int, n: int, dim: int) -> tuple[list[str], np.ndarray]:
    """Walk the records: word bytes up to a space, then exactly 4*D bytes of floats."""
    width = 4 * dim
    words: list[str] = []
    vectors = np.empty((n, dim), dtype=np.float32)
    for i in range(n):
        while pos < len(data) and data[pos : pos + 1] == b"\n":  # newline ending the last record
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + width > len(data):
            raise EmbedderError(f"{path}: word {i + 1} of {n} (byte {pos}): file ends early (truncated?)")
        try:
            word = data[pos:space].decode("utf-8")
        except UnicodeDecodeError:
            raise EmbedderError(f"{path}: word {i + 1} of {n} (byte {pos}): word is not valid UTF-8") from None
        if not word or "\n" in word:
            raise EmbedderError(
                f"{path}: word {i + 1} of {n} (byte {pos}): malformed record "
                f"(the header promises {dim} dimensions; is it right?)"
            )
        words.append(word)
        vectors[i] = np.frombuffer(data, dtype=_FLOAT32_LE, count=dim, offset=space + 1)
        pos = space + 1 + width
    if data[pos:].strip():
        raise EmbedderError(f"{path}: byte {pos}: data after the {n} words the header promises")
    return words, vectors


def piece_init(tokenizer: Tokenizer, path: str | os.PathLike) -> np.ndarray:
    """Initial skip-gram vectors from a word2vec/BlazingText/fastText file: a whole-word piece
    takes its word's vector (case-insensitive, as our tokenizer folds case); rows with no
    match are NaN, which the trainer reads as 'no initial vector'."""
    words, vectors = load_word2vec(path)
    lookup: dict[str, int] = {}
    for i, w in enumerate(words):
        lookup.setdefault(w.lower(), i)
    pieces = tokenizer.pieces()
    init = np.full((len(pieces), vectors.shape[1]), np.nan, dtype=np.float32)
    matched = 0
    for pid, p in enumerate(pieces):
        if pid <= EOS:
            continue
        key = p[1:] if p.startswith(WORD_MARK) else p
        row = lookup.get(key)
        if row is not None and key:
            init[pid] = vectors[row]
            matched += 1
    if matched == 0:
        raise EmbedderError(f"{path}: none of its {len(words):,} words is in this corpus's vocabulary")
    return init
