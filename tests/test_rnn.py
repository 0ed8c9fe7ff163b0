"""The unpacked BiRNN computes what a packed bidirectional RNN computes, and the training-budget
and output-layer choices that make training fast keep their promises."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from embedder.encoders import seq2seq
from embedder.encoders.rnn import BiRNN
from embedder.training.loop import TrainConfig, auto_epochs


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_unpacked_birnn_matches_a_packed_bidirectional_rnn(kind, layers):
    torch.manual_seed(0)
    cell = torch.nn.GRU if kind == "gru" else torch.nn.LSTM
    packed_rnn = cell(8, 6, num_layers=layers, batch_first=True, bidirectional=True)
    ours = BiRNN(kind, 8, 6, layers)
    for layer in range(layers):
        for suffix, rnns in (("", ours.forward_rnns), ("_reverse", ours.backward_rnns)):
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(rnns[layer], f"{w}_l0").data.copy_(getattr(packed_rnn, f"{w}_l{layer}{suffix}").data)
    x = torch.randn(5, 7, 8)
    lengths = torch.tensor([7, 3, 1, 5, 7])
    x[1, 3:] = 100.0  # padding must not leak into the backward direction
    ref, _ = packed_rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    ref, _ = pad_packed_sequence(ref, batch_first=True, total_length=7)
    ours.eval()
    got = ours(x, lengths)
    assert got.shape == (5, 7, 12)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert got[1, 3:].abs().max() == 0  # padded positions are zero, as pad_packed_sequence leaves them


def test_auto_epochs_many_passes_over_a_small_corpus_few_over_a_large_one():
    cfg = TrainConfig(batch_size=64, min_updates=1000)
    assert auto_epochs(300, cfg) == 30          # the bundled example: capped
    assert auto_epochs(7_000, cfg) == 9         # ~1000 updates
    assert auto_epochs(30_000, cfg) == 2        # a ~30k-line corpus: twice
    assert auto_epochs(200_000, cfg) == 1       # a large one: once, never zero
    assert auto_epochs(30_000, TrainConfig(epochs=5)) == 5


@pytest.mark.parametrize("vocab", [40, 3000, 8000])
def test_adaptive_softmax_is_a_distribution_and_its_loss_is_its_nll(vocab):
    torch.manual_seed(0)
    cfg = seq2seq.Seq2SeqConfig(vocab_size=vocab)
    out = seq2seq.output_layer(cfg, 16)
    h = torch.randn(10, 16)
    target = torch.randint(4, vocab, (10,))
    logp = out.log_prob(h)
    assert logp.shape == (10, vocab)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(10))
    torch.testing.assert_close(out(h, target).loss, -logp.gather(1, target[:, None]).mean())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_birnn_on_cuda_takes_lengths_from_the_cpu():
    """The batching code keeps lengths on the CPU; the RNN must accept them beside CUDA inputs."""
    torch.manual_seed(0)
    rnn = BiRNN("gru", 8, 6).eval()
    x, lengths = torch.randn(3, 5, 8), torch.tensor([5, 2, 4])
    on_cpu = rnn(x, lengths)
    on_gpu = rnn.cuda()(x.cuda(), lengths)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
