"""Tables of the implementations' timings: at the standard shapes, against sequence length (with the per-step
slope) and against batch size (how flat the parallel dimension stays)."""

import math
from typing import Dict, List, Mapping, Optional, Sequence

from .plans import MODES, shape_label
from .registry import baseline_name
from .tables import Section, milliseconds, timing_cell
MODE_TITLES = {"forward": "forward (inference)", "forward_backward": "forward+backward (training)"}


def shape_key(shape: Dict):
    return (shape["batch"], shape["seq_len"], shape["input_size"], shape["hidden_size"], shape.get("num_layers", 1),
            shape.get("bidirectional", False))  # fmt: skip


def index(records: List[Dict], analysis: str):
    """(shape key, mode, implementation) -> record, for one analysis."""
    return {(shape_key(r["shape"]), r["mode"], r["implementation"]): r for r in records if r["analysis"] == analysis}


def shapes_of(records: List[Dict], analysis: str) -> List[Dict]:
    seen = {}
    for r in records:
        if r["analysis"] == analysis:
            seen.setdefault(shape_key(r["shape"]), r["shape"])
    return list(seen.values())


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def median(record: Optional[Dict]) -> Optional[float]:
    return record["median_s"] if record is not None and record["status"] == "ok" else None


def is_baseline(impl: str) -> bool:
    return impl.startswith("torch.nn.")


def speedup(records: List[Dict], analysis: str, shape: Dict, mode: str, impl: str) -> Optional[float]:
    """The baseline's median over impl's, at one shape and mode; the baseline is impl's cell's torch.nn layer
    (records made before the suite had several cells are all the Elman RNN's)."""
    found = index(records, analysis)
    record = found.get((shape_key(shape), mode, impl))
    if record is None:
        return None
    base = median(found.get((shape_key(shape), mode, baseline_name(record.get("cell", "RNN")))))
    own = median(record)
    return base / own if base and own else None


def standard_sections(records: List[Dict], impls: Sequence[str]) -> List[Section]:
    found = index(records, "standard")
    shapes = shapes_of(records, "standard")
    timing_rows = []
    for shape in shapes:
        for mode in MODES:
            timing_rows.append([f"{shape_label(shape)} {mode}"]
                               + [timing_cell(found.get((shape_key(shape), mode, i))) for i in impls])  # fmt: skip
    others = [i for i in impls if not is_baseline(i)]
    speedup_rows = []
    for mode in MODES:
        ratios = {i: [] for i in others}
        for shape in shapes:
            row = [f"{shape_label(shape)} {mode}"]
            for i in others:
                s = speedup(records, "standard", shape, mode, i)
                row.append(f"{s:.2f}x" if s else "-")
                if s:
                    ratios[i].append(s)
            speedup_rows.append(row)
        speedup_rows.append([f"geometric mean, {mode}"]
                            + [f"{geometric_mean(r):.2f}x" if r else "-"
                               for r in ratios.values()])  # fmt: skip
    return [
        Section("Standard shapes: median time per call (ms, ± half the interquartile range)", ["shape, mode", *impls],
                timing_rows, ["(!) marks a result that differs from its torch.nn baseline's beyond the dtype's "
                              "tolerance."],
                None),  # fmt: skip
        Section("Standard shapes: speed-up over the torch.nn layer of the same cell (torch.nn.RNN, LSTM or GRU: its "
                "time / the implementation's)", ["shape, mode", *others],
                speedup_rows, [], "standard_speedup.png"),  # fmt: skip
    ]


def per_step_slope(points: Sequence[tuple]) -> Optional[float]:
    """Least-squares slope of time against T over (T, seconds) points: the cost of one more step, in seconds."""
    if len(points) < 2:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_s = sum(s for _, s in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (s - mean_s) for t, s in points) / var if var else None


def seq_len_slopes(records: List[Dict], impls: Sequence[str]) -> Dict[str, Dict[str, Optional[float]]]:
    """mode -> implementation -> seconds per step."""
    found = index(records, "seq_len")
    shapes = shapes_of(records, "seq_len")
    slopes = {}
    for mode in MODES:
        slopes[mode] = {}
        for i in impls:
            points = [(s["seq_len"], median(found.get((shape_key(s), mode, i)))) for s in shapes]
            slopes[mode][i] = per_step_slope([(t, m) for t, m in points if m is not None])
    return slopes


