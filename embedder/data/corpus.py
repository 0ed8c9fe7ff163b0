"""Reading corpora into utterances, one at a time.

Every reader streams (a line, a JSON object or a Parquet batch at a time) so a corpus of any
size passes through in bounded memory. Each utterance carries where it came from, so that an
error later on can still name the file and line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import EmbedderError
from . import recordio

QUESTION = "question"
ANSWER = "answer"
ROLES = (QUESTION, ANSWER)

#: A line longer than this is almost certainly not an utterance (a minified file, a log dump).
MAX_CHARS = 10_000

SUFFIXES = (".txt", ".tsv", ".jsonl", ".parquet", ".rec")


@dataclass(frozen=True)
class Utterance:
    id: int
    dialogue: int
    position: int
    role: str
    text: str
    source: str  # "file:line", for error messages


def infer_role(text: str) -> str:
    return QUESTION if text.rstrip().endswith("?") else ANSWER


def _strip_prefix(text: str) -> tuple[str, str | None]:
    """`Q: ...` / `A: ...` state the role outright."""
    head = text[:2].upper()
    if head in ("Q:", "A:"):
        return text[2:].strip(), QUESTION if head == "Q:" else ANSWER
    return text, None


class _Numberer:
    """Hands out global utterance and dialogue ids across all files of a corpus."""

    def __init__(self) -> None:
        self.next_id = 0
        self.next_dialogue = 0

    def dialogue(self, turns: list[tuple[str, str, str]]) -> Iterator[Utterance]:
        """Turn one dialogue's (text, role, source) triples into numbered utterances."""
        if not turns:
            return
        d = self.next_dialogue
        self.next_dialogue += 1
        for pos, (text, role, source) in enumerate(turns):
            yield Utterance(self.next_id, d, pos, role, text, source)
            self.next_id += 1


def _check_text(text: str, where: str) -> str:
    if len(text) > MAX_CHARS:
        raise EmbedderError(f"{where}: line is {len(text):,} characters long (limit {MAX_CHARS:,}); "
                            "is this really one utterance per line?")
    if "\x00" in text:
        raise EmbedderError(f"{where}: contains NUL bytes; this looks like a binary file, not text")
    return text


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without newline), decoding UTF-8 strictly so bad bytes name their line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if b"\x00" in raw:
                raise EmbedderError(f"{path}:{n}: contains NUL bytes; this looks like a binary "
                                    "file, not a text corpus")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise EmbedderError(f"{path}:{n}: not valid UTF-8 (byte {e.start + 1} of the line); "
                                    "re-encode the file as UTF-8") from None
            yield n, _check_text(line.rstrip("\r\n"), f"{path}:{n}")


def _read_txt(path: Path, num: _Numberer) -> Iterator[Utterance]:
    turns: list[tuple[str, str, str]] = []
    for n, line in _lines(path):
        text = line.strip()
        if not text:
            yield from num.dialogue(turns)
            turns = []
            continue
        text, role = _strip_prefix(text)
        if not text:
            raise EmbedderError(f"{path}:{n}: a role prefix with no text after it")
        turns.append((text, role or infer_role(text), f"{path}:{n}"))
    yield from num.dialogue(turns)


_TSV_HEADERS = {("source", "target"), ("question", "answer"), ("src", "tgt")}


def _read_tsv(path: Path, num: _Numberer) -> Iterator[Utterance]:
    for n, line in _lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise EmbedderError(f"{path}:{n}: expected 2 tab-separated fields (source, target), "
                                f"found {len(fields)}")
        src, tgt = (f.strip() for f in fields)
        if n == 1 and (src.lower(), tgt.lower()) in _TSV_HEADERS:
            continue
        if not src or not tgt:
            raise EmbedderError(f"{path}:{n}: empty {'source' if not src else 'target'} field")
        where = f"{path}:{n}"
        yield from num.dialogue([(src, QUESTION, where), (tgt, ANSWER, where)])


def _role_field(obj: dict, text: str, where: str) -> str:
    role = obj.get("role")
    if role is None:
        return infer_role(text)
    role = str(role).lower()
    aliases = {"q": QUESTION, "a": ANSWER, QUESTION: QUESTION, ANSWER: ANSWER}
    if role not in aliases:
        raise EmbedderError(f"{where}: field 'role' is {obj.get('role')!r}; expected 'question' or 'answer'")
    return aliases[role]


def _read_jsonl(path: Path, num: _Numberer) -> Iterator[Utterance]:
    """Objects with the same `dialogue` value on consecutive lines form one dialogue."""
    turns: list[tuple[str, str, str]] = []
    current = object()
    for n, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise EmbedderError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise EmbedderError(f"{where}: expected a JSON object, found {type(obj).__name__}")
        if "question" in obj or "answer" in obj:
            q, a = obj.get("question"), obj.get("answer")
            if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
                raise EmbedderError(f"{where}: 'question' and 'answer' must both be non-empty strings")
            yield from num.dialogue(turns)
            turns, current = [], object()
            yield from num.dialogue([(q.strip(), QUESTION, where), (a.strip(), ANSWER, where)])
            continue
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise EmbedderError(f"{where}: field 'text' is missing or not a non-empty string")
        text = _check_text(text.strip(), where)
        dialogue = obj.get("dialogue", object())  # no dialogue key: a dialogue of its own
        if dialogue != current:
            yield from num.dialogue(turns)
            turns, current = [], dialogue
        turns.append((text, _role_field(obj, text, where), where))
    yield from num.dialogue(turns)


