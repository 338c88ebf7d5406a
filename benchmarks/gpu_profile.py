"""Where one training step (forward+backward) of each implementation spends its time, at the shapes where the CUDA
paths lag cuDNN: its wall time (median, CUDA events), the device time of its kernels and how many it launched
(torch.profiler, one profiled call), and its costliest kernels by name. Wall time far above kernel time means a
step bound by host work and launch latency; kernel time near wall time, by the kernels themselves, whose names say
which (a cuBLAS kernel's name says its tiling and split). Beside them, the host's side: how long the call takes to
return (host time near wall time: the GPU waited for the host) and its costliest CUDA runtime and driver calls
(a synchronizing call among them would show there), and two floors that no layer goes below on this machine: one
elementwise kernel, and one elementwise op's forward+backward through autograd (whose backward runs on autograd's
CUDA device thread, two thread hand-offs a call). Writes gpu_profile.json and gpu_profile.md to --out. Run by
gpu_check.sh; on a machine without a GPU, --device cpu --quick exercises the same code with the CPU's operators in
place of kernels."""

import argparse
import re
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import gpu_check

# (cell, batch, hidden, seq len): the Elman and LSTM shapes of the last GPU check where rnnfast was slowest
# against cuDNN (BENCHMARKS.md), one of each regime.
SHAPES = {
    "default": [("RNN", 1, 64, 256), ("RNN", 16, 128, 256), ("RNN", 16, 256, 256), ("RNN", 64, 256, 128),
                ("RNN", 256, 256, 128), ("LSTM", 16, 256, 256), ("GRU", 16, 256, 256)],
    "quick": [("RNN", 2, 8, 16), ("LSTM", 2, 8, 16)],
}
TOP = 4  # kernels listed per row
HOST_TOP = 3  # CUDA runtime and driver calls listed per row
RUNTIME_CALL = re.compile(r"^cu(da)?[A-Z]")  # cudaLaunchKernel, cuLaunchKernelEx, cudaStreamSynchronize, ...


def device_events(prof, device):
    """(name, calls, self time in us) of every kernel (CUDA) or operator (CPU) the profiled call ran."""
    rows = []
    for e in prof.key_averages():
        if device == "cuda":
            us = getattr(e, "self_device_time_total", None)
            us = e.self_cuda_time_total if us is None else us
            if e.device_type != torch.autograd.DeviceType.CUDA or us <= 0:
                continue
        else:
            us = e.self_cpu_time_total
        rows.append((e.key, e.count, float(us)))
    return sorted(rows, key=lambda r: -r[2])


def runtime_calls(prof):
    """(name, calls, host time in us) of every CUDA runtime or driver call the profiled call made (none on a CPU)."""
    rows = [(e.key, e.count, float(e.cpu_time_total)) for e in prof.key_averages()
            if e.device_type == torch.autograd.DeviceType.CPU and RUNTIME_CALL.match(e.key)]  # fmt: skip
    return sorted(rows, key=lambda r: -r[2])


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def host_time(fn, device, repeats):
    """Median seconds until fn returns, started on an idle device: its host work, launches included."""
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    synchronize(device)
    return statistics.median(samples)


def profile_row(cell, B, H, T, name, fn, wall, host, device):
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    events, calls = device_events(prof, device), runtime_calls(prof)
    return dict(cell=cell, batch=B, hidden=H, seq_len=T, impl=name, wall_ms=wall * 1e3, host_ms=host * 1e3,
                kernel_ms=sum(e[2] for e in events) / 1e3, launches=sum(e[1] for e in events),
                top=[dict(name=n, calls=c, us=us) for n, c, us in events[:TOP]],
                host_top=[dict(name=n, calls=c, us=us) for n, c, us in calls[:HOST_TOP]])  # fmt: skip


def floors(device, B, H, T, time_call, warmup, repeats):
    """Wall time (ms, medians) of one elementwise kernel on a (T, B, H) tensor, and of that op's forward+backward
    through autograd (the op, its backward's kernel, and the gradient's accumulation: three kernels)."""
    x = torch.randn(T, B, H, device=device, requires_grad=True)
    grad = torch.randn_like(x)

    def kernel():
        with torch.no_grad():
            x.mul(2)

    def autograd_step():
        x.mul(2).backward(grad)

    walls = gpu_check.median_times({"kernel": kernel, "autograd": autograd_step}, time_call, warmup, repeats)
    return dict(shape=[T, B, H], kernel_ms=walls["kernel"] * 1e3, autograd_ms=walls["autograd"] * 1e3)


