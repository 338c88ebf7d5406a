"""Linear recurrences over time, scanned in parallel: the building block of the parallel-in-time methods.

    linear_recurrence:       h_t = a_t * h_{t-1} + b_t      a, b (T, B, H), h0 (B, H)
    dense_linear_recurrence: h_t = A_t @ h_{t-1} + b_t      A (T, B, H, H), b (T, B, H), h0 (B, H)

Both return every h_t as (T, B, H) and are differentiable in all their inputs; the backward is the reverse-time
scan of the same form (docs/parallel.md). Under torch.func transforms and forward-mode AD, which the fused scans'
autograd does not support, they run as a loop over time in ATen ops (rnnfast/_differentiable_twins.py).
"""

import torch

from ._differentiable_twins import dense_linear_recurrence_differentiable, linear_recurrence_differentiable
from ._ops import needs_differentiable_twin, ops


def _initial_state(h0, b):
    if h0 is not None:
        return h0
    if b.dim() != 3:
        raise ValueError(f"rnnfast.scan: expected b of shape (T, B, H), got {b.dim()}-D b of shape {tuple(b.shape)}")
    return b.new_zeros(b.shape[1:])


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor = None) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t for t = 0..T-1 from h_{-1} = h0 (zeros when None), elementwise.
    a, b (T, B, H), h0 (B, H); returns h (T, B, H)."""
    h0 = _initial_state(h0, b)
    if needs_differentiable_twin((a, b, h0)):
        return linear_recurrence_differentiable(a, b, h0)
    return ops.linear_recurrence(a, b, h0)


def dense_linear_recurrence(A: torch.Tensor, b: torch.Tensor, h0: torch.Tensor = None) -> torch.Tensor:
    """h_t = A_t @ h_{t-1} + b_t for t = 0..T-1 from h_{-1} = h0 (zeros when None), a matrix per step and row.
    A (T, B, H, H), b (T, B, H), h0 (B, H); returns h (T, B, H)."""
    h0 = _initial_state(h0, b)
    if needs_differentiable_twin((A, b, h0)):
        return dense_linear_recurrence_differentiable(A, b, h0)
    return ops.dense_linear_recurrence(A, b, h0)
