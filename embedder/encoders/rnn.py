"""A bidirectional GRU/LSTM over right-padded batches, read without packing.

Both encoders read utterances of different lengths. `pack_padded_sequence` gets the backward
direction right (it starts at each utterance's last piece, not at the padding) but on a CPU it
slices the batch at every time step, and the backward pass of those slices grows faster than the
length (benchmarks/RESULTS.md has the measurement). So each direction
is its own unidirectional RNN over the full padded batch; the backward one reads each row with
its valid part reversed in place (padding stays at the end), so it too starts at the last real
piece. Outputs at padded positions are zeroed, as `pad_packed_sequence` leaves them. The result
is the same function as a packed bidirectional RNN, on plain dense kernels (cuDNN on a GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..device import run_rnn
from .batching import length_mask

KINDS = {"gru": nn.GRU, "lstm": nn.LSTM}


def reversal_index(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, T) positions that reverse each row's first `length` entries and keep the rest."""
    pos = torch.arange(width, device=lengths.device)[None, :]
    n = lengths.to(pos.device)[:, None]
    return torch.where(pos < n, n - 1 - pos, pos)


def flip_valid(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class BiRNN(nn.Module):
    """Stacked bidirectional RNN: `forward(x, lengths)` gives states (B, T, 2 * hidden)."""

    def __init__(self, kind: str, input_size: int, hidden: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        cell = KINDS[kind]
        sizes = [input_size] + [2 * hidden] * (layers - 1)
        self.forward_rnns = nn.ModuleList(cell(n, hidden, batch_first=True) for n in sizes)
        self.backward_rnns = nn.ModuleList(cell(n, hidden, batch_first=True) for n in sizes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(x.device)  # lengths stay on the CPU through the batching code
        index = reversal_index(lengths, x.shape[1])
        mask = length_mask(lengths, x.shape[1], x.device).unsqueeze(-1)
        for i, (fwd, bwd) in enumerate(zip(self.forward_rnns, self.backward_rnns)):
            if i:
                x = F.dropout(x, self.dropout, self.training)
            ahead = run_rnn(fwd, x)
            behind = run_rnn(bwd, flip_valid(x, index))
            x = torch.cat([ahead, flip_valid(behind, index)], -1).masked_fill(~mask, 0.0)
        return x
