"""Where one forward+backward of rnnfast's layer spends its time: the whole-sequence matrix products (parallel
over time) against the loops over time (sequential), each timed on its own in the same run.

The products are timed directly, as the same ATen calls on the same shapes the kernels make. The forward loop
is the fused forward op given a zero-width input, which leaves it only the loop (and the bias written as the
loop's starting values). The backward loop is the backward op with a zero-width input, less the products it
still makes (dL/dW_hh and dL/db), timed directly. What the total holds beyond these parts (autograd, copies,
allocation) is reported as the remainder.
"""

from typing import Callable, Dict, List

import torch

from .implementations import build_rnnfast
from .plans import Shape
from .problem import make_problem
from .tables import Section, milliseconds
from .timing import TimingConfig, time_interleaved

PARALLEL_PARTS = ("input projection", "grad input", "grad W_ih", "grad W_hh", "grad bias")
SEQUENTIAL_PARTS = ("forward loop", "backward loop")


def measure_split(shape: Shape, timing: TimingConfig, device, dtype, synchronize: Callable[[], None]) -> Dict:
    from .._ops import ops

    problem = make_problem(shape, device, dtype)
    T, B, I, H = shape.seq_len, shape.batch, shape.input_size, shape.hidden_size
    ref = problem.reference
    w_ih, w_hh = ref.weight_ih_l0.detach(), ref.weight_hh_l0.detach()
    bias = (ref.bias_ih_l0 + ref.bias_hh_l0).detach()
    x2d = problem.input.reshape(T * B, I)
    hx = problem.hx
    zero_width_input = problem.input.new_empty(T, B, 0)
    zero_width_w_ih = w_ih.new_empty(1, H, 0)
    with torch.no_grad():
        output, _ = ops.elman_layer_forward(problem.input, hx, w_ih[None], w_hh[None], bias[None], None, False)
    # The products' cost does not depend on the values, so any dL/dz of the right shape times them.
    dz = problem.grad_output.reshape(T * B, H)
    prev = torch.cat((hx, output[:-1]))  # (T, B, H), the state each step started from
    grad_h_n = torch.zeros_like(hx)
    total = build_rnnfast(problem).forward_backward

    parts = {
        "total": total,
        "input projection": lambda: torch.addmm(bias, x2d, w_ih.t()),
        "forward loop": lambda: ops.elman_layer_forward(zero_width_input, hx, zero_width_w_ih, w_hh[None],
                                                        bias[None], None, False),  # fmt: skip
        "backward op, zero-width input": lambda: ops.elman_layer_backward(
            problem.grad_output, grad_h_n, zero_width_input, hx, zero_width_w_ih, w_hh[None], output, None, False
        ),
        "grad input": lambda: torch.mm(dz, w_ih),
        "grad W_ih": lambda: torch.mm(dz.t(), x2d),
        "grad W_hh": lambda: torch.bmm(dz.view(T * B, 1, H).permute(1, 2, 0), prev.view(T * B, 1, H).transpose(0, 1)),
        "grad bias": lambda: dz.sum(0),
    }
    timings = time_interleaved(parts, timing, synchronize=synchronize)
    median = {name: t.median for name, t in timings.items()}
    derived = {
        "backward loop": max(0.0, median["backward op, zero-width input"] - median["grad W_hh"] - median["grad bias"])
    }
    parallel = sum(median[p] for p in PARALLEL_PARTS)
    sequential = median["forward loop"] + derived["backward loop"]
    return {
        "analysis": "split",
        "implementation": "rnnfast.RNN",
        "shape": shape.as_dict(),
        "parts": {name: t.as_dict() for name, t in timings.items()},
        "derived_s": derived,
        "parallel_s": parallel,
        "sequential_s": sequential,
        "remainder_s": median["total"] - parallel - sequential,
        "total_s": median["total"],
    }


def split_section(results: List[Dict]) -> Section:
    rows = []
    for r in results:
        s = r["shape"]
        total = r["total_s"]

        def share(seconds):
            return f"{milliseconds(seconds)} ({100 * seconds / total:.0f}%)"

        rows.append([
            f"B={s['batch']} T={s['seq_len']} I={s['input_size']} H={s['hidden_size']}",
            milliseconds(total),
            share(r["parallel_s"]),
            share(r["sequential_s"]),
            share(r["remainder_s"]),
            milliseconds(r["parts"]["forward loop"]["median_s"]),
            milliseconds(r["derived_s"]["backward loop"]),
        ])  # fmt: skip
    return Section(
        "Split of one rnnfast forward+backward: parallel products vs sequential loops (ms)",
        ["shape", "total", "parallel", "sequential", "remainder", "fwd loop", "bwd loop"],
        rows,
        [
            "parallel: input projection, grad input, grad W_ih, grad W_hh, grad bias, each timed directly.",
            "fwd loop: the forward op with a zero-width input; bwd loop: the backward op with a zero-width input, "
            "less its grad W_hh and grad bias products. remainder: total less both (autograd, copies, allocation).",
        ],
        "split.png",
    )
