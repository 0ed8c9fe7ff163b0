"""Corpus readers: roles, dialogues, pairs, and clear errors for bad files."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedder.data.corpus import ANSWER, QUESTION, dialogues, read_corpus, training_pairs
from embedder.errors import EmbedderError


def test_txt_roles_dialogues_and_pairs(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("Q: is it raining\nA: yes, bring a coat\nwhere is my umbrella?\nin the hall\n\n"
                 "Just a statement\n")
    us = list(read_corpus([p]))
    assert [u.role for u in us] == [QUESTION, ANSWER, QUESTION, ANSWER, ANSWER]
    assert [u.text for u in us][:2] == ["is it raining", "yes, bring a coat"]
    assert [u.dialogue for u in us] == [0, 0, 0, 0, 1]
    assert [u.position for u in us] == [0, 1, 2, 3, 0]
    assert [u.id for u in us] == list(range(5))
    pairs = [(a.id, b.id) for d in dialogues(us) for a, b in training_pairs(d)]
    assert pairs == [(0, 1), (1, 2), (2, 3), (3, 3), (4, 4)]


def test_ids_are_global_across_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.tsv"
    a.write_text("one?\ntwo\n")
    b.write_text("source\ttarget\nthree?\tfour\n")
    us = list(read_corpus([a, b]))
    assert [u.id for u in us] == [0, 1, 2, 3]
    assert [u.dialogue for u in us] == [0, 0, 1, 1]
    assert [u.role for u in us] == [QUESTION, ANSWER, QUESTION, ANSWER]


def test_jsonl_and_parquet(tmp_path):
    j = tmp_path / "c.jsonl"
    j.write_text("\n".join(json.dumps(o) for o in [
        {"question": "why?", "answer": "because"},
        {"text": "hi there", "dialogue": 7}, {"text": "hello", "dialogue": 7, "role": "answer"},
        {"text": "alone?"}]) + "\n")
    us = list(read_corpus([j]))
    assert [(u.dialogue, u.role, u.text) for u in us] == [
        (0, QUESTION, "why?"), (0, ANSWER, "because"), (1, ANSWER, "hi there"), (1, ANSWER, "hello"),
        (2, QUESTION, "alone?")]
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["a?", "b", "c"], "dialogue": [1, 1, 2]}), p)
    assert [(u.dialogue, u.text) for u in read_corpus([p])] == [(0, "a?"), (0, "b"), (1, "c")]


@pytest.mark.parametrize("content, message", [
    (b"fine line\n\xff\xfe broken\n", ":2: not valid UTF-8"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", ":1: contains NUL bytes"),
    (b"", "empty corpus"),
    (b"\n\n   \n", "empty corpus"),
    (b"ok\n" + b"x" * 20_000 + b"\n", ":2: line is 20,000 characters long"),
])
def test_bad_txt(tmp_path, content, message):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(EmbedderError, match=message) as e:
        list(read_corpus([p]))
    assert str(p) in str(e.value)


@pytest.mark.parametrize("name, content, message", [
    ("bad.tsv", "a\tb\nonly one field\n", ":2: expected 2 tab-separated fields"),
    ("bad.jsonl", '{"text": "ok"}\n{not json\n', ":2: not valid JSON"),
    ("bad.jsonl", '{"txt": "typo"}\n', ":1: field 'text' is missing"),
    ("bad.jsonl", '{"text": "x", "role": "boss"}\n', ":1: field 'role'"),
    ("bad.parquet", "this is not parquet", "not a readable Parquet file"),
    ("corpus.csv", "a,b\n", "unknown corpus format"),
])
def test_bad_files(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(EmbedderError, match=message):
        list(read_corpus([p]))


def test_missing_and_directory(tmp_path):
    with pytest.raises(EmbedderError, match="no such file"):
        list(read_corpus([tmp_path / "nope.txt"]))
    with pytest.raises(EmbedderError, match="is a directory"):
        list(read_corpus([tmp_path]))
