"""Times rnnfast's CUDA paths against cuDNN's torch.nn.RNN (or LSTM or GRU, --cell) over a shape grid, forward
and forward+backward, and writes gpu_check.json and gpu_check.md to --out. Run by gpu_check.sh after the CUDA
tests; on a machine without a GPU, --device cpu --grid tiny exercises the same code against torch.nn on the CPU."""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

import rnnfast

# (batch, hidden, seq len); input size = hidden. Small batches are where cuDNN is latency-bound.
GRIDS = {
    "default": [(b, h, t) for b in (1, 4, 16) for h in (64, 128, 256, 512) for t in (256, 1024)]
    + [(16, 256, 2048), (1, 1024, 512), (16, 1024, 256)]
    + [(b, h, t) for b in (64, 256) for h in (256, 1024) for t in (128, 512)]
    + [(256, 1024, 2048)],
    "tiny": [(2, 8, 16), (4, 16, 8)],
    # The LSTM and GRU: small batches, where the target is to beat cuDNN (and where the persistent kernels hold
    # the layer), and large ones, where it is to match it.
    "gated": [(1, 64, 512), (1, 256, 512), (4, 128, 512), (4, 512, 256), (16, 128, 512), (16, 256, 512),
              (16, 1024, 256), (64, 1024, 128), (256, 1024, 256)],
}