def run(shapes, device, warmup, repeats, progress=sys.stderr, on_shape=None, paths=None):
    """paths: cell -> the rnnfast paths to profile (gpu_check.default_paths(cell) if None)."""
    time_call = gpu_check.make_timer(device)
    rows = []
    for i, (cell, B, H, T) in enumerate(shapes):
        cell_impls = gpu_check.implementations(B, H, T, device, torch.float32, cell, (paths or {}).get(cell))
        impls = {name: fns[1] for name, fns in cell_impls.items()}
        walls = gpu_check.median_times(impls, time_call, warmup, repeats)
        hosts = {name: host_time(fn, device, repeats) for name, fn in impls.items()}
        rows.extend(profile_row(cell, B, H, T, name, fn, walls[name], hosts[name], device)
                    for name, fn in impls.items())  # fmt: skip
        if on_shape is not None:
            on_shape(rows)
        print(f"[{i + 1}/{len(shapes)}] {cell} B={B} H={H} T={T}", file=progress, flush=True)
    return rows


def call_list(calls):
    return "; ".join(f"{t['name'][:60]} x{t['calls']} {t['us']:.0f} us" for t in calls) or "-"


def markdown(rows, meta):
    unit = "kernels" if meta["device"] == "cuda" else "operators"
    lines = [f"One forward+backward call per implementation, float32, one layer, input size = hidden size. Device: "
             f"{meta['device_name']}; torch {meta['torch']}. wall: median of {meta['repeats']} calls; host: median "
             f"time until the call returned, started on an idle device; {unit}: their summed self time in one "
             f"profiled call, and how many ran; per step: wall / T; host calls: the costliest CUDA runtime and "
             f"driver calls of that profiled call, by host time.", "",
             f"| cell | B | H | T | implementation | wall ms | host ms | per step us | {unit} ms | {unit} run | "
             f"costliest | host calls |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['cell']} | {r['batch']} | {r['hidden']} | {r['seq_len']} | {r['impl']} | "
                     f"{r['wall_ms']:.3f} | {r['host_ms']:.3f} | {r['wall_ms'] * 1e3 / r['seq_len']:.1f} | "
                     f"{r['kernel_ms']:.3f} | {r['launches']} | {call_list(r['top'])} | "
                     f"{call_list(r['host_top'])} |")  # fmt: skip
    f = meta.get("floors")
    if f:
        T, B, H = f["shape"]
        lines += ["", f"Floors on this machine (T={T}, B={B}, H={H}, wall, medians): one elementwise {unit[:-1]} "
                  f"{f['kernel_ms']:.3f} ms; that op's forward+backward through autograd (three {unit}, and on CUDA "
                  f"two hand-offs to and from autograd's device thread) {f['autograd_ms']:.3f} ms."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_results(out, rows, meta):
    return gpu_check.write_report(out, "gpu_profile", rows, meta, markdown(rows, meta))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder for gpu_profile.json and gpu_profile.md")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="two tiny shapes")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    gpu_check.add_path_arguments(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")
    # As in the GPU check: exact float32 products on both sides.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    meta = dict(device=args.device, torch=torch.__version__, repeats=args.repeats,
                device_name=torch.cuda.get_device_name() if args.device == "cuda" else "cpu")  # fmt: skip
    shapes = SHAPES["quick" if args.quick else "default"]
    _, B, H, T = shapes[0]
    meta["floors"] = floors(args.device, B, H, T, gpu_check.make_timer(args.device), args.warmup, args.repeats)
    paths = {cell: gpu_check.chosen_paths(args, cell) for cell in sorted({s[0] for s in shapes})}
    # Written after every shape, so that a run cut short by its time limit keeps what it measured.
    rows = run(shapes, args.device, args.warmup, args.repeats, paths=paths,
               on_shape=lambda rows: write_results(args.out, rows, meta))  # fmt: skip
    print(write_results(args.out, rows, meta))


if __name__ == "__main__":
    main()
