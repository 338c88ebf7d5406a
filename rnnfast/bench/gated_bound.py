"""The LSTM's and GRU's headroom: a lower bound on one layer's forward and forward+backward from its matrix
products alone, timed in the same run, and torch.nn's time over it (the most a kernel that does these products
could gain over torch.nn.LSTM / GRU, whose oneDNN kernels do the same ones).

A gated layer of G gates does the Elman layer's products with G*H rows of weights: the input projection
x W_ih^T (T*B x G*H), and in the backward dL/dx, dL/dW_ih, dL/dW_hh and the bias sum over the whole sequence;
inside the loop one (B x H) @ (H x G*H) product a step forward and one (B x G*H) @ (G*H x H) a step backward,
each timed as T bare products in a tight C++ loop (rnnfast::recurrence_floor). The pointwise gate work, the
GRU's second bias sum and everything else a layer does are left out, so the bound is below any real layer.
CPU only: the floor op has no CUDA kernel.
"""

from typing import Callable, Dict, List

import torch

from .floor import HEADROOM_COLUMNS, HeadroomRows
from .plans import Shape
from .sweeps import shape_label
from .tables import Section
from .timing import TimingConfig, time_interleaved

GATES = {"LSTM": 4, "GRU": 3}
FORWARD_PARTS = ("input projection", "forward floor")


def measure_gated_bound(shape: Shape, cell: str, timing: TimingConfig, device, dtype,
                        synchronize: Callable[[], None]) -> Dict:  # fmt: skip
    from .._ops import ops

    T, B, I, H = shape.seq_len, shape.batch, shape.input_size, shape.hidden_size
    GH = GATES[cell] * H
    generator = torch.Generator().manual_seed(0)

    def make(*size):
        # Values of a trained layer's order of magnitude; a product's speed does not depend on them otherwise.
        return (0.1 * torch.randn(*size, generator=generator, dtype=torch.float64)).to(device=device, dtype=dtype)

    x, w_ih, w_hh, bias = make(T * B, I), make(GH, I), make(GH, H), make(GH)
    grad_gates, states = make(T * B, GH), make(T * B, H)  # dL/d(gates) and the states each step started from
    h, grad_step = make(B, H), make(B, GH)
    parts = {
        "input projection": lambda: torch.addmm(bias, x, w_ih.t()),
        "grad input": lambda: torch.mm(grad_gates, w_ih),
        "grad W_ih": lambda: torch.mm(grad_gates.t(), x),
        "grad W_hh": lambda: torch.mm(grad_gates.t(), states),
        "grad bias": lambda: grad_gates.sum(0),
        "forward floor": lambda: ops.recurrence_floor(h, w_hh, T),  # h_{t-1} W_hh^T, (B x H) @ (H x G*H)
        "backward floor": lambda: ops.recurrence_floor(grad_step, w_hh.t(), T),  # (B x G*H) @ W_hh (G*H x H)
    }
    timings = time_interleaved(parts, timing, synchronize=synchronize)
    median = {name: t.median for name, t in timings.items()}
    return {
        "analysis": "gated_bound",
        "cell": cell,
        "shape": shape.as_dict(),
        "parts": {name: t.as_dict() for name, t in timings.items()},
        "inference_bound_s": sum(median[p] for p in FORWARD_PARTS),
        "training_bound_s": sum(median.values()),
    }


def gated_headroom_section(bounds: List[Dict], records: List[Dict]) -> Section:
    rows = []
    for cell in GATES:  # one block of rows per cell, each with its own geometric mean
        table = HeadroomRows(records)
        for r in (r for r in bounds if r["cell"] == cell):
            modes = {"forward": r["inference_bound_s"], "forward_backward": r["training_bound_s"]}
            table.add([shape_label(r["shape"]), cell], r["shape"], modes, f"rnnfast.{cell}", f"torch.nn.{cell}")
        rows += table.with_summary(["geometric mean", cell])
    return Section(
        "Headroom of the gated layers: a lower bound on one LSTM or GRU call from its matrix products alone (ms)",
        ["shape", "cell"] + HEADROOM_COLUMNS,
        rows,
        [
            "bound: for inference the input projection plus T bare (B x H) @ (H x G*H) products (G = 4 gates for "
            "the LSTM, 3 for the GRU); for training also dL/dx, dL/dW_ih, dL/dW_hh, the bias sum and T bare "
            "(B x G*H) @ (G*H x H) products, each timed on its own in this run with the BLAS that PyTorch links. "
            "torch.nn / bound is the most a kernel doing these products with that BLAS could gain over torch.nn's "
            "layer (oneDNN on the CPU); the gates' pointwise work is not in the bound. On CPUs where MKL runs its "
            "generic code path (not Intel's) rnnfast's loops use their own register-tiled products instead, and "
            "both they and oneDNN can beat the bound.",
        ],
    )
