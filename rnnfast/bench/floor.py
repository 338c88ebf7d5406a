"""How far each shape's loop over time is from the hardware's limit: the loop's time per step against the time of
a bare per-step product, (B x H) @ (H x H), in a tight C++ loop with the same BLAS (rnnfast::recurrence_floor),
measured in the same interleaved run as the loops (split.py). A step cannot cost less than its product; the
forward's extra is the activation and the accumulation onto the input projection, the backward's the
derivative pass and its bookkeeping. CPU only: the op that times the floor has no CUDA kernel."""

from typing import Dict, List

from .tables import Section


def floor_section(splits: List[Dict]) -> Section:
    rows = []
    for r in splits:
        if r.get("floor_s") is None:
            continue
        s = r["shape"]
        T = s["seq_len"]
        floor, forward, backward = r["floor_s"] / T, r["loops_s"]["forward loop"] / T, r["loops_s"]["backward loop"] / T
        rows.append([
            f"B={s['batch']} T={T} I={s['input_size']} H={s['hidden_size']}",
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
            "in a tight C++ loop, nothing else. fwd loop, bwd loop: per step, as in the split table. At small "
            "sizes the fused step kernel can beat the floor: it makes no BLAS call at all.",
        ],
    )
