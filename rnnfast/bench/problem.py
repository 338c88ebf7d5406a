"""The inputs and weights that every implementation at one shape runs on, so they all compute the same thing."""

from dataclasses import dataclass
from typing import Optional

import torch

from .plans import Shape


@dataclass(frozen=True)
class Problem:
    shape: Shape
    device: torch.device
    dtype: torch.dtype
    reference: torch.nn.RNNBase  # torch.nn.RNN, LSTM or GRU; holds the weights; implementations copy them
    input: torch.Tensor  # (T, B, I)
    hx: torch.Tensor  # (L*D, B, H)
    grad_output: torch.Tensor  # (T, B, D*H), the upstream gradient every backward pass receives
    cell: str = "RNN"  # which torch.nn layer: "RNN", "LSTM" or "GRU"
    cx: Optional[torch.Tensor] = None  # (L*D, B, H), the LSTM's initial cell state

    @property
    def initial_state(self):
        """The module's hx argument: (hx, cx) for an LSTM, hx otherwise."""
        return (self.hx, self.cx) if self.cell == "LSTM" else self.hx


def make_problem(shape: Shape, device="cpu", dtype=torch.float32, seed: int = 0, cell: str = "RNN") -> Problem:
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    reference = getattr(torch.nn, cell)(shape.input_size, shape.hidden_size, num_layers=shape.num_layers,
                                        bidirectional=shape.bidirectional)  # fmt: skip
    with torch.no_grad():  # torch.nn's own initialisation, U(-1/sqrt(H), 1/sqrt(H)), but seeded here
        bound = shape.hidden_size**-0.5
        for p in reference.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
    reference = reference.to(device=device, dtype=dtype)

    def randn(*size):
        return torch.randn(*size, generator=generator).to(device=device, dtype=dtype)

    T, B, I, H = shape.seq_len, shape.batch, shape.input_size, shape.hidden_size
    D = 2 if shape.bidirectional else 1
    x, hx, grad_output = randn(T, B, I), randn(shape.num_layers * D, B, H), randn(T, B, D * H)
    cx = randn(shape.num_layers * D, B, H) if cell == "LSTM" else None
    return Problem(shape, device, dtype, reference, x, hx, grad_output, cell, cx)