def _read_parquet(path: Path, num: _Numberer) -> Iterator[Utterance]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        raise EmbedderError(f"{path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if "text" not in names:
        raise EmbedderError(f"{path}: no 'text' column (columns: {', '.join(names)})")
    cols = [c for c in ("text", "role", "dialogue") if c in names]
    turns: list[tuple[str, str, str]] = []
    current = object()
    row = 0
    for batch in pf.iter_batches(columns=cols, batch_size=4096):
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            row += 1
            where = f"{path}:row {row}"
            text = data["text"][i]
            if not isinstance(text, str) or not text.strip():
                raise EmbedderError(f"{where}: 'text' is empty or null")
            text = _check_text(text.strip(), where)
            obj = {k: data[k][i] for k in cols if data[k][i] is not None}
            dialogue = obj.get("dialogue", object())
            if dialogue != current:
                yield from num.dialogue(turns)
                turns, current = [], dialogue
            turns.append((text, _role_field(obj, text, where), where))
    yield from num.dialogue(turns)


def _read_rec(path: Path, num: _Numberer, vocab: str | os.PathLike | None = None) -> Iterator[Utterance]:
    """A SageMaker seq2seq `.rec` file: each record is a two-turn dialogue (question → answer),
    its token ids turned back into text through the vocab JSON."""
    src_vocab, trg_vocab = recordio.find_vocab(path, vocab)
    src_tokens = recordio.read_vocab(src_vocab)
    trg_tokens = src_tokens if trg_vocab == src_vocab else recordio.read_vocab(trg_vocab)
    for n, (source, target) in enumerate(recordio.read_pairs(path), start=1):
        recordio.check_ids(source, len(src_tokens), path, n, "source")
        recordio.check_ids(target, len(trg_tokens), path, n, "target")
        where = f"{path}:record {n}"
        q, a = recordio.detokenize(src_tokens, source), recordio.detokenize(trg_tokens, target)
        if not q or not a:
            raise EmbedderError(f"{where}: empty source or target text")
        yield from num.dialogue([(q, QUESTION, where), (a, ANSWER, where)])


_READERS: dict[str, Callable[[Path, _Numberer], Iterator[Utterance]]] = {
    ".txt": _read_txt, ".tsv": _read_tsv, ".jsonl": _read_jsonl, ".parquet": _read_parquet,
    ".rec": _read_rec,
}


def check_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Fail before any work starts if a corpus path cannot be read."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise EmbedderError(f"{p}: no such file")
        if p.is_dir():
            raise EmbedderError(f"{p}: is a directory; give the corpus files themselves")
        if p.suffix.lower() not in _READERS:
            raise EmbedderError(f"{p}: unknown corpus format {p.suffix!r}; expected one of "
                                f"{', '.join(SUFFIXES)}")
        out.append(p)
    if not out:
        raise EmbedderError("no corpus files given")
    return out


def read_corpus(paths: Iterable[str | os.PathLike], vocab: str | os.PathLike | None = None) -> Iterator[Utterance]:
    """Stream every utterance of every file, with ids and dialogue numbers global to the corpus.

    `vocab` is the SageMaker vocab JSON for `.rec` files (default: found beside them).
    """
    files = check_paths(paths)
    num = _Numberer()
    for path in files:
        before = num.next_id
        suffix = path.suffix.lower()
        if suffix == ".rec":
            yield from _read_rec(path, num, vocab)
        else:
            yield from _READERS[suffix](path, num)
        if num.next_id == before:
            raise EmbedderError(f"{path}: empty corpus (no utterances found)")


def dialogues(utterances: Iterable[Utterance]) -> Iterator[list[Utterance]]:
    """Group a stream of utterances into dialogues (they arrive contiguous)."""
    group: list[Utterance] = []
    for u in utterances:
        if group and u.dialogue != group[0].dialogue:
            yield group
            group = []
        group.append(u)
    if group:
        yield group


def training_pairs(dialogue: list[Utterance]) -> Iterator[tuple[Utterance, Utterance]]:
    """(utterance, its successor); the last one of a dialogue is paired with itself.

    Reconstruction for the last line means every utterance teaches the encoder something,
    even a corpus of single lines.
    """
    for a, b in zip(dialogue, dialogue[1:]):
        yield a, b
    if dialogue:
        yield dialogue[-1], dialogue[-1]


def hold_out_dialogues(dialogue_ids: np.ndarray, n_held: int, seed: int) -> np.ndarray:
    """A boolean mask over `dialogue_ids`: True for the items of `n_held` dialogues drawn at
    random (seeded). Whole dialogues go together, so an answer never sits on the other side of a
    split from its question. Training's validation split and the held-out evaluation both use it."""
    unique = np.unique(dialogue_ids)
    held = np.random.default_rng(seed).choice(unique, size=n_held, replace=False)
    return np.isin(dialogue_ids, held)
