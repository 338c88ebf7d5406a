"""The sequential penalty: what the recurrence costs as a loop over T steps, against the same arithmetic done
as if the steps were independent, one (T*B x H) @ (H x H) product and one tanh over all rows.

The loop's T small products cannot be merged because each needs the previous step's output; the ratio is what
that dependency costs on this machine, per sequence length.
"""

from typing import Callable, Dict, List

import torch

from .implementations import rnnfast_missing_reason
from .plans import Shape
from .problem import make_problem
from .tables import Section, milliseconds
from .timing import TimingConfig, time_interleaved

LOOPS = ("rnnfast loop", "python loop")


def measure_penalty(shape: Shape, timing: TimingConfig, device, dtype, synchronize: Callable[[], None]) -> Dict:
    from .._ops import ops

    problem = make_problem(shape, device, dtype)
    T, B, H = shape.seq_len, shape.batch, shape.hidden_size
    w_hh = problem.reference.weight_hh_l0.detach()
    w_hh_t = w_hh.t()
    bias = (problem.reference.bias_ih_l0 + problem.reference.bias_hh_l0).detach()
    h0 = problem.hx[0]
    # The input projections, as the loops receive them. Values do not change the cost.
    z = problem.grad_output
    zero_width_input = problem.input.new_empty(T, B, 0)
    zero_width_w_ih = w_hh.new_empty(1, H, 0)
    # Stand-in states for the parallel product: any (T*B, H) values cost the same arithmetic.
    states = problem.input.new_empty(T * B, H).normal_()

    def python_loop():
        h, outputs = h0, []
        for t in range(T):
            h = torch.tanh(torch.addmm(z[t], h, w_hh_t))
            outputs.append(h)
        return torch.stack(outputs)

    candidates = {
        "python loop": python_loop,
        "one parallel product": lambda: torch.tanh_(torch.addmm(z.view(T * B, H), states, w_hh_t)),
    }
    if rnnfast_missing_reason(problem.device) is None:
        # The fused forward op with nothing to project: only its loop over time (from the bias as z).
        candidates["rnnfast loop"] = lambda: ops.elman_layer_forward(
            zero_width_input, problem.hx, zero_width_w_ih, w_hh[None], bias[None], None, False
        )
    with torch.no_grad():
        timings = time_interleaved(candidates, timing, synchronize=synchronize)
    parallel = timings["one parallel product"].median
    return {
        "analysis": "penalty",
        "shape": shape.as_dict(),
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "ratio": {loop: timings[loop].median / parallel for loop in LOOPS if loop in timings},
    }


def penalty_section(results: List[Dict]) -> Section:
    rows = []
    for r in results:
        t = r["timings"]
        rows.append([str(r["shape"]["seq_len"]), milliseconds(t["one parallel product"]["median_s"])]
                    + [f"{milliseconds(t[loop]['median_s'])} ({r['ratio'][loop]:.1f}x)" if loop in t else "-"
                       for loop in LOOPS])  # fmt: skip
    s = results[0]["shape"]
    return Section(
        f"Sequential penalty at B={s['batch']} H={s['hidden_size']}: the recurrence vs one parallel product (ms)",
        ["T", "one (T*B x H)@(H x H) + tanh", "rnnfast loop (ratio)", "python loop (ratio)"],
        rows,
        ["ratio: loop time over the parallel product's time, the same multiply-adds and tanh without the "
         "step-to-step dependency."],
        "sequential_penalty.png",
    )
