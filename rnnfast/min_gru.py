"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"), a recurrent cell trainable in parallel over time.

    z_t  = sigmoid(W_z x_t + b_z)                     the update gate, from the input alone
    h~_t = W_h x_t + b_h                              the candidate state, from the input alone
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t           a diagonal linear recurrence in h

Neither gate nor candidate depends on h_{t-1}, so both are one product over all steps, and the recurrence is
one rnnfast.scan.linear_recurrence call: no loop over time in the forward or the backward. (This is the paper's
plain minGRU; its log-space variant only changes the arithmetic, not the recurrence.)
"""

import torch

from ._torchscript import NotScriptable
from .scan import linear_recurrence


class MinGRU(NotScriptable, torch.nn.Module):
    """One minGRU layer. input (T, B, input_size), or (B, T, input_size) with batch_first; hx (1, B, hidden_size)
    or None for zeros. Returns output (T, B, hidden_size) (batch-first when batch_first) and h_n (1, B, H), as
    torch.nn.GRU with one layer does. Parameters: weight (2*hidden_size, input_size) and bias (2*hidden_size),
    the gate's rows first, then the candidate's."""

    def __init__(self, input_size, hidden_size, bias=True, batch_first=False, device=None, dtype=None):
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(f"MinGRU: expected input_size and hidden_size > 0, got {input_size} and {hidden_size}")
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, batch_first
        # The gate and the candidate in one product: rows [0, H) give z's pre-activation, rows [H, 2H) give h~.
        self.input_projection = torch.nn.Linear(input_size, 2 * hidden_size, bias=bias, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        if input.dim() != 3:
            raise ValueError(f"MinGRU: expected a 3-D input (seq_len, batch, input_size), got {input.dim()}-D")
        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        if x.size(2) != self.input_size:
            raise ValueError(f"MinGRU: expected input_size {self.input_size}, got input of shape {tuple(input.shape)}")
        T, B, _ = x.shape
        if hx is None:
            hx = x.new_zeros(1, B, self.hidden_size)
        elif tuple(hx.shape) != (1, B, self.hidden_size):
            raise ValueError(f"MinGRU: expected hx of shape {(1, B, self.hidden_size)}, got {tuple(hx.shape)}")
        gate_logits, candidate = self.input_projection(x).chunk(2, dim=2)  # each (T, B, H)
        z = torch.sigmoid(gate_logits)
        output = linear_recurrence(1 - z, z * candidate, hx[0])  # (T, B, H)
        h_n = output[-1:] if T > 0 else hx
        return (output.transpose(0, 1) if self.batch_first else output), h_n

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.input_projection.bias is not None}, " \
            f"batch_first={self.batch_first}"
