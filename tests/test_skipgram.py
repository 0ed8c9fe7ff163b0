"""Skip-gram trainer: it learns planted structure (both backends), respects min_count and
subsampling, is repeatable when seeded on one thread, and its vectors export to gensim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedder.errors import EmbedderError
from embedder.encoders.skipgram import (
    SkipGramConfig,
    _build_alias,
    _keep_probability,
    _noise_weights,
    nearest,
    train_skipgram,
)
from embedder.data.word2vec import load_word2vec, save_word2vec
from benchmarks.skipgram import build_vocab  # the benchmark counts whitespace words; the product, pieces

GROUPS, GROUP_SIZE = 6, 6


def planted_corpus(n_sentences: int = 1500, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Sentences drawn from one group each: words co-occur only with their own group."""
    rng = np.random.default_rng(seed)
    sentences = [
        (rng.integers(GROUPS) * GROUP_SIZE + rng.integers(GROUP_SIZE, size=12)).astype(np.int32)
        for _ in range(n_sentences)
    ]
    vocab = GROUPS * GROUP_SIZE
    counts = np.bincount(np.concatenate(sentences), minlength=vocab).astype(np.int64)
    words = [f"g{i // GROUP_SIZE}w{i % GROUP_SIZE}" for i in range(vocab)]
    return sentences, counts, words


def small_config(**overrides) -> SkipGramConfig:
    settings = dict(dim=24, window=3, negatives=4, sample=0.0, min_count=1, epochs=3, threads=1)
    settings.update(overrides)
    return SkipGramConfig(**settings)


def assert_groups_recovered(vectors: np.ndarray, words: list[str]) -> None:
    for word in words:
        group = word.split("w")[0]
        top = [w for w, _ in nearest(vectors, words, word, k=GROUP_SIZE - 1)]
        assert all(w.startswith(group + "w") for w in top), (word, top)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_planted_neighbours_come_first(backend: str) -> None:
    sentences, counts, words = planted_corpus()
    vectors = train_skipgram(sentences, counts, small_config(), backend=backend, batch=256)
    assert vectors.shape == (len(words), 24) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert_groups_recovered(vectors, words)


def test_multithreaded_hogwild_learns_too() -> None:
    sentences, counts, words = planted_corpus()
    vectors = train_skipgram(sentences, counts, small_config(threads=2))
    assert_groups_recovered(vectors, words)


def test_seeded_single_thread_is_repeatable() -> None:
    sentences, counts, _ = planted_corpus(400)
    config = small_config(sample=1e-2, epochs=2)
    a = train_skipgram(sentences, counts, config)
    b = train_skipgram(sentences, counts, config)
    np.testing.assert_array_equal(a, b)
    c = train_skipgram(sentences, counts, small_config(sample=1e-2, epochs=2, seed=1))
    assert not np.array_equal(a, c)


def test_torch_backend_seeded_is_repeatable() -> None:
    sentences, counts, _ = planted_corpus(200)
    a = train_skipgram(sentences, counts, small_config(), backend="torch")
    b = train_skipgram(sentences, counts, small_config(), backend="torch")
    np.testing.assert_array_equal(a, b)


def test_rare_ids_are_not_trained_and_keep_their_init() -> None:
    sentences, counts, _ = planted_corpus(300)
    vocab = len(counts)
    rare_id, unused_id = vocab, vocab + 1  # rare: appears twice; unused: count 0
    sentences = sentences + [np.array([rare_id, 0, 1, rare_id], dtype=np.int32)]
    counts = np.append(counts, [2, 0])
    config = small_config(min_count=3, dim=8)
    vectors = train_skipgram(sentences, counts, config)
    assert not vectors[rare_id].any() and not vectors[unused_id].any()
    assert np.abs(vectors[:vocab]).sum(axis=1).min() > 0

    init = np.full((vocab + 2, 8), np.nan, dtype=np.float32)
    init[rare_id] = 7.0
    init[3] = 0.5
    warm = train_skipgram(sentences, counts, config, init=init)
    np.testing.assert_array_equal(warm[rare_id], 7.0)  # given, never trained: unchanged
    assert not warm[unused_id].any()
    assert np.isfinite(warm).all()


