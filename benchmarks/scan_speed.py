"""The parallel scan against a sequential loop of the same linear recurrence, h_t = a_t * h_{t-1} + b_t:
rnnfast.scan.linear_recurrence (one registered op) against a per-step PyTorch loop (one addcmul a step), forward
and forward+backward, at long sequences and B*H <= 4096 (the parallel-in-time issue's GPU target: the scan at
least 10x faster at T >= 4096). Prints a markdown table; run by gpu_check.sh with --device cuda.

    python benchmarks/scan_speed.py [--device cpu|cuda] [--quick]
"""

import argparse

import torch

from rnnfast.bench.implementations import linear_recurrence_loop
from rnnfast.bench.timing import TimingConfig, time_interleaved
from rnnfast.scan import linear_recurrence

# (seq len, batch, hidden); forward+backward only where the loop's T autograd nodes stay within seconds.
GRIDS = {
    "default": [(4096, 1, 64), (4096, 16, 256), (4096, 64, 64), (16384, 1, 64), (16384, 16, 256)],
    "quick": [(64, 2, 8), (128, 1, 4)],
}
BACKWARD_MAX_STEPS = 4096


def calls(T, B, H, device, backward):
    # |a| < 1 keeps the recurrence bounded, as in a decaying state; the timing does not depend on the values.
    a = torch.rand(T, B, H, device=device).requires_grad_(backward)
    b = torch.randn(T, B, H, device=device).requires_grad_(backward)
    h0 = torch.randn(B, H, device=device).requires_grad_(backward)
    grad = torch.randn(T, B, H, device=device)

    def timed(fn):
        if not backward:
            return lambda: fn(a, b, h0)
        return lambda: torch.autograd.grad(fn(a, b, h0), [a, b, h0], grad)

    with torch.no_grad():
        loop = linear_recurrence_loop(a, b, h0)
        error = ((linear_recurrence(a, b, h0) - loop).abs().max() / loop.abs().max()).item()
    return {"scan": timed(linear_recurrence), "loop": timed(linear_recurrence_loop)}, error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    synchronize = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    timing = TimingConfig(warmup=2, repeats=5, min_repeats=3, min_sample_s=0.002, budget_s=1.0)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{device_name}, float32, torch {torch.__version__}: medians of interleaved runs\n\n"
          "| T | B | H | mode | per-step loop (ms) | scan (ms) | scan speed-up | scan error (max, relative to loop) |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)  # fmt: skip
    for T, B, H in GRIDS["quick" if args.quick else "default"]:
        for backward in (False, True):
            if backward and T > BACKWARD_MAX_STEPS:
                continue
            timed, error = calls(T, B, H, args.device, backward)
            with torch.set_grad_enabled(backward):
                median = {n: t.median for n, t in time_interleaved(timed, timing, synchronize=synchronize).items()}
            mode = "forward+backward" if backward else "forward"
            print(f"| {T} | {B} | {H} | {mode} | {median['loop'] * 1e3:.3f} | {median['scan'] * 1e3:.3f} | "
                  f"{median['loop'] / median['scan']:.1f}x | {error:.1e} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
