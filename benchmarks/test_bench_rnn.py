"""pytest-benchmark suite: every registered implementation (rnnfast's and torch.nn's RNN, LSTM and GRU, and the
Elman loops) at the standard shapes, forward (inference) and forward+backward (training), one benchmark group per
cell, shape and mode so that their rows compare directly.

    pytest benchmarks/ --benchmark-only                  # the tables
    pytest benchmarks/ --benchmark-only --benchmark-json=run.json
    pytest benchmarks/ --benchmark-disable                # smoke test: one call each (CI)

With --benchmark-disable nothing is timed, so the smoke test runs each shape cut to SMOKE_MAX_STEPS time steps:
every code path at every width, without the seconds a full-length call of the largest shapes takes.
"""

import dataclasses

import pytest
import torch

from rnnfast.bench.plans import MODES, STANDARD_SHAPES
from rnnfast.bench.problem import make_problem
from rnnfast.bench.registry import Limits, registered

SMOKE_MAX_STEPS = 16

# The workloads of one shape are kept while its tests run, then dropped: the largest shapes' tensors and
# torch.compile's graphs are worth building once, not worth holding for the whole session.
_built = {}


def _problem(shape, cell):
    if _built.get("shape") != shape:
        _built.clear()
        _built["shape"] = shape
    if ("problem", cell) not in _built:
        _built[("problem", cell)] = make_problem(shape, cell=cell)
    return _built[("problem", cell)]


def _workload(shape, impl):
    if impl.name not in _built:
        _built[impl.name] = impl.build(_problem(shape, impl.cell))
    return _built[impl.name]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", registered(), ids=lambda i: i.name.replace(" ", "_"))
@pytest.mark.parametrize("shape", STANDARD_SHAPES, ids=lambda s: s.label.replace(" ", "_").replace("=", ""))
def test_layer(benchmark, request, shape, impl, mode):
    limit = request.config.getoption("--compile-max-steps")
    limits = Limits(compile_max_steps=(0 if benchmark.disabled else 128) if limit is None else limit)
    if benchmark.disabled:
        shape = dataclasses.replace(shape, seq_len=min(shape.seq_len, SMOKE_MAX_STEPS))
    problem = _problem(shape, impl.cell)
    reason = impl.skip_reason(problem, limits)
    if reason is not None:
        pytest.skip(reason)
    workload = _workload(shape, impl)
    benchmark.group = f"{impl.cell} {shape.label} {mode}"
    benchmark.extra_info.update(shape.as_dict(), implementation=impl.name, cell=impl.cell, mode=mode)
    result = benchmark(getattr(workload, mode))
    if mode == "forward":
        output, h_n = result
        D = 2 if shape.bidirectional else 1
        assert output.shape == (shape.seq_len, shape.batch, D * shape.hidden_size)
        assert h_n.shape == (shape.num_layers * D, shape.batch, shape.hidden_size)
    elif impl.same_function:
        assert [g.shape for g in result] == [problem.input.shape] + [p.shape for p in problem.reference.parameters()]
    else:  # another recurrence: the gradients of its own inputs
        assert result and all(torch.isfinite(g).all() for g in result)
