"""Where one training step (forward+backward) of each implementation spends its time, at the shapes where the CUDA
paths lag cuDNN: its wall time (median, CUDA events), the device time of its kernels and how many it launched
(torch.profiler, one profiled call), and its costliest kernels by name. Wall time far above kernel time means a
step bound by host work and launch latency; kernel time near wall time, by the kernels themselves, whose names say
which (a cuBLAS kernel's name says its tiling and split). Writes gpu_profile.json and gpu_profile.md to --out. Run
by gpu_check.sh; on a machine without a GPU, --device cpu --quick exercises the same code with the CPU's operators
in place of kernels."""

import argparse
import sys

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


def profile_row(cell, B, H, T, name, fn, wall, device):
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    events = device_events(prof, device)
    return dict(cell=cell, batch=B, hidden=H, seq_len=T, impl=name, wall_ms=wall * 1e3,
                kernel_ms=sum(e[2] for e in events) / 1e3, launches=sum(e[1] for e in events),
                top=[dict(name=n, calls=c, us=us) for n, c, us in events[:TOP]])  # fmt: skip


def run(shapes, device, warmup, repeats, progress=sys.stderr, on_shape=None, paths=None):
    """paths: cell -> the rnnfast paths to profile (gpu_check.default_paths(cell) if None)."""
    time_call = gpu_check.make_timer(device)
    rows = []
    for i, (cell, B, H, T) in enumerate(shapes):
        cell_impls = gpu_check.implementations(B, H, T, device, torch.float32, cell, (paths or {}).get(cell))
        impls = {name: fns[1] for name, fns in cell_impls.items()}
        walls = gpu_check.median_times(impls, time_call, warmup, repeats)
        rows.extend(profile_row(cell, B, H, T, name, fn, walls[name], device) for name, fn in impls.items())
        if on_shape is not None:
            on_shape(rows)
        print(f"[{i + 1}/{len(shapes)}] {cell} B={B} H={H} T={T}", file=progress, flush=True)
    return rows


def markdown(rows, meta):
    unit = "kernels" if meta["device"] == "cuda" else "operators"
    lines = [f"One forward+backward call per implementation, float32, one layer, input size = hidden size. Device: "
             f"{meta['device_name']}; torch {meta['torch']}. wall: median of {meta['repeats']} calls; {unit}: their "
             f"summed self time in one profiled call, and how many ran; per step: wall / T.", "",
             f"| cell | B | H | T | implementation | wall ms | per step us | {unit} ms | {unit} run | costliest |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        top = "; ".join(f"{t['name'][:60]} x{t['calls']} {t['us']:.0f} us" for t in r["top"])
        lines.append(f"| {r['cell']} | {r['batch']} | {r['hidden']} | {r['seq_len']} | {r['impl']} | "
                     f"{r['wall_ms']:.3f} | {r['wall_ms'] * 1e3 / r['seq_len']:.1f} | {r['kernel_ms']:.3f} | "
                     f"{r['launches']} | {top} |")  # fmt: skip
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
    paths = {cell: gpu_check.chosen_paths(args, cell) for cell in sorted({s[0] for s in shapes})}
    # Written after every shape, so that a run cut short by its time limit keeps what it measured.
    rows = run(shapes, args.device, args.warmup, args.repeats, paths=paths,
               on_shape=lambda rows: write_results(args.out, rows, meta))  # fmt: skip
    print(write_results(args.out, rows, meta))


if __name__ == "__main__":
    main()
