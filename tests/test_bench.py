"""The benchmark suite: its timing arithmetic on a fake clock, and its --quick run end to end."""

import json
import os
import subprocess
import sys

import pytest

import torch

import rnnfast
from rnnfast.bench.registry import Implementation, Limits, Workload, registered
from rnnfast.bench.timing import Timing, TimingConfig, time_interleaved

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class FakeClock:
    """A clock that moves only when a fake workload says it took time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def workload(clock, durations, log=None, name=None):
    """A callable whose successive calls take durations[0], durations[1], ... (the last repeating)."""
    calls = iter(durations)
    last = [durations[-1]]

    def run():
        last[0] = next(calls, last[0])
        clock.now += last[0]
        if log is not None:
            log.append(name)

    return run


def test_median_and_quartiles_of_the_timed_calls():
    clock = FakeClock()
    # Two warm-up calls, a slow one and the one timed to calibrate, then the five timed ones.
    fns = {"a": workload(clock, [100.0, 1.0, 3.0, 1.0, 2.0, 5.0, 4.0]), "b": workload(clock, [0.5])}
    config = TimingConfig(warmup=2, repeats=5, min_repeats=5, min_sample_s=0.0, budget_s=1e9)
    timings = time_interleaved(fns, config, clock=clock)
    assert sorted(timings["a"].samples) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert timings["a"].median == 3.0
    assert (timings["a"].q25, timings["a"].q75, timings["a"].iqr) == (2.0, 4.0, 2.0)
    assert timings["b"].median == 0.5 and timings["b"].iqr == 0.0


def test_median_of_an_even_number_of_samples_is_the_midpoint():
    assert Timing((4.0, 1.0, 3.0, 2.0), 1).median == 2.5


def test_repetitions_are_interleaved_with_rotating_order():
    clock, log = FakeClock(), []
    fns = {n: workload(clock, [1.0], log, n) for n in "abc"}
    config = TimingConfig(warmup=0, repeats=3, min_repeats=3, min_sample_s=0.0, budget_s=1e9)
    time_interleaved(fns, config, clock=clock)
    calibration, rounds = log[:3], log[3:]
    assert calibration == ["a", "b", "c"]
    assert rounds == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_short_calls_are_batched_into_samples_of_the_minimum_length():
    clock = FakeClock()
    fns = {"fast": workload(clock, [0.001]), "slow": workload(clock, [0.5])}
    config = TimingConfig(warmup=0, repeats=3, min_repeats=3, min_sample_s=0.01, budget_s=1e9)
    timings = time_interleaved(fns, config, clock=clock)
    assert timings["fast"].calls == 10 and timings["slow"].calls == 1
    assert timings["fast"].median == pytest.approx(0.001)  # per call, not per sample


def test_the_time_budget_caps_the_repetitions_but_not_below_the_minimum():
    clock = FakeClock()
    config = TimingConfig(warmup=0, repeats=50, min_repeats=4, min_sample_s=0.0, budget_s=10.0)
    assert len(time_interleaved({"a": workload(clock, [1.0])}, config, clock=clock)["a"].samples) == 10
    config = TimingConfig(warmup=0, repeats=50, min_repeats=4, min_sample_s=0.0, budget_s=1.0)
    assert len(time_interleaved({"a": workload(clock, [1.0])}, config, clock=clock)["a"].samples) == 4


def test_a_callable_already_called_for_a_sample_or_longer_gets_no_warm_up():
    clock, log = FakeClock(), []
    fns = {"slow": workload(clock, [0.5], log, "slow"), "fast": workload(clock, [0.001], log, "fast")}
    config = TimingConfig(warmup=2, repeats=3, min_repeats=3, min_sample_s=0.01, budget_s=1e9)
    # The caller's own first calls took 0.5 s and 0.001 s: only the slow one is spared its warm-up.
    timings = time_interleaved(fns, config, clock=clock, called_s={"slow": 0.5, "fast": 0.001})
    assert log.count("slow") == 3 and timings["slow"].calls == 1  # the three samples, nothing before them
    assert log.count("fast") == 2 + 3 * 10  # two warm-up calls, then three samples of ten calls
    assert timings["slow"].median == 0.5 and timings["fast"].median == pytest.approx(0.001)


def test_queued_device_work_is_counted_through_synchronize():
    clock, queued = FakeClock(), [0.0]

    def launch():  # returns at once; its 2 s of work land on the clock at the next synchronize
        queued[0] += 2.0

    def synchronize():
        clock.now += queued[0]
        queued[0] = 0.0

    config = TimingConfig(warmup=1, repeats=3, min_repeats=3, min_sample_s=0.0, budget_s=1e9)
    assert time_interleaved({"gpu": launch}, config, clock=clock, synchronize=synchronize)["gpu"].median == 2.0


def _read_png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path
    return matplotlib.image.imread(path)


def test_quick_run_writes_every_measurement_table_and_plot(tmp_path):
    out = tmp_path / "bench"
    root = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "rnnfast.bench", "--quick", "--out", str(out)], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Standard shapes" in run.stdout and "Sequential penalty" in run.stdout and "Headroom" in run.stdout
    assert "done" in run.stderr  # the progress bar's last line

    result = json.loads((out / "results.json").read_text())
    names = [i["name"] for i in result["implementations"]]
    assert {"rnnfast.RNN", "torch.nn.RNN", "python loop", "torch.compile loop", "rnnfast.LSTM", "torch.nn.LSTM",
            "rnnfast.GRU", "torch.nn.GRU", "scan (linear recurrence)", "loop (linear recurrence)",
            "rnnfast.MinGRU"} <= set(names)  # fmt: skip
    # The other recurrences, timed beside the Elman RNN but computing something else: not checked against it.
    other = {"scan (linear recurrence)", "loop (linear recurrence)", "rnnfast.MinGRU"}
    assert "--quick" in result["machine"]["command"]
    assert result["machine"]["torch_threads"] >= 1 and result["dtype"] == "float32"
    found = {(r["analysis"], tuple(sorted(r["shape"].items())), r["implementation"], r["mode"]): r
             for r in result["measurements"]}  # fmt: skip
    for analysis in ("standard", "seq_len", "batch"):
        assert result["shapes"][analysis]
        for shape in result["shapes"][analysis]:
            for name in names:
                for mode in ("forward", "forward_backward"):
                    record = found[(analysis, tuple(sorted(shape.items())), name, mode)]
                    if name == "torch.compile loop":  # --quick compiles nothing
                        assert record["status"] == "skipped"
                        continue
                    single_layer = shape["num_layers"] == 1 and not shape["bidirectional"]
                    if not single_layer and name in {"python loop", "Newton (dense)", "Newton (diagonal)"} | other:
                        # One-layer references; the stacked shapes compare the layers with torch.nn's only.
                        assert record["status"] == "skipped" and "one-layer" in record["reason"], record
                        continue
                    assert record["status"] == "ok", record
                    assert record["agrees"] is None if name in other else record["agrees"], record
                    assert 0 < record["q25_s"] <= record["median_s"] <= record["q75_s"]
    assert len(result["split"]) == len(result["shapes"]["split"]) > 0
    for split in result["split"]:
        assert split["parallel_s"] > 0 and split["sequential_s"] > 0
        assert split["floor_s"] > 0  # the floor is timed in the same run on the CPU
    # The gated layers' bounds: each cell at each split shape, the training bound above the inference bound.
    assert [(b["cell"], b["shape"]) for b in result["gated_bound"]] == [
        (cell, shape) for shape in result["shapes"]["split"] for cell in ("LSTM", "GRU")]
    for bound in result["gated_bound"]:
        assert 0 < bound["inference_bound_s"] < bound["training_bound_s"]
    assert [p["shape"] for p in result["penalty"]] == result["shapes"]["penalty"]
    # The registered parallel-in-time implementations join the penalty analysis, each with its ratio.
    parallel_names = [i["name"] for i in result["implementations"]
                      if i["family"] == "parallel" and i["name"] not in other]  # fmt: skip
    assert parallel_names
    for penalty in result["penalty"]:
        assert set(parallel_names) <= set(penalty["ratio"]) and all(penalty["ratio"][n] > 0 for n in parallel_names)

    for name in ("standard_speedup", "cost_vs_seq_len", "cost_vs_batch", "split", "sequential_penalty"):
        image = _read_png(out / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0  # something was drawn
    report = (out / "report.md").read_text()
    assert "![" in report and "| rnnfast.RNN" in report
    assert "Distance from the floor" in report and "Headroom of the gated layers" in report


def test_speedup_divides_by_the_baseline_of_the_implementations_own_cell():
    from rnnfast.bench.sweeps import speedup

    shape = {"batch": 1, "seq_len": 2, "input_size": 3, "hidden_size": 4}

    def record(impl, cell, median_s):
        return dict(analysis="standard", shape=shape, mode="forward", implementation=impl, cell=cell, status="ok",
                    median_s=median_s)  # fmt: skip

    records = [record("torch.nn.RNN", "RNN", 1.0), record("torch.nn.LSTM", "LSTM", 6.0),
               record("rnnfast.LSTM", "LSTM", 2.0), record("python loop", "RNN", 4.0)]  # fmt: skip
    assert speedup(records, "standard", shape, "forward", "rnnfast.LSTM") == 3.0
    assert speedup(records, "standard", shape, "forward", "python loop") == 0.25
    # Records written before the suite had cells are the Elman RNN's.
    legacy = [{k: v for k, v in r.items() if k != "cell"} for r in records[:1]] + [record("x", "RNN", 2.0)]
    del legacy[1]["cell"]
    assert speedup(legacy, "standard", shape, "forward", "x") == 0.5


def test_gated_headroom_divides_each_cells_times_by_its_own_bound():
    from rnnfast.bench.gated_bound import gated_headroom_section

    shapes = [{"batch": 1, "seq_len": 2, "input_size": 3, "hidden_size": h, "num_layers": 1, "bidirectional": False}
              for h in (4, 8)]  # fmt: skip

    def record(impl, shape, mode, median_s):
        return dict(analysis="standard", shape=shape, mode=mode, implementation=impl, status="ok", median_s=median_s)

    records, bounds = [], []
    for k, shape in enumerate(shapes, start=1):
        for cell, scale in (("LSTM", 1.0), ("GRU", 3.0)):
            bounds.append(dict(cell=cell, shape=shape, inference_bound_s=k * 1e-3, training_bound_s=k * 2e-3))
            for mode, bound in (("forward", k * 1e-3), ("forward_backward", k * 2e-3)):
                records.append(record(f"torch.nn.{cell}", shape, mode, scale * 2 * bound))
                records.append(record(f"rnnfast.{cell}", shape, mode, 1.5 * bound))
    section = gated_headroom_section(bounds, records)
    # One block per cell: its shapes, then its own geometric mean of torch.nn / bound.
    assert [row[:2] for row in section.rows] == [
        ["B=1 T=2 I=3 H=4", "LSTM"], ["B=1 T=2 I=3 H=8", "LSTM"], ["geometric mean", "LSTM"],
        ["B=1 T=2 I=3 H=4", "GRU"], ["B=1 T=2 I=3 H=8", "GRU"], ["geometric mean", "GRU"]]  # fmt: skip
    lstm_first, gru_mean = section.rows[0], section.rows[5]
    assert lstm_first[2:] == ["1", "1.50x", "2.0x", "2", "1.50x", "2.0x"]
    assert gru_mean[4] == "6.0x" and gru_mean[7] == "6.0x"


def test_crossover_is_the_shortest_T_from_which_the_parallel_method_stays_faster():
    from rnnfast.bench.sweeps import seq_len_crossovers

    def record(impl, T, median_s, mode="forward"):
        shape = {"batch": 2, "seq_len": T, "input_size": 3, "hidden_size": 4}
        return dict(analysis="seq_len", shape=shape, mode=mode, implementation=impl, status="ok", median_s=median_s)

    # Faster at T=8 by chance, slower at 16, faster from 32 on: the crossover is 32, not 8.
    times = {8: (1.0, 2.0), 16: (3.0, 2.0), 32: (3.0, 4.0), 64: (5.0, 8.0)}
    records = [r for T, (par, seq) in times.items() for r in (record("par", T, par), record("seq", T, seq))]
    records += [record("slow", T, 9.0) for T in times]
    crossovers = seq_len_crossovers(records, {"par": "seq", "slow": "seq"})
    assert crossovers["forward"] == {"par": 32, "slow": None}
    assert crossovers["forward_backward"] == {"par": None, "slow": None}  # no records in that mode: no win shown


def _constant_workload(value):
    """A workload whose forward and training step both return (a one-element tensor holding value,)."""
    return Workload(lambda: (torch.full((1,), value),), lambda: (torch.full((1,), value),))


def test_the_baseline_is_set_up_once_and_its_own_results_are_the_reference(monkeypatch):
    from rnnfast.bench import registry, runner
    from rnnfast.bench.plans import Shape

    builds = []

    def build_baseline(problem):
        builds.append(problem)
        return _constant_workload(1.0)

    registry.registered()  # the built-in implementations register on first use; the baseline is replaced after
    baseline = Implementation("torch.nn.RNN", "counted", build_baseline, lambda problem, limits: None, "sequential")
    monkeypatch.setitem(registry._REGISTRY, "torch.nn.RNN", baseline)
    other = Implementation("other", "", lambda problem: _constant_workload(3.0), lambda problem, limits: None,
                           "sequential")  # fmt: skip
    prepare = lambda impls: runner._prepare_cell("standard", Shape(1, 2, 1, 1), "RNN", impls, Limits(),  # noqa: E731
                                                 torch.device("cpu"), torch.float32, lambda: None)  # fmt: skip
    records, workloads, expected = prepare([other, baseline])
    assert len(builds) == 1 and not records
    assert list(workloads) == ["torch.nn.RNN", "other"]  # the baseline first, whatever the order asked
    assert expected["forward"][0].item() == 1.0 and expected["forward_backward"][0].item() == 1.0
    # Not among those timed, it is still set up once, for the reference alone.
    records, workloads, expected = prepare([other])
    assert len(builds) == 2 and list(workloads) == ["other"] and expected["forward"][0].item() == 1.0


def test_newton_is_timed_only_up_to_the_plans_problem_size():
    from rnnfast.bench.plans import PLANS, Shape
    from rnnfast.bench.problem import make_problem

    (newton,) = registered(["Newton (diagonal)"])
    limit = PLANS["default"].newton_max_states
    at_limit = make_problem(Shape(32, limit // (32 * 64), 32, 64))
    past_limit = make_problem(Shape(32, 2 * limit // (32 * 64), 32, 64))
    assert newton.skip_reason(at_limit, Limits(newton_max_states=limit)) is None
    reason = newton.skip_reason(past_limit, Limits(newton_max_states=limit))
    assert reason is not None and "newton_max_states" in reason
    assert newton.skip_reason(past_limit, Limits()) is None  # no limit: --full