def seq_len_crossovers(records: List[Dict], versus: Mapping[str, str]) -> Dict[str, Dict[str, Optional[int]]]:
    """mode -> parallel implementation -> the shortest measured T from which it is faster than its sequential
    counterpart (versus[impl]) at every longer T measured; None where it is not faster at the longest."""
    found = index(records, "seq_len")
    shapes = sorted(shapes_of(records, "seq_len"), key=lambda s: s["seq_len"])
    crossovers = {}
    for mode in MODES:
        crossovers[mode] = {}
        for impl, sequential in versus.items():
            start = None
            for s in reversed(shapes):
                mine, theirs = (median(found.get((shape_key(s), mode, i))) for i in (impl, sequential))
                if mine is None or theirs is None or mine >= theirs:
                    break
                start = s["seq_len"]
            crossovers[mode][impl] = start
    return crossovers


def seq_len_sections(records: List[Dict], impls: Sequence[str], versus: Mapping[str, str] = None) -> List[Section]:
    """versus: parallel implementation -> the sequential one it is to beat, for the row of crossovers."""
    found = index(records, "seq_len")
    shapes = shapes_of(records, "seq_len")
    if not shapes:
        return []
    versus = {i: v for i, v in (versus or {}).items() if i in impls and v in impls}
    crossovers = seq_len_crossovers(records, versus)
    slopes = seq_len_slopes(records, impls)
    base = shapes[0]
    sections = []
    for mode in MODES:
        rows = [[str(s["seq_len"])] + [timing_cell(found.get((shape_key(s), mode, i))) for i in impls] for s in shapes]
        rows.append(["slope, us/step"] + [f"{1e6 * slopes[mode][i]:.1f}" if slopes[mode][i] is not None else "-"
                                          for i in impls])  # fmt: skip
        if versus:
            rows.append(["faster from T"] + [_crossover_cell(crossovers[mode].get(i)) if i in versus else ""
                                             for i in impls])  # fmt: skip
        sections.append(Section(
            f"Cost vs sequence length T, {MODE_TITLES[mode]}, B={base['batch']} I={base['input_size']} "
            f"H={base['hidden_size']} (ms)",
            ["T", *impls], rows,
            ["slope: least-squares fit of time against T, the cost of one more time step."]
            + ([f"faster from T: where a parallel method beats its sequential counterpart ("
                + ", ".join(f"{i} against {v}" for i, v in versus.items())
                + ") at that T and every longer one measured; never: not at the longest."] if versus else []),
            "cost_vs_seq_len.png" if mode == MODES[-1] else None,
        ))  # fmt: skip
    return sections


def _crossover_cell(seq_len: Optional[int]) -> str:
    return "never" if seq_len is None else str(seq_len)


def batch_sections(records: List[Dict], impls: Sequence[str]) -> List[Section]:
    found = index(records, "batch")
    shapes = shapes_of(records, "batch")
    if not shapes:
        return []
    base = shapes[0]
    sections = []
    for mode in MODES:
        first = {i: median(found.get((shape_key(base), mode, i))) for i in impls}
        rows = []
        for s in shapes:
            row = [str(s["batch"])]
            for i in impls:
                m = median(found.get((shape_key(s), mode, i)))
                row.append(f"{milliseconds(m)} ({m / first[i]:.1f}x)" if m and first[i] else
                           timing_cell(found.get((shape_key(s), mode, i))))  # fmt: skip
            rows.append(row)
        sections.append(Section(
            f"Cost vs batch size B, {MODE_TITLES[mode]}, T={base['seq_len']} I={base['input_size']} "
            f"H={base['hidden_size']} (ms, and relative to B={base['batch']})",
            ["B", *impls], rows,
            [f"A flat column means the batch rows run in parallel for free; {shapes[-1]['batch'] // base['batch']}x "
             "is what a cost proportional to B would give at the last row."],
            "cost_vs_batch.png" if mode == MODES[-1] else None,
        ))  # fmt: skip
    return sections
