"""The sequential penalty: what the recurrence costs as a loop over T steps, against the same arithmetic done
as if the steps were independent: one (T*B x H) @ (H x H) product and one tanh over all rows.

The loop's T small products cannot be merged because each needs the previous step's output. The parallel
product is given the very states the loop produces, so both do the same multiply-adds and tanh on the same
values; the ratio is what the step-to-step dependency costs on this machine, per sequence length.
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
    problem = make_problem(shape, device, dtype)
    T, B, I, H = shape.seq_len, shape.batch, shape.input_size, shape.hidden_size
    ref = problem.reference
    w_ih, w_hh = ref.weight_ih_l0.detach(), ref.weight_hh_l0.detach()
    w_hh_t = w_hh.t()
    bias = (ref.bias_ih_l0 + ref.bias_hh_l0).detach()
    x2d = problem.input.reshape(T * B, I)
    z = torch.addmm(bias, x2d, w_ih.t()).view(T, B, H)  # every step's input projection, as the loops get it
    h0 = problem.hx[0]
    with torch.no_grad():
        output, _ = ref(problem.input, problem.hx)
    prev = torch.cat((problem.hx, output[:-1])).view(T * B, H)  # the state each step starts from

    def python_loop():
        h, outputs = h0, []
        for z_t in z.unbind(0):
            h = torch.tanh(torch.addmm(z_t, h, w_hh_t))
            outputs.append(h)
        return torch.stack(outputs)

    candidates = {
        "python loop": python_loop,
        "one parallel product": lambda: torch.tanh_(torch.addmm(z.view(T * B, H), prev, w_hh_t)),
    }
    if rnnfast_missing_reason(problem.device, problem.dtype) is None:
        from .._ops import ops

        # The fused op runs its loop after its own input projection; the projection is timed alongside and
        # taken off, so that the loop sees the real pre-activations (its tanh's cost depends on them).
        candidates["rnnfast forward op"] = lambda: ops.elman_layer_forward(
            problem.input, problem.hx, w_ih[None], w_hh[None], bias[None], None, False
        )
        candidates["input projection"] = lambda: torch.addmm(bias, x2d, w_ih.t())
    with torch.no_grad():
        timings = time_interleaved(candidates, timing, synchronize=synchronize)
    median = {name: t.median for name, t in timings.items()}
    loops = {"python loop": median["python loop"]}
    if "rnnfast forward op" in median:
        loops["rnnfast loop"] = median["rnnfast forward op"] - median["input projection"]
    parallel = median["one parallel product"]
    return {
        "analysis": "penalty",
        "shape": shape.as_dict(),
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "loops_s": loops,
        "parallel_s": parallel,
        "ratio": {loop: seconds / parallel for loop, seconds in loops.items()},
    }


def penalty_section(results: List[Dict]) -> Section:
    rows = []
    for r in results:
        rows.append([str(r["shape"]["seq_len"]), milliseconds(r["parallel_s"])]
                    + [f"{milliseconds(r['loops_s'][loop])} ({r['ratio'][loop]:.1f}x)" if loop in r["ratio"] else "-"
                       for loop in LOOPS])  # fmt: skip
    s = results[0]["shape"]
    return Section(
        f"Sequential penalty at B={s['batch']} H={s['hidden_size']}: the recurrence vs one parallel product (ms)",
        ["T", "one (T*B x H)@(H x H) + tanh", "rnnfast loop (ratio)", "python loop (ratio)"],
        rows,
        ["ratio: loop time over the parallel product's, the same multiply-adds and tanh on the same values "
         "without the step-to-step dependency. rnnfast loop: its forward op less its input projection, both timed."],
        "sequential_penalty.png",
    )
