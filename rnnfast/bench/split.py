"""Where one forward+backward of rnnfast's layer spends its time: the whole-sequence matrix products (parallel
over time) against the loops over time (sequential), in the same run.

The products are timed directly, as the same ATen calls on the same shapes the kernels make; the forward and
backward ops are timed on their own too, on the same values. Each op's loop is then the op's time less its
products. (Feeding the op a zero-width input would leave it only its loop, but with other values: the loop's
scalar tanh costs depend on its arguments, so that would time different work.) What the whole training step
holds beyond the two ops (autograd, the module's Python) is the remainder.
"""

from typing import Callable, Dict, List

import torch

from .implementations import build_rnnfast
from .plans import Shape, shape_label
from .problem import make_problem
from .tables import Section, milliseconds
from .timing import TimingConfig, time_interleaved

FORWARD_PRODUCTS = ("input projection",)
BACKWARD_PRODUCTS = ("grad input", "grad W_ih", "grad W_hh", "grad bias")
PARALLEL_PARTS = FORWARD_PRODUCTS + BACKWARD_PRODUCTS


def measure_split(shape: Shape, timing: TimingConfig, device, dtype, synchronize: Callable[[], None]) -> Dict:
    from .._ops import ops

    problem = make_problem(shape, device, dtype)
    T, B, I, H = shape.seq_len, shape.batch, shape.input_size, shape.hidden_size
    ref = problem.reference
    w_ih, w_hh = ref.weight_ih_l0.detach(), ref.weight_hh_l0.detach()
    bias = (ref.bias_ih_l0 + ref.bias_hh_l0).detach()
    x, hx = problem.input, problem.hx
    x2d = x.reshape(T * B, I)
    output, _ = ops.elman_layer_forward(x, hx, w_ih[None], w_hh[None], bias[None], None, False)
    grad_h_n = torch.zeros_like(hx)
    # dL/dz as the backward's products receive it would need the op's internals; any values of its shape cost
    # the same in a matrix product.
    dz = problem.grad_output.reshape(T * B, H)
    carried = output.reshape(T * B, H)[: (T - 1) * B]  # the states steps 1..T-1 started from, read in place

    parts = {
        "total": build_rnnfast(problem).forward_backward,
        "forward op": lambda: ops.elman_layer_forward(x, hx, w_ih[None], w_hh[None], bias[None], None, False),
        "backward op": lambda: ops.elman_layer_backward(problem.grad_output, grad_h_n, x, hx, w_ih[None],
                                                        w_hh[None], output, None, False),  # fmt: skip
        "input projection": lambda: torch.addmm(bias, x2d, w_ih.t()),
        "grad input": lambda: torch.mm(dz, w_ih),
        "grad W_ih": lambda: torch.mm(dz.t(), x2d),
        # As recurrent_weight_gradient (csrc/layer_states.cpp) computes it: step 0's term from hx, the rest in place.
        "grad W_hh": lambda: torch.mm(dz[:B].t(), hx[0]).addmm_(dz[B:].t(), carried),
        "grad bias": lambda: dz.sum(0),
    }
    if device.type == "cpu":
        # The floor of the loop over time: T bare (B x H) @ (H x H) products, nothing else (floor.py).
        parts["floor"] = lambda: ops.recurrence_floor(hx[0], w_hh, T)
    timings = time_interleaved(parts, timing, synchronize=synchronize)
    median = {name: t.median for name, t in timings.items()}
    loops = {
        "forward loop": median["forward op"] - sum(median[p] for p in FORWARD_PRODUCTS),
        "backward loop": median["backward op"] - sum(median[p] for p in BACKWARD_PRODUCTS),
    }
    return {
        "analysis": "split",
        "implementation": "rnnfast.RNN",
        "shape": shape.as_dict(),
        "parts": {name: t.as_dict() for name, t in timings.items()},
        "loops_s": loops,
        "parallel_s": sum(median[p] for p in PARALLEL_PARTS),
        "sequential_s": sum(loops.values()),
        "remainder_s": median["total"] - median["forward op"] - median["backward op"],
        "total_s": median["total"],
        "floor_s": median.get("floor"),
    }


def split_section(results: List[Dict]) -> Section:
    rows = []
    for r in results:
        s = r["shape"]
        total = r["total_s"]

        def share(seconds):
            return f"{milliseconds(seconds)} ({100 * seconds / total:.0f}%)"

        rows.append([
            shape_label(s),
            milliseconds(total),
            share(r["parallel_s"]),
            share(r["sequential_s"]),
            share(r["remainder_s"]),
            milliseconds(r["loops_s"]["forward loop"]),
            milliseconds(r["loops_s"]["backward loop"]),
        ])  # fmt: skip
    return Section(
        "Split of one rnnfast forward+backward: parallel products vs sequential loops (ms)",
        ["shape", "total", "parallel", "sequential", "remainder", "fwd loop", "bwd loop"],
        rows,
        [
            "parallel: input projection, grad input, grad W_ih, grad W_hh, grad bias, each timed directly.",
            "fwd loop, bwd loop: the forward and backward ops, timed on their own, less their products (the "
            "backward's loop includes its copies of the states). remainder: the training step less both ops "
            "(autograd, the module's Python).",
        ],
        "split.png",
    )
