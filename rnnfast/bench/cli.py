"""`python -m rnnfast.bench`: runs a plan, prints the tables, writes results.json, report.md and the plots."""

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time

import torch

from . import tables
from .implementations import rnnfast_missing_reason
from .machine import OtherLoad, describe, load_average
from .penalty import measure_penalty, penalty_section
from .plans import MODES, PLANS
from .progress import Progress
from .registry import Limits, registered
from .runner import measure_shape
from .floor import floor_section, headroom_section
from .gated_bound import GATES, gated_headroom_section, measure_gated_bound
from .split import measure_split, split_section
from .sweeps import batch_sections, seq_len_crossovers, seq_len_sections, seq_len_slopes, standard_sections

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m rnnfast.bench",
        description="Measures what the Elman recurrence costs and how much of it is sequential: rnnfast.RNN "
        "against torch.nn.RNN and plain loops, with tables, a JSON of every measurement and PNG plots.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small subset in seconds (CI, smoke tests)")
    size.add_argument("--full", action="store_true", help="the whole grid, longer sweeps and more repetitions")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--out", default="rnnfast-bench", help="output folder (default ./rnnfast-bench)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--implementations", default=None,
                        help="comma-separated subset of the registered implementations (default: all)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd loop")
    parser.add_argument("--compile-max-steps", type=int, default=None,
                        help="longest sequence the torch.compile'd loop is compiled for (default: the plan's)")
    parser.add_argument("--image-prefix", default="",
                        help="prefix of the plots' paths in report.md, e.g. benchmarks/results/ for BENCHMARKS.md")
    parser.add_argument("--list", action="store_true", help="list the registered implementations and exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    impls = registered(args.implementations.split(",") if args.implementations else None)
    if args.list:
        for impl in registered():
            print(f"{impl.name:24s} [{impl.family}] {impl.description}")
        return 0
    plan = PLANS["quick" if args.quick else "full" if args.full else "default"]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available to this torch build", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype]
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    compile_max_steps = 0 if args.no_compile else (
        plan.compile_max_steps if args.compile_max_steps is None else args.compile_max_steps)  # fmt: skip
    limits = Limits(compile_max_steps=compile_max_steps, newton_max_states=plan.newton_max_states)
    names = [i.name for i in impls]
    os.makedirs(args.out, exist_ok=True)

    shape_runs = [("standard", s) for s in plan.standard_shapes]
    shape_runs += [("seq_len", s) for s in plan.seq_len_shapes()]
    shape_runs += [("batch", s) for s in plan.batch_shapes()]
    split_shapes = plan.split_shapes if rnnfast_missing_reason(device, dtype) is None else ()
    # The gated layers' bounds need the floor op, which is CPU only.
    gated_bound_runs = [(shape, cell) for shape in split_shapes for cell in GATES
                        if device.type == "cpu" and f"rnnfast.{cell}" in names]  # fmt: skip
    penalty_shapes = plan.seq_len_shapes()
    progress = Progress(len(shape_runs) * len(MODES) + len(split_shapes) + len(gated_bound_runs)
                        + len(penalty_shapes))  # fmt: skip

    load_before = load_average()
    busy_before = OtherLoad.sample(0.5)
    if busy_before > 0.2 and torch.get_num_threads() > 1:
        # A thread of a multi-threaded product that the OS has descheduled holds up all the others at the next
        # barrier: with other work on the machine, multi-threaded timings grow by whole scheduler time slices.
        print(f"warning: other processes are keeping {busy_before:.1f} CPUs busy, so timings on "
              f"{torch.get_num_threads()} threads will be inflated and noisy (consider --threads 1)",
              file=sys.stderr)  # fmt: skip
    started = datetime.datetime.now(datetime.timezone.utc)
    other_load = OtherLoad()
    records = []
    phase_s = {}  # wall seconds per part of the run, so a plan's cost can be read off the JSON
    clock = time.perf_counter()
    sweep_impls = [i for i in impls if plan.sweep_cells is None or i.cell in plan.sweep_cells]
    for analysis, shape in shape_runs:
        records += measure_shape(analysis, shape, impls if analysis == "standard" else sweep_impls, plan.timing,
                                 limits, device, dtype, synchronize, progress.tick)  # fmt: skip
        phase_s[analysis] = phase_s.get(analysis, 0.0) + time.perf_counter() - clock
        clock = time.perf_counter()
    splits = []
    for shape in split_shapes:
        progress.tick(f"split {shape.label}")
        splits.append(measure_split(shape, plan.timing, device, dtype, synchronize))
    phase_s["split"], clock = time.perf_counter() - clock, time.perf_counter()
    gated_bounds = []
    for shape, cell in gated_bound_runs:
        progress.tick(f"{cell} bound {shape.label}")
        gated_bounds.append(measure_gated_bound(shape, cell, plan.timing, device, dtype, synchronize))
    phase_s["gated_bound"], clock = time.perf_counter() - clock, time.perf_counter()
    penalties = []
    for shape in penalty_shapes:
        progress.tick(f"sequential penalty {shape.label}")
        newton = [i for i in impls if i.family == "parallel" and i.same_function]  # the Elman's own
        penalties.append(measure_penalty(shape, plan.timing, device, dtype, synchronize, newton, limits))
    progress.close()
    phase_s["penalty"] = time.perf_counter() - clock

    versus = {i.name: i.versus for i in impls if i.versus}
    sweep_names = [i.name for i in sweep_impls]
    sections = (standard_sections(records, names) + seq_len_sections(records, sweep_names, versus)
                + batch_sections(records, sweep_names))  # fmt: skip
    sections += [split_section(splits)] if splits else []
    if any(r.get("floor_s") for r in splits):
        sections += [floor_section(splits), headroom_section(splits, records)]
    sections += [gated_headroom_section(gated_bounds, records)] if gated_bounds else []
    sections += [penalty_section(penalties)]

    from . import plots  # matplotlib is imported only once there is something to draw

    written = [plots.plot_standard_speedup(records, names, args.out),
               plots.plot_seq_len(records, sweep_names, args.out), plots.plot_batch(records, sweep_names, args.out),
               plots.plot_penalty(penalties, args.out)]  # fmt: skip
    if splits:
        written.append(plots.plot_split(splits, args.out))

    machine = dict(describe(device), **other_load.report())
    result = {
        "started_utc": started.isoformat(timespec="seconds"),
        "plan": plan.name,
        "sweep_cells": plan.sweep_cells,
        "device": str(device),
        "dtype": args.dtype,
        # The run itself adds about its thread count; more than that before it means it shared the CPUs.
        "machine": dict(machine, load_average_1min_before=load_before, load_average_1min_after=load_average(),
                        other_processes_cpus_busy_before=busy_before),
        "timing_config": dataclasses.asdict(plan.timing),
        "limits": dataclasses.asdict(limits),
        "implementations": [{"name": i.name, "family": i.family, "same_function": i.same_function,
                             "description": i.description} for i in impls],
        "shapes": {
            "standard": [s.as_dict() for s in plan.standard_shapes],
            "seq_len": [s.as_dict() for s in plan.seq_len_shapes()],
            "batch": [s.as_dict() for s in plan.batch_shapes()],
            "split": [s.as_dict() for s in split_shapes],
            "penalty": [s.as_dict() for s in penalty_shapes],
        },
        "measurements": records,
        "phase_s": phase_s,
        "per_step_slope_s": seq_len_slopes(records, sweep_names),
        "faster_from_seq_len": seq_len_crossovers(records, {i: v for i, v in versus.items()
                                                            if i in sweep_names and v in sweep_names}),
        "split": splits,
        "gated_bound": gated_bounds,
        "penalty": penalties,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)

    header = (f"rnnfast.bench, {plan.name} plan, {args.device} {args.dtype}: {machine['cpu_model']}, "
              f"{machine['usable_cpus']} CPUs, {machine['torch_threads']} torch threads, torch {machine['torch_version']}, "
              f"load average {load_before:.1f} before the run"
              + (f", other processes kept {machine['other_processes_cpus_busy']:.2f} CPUs busy during it"
                 if "other_processes_cpus_busy" in machine else "")
              + (f", {machine['gpu']}" if "gpu" in machine else ""))  # fmt: skip
    print(header)
    print(f"command: {machine['command']}\n")
    for section in sections:
        print(tables.text(section) + "\n")
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(f"{header}\n\nCommand: `{machine['command']}`\n\n")
        f.write("\n\n".join(tables.markdown(s, image_prefix=args.image_prefix) for s in sections) + "\n")
    print(f"wrote {os.path.join(args.out, 'results.json')}, report.md and {len(written)} plots to {args.out}")
    if machine.get("other_processes_cpus_busy", 0.0) > 0.2:
        print(f"warning: other processes kept {machine['other_processes_cpus_busy']:.2f} CPUs busy during the run; "
              "its timings were not made alone", file=sys.stderr)  # fmt: skip
    return 0