def test_init_rows_are_the_starting_point() -> None:
    sentences, counts, _ = planted_corpus(100)
    init = np.full((len(counts), 8), np.nan, dtype=np.float32)
    init[:5] = np.arange(40, dtype=np.float32).reshape(5, 8) / 100
    frozen = small_config(dim=8, epochs=1, lr=1e-12, min_lr=0.0)  # lr ~ 0: vectors stay put
    vectors = train_skipgram(sentences, counts, frozen, init=init)
    np.testing.assert_allclose(vectors[:5], init[:5], atol=1e-9)
    assert np.abs(vectors[5:]).max() <= 0.5 / 8  # word2vec's random start for the others
    with pytest.raises(EmbedderError, match="shape"):
        train_skipgram(sentences, counts, frozen, init=init[:, :4])


def test_subsampling_follows_word2vec() -> None:
    counts = np.array([1000, 100, 10, 1, 0], dtype=np.int64)
    config = SkipGramConfig(sample=1e-3, min_count=2)
    p = _keep_probability(counts, config)
    t = 1e-3 * 1110  # threshold count over the trainable words only
    expected = np.minimum((np.sqrt(counts[:3] / t) + 1) * t / counts[:3], 1.0)
    np.testing.assert_allclose(p[:3], expected)
    assert p[3] == 0 and p[4] == 0  # below min_count / unseen: never used
    assert p[0] < p[1] < p[2] <= 1.0
    rarely_sampled = _keep_probability(counts, SkipGramConfig(sample=1.0, min_count=2))
    np.testing.assert_array_equal(rarely_sampled, [1, 1, 1, 0, 0])  # p is capped at 1
    no_sampling = _keep_probability(counts, SkipGramConfig(sample=0, min_count=2))
    np.testing.assert_array_equal(no_sampling, [1, 1, 1, 0, 0])


def test_negatives_follow_unigram_to_the_three_quarters() -> None:
    counts = np.array([500, 0, 80, 3, 40, 1, 9], dtype=np.int64)
    weights = _noise_weights(counts, SkipGramConfig(min_count=3))
    ids, thresh, alias = _build_alias(weights)
    assert 1 not in ids and 5 not in ids  # never drawn as negatives
    share = np.zeros(len(counts))  # exact probability of each id under the alias table
    keep = np.minimum(thresh, 1 << 32) / 2.0**32
    np.add.at(share, ids, keep / len(ids))
    np.add.at(share, ids[alias], (1 - keep) / len(ids))
    valid = np.where(counts >= 3, counts, 0) ** 0.75
    np.testing.assert_allclose(share, valid / valid.sum(), atol=1e-9)


def test_progress_reaches_one() -> None:
    sentences, counts, _ = planted_corpus(200)
    seen: list[float] = []
    train_skipgram(sentences, counts, small_config(), progress=lambda task, fraction: seen.append(fraction))
    assert seen and seen[-1] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(seen, seen[1:]))


def test_long_sentences_and_empty_input() -> None:
    rng = np.random.default_rng(1)
    long = [rng.integers(0, 50, size=25_000).astype(np.int32), np.zeros(0, np.int32)]
    counts = np.bincount(long[0], minlength=50)
    vectors = train_skipgram(long, counts, small_config(epochs=1, threads=2))
    assert np.isfinite(vectors).all()
    empty = train_skipgram([], np.zeros(3, np.int64), small_config(dim=4))
    assert empty.shape == (3, 4) and not empty.any()
    with pytest.raises(ValueError, match="token ids"):
        train_skipgram([np.array([0, 9], np.int32)], np.ones(3, np.int64), small_config())


