"""The inputs and weights that every implementation at one shape runs on, so they all compute the same thing."""

from dataclasses import dataclass

import torch

from .plans import Shape


@dataclass(frozen=True)
class Problem:
    shape: Shape
    device: torch.device
    dtype: torch.dtype
    reference: torch.nn.RNN  # holds the weights; implementations copy them
    input: torch.Tensor  # (T, B, I)
    hx: torch.Tensor  # (1, B, H)
    grad_output: torch.Tensor  # (T, B, H), the upstream gradient every backward pass receives


def make_problem(shape: Shape, device="cpu", dtype=torch.float32, seed: int = 0) -> Problem:
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device)
    reference = torch.nn.RNN(shape.input_size, shape.hidden_size)
    with torch.no_grad():  # torch.nn.RNN's own initialisation, U(-1/sqrt(H), 1/sqrt(H)), but seeded here
        bound = shape.hidden_size**-0.5
        for p in reference.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
    reference = reference.to(device=device, dtype=dtype)

    def randn(*size):
        return torch.randn(*size, generator=generator).to(device=device, dtype=dtype)

    T, B, I, H = shape.seq_len, shape.batch, shape.input_size, shape.hidden_size
    return Problem(shape, device, dtype, reference, randn(T, B, I), randn(1, B, H), randn(T, B, H))
