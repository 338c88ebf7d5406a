"""The PNG plots, one per analysis, drawn with matplotlib's Agg backend (no display needed)."""

import os
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .plans import MODES  # noqa: E402
from .split import PARALLEL_PARTS  # noqa: E402
from .sweeps import MODE_TITLES, index, is_baseline, median, shapes_of, speedup, shape_label, shape_key  # noqa: E402


def _save(fig, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _sweep(records: List[Dict], impls: Sequence[str], analysis: str, axis: str, xlabel: str, out_dir, name, title):
    found = index(records, analysis)
    shapes = shapes_of(records, analysis)
    fig, axes = plt.subplots(1, len(MODES), figsize=(11, 4.2))
    for ax, mode in zip(axes, MODES):
        for impl in impls:
            points = [(s[axis], median(found.get((shape_key(s), mode, impl)))) for s in shapes]
            points = [(x, 1e3 * m) for x, m in points if m is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("median time per call (ms)")
        ax.set_title(MODE_TITLES[mode])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, out_dir, name)


def plot_seq_len(records, impls, out_dir) -> str:
    base = shapes_of(records, "seq_len")[0]
    return _sweep(records, impls, "seq_len", "seq_len", "sequence length T", out_dir, "cost_vs_seq_len.png",
                  f"Cost vs T at B={base['batch']} I={base['input_size']} H={base['hidden_size']}")  # fmt: skip


def plot_batch(records, impls, out_dir) -> str:
    base = shapes_of(records, "batch")[0]
    return _sweep(records, impls, "batch", "batch", "batch size B", out_dir, "cost_vs_batch.png",
                  f"Cost vs B at T={base['seq_len']} I={base['input_size']} H={base['hidden_size']}")  # fmt: skip


def plot_standard_speedup(records, impls, out_dir) -> str:
    shapes = shapes_of(records, "standard")
    others = [i for i in impls if not is_baseline(i)]
    fig, axes = plt.subplots(1, len(MODES), figsize=(11, 4.5), sharey=True)
    width = 0.8 / max(1, len(others))
    for ax, mode in zip(axes, MODES):
        for k, impl in enumerate(others):
            bars = [(j + k * width, speedup(records, "standard", s, mode, impl)) for j, s in enumerate(shapes)]
            bars = [(x, v) for x, v in bars if v is not None]
            if bars:
                ax.bar(*zip(*bars), width, label=impl)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([j + width * (len(others) - 1) / 2 for j in range(len(shapes))])
        ax.set_xticklabels([shape_label(s).replace(" ", "\n") for s in shapes], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("speed-up over the torch.nn layer of its cell")
        ax.set_title(MODE_TITLES[mode])
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "standard_speedup.png")


def plot_split(results: List[Dict], out_dir) -> str:
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(results) + 1.8))
    labels = [shape_label(r["shape"]) for r in results]
    left = [0.0] * len(results)
    blues = plt.cm.Blues([0.35 + 0.12 * k for k in range(len(PARALLEL_PARTS))])
    segments = [(p, [r["parts"][p]["median_s"] for r in results], blues[k]) for k, p in enumerate(PARALLEL_PARTS)]
    segments += [
        ("forward loop", [r["loops_s"]["forward loop"] for r in results], "#d62728"),
        ("backward loop", [r["loops_s"]["backward loop"] for r in results], "#ff9896"),
        ("remainder", [r["remainder_s"] for r in results], "#bbbbbb"),
    ]
    for name, seconds, color in segments:
        shares = [100 * max(0.0, s) / r["total_s"] for s, r in zip(seconds, results)]
        ax.barh(labels, shares, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, shares)]
    ax.set_xlabel("share of one rnnfast forward+backward (%); blue: parallel products, red: loops over time")
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _save(fig, out_dir, "split.png")


def plot_penalty(results: List[Dict], out_dir) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    loops = sorted({loop for r in results for loop in r["ratio"]})
    for loop in loops:
        points = [(r["shape"]["seq_len"], r["ratio"][loop]) for r in results if loop in r["ratio"]]
        ax.plot(*zip(*points), marker="o", label=loop)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    s = results[0]["shape"]
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("time / one parallel product's time")
    ax.set_title(f"Sequential penalty, B={s['batch']} H={s['hidden_size']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "sequential_penalty.png")
