"""Where does parallel-in-time evaluation beat the sequential kernel? Times one Elman layer direction,
sequential (torch.ops.rnnfast.elman_layer_forward and its backward; on CUDA on its default path and on the
general path forced) against Newton's method (rnnfast.parallel, dense and diagonal, and the implicit-function
backward), forward and forward+backward, over hidden size, sequence length and batch, with the Newton
iterations taken; then, on the CPU, the diagonal scan alone with one time chunk against two. Prints markdown
tables as it goes; the rule of RNN(mode="auto") (rnnfast.parallel.PARALLEL_WINS) is read off them.

    python benchmarks/newton_crossover.py [--threads N] [--device cpu|cuda] [--quick]
"""

import argparse
import os

import torch

from gpu_check import with_path  # benchmarks/gpu_check.py, beside this script
from rnnfast import parallel
from rnnfast._ops import ops
from rnnfast.bench.plans import MODES, Shape
from rnnfast.bench.problem import make_problem
from rnnfast.bench.timing import TimingConfig, time_interleaved
from rnnfast.scan import linear_recurrence

GRIDS = {
    "default": dict(batches=(1, 16), hidden=(2, 8, 32, 64), seq_lens=(64, 512, 4096), scan_steps=(4096, 65536)),
    "quick": dict(batches=(1,), hidden=(2, 8), seq_lens=(16, 64), scan_steps=(256,)),
}


def layer_calls(problem, mode):
    """name -> callable running one layer direction of `problem` in `mode`, and name -> NewtonReport."""
    ref = problem.reference
    params = [p.detach().clone().requires_grad_(mode == "forward_backward") for p in
              (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)]  # fmt: skip
    x = problem.input.detach().clone().requires_grad_(mode == "forward_backward")
    h0 = problem.hx[0]

    def sequential():
        w_ih, w_hh, b_ih, b_hh = params
        return ops.elman_layer_forward(x, h0[None], w_ih[None], w_hh[None], (b_ih + b_hh)[None], None, False)[0]

    def newton(method):
        w_ih, w_hh, b_ih, b_hh = params
        return parallel.elman_parallel(x, h0, w_ih, w_hh, b_ih + b_hh, method=method)

    def timed(run):
        if mode == "forward":
            return lambda: run()
        return lambda: torch.autograd.grad(run(), [x, *params], problem.grad_output)

    calls = {"sequential": timed(sequential)}
    if problem.device.type == "cuda":  # the default (auto) path, and the general path forced
        calls["sequential, general path"] = timed(with_path("general", sequential))
    reports = {}
    T, B, H = problem.shape.seq_len, problem.shape.batch, problem.shape.hidden_size
    for method in parallel.METHODS:
        if method == "dense" and T * B * H * H > parallel.DENSE_MAX_JACOBIAN_ELEMENTS:
            continue
        reports[method] = newton(method)[2]
        calls[method] = timed((lambda m: lambda: newton(m)[0])(method))
    return calls, reports


def newton_table(grid, device, mode, timing, synchronize):
    general = " | sequential, general path (ms)" if device == "cuda" else ""
    print(f"{mode}:\n\n| B | H | T | sequential (ms){general} | Newton dense (ms, iterations) "
          "| Newton diagonal (ms, iterations) | best Newton / sequential |\n"
          f"| --- | --- | --- | --- | --- | --- | --- |{' --- |' if general else ''}", flush=True)  # fmt: skip
    for B in grid["batches"]:
        for H in grid["hidden"]:
            for T in grid["seq_lens"]:
                calls, reports = layer_calls(make_problem(Shape(B, T, H, H), device), mode)
                with torch.set_grad_enabled(mode == "forward_backward"):
                    median = {n: t.median for n, t in time_interleaved(calls, timing, synchronize=synchronize).items()}
                cells = []
                for method in parallel.METHODS:
                    if method not in median:
                        cells.append("-")
                        continue
                    r = reports[method]
                    cells.append(f"{median[method] * 1e3:.3f} ({r.iterations}{'' if r.converged else ', fell back'})")
                best = min(v for n, v in median.items() if not n.startswith("sequential"))
                sequential = [f"{v * 1e3:.3f}" for n, v in median.items() if n.startswith("sequential")]
                print(f"| {B} | {H} | {T} | {' | '.join(sequential)} | {' | '.join(cells)} | "
                      f"{best / median['sequential']:.1f}x |", flush=True)  # fmt: skip
    print()


def scan_table(grid, device, timing, synchronize):
    """The diagonal scan with B = H = 1 (one channel: nothing to split but time), one chunk against two."""
    print("| T | 1 time chunk (ms) | 2 time chunks (ms) |\n| --- | --- | --- |", flush=True)
    for T in grid["scan_steps"]:
        a = torch.rand(T, 1, 1, device=device)
        b = torch.randn(T, 1, 1, device=device)
        medians = {}
        for chunks in ("1", "2"):
            os.environ["RNNFAST_SCAN_TIME_CHUNKS"] = chunks
            medians[chunks] = time_interleaved({"scan": lambda: linear_recurrence(a, b)}, timing,
                                               synchronize=synchronize)["scan"].median  # fmt: skip
        del os.environ["RNNFAST_SCAN_TIME_CHUNKS"]
        print(f"| {T} | {medians['1'] * 1e3:.3f} | {medians['2'] * 1e3:.3f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = GRIDS["quick" if args.quick else "default"]
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    timing = TimingConfig(warmup=2, repeats=7, min_repeats=3, min_sample_s=0.005, budget_s=1.0)
    print(f"device {args.device}, float32, {torch.get_num_threads()} torch threads, torch {torch.__version__}\n")
    for mode in MODES:
        newton_table(grid, args.device, mode, timing, synchronize)
    if args.device == "cpu":  # the time chunks are the CPU kernel's; the CUDA scan chooses its own
        scan_table(grid, args.device, timing, synchronize)


if __name__ == "__main__":
    main()
