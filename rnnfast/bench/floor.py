"""How far each shape's loop over time is from the hardware's limit: the loop's time per step against the time of
a bare per-step product, (B x H) @ (H x H), in a tight C++ loop with PyTorch's BLAS (rnnfast::recurrence_floor),
measured in the same interleaved run as the loops (split.py). A step cannot cost less than its product; the
forward's extra is the activation and the accumulation onto the input projection, the backward's the
derivative pass and its bookkeeping. CPU only: the op that times the floor has no CUDA kernel."""

from typing import Dict, List

from .sweeps import geometric_mean, index, median, shape_key, shape_label
from .tables import Section, milliseconds


def floor_section(splits: List[Dict]) -> Section:
    rows = []
    for r in splits:
        if r.get("floor_s") is None:
            continue
        s = r["shape"]
        T = s["seq_len"]
        floor, forward, backward = r["floor_s"] / T, r["loops_s"]["forward loop"] / T, r["loops_s"]["backward loop"] / T
        rows.append([
            shape_label(s),
            f"{floor * 1e6:.3g}",
            f"{forward * 1e6:.3g}",
            f"{forward / floor:.2f}x",
            f"{backward * 1e6:.3g}",
            f"{backward / floor:.2f}x",
        ])  # fmt: skip
    return Section(
        "Distance from the floor: loop time per step against a bare per-step product (us)",
        ["shape", "floor", "fwd loop", "fwd / floor", "bwd loop", "bwd / floor"],
        rows,
        [
            "floor: one (B x H) @ (H x H) product per step through the BLAS routine (sgemm_/dgemm_), T of them "
            "in a tight C++ loop, nothing else. fwd loop, bwd loop: per step, as in the split table. The loops' "
            "register-tiled step can beat the floor: at small sizes it makes no BLAS call at all, and on CPUs where "
            "MKL runs its generic code path (not Intel's) it is the faster product at every size.",
        ],
    )


HEADROOM_COLUMNS = ["inference bound", "rnnfast / bound", "torch.nn / bound", "training bound", "rnnfast / bound",
                    "torch.nn / bound"]  # fmt: skip


class HeadroomRows:
    """The rows of a headroom table: per shape, each mode's bound, rnnfast's and torch.nn's time over it; and a
    closing row with the geometric mean of torch.nn / bound, the most this design could gain overall."""

    def __init__(self, records: List[Dict]):
        self.found = index(records, "standard")
        self.rows: List[List[str]] = []
        self.best: Dict[str, List[float]] = {"forward": [], "forward_backward": []}

    def add(self, labels: List[str], shape: Dict, bounds: Dict[str, float], ours_name: str, torch_name: str):
        """bounds: mode ("forward", "forward_backward") -> seconds."""
        row = list(labels)
        for mode, bound in bounds.items():
            torch_nn = median(self.found.get((shape_key(shape), mode, torch_name)))
            ours = median(self.found.get((shape_key(shape), mode, ours_name)))
            row += [milliseconds(bound), f"{ours / bound:.2f}x" if ours else "-",
                    f"{torch_nn / bound:.1f}x" if torch_nn else "-"]  # fmt: skip
            if torch_nn:
                self.best[mode].append(torch_nn / bound)
        self.rows.append(row)

    def with_summary(self, labels: List[str]) -> List[List[str]]:
        """The rows and the geometric-mean row, labelled with `labels` (one per label column)."""
        if not self.rows:
            return []
        summary = list(labels)
        for ratios in self.best.values():
            summary += ["", "", f"{geometric_mean(ratios):.1f}x" if ratios else "-"]
        return self.rows + [summary]


def headroom_section(splits: List[Dict], records: List[Dict]) -> Section:
    """What is left to gain at each one-layer standard shape: a lower bound on rnnfast's time from the same run's
    measurements, and torch.nn.RNN's time over it, the most any kernel with these products could be faster."""
    table = HeadroomRows(records)
    for r in splits:
        if r.get("floor_s") is None:
            continue
        parts = {name: t["median_s"] for name, t in r["parts"].items()}
        # Inference: the input projection and one bare product a step. Training adds every backward product and
        # a second bare product a step (dL/dh_{t-1} = dL/dz_t W_hh).
        bounds = {"forward": parts["input projection"] + r["floor_s"],
                  "forward_backward": r["parallel_s"] + 2 * r["floor_s"]}  # fmt: skip
        table.add([shape_label(r["shape"])], r["shape"], bounds, "rnnfast.RNN", "torch.nn.RNN")
    return Section(
        "Headroom: a lower bound on one call from the parts measured above, and what it leaves to gain (ms)",
        ["shape"] + HEADROOM_COLUMNS,
        table.with_summary(["geometric mean"]),
        [
            "bound: the whole-sequence products (the split table's, timed on their own) plus T bare per-step "
            "products (the floor) for inference, 2T for training. torch.nn / bound is the speed-up over "
            "torch.nn.RNN that a kernel spending only that time would show: the most this design can reach here "
            "short of faster products. Not a strict bound: the register-tiled step can beat the BLAS floor (see "
            "the floor table), and at B = 1 the floor is mostly BLAS call overhead. Module overhead (Python, "
            "autograd) is not in it.",
        ],
    )