def test_bad_options_are_user_errors() -> None:
    sentences, counts, _ = planted_corpus(10)
    with pytest.raises(EmbedderError, match="window"):
        train_skipgram(sentences, counts, small_config(window=0))
    with pytest.raises(EmbedderError, match="device"):
        train_skipgram(sentences, counts, small_config(), device="tpu")
    with pytest.raises(EmbedderError, match="backend"):
        train_skipgram(sentences, counts, small_config(), backend="fast")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(EmbedderError, match="no CUDA GPU"):
            train_skipgram(sentences, counts, small_config(), device="cuda")


def test_build_vocab_orders_by_frequency() -> None:
    words, counts = build_vocab([["b", "a", "c", "a"], ["c", "a", "d", "b", "e"]], min_count=2)
    assert words == ["a", "b", "c"]  # b and c tie at 2: first seen first
    assert counts.tolist() == [3, 2, 2] and counts.dtype == np.int64


def test_nearest() -> None:
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [0, 0]], dtype=np.float32)
    words = ["a", "b", "c", "d", "zero"]
    result = nearest(vectors, words, "a", k=2)
    assert [w for w, _ in result] == ["b", "c"] or [w for w, _ in result] == ["b", "zero"]
    assert result[0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
    assert [w for w, _ in nearest(vectors, words, np.array([0, 1.0]), k=1)] == ["c"]
    assert len(nearest(vectors, words, "a", k=100)) == 4
    with pytest.raises(EmbedderError, match="'nope' is not in the vocabulary"):
        nearest(vectors, words, "nope")


@pytest.mark.parametrize("binary", [False, True])
def test_trained_vectors_export_to_gensim(tmp_path: Path, binary: bool) -> None:
    kv_module = pytest.importorskip("gensim.models.keyedvectors")
    sentences, counts, words = planted_corpus(300)
    vectors = train_skipgram(sentences, counts, small_config(epochs=1))
    path = tmp_path / ("v.bin" if binary else "v.txt")
    save_word2vec(path, words, vectors, binary=binary)
    kv = kv_module.KeyedVectors.load_word2vec_format(str(path), binary=binary)
    np.testing.assert_array_equal(kv.vectors, vectors)
    assert kv.index_to_key == words
    assert load_word2vec(path)[0] == words


def test_torch_backend_across_many_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    from embedder.encoders import skipgram

    monkeypatch.setattr(skipgram, "TORCH_SEGMENT", 500)  # ~40 segments instead of one
    sentences, counts, words = planted_corpus()
    vectors = train_skipgram(sentences, counts, small_config(), backend="torch", batch=256)
    assert_groups_recovered(vectors, words)


def test_auto_device_and_all_cores() -> None:
    sentences, counts, _ = planted_corpus(200)
    config = small_config(threads=0, epochs=1)  # 0 = every core
    vectors = train_skipgram(sentences, counts, config, device="auto")  # GPU if torch sees one
    assert vectors.shape == (len(counts), 24) and np.isfinite(vectors).all()


@pytest.mark.slow
def test_torch_backend_word_similarity_is_the_kernels() -> None:
    """The benchmark's quality check for both backends (BBC x4, 5 epochs, WordSim-353): the torch
    backend, which CUDA runs, within a small margin of the numba kernel. About 80 s on 2 cores."""
    pytest.importorskip("gensim")
    from benchmarks.skipgram import load_corpus, run_ours, wordsim

    sentences = load_corpus(4, raw_lines=False)
    if sentences is None:
        pytest.skip("../shared/data/bbc is not beside the checkout")
    config = SkipGramConfig(dim=100, epochs=5, threads=1)
    tables = {backend: run_ours(sentences, config, backend)[1] for backend in ("numba", "torch")}
    scores, pairs = wordsim(tables)
    assert pairs > 250
    assert scores["numba"] > 0.35, scores
    assert scores["torch"] > scores["numba"] - 0.03, scores
