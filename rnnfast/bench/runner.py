"""Measures the registered implementations at one shape: sets each up, checks it against its cell's torch.nn
baseline (torch.nn.RNN, LSTM or GRU), then times those of each cell against each other, forward and
forward+backward."""

import time
from typing import Callable, Dict, List, Sequence

import torch

from .plans import MODES, Shape
from .problem import make_problem
from .registry import Implementation, Limits, baseline_name, registered
from .timing import TimingConfig, time_interleaved

# Largest relative difference from the torch.nn baseline still counted as the same result. Float32 sums over long
# sequences and wide products differ in their last bits, and the recurrence carries the differences along.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-3}
LOW_PRECISION_TOLERANCE = 5e-2


def relative_difference(got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    worst = 0.0
    for g, e in zip(got, expected):
        scale = max(1.0, e.abs().max().item())
        worst = max(worst, (g.double() - e.double()).abs().max().item() / scale)
    return worst


def measure_shape(
    analysis: str,
    shape: Shape,
    impls: List[Implementation],
    timing: TimingConfig,
    limits: Limits,
    device: torch.device,
    dtype: torch.dtype,
    synchronize: Callable[[], None],
    tick: Callable[[str], None],
) -> List[Dict]:
    """Returns one record per implementation and mode: its timing, or why it was skipped or failed.
    Calls tick once per mode."""
    cells = list(dict.fromkeys(impl.cell for impl in impls))
    prepared = [_prepare_cell(analysis, shape, cell, [i for i in impls if i.cell == cell], limits, device, dtype,
                              synchronize) for cell in cells]  # fmt: skip
    records = [r for cell_records, _, _ in prepared for r in cell_records]
    for mode in MODES:
        tick(f"{analysis} {mode} {shape.label}")
        for cell, (_, workloads, expected) in zip(cells, prepared):
            records += _time_cell(analysis, shape, cell, mode, workloads, expected, timing, dtype, synchronize)
    return records


def _prepare_cell(analysis, shape, cell, impls, limits, device, dtype, synchronize):
    """Sets up the implementations of one cell on that cell's problem. Returns the records of those skipped or
    failed, the workloads of the others (name -> (workload, setup seconds, results, or None for another
    recurrence's, and per mode the seconds of its first call)) and the baseline's results."""
    problem = make_problem(shape, device, dtype, cell=cell)
    base = {"analysis": analysis, "shape": shape.as_dict(), "cell": cell}
    (baseline,) = registered([baseline_name(cell)])
    expected = None
    records, workloads = [], {}
    # The baseline first when it is timed too: its setup run gives the expected results (at the widest shapes
    # another run of torch.nn's LSTM and GRU would cost seconds).
    for impl in sorted(impls, key=lambda impl: impl is not baseline):
        reason = impl.skip_reason(problem, limits)
        if reason is not None:
            records += [dict(base, implementation=impl.name, mode=m, status="skipped", reason=reason) for m in MODES]
            continue
        start = time.perf_counter()
        results, called_s = {}, {}  # per mode: the first call's results and seconds
        try:
            workload = impl.build(problem)
            for mode in MODES:
                synchronize()
                call_start = time.perf_counter()
                results[mode] = getattr(workload, mode)()
                synchronize()
                called_s[mode] = time.perf_counter() - call_start
        except Exception as error:  # an implementation that cannot run here (dtype, device) is reported, not fatal
            message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            records += [dict(base, implementation=impl.name, mode=m, status="failed", reason=message) for m in MODES]
            continue
        synchronize()
        setup_s = time.perf_counter() - start
        if impl is baseline:
            expected = results
        workloads[impl.name] = (workload, setup_s, results if impl.same_function else None, called_s)
    if expected is None:  # the baseline is not among those timed
        reference = baseline.build(problem)
        expected = {"forward": reference.forward(), "forward_backward": reference.forward_backward()}
    return records, workloads, expected


def _time_cell(analysis, shape, cell, mode, workloads, expected, timing, dtype, synchronize):
    """Times one cell's workloads against each other, interleaved, and checks each result against the baseline's."""
    if not workloads:
        return []
    tolerance = TOLERANCE.get(dtype, LOW_PRECISION_TOLERANCE)
    timings = time_interleaved({name: getattr(w, mode) for name, (w, *_) in workloads.items()}, timing,
                               synchronize=synchronize,
                               called_s={name: called[mode] for name, (*_, called) in workloads.items()})
    records = []
    for name, (workload, setup_s, results, _) in workloads.items():
        # None where the implementation computes another function (results None): nothing to agree with.
        difference = None if results is None else relative_difference(results[mode], expected[mode])
        records.append(dict(analysis=analysis, shape=shape.as_dict(), cell=cell, implementation=name, mode=mode,
                            status="ok", setup_s=setup_s, relative_difference=difference,
                            agrees=None if difference is None else difference <= tolerance,
                            **timings[name].as_dict()))  # fmt: skip
    return records