def make_timer(device):
    if device == "cuda":

        def time_call(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

    else:

        def time_call(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

    return time_call


def median_times(calls, time_call, warmup, repeats):
    """Interleaved repetitions: each round times every implementation once, so drift hits all alike."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            samples[name].append(time_call(fn))
    return {name: statistics.median(s) for name, s in samples.items()}


def with_path(path, fn):
    def run():
        previous = os.environ.get("RNNFAST_CUDA_PATH")
        os.environ["RNNFAST_CUDA_PATH"] = path
        try:
            return fn()
        finally:
            if previous is None:
                del os.environ["RNNFAST_CUDA_PATH"]
            else:
                os.environ["RNNFAST_CUDA_PATH"] = previous

    return run


def uses_persistent(cell, x, weight_hh):
    """Whether rnnfast's CUDA kernels take their persistent path for this one-layer input under the current
    RNNFAST_CUDA_PATH."""
    if cell == "RNN":
        return torch.ops.rnnfast.elman_cuda_uses_persistent(x, weight_hh.unsqueeze(0), False)
    return torch.ops.rnnfast.gated_cuda_uses_persistent(cell, x, weight_hh.unsqueeze(0), False)


# The rnnfast paths (RNNFAST_CUDA_PATH) timed on CUDA, by cell kind: first what the default runs, verified by the
# GPU checks in benchmarks/results/h200-*/ (Elman: auto, the persistent path at small batch and the general path
# elsewhere, each of the two also timed alone in three checks; the LSTM and GRU: the general path), then the
# opt-in paths not yet verified on a GPU. The Elman cluster plan is timed wherever it holds the layer: written for
# the small batches, it also takes batch 64-256 at hidden 256, the general path's worst shapes against cuDNN.
VERIFIED_PATH = {"RNN": "auto", "gated": "general"}
OPT_IN_PATHS = {"RNN": ["cluster", "fused"], "gated": ["persistent", "fused"]}
# Where each kind's tests run on every path (a test's id names its path).
PATH_TEST_FILE = {"RNN": "test_cuda.py", "gated": "test_cuda_gated.py"}
CUDA_TEST_FILES = ["tests/test_cuda.py", "tests/test_cuda_gated.py", "tests/test_cuda_scan.py",
                   "tests/test_mixed_precision.py"]  # fmt: skip


def cell_kind(cell):
    return "RNN" if cell == "RNN" else "gated"


def default_paths(cell):
    return [VERIFIED_PATH[cell_kind(cell)]] + OPT_IN_PATHS[cell_kind(cell)]


def path_test_group(cell, path):
    return f"{cell_kind(cell)}-{path}"


def check_test_groups():
    """group -> pytest arguments, for gpu_check.sh to run each group in a process of its own: the CUDA tests of the
    verified paths first, then each opt-in path's, so that one new to a GPU that hangs or faults (a CUDA error
    leaves the process's CUDA context unusable) cannot stop or spoil the others' tests; last the op tests (CPU and
    CUDA)."""
    opt_in = {f"{kind}-{path}": f"{PATH_TEST_FILE[kind]} and {path}" for kind, paths in OPT_IN_PATHS.items()
              for path in paths}  # fmt: skip
    groups = {"verified": CUDA_TEST_FILES + ["-m", "cuda", "-k", " and ".join(f"not ({k})" for k in opt_in.values())]}
    groups.update({group: CUDA_TEST_FILES + ["-m", "cuda", "-k", k] for group, k in opt_in.items()})
    groups["ops"] = ["tests/test_ops.py", "tests/test_gated_ops.py"]
    return groups


def path_tests_outcome(cell, path, tests_dir):
    """(exit status, as written, or "missing"; whether its output shows a CUDA error) of the test process that
    gpu_check.sh ran for an opt-in path (tests_dir/<group>.rc and .log)."""
    base = os.path.join(tests_dir, path_test_group(cell, path))
    if not (os.path.exists(base + ".rc") and os.path.exists(base + ".log")):
        return "missing", False
    with open(base + ".rc") as f:
        rc = f.read().strip()
    with open(base + ".log", errors="replace") as f:
        return rc, "CUDA error" in f.read()


def paths_safe_to_time(cell, paths, tests_dir):
    """paths, less each opt-in one whose test process did not run, was stopped by its time limit or a signal, or
    met a CUDA error: timing such a path could hang this process or leave its CUDA context unusable for every
    implementation after it. A path whose tests only failed is still timed (its speed says whether it is worth
    fixing)."""
    safe = []
    for path in paths:
        if path in OPT_IN_PATHS[cell_kind(cell)]:
            rc, cuda_error = path_tests_outcome(cell, path, tests_dir)
            if rc not in ("0", "1") or cuda_error:
                print(f"gpu_check: not timing {cell} on {path}: its tests' exit status {rc}"
                      + (", a CUDA error" if cuda_error else ""), file=sys.stderr)  # fmt: skip
                continue
        safe.append(path)
    return safe


def paths_with_failed_tests(cell, paths, tests_dir):
    return [p for p in paths if p in OPT_IN_PATHS[cell_kind(cell)] and path_tests_outcome(cell, p, tests_dir)[0] == "1"]


def implementations(B, H, T, device, dtype, cell="RNN", paths=None):
    """name -> (forward callable, forward+backward callable) at this shape, all with the same weights; paths: the
    rnnfast paths to time on CUDA (default_paths(cell) if None)."""
    reference = getattr(torch.nn, cell)(H, H).to(device, dtype)
    fast = getattr(rnnfast, cell)(H, H).to(device, dtype)
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(T, B, H, device=device, dtype=dtype)
    x_grad = x.clone().requires_grad_(True)
    grad_out = torch.randn(T, B, H, device=device, dtype=dtype)

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)

        return run

    def training(model):
        def run():
            out, _ = model(x_grad)
            out.backward(grad_out)

        return run

    impls = {"cudnn" if device == "cuda" else "torch.nn": (forward(reference), training(reference))}
    paths = default_paths(cell) if paths is None else paths
    if device != "cuda":
        paths = ["cpu"]
    takes_persistent = lambda: uses_persistent(cell, x, fast.weight_hh_l0)  # noqa: E731
    for path in paths:
        if path in ("persistent", "cluster") and not with_path(path, takes_persistent)():
            continue
        impls[f"rnnfast-{path}"] = (with_path(path, forward(fast)), with_path(path, training(fast)))
    return impls


def run(grid, device, dtype, warmup, repeats, progress=sys.stderr, cell="RNN", on_shape=None, paths=None):
    """Times every shape of grid; on_shape(rows), if given, receives the rows so far after each shape."""
    time_call = make_timer(device)
    rows = []
    for i, (B, H, T) in enumerate(grid):
        impls = implementations(B, H, T, device, dtype, cell, paths)
        for mode, index in [("forward", 0), ("forward+backward", 1)]:
            medians = median_times({name: fns[index] for name, fns in impls.items()}, time_call, warmup, repeats)
            rows.append(dict(batch=B, hidden=H, seq_len=T, mode=mode, seconds=medians))
        if on_shape is not None:
            on_shape(rows)
        print(f"[{i + 1}/{len(grid)}] B={B} H={H} T={T}", file=progress, flush=True)
    return rows


def write_report(out, name, rows, meta, table):
    """name.json (meta and rows) and name.md (table) in out; returns the table."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(table)
    return table


def write_results(out, rows, meta):
    return write_report(out, "gpu_check", rows, meta, markdown(rows, meta))


def speed_target(B, H, T):
    """Issue 3's target for rnnfast's forward+backward against cuDNN's at a shape: at least as fast everywhere, and
    at least 3x at batch <= 16, hidden <= 256, sequence >= 256, where cuDNN is latency-bound."""
    return 3.0 if B <= 16 and H <= 256 and T >= 256 else 1.0


def target_table(rows, baseline, default, failed):
    """Markdown lines: each shape's forward+backward target against the baseline, the speed-up of the default path
    (what rnnfast runs unless told otherwise) and of the fastest path timed there; failed: paths whose tests failed,
    marked, as their speed does not count."""
    lines = ["", f"Issue 3's targets, forward+backward against {baseline}: at least 1x at every shape, 3x at B <= 16, "
             f"H <= 256, T >= 256. {default}: the default path; fastest: the fastest rnnfast path timed at that shape "
             "(*: its tests failed).", "",
             f"| B | H | T | target | {default} | fastest | met by |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    met_default = met_any = shapes = 0
    for r in rows:
        if r["mode"] != "forward+backward" or default not in r["seconds"]:
            continue
        base = r["seconds"][baseline]
        target = speed_target(r["batch"], r["hidden"], r["seq_len"])
        default_speedup = base / r["seconds"][default]
        speedups = sorted(((base / t, n) for n, t in r["seconds"].items() if n != baseline), reverse=True)
        fastest = speedups[0]
        meeting = [n for v, n in speedups if v >= target and n not in failed]
        met = default if default_speedup >= target else (meeting[0] if meeting else "none")
        shapes += 1
        met_default += default_speedup >= target
        met_any += bool(meeting)
        lines.append(f"| {r['batch']} | {r['hidden']} | {r['seq_len']} | {target:g}x | {default_speedup:.2f}x | "
                     f"{fastest[1]}{'*' if fastest[1] in failed else ''} {fastest[0]:.2f}x | {met} |")  # fmt: skip
    lines += ["", f"Met at {met_default} of {shapes} shapes by {default}; at {met_any} by it or another path whose "
              "tests passed."]  # fmt: skip
    return lines


def markdown(rows, meta):
    baseline = "cudnn" if meta["device"] == "cuda" else "torch.nn"
    names = sorted({n for r in rows for n in r["seconds"] if n != baseline})
    lines = [f"torch.nn.{meta['cell']} against rnnfast.{meta['cell']}. "
             f"Device: {meta['device_name']}; torch {meta['torch']}; dtype {meta['dtype']}; "
             f"medians of {meta['repeats']} interleaved runs after {meta['warmup']} warm-ups. "
             "Exact float32 products on both sides (TF32 off in cuDNN and cuBLAS); "
             "n/a: the persistent path cannot hold that shape.", "",
             "| B | H | T | mode | " + baseline + " ms | " + " | ".join(f"{n} ms (speed-up)" for n in names) + " |",
             "|" + "---|" * (5 + len(names))]  # fmt: skip
    for r in rows:
        base = r["seconds"][baseline]
        cells = []
        for n in names:
            s = r["seconds"].get(n)
            cells.append("n/a" if s is None else f"{s * 1e3:.3f} ({base / s:.2f}x)")
        lines.append(f"| {r['batch']} | {r['hidden']} | {r['seq_len']} | {r['mode']} | {base * 1e3:.3f} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    if meta["cell"] == "RNN":
        default = f"rnnfast-{VERIFIED_PATH['RNN'] if meta['device'] == 'cuda' else 'cpu'}"
        failed = {f"rnnfast-{p}" for p in meta.get("paths_with_failed_tests", [])}
        lines += target_table(rows, baseline, default, failed)
    return "\n".join(lines) + "\n"


def add_path_arguments(parser):
    parser.add_argument("--paths", help="comma-separated rnnfast CUDA paths to time (default: "
                        + "; ".join(f"{c}: {','.join(default_paths(c))}" for c in ("RNN", "LSTM")) + "; GRU as LSTM)")
    parser.add_argument("--tests-dir", help="gpu_check.sh's folder of per-path test results: paths whose tests "
                        "were stopped or met a CUDA error are not timed")  # fmt: skip


def chosen_paths(args, cell):
    if args.device != "cuda":
        return ["cpu"]
    paths = args.paths.split(",") if args.paths else default_paths(cell)
    return paths_safe_to_time(cell, paths, args.tests_dir) if args.tests_dir else paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--grid", default="default", choices=sorted(GRIDS))
    parser.add_argument("--cell", default="RNN", choices=["RNN", "LSTM", "GRU"], help="which torch.nn layer")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    add_path_arguments(parser)
    parser.add_argument("--test-groups", action="store_true",
                        help="print gpu_check.sh's test groups, one a line: name|pytest argument|..., and exit")
    args = parser.parse_args(argv)
    if args.test_groups:
        for group, pytest_args in check_test_groups().items():
            print("|".join([group] + pytest_args))
        return
    if args.out is None:
        parser.error("--out is required")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")
    dtype = getattr(torch, args.dtype)
    # The same arithmetic on both sides: exact float32 products, not cuDNN's default TF32.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    meta = dict(
        device=args.device,
        device_name=torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__, dtype=args.dtype, warmup=args.warmup, repeats=args.repeats, cell=args.cell,
        command=" ".join([sys.executable] + sys.argv),
    )  # fmt: skip
    paths = chosen_paths(args, args.cell)
    failed = paths_with_failed_tests(args.cell, paths, args.tests_dir) if args.tests_dir else []
    meta.update(paths=paths, paths_with_failed_tests=failed)
    # Written after every shape, so that a run its time limit cuts short keeps the shapes it measured.
    rows = run(GRIDS[args.grid], args.device, dtype, args.warmup, args.repeats, cell=args.cell,
               on_shape=lambda rows: write_results(args.out, rows, meta), paths=paths)  # fmt: skip
    print(write_results(args.out, rows, meta))


if __name__ == "__main__":
    main()
