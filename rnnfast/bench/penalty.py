"""The sequential penalty: what the recurrence costs as a loop over T steps, against the same arithmetic done
as if the steps were independent: one (T*B x H) @ (H x H) product and one tanh over all rows.

The loop's T small products cannot be merged because each needs the previous step's output. The parallel
product is given the very states the loop produces, so both do the same multiply-adds and tanh on the same
values; the ratio is what the step-to-step dependency costs on this machine, per sequence length.

The registered parallel-in-time implementations (family "parallel") are timed alongside: their ratio says how
far evaluating all steps at once is from that bound.
"""

from typing import Callable, Dict, List, Sequence

import torch

from .implementations import rnnfast_missing_reason
from .plans import Shape
from .problem import make_problem
from .registry import Implementation, Limits
from .tables import Section, milliseconds
from .timing import TimingConfig, time_interleaved

LOOPS = ("rnnfast loop", "python loop")


def measure_penalty(shape: Shape, timing: TimingConfig, device, dtype, synchronize: Callable[[], None],
                    parallel_impls: Sequence[Implementation] = (), limits: Limits = Limits()) -> Dict:  # fmt: skip
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
    methods = [impl.name for impl in parallel_impls if impl.skip_reason(problem, limits) is None]
    for impl in parallel_impls:
        if impl.name in methods:
            candidates[impl.name] = impl.build(problem).forward
    with torch.no_grad():
        timings = time_interleaved(candidates, timing, synchronize=synchronize)
    median = {name: t.median for name, t in timings.items()}
    loops = {"python loop": median["python loop"]}
    if "rnnfast forward op" in median:
        loops["rnnfast loop"] = median["rnnfast forward op"] - median["input projection"]
    # Like the fused op, a parallel method's forward includes the input projection, taken off the same way.
    parallel_methods = {name: median[name] - median["input projection"] for name in methods}
    parallel = median["one parallel product"]
    return {
        "analysis": "penalty",
        "shape": shape.as_dict(),
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "loops_s": loops,
        "parallel_methods_s": parallel_methods,
        "parallel_s": parallel,
        "ratio": {name: seconds / parallel for name, seconds in {**loops, **parallel_methods}.items()},
    }


def penalty_section(results: List[Dict]) -> Section:
    methods = list(dict.fromkeys(name for r in results for name in r.get("parallel_methods_s", {})))
    rows = []
    for r in results:
        times = {**r["loops_s"], **r.get("parallel_methods_s", {})}
        rows.append([str(r["shape"]["seq_len"]), milliseconds(r["parallel_s"])]
                    + [f"{milliseconds(times[name])} ({r['ratio'][name]:.1f}x)" if name in r["ratio"] else "-"
                       for name in LOOPS + tuple(methods)])  # fmt: skip
    s = results[0]["shape"]
    notes = ["ratio: loop time over the parallel product's, the same multiply-adds and tanh on the same values "
             "without the step-to-step dependency. rnnfast loop: its forward op less its input projection, both timed."]
    if methods:
        notes.append(f"{', '.join(methods)}: the parallel-in-time implementations' forward, less the input "
                     "projection, over the same parallel product.")
    return Section(
        f"Sequential penalty at B={s['batch']} H={s['hidden_size']}: the recurrence vs one parallel product (ms)",
        ["T", "one (T*B x H)@(H x H) + tanh", "rnnfast loop (ratio)", "python loop (ratio)"]
        + [f"{name} (ratio)" for name in methods],
        rows,
        notes,
        "sequential_penalty.png",
    )
