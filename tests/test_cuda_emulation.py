"""CUDA kernels' own source, compiled for the CPU on an emulation of CUDA's threads, blocks, warps, clusters and
barriers (tests/cuda_emulation), checked against the CPU kernels in float64: outputs, final states, the saved
workspace and every gradient. The persistent gated kernels on both their plans (one block per direction, and a
direction split over blocks that meet at a grid-wide barrier every step); the Elman cluster kernels with one and
several blocks per cluster; the Elman persistent kernels (one-block and split plans) that the CUDA path runs by
default at small batch; and the kernels of RNNFAST_CUDA_PATH=fused: the Elman fused-step kernels with their host
loops, in float64 and float32 (and in float16 and bfloat16, within a multiple of the reference loop's own 16-bit
error), packed sequences included, and the tiled per-step product of the gated loops. No GPU needed; what it
cannot show is in emulated_cuda.h."""

import ast
import os

import pytest
import torch
from torch.utils import cpp_extension

from reference import reference_elman_layer
from test_gated_ops import gru_args, lstm_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ops = torch.ops.rnnfast
ONE_BLOCK_BUDGET = 160 * 1024  # kSmemBudget of csrc/cuda/gated_persistent_kernels.cuh
SPLIT_BUDGET = 4096  # small enough to split H = 20 over blocks of 7 units and B = 5 over two batch blocks


# With RNNFAST_SANITIZE set (as CI's sanitizer step sets it), the emulated kernels are built with AddressSanitizer and
# UndefinedBehaviorSanitizer, as setup.py builds the extension then: a kernel's read or write past a buffer (global
# or shared memory), or a 16-byte vector access to an address not 16-byte aligned, which on a GPU reads another
# buffer's values or faults, then stops the tests.
SANITIZE = bool(os.environ.get("RNNFAST_SANITIZE"))  # as setup.py reads it


def setup_py_constant(name):
    """A literal assigned at setup.py's top level (setup.py cannot be imported: importing it runs setup())."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"setup.py assigns no {name}")


SANITIZER_FLAGS = setup_py_constant("SANITIZER_FLAGS")


def build(name, source, layer_sources):
    """Compiles tests/cuda_emulation/<source> with the shared layer code it runs in, into build/cuda_emulation."""
    name += "_sanitized" if SANITIZE else ""
    directory = os.path.join(ROOT, "build", "cuda_emulation", name)
    os.makedirs(directory, exist_ok=True)
    return cpp_extension.load(
        name=name,
        sources=[os.path.join(ROOT, "tests", "cuda_emulation", source)]
        + [os.path.join(ROOT, "csrc", f) for f in [*layer_sources, "layer_states.cpp"]],
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O1", "-std=c++20", "-Wno-unknown-pragmas"] + (SANITIZER_FLAGS if SANITIZE else []),
        extra_ldflags=SANITIZER_FLAGS[:1] if SANITIZE else None,
        build_directory=directory,
    )


@pytest.fixture(scope="module")
def emulated_gated():
    return build("rnnfast_emulated_gated_persistent", "gated_persistent.cpp", ["gated_layer.cpp"])


@pytest.fixture(scope="module")
def emulated_elman():
    return build("rnnfast_emulated_elman", "elman.cpp", ["elman_layer.cpp"])


@pytest.fixture(scope="module")
def emulated_fused_step():
    return build("rnnfast_emulated_fused_step", "fused_step.cpp", ["elman_layer.cpp"])


CELLS = {"LSTM": (lstm_args, 4), "GRU": (gru_args, 3)}
PLANS = {"one-block": ONE_BLOCK_BUDGET, "split": SPLIT_BUDGET}


def layer_args(cell, bias):
    torch.manual_seed(0)
    make, _ = CELLS[cell]
    args = make(T=5, B=5, I=4, H=20, D=2, bias=bias)
    return args[:-2] if cell == "LSTM" else args[:-1]  # without weight_hr and batch_sizes


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("cell", CELLS)
def test_plans_are_the_ones_the_cases_name(emulated_gated, cell, plan):
    units, blocks, rows, batch_blocks, grid_sync = emulated_gated.plan(5, 5, 20, 2, CELLS[cell][1], PLANS[plan])
    if plan == "one-block":
        assert (units, blocks, rows, grid_sync) == (20, 1, 2, False)
    else:
        assert grid_sync and blocks == 3 and units == 7  # the last block holds 6 units
        assert batch_blocks == (2 if cell == "LSTM" else 1)


def cpu_forward(cell, args64, save_workspace):
    if cell == "LSTM":
        input, hx, cx, w_ih, w_hh, bias = args64
        return ops.lstm_layer_forward(input, hx, cx, w_ih, w_hh, bias, None, None, save_workspace)
    return ops.gru_layer_forward(*args64, None, save_workspace)


def emulated_forward(module, cell, budget, args32, save_workspace):
    layer = module.lstm_layer_forward if cell == "LSTM" else module.gru_layer_forward
    return layer(budget, *args32, save_workspace)


def as_float32(args):
    return tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)


def assert_close_to_float64(got, want, name):
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_the_cpu_kernels(emulated_gated, cell, plan, bias):
    args = layer_args(cell, bias)
    want = cpu_forward(cell, args, True)
    got = emulated_forward(emulated_gated, cell, PLANS[plan], as_float32(args), True)
    names = ["output", "h_n", "c_n", "workspace"] if cell == "LSTM" else ["output", "h_n", "workspace"]
    for name, g, w in zip(names, got, want, strict=True):
        assert_close_to_float64(g, w, name)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_without_a_saved_workspace_matches_the_cpu_kernels(emulated_gated, cell, plan):
    # Inference: the kernel overwrites one step's scratch workspace (ws_step = 0) and returns the same states.
    args = layer_args(cell, True)
    want = cpu_forward(cell, args, False)
    got = emulated_forward(emulated_gated, cell, PLANS[plan], as_float32(args), False)
    assert got[-1].shape == (0,)
    for g, w in zip(got[:-1], want[:-1], strict=True):
        assert_close_to_float64(g, w, "output or final state")


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_the_cpu_kernels(emulated_gated, cell, plan):
    # Every gradient (input, initial states, weights, biases) from the emulated backward kernel, run on the CPU
    # forward's output and workspace, against the CPU backward on the same arguments.
    args = layer_args(cell, True)
    forward = cpu_forward(cell, args, True)
    output, workspace = forward[0], forward[-1]
    grads = [torch.randn_like(t) for t in forward[:-1]]  # dL/d(output, h_n[, c_n])
    if cell == "LSTM":
        input, hx, cx, w_ih, w_hh, _ = args
        want = ops.lstm_layer_backward(*grads, input, hx, cx, w_ih, w_hh, None, output, workspace, None)[:-1]
        args32 = as_float32((*grads, input, hx, cx, w_ih, w_hh, output, workspace))
        got = emulated_gated.lstm_layer_backward(PLANS[plan], *args32)[:-1]  # without grad_weight_hr, empty
    else:
        input, hx, w_ih, w_hh, _, _ = args
        want = ops.gru_layer_backward(*grads, input, hx, w_ih, w_hh, output, workspace, None)
        args32 = as_float32((*grads, input, hx, w_ih, w_hh, output, workspace))
        got = emulated_gated.gru_layer_backward(PLANS[plan], *args32)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close_to_float64(g, w, f"gradient {i}")


# (smallest cluster size, batch rows per cluster, H) -> the plan it must give: cluster size, units per block,
# threads per unit, weights per thread, rows. One block with 8 threads a unit; 4 blocks of 5 units with 32
# threads each; one block of 70 units with 64 weights a thread (35 used).
CLUSTER_PLANS = {
    "one-block": ((1, 2, 20), (1, 20, 8, 4, 2)),
    "four-blocks": ((4, 3, 20), (4, 5, 32, 4, 3)),
    "kpt-64": ((1, 4, 70), (1, 70, 2, 64, 4)),
}
# shared-memory budget -> the Elman persistent plan at H = 20, B = 5, two directions: units per block, blocks
# per direction, batch rows per block, batch blocks, grid-wide barrier.
ELMAN_PERSISTENT_PLANS = {
    "one-block": (ONE_BLOCK_BUDGET, (20, 1, 2, 3, False)),
    "split": (1024, (7, 3, 5, 1, True)),
}


def elman_args(H, relu, T=6):
    torch.manual_seed(0)
    B, I, D = 5, 3, 2
    scale = 0.5 if relu else 1.0  # keeps relu's states from growing over the steps
    make = lambda *shape: torch.randn(*shape, dtype=torch.float64)  # noqa: E731
    return make(T, B, I), make(D, B, H), make(D, H, I) * scale, make(D, H, H) * scale / H**0.5, make(D, H)


def assert_elman_layer_matches_the_cpu_kernels(forward, backward, H, relu, T=6):
    """forward(*args, relu) and backward(*args, relu): an emulated layer op pair, without the plan's arguments."""
    args = elman_args(H, relu, T)
    output, h_n = ops.elman_layer_forward(*args, None, relu)
    got = forward(*as_float32(args), relu)
    assert_close_to_float64(got[0], output, "output")
    assert_close_to_float64(got[1], h_n, "h_n")
    grads = (torch.randn_like(output), torch.randn_like(h_n))
    want = ops.elman_layer_backward(*grads, *args[:4], output, None, relu)
    got = backward(*as_float32((*grads, *args[:4], output)), relu)
    for name, g, w in zip(["input", "hx", "weight_ih", "weight_hh", "bias"], got, want, strict=True):
        assert_close_to_float64(g, w, f"grad {name}")


@pytest.mark.parametrize("case", CLUSTER_PLANS)
def test_cluster_plans_are_the_ones_the_cases_name(emulated_elman, case):
    (min_cluster, rows, H), expected = CLUSTER_PLANS[case]
    assert emulated_elman.cluster_plan(6, 5, H, 2, min_cluster, rows) == expected


# The cluster kernels load each step's inputs two steps ahead, into registers for even and odd steps: an odd length
# and a single step end their loops on either set.
@pytest.mark.parametrize("T", [6, 7, 1])
@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("case", CLUSTER_PLANS)
def test_elman_cluster_kernels_match_the_cpu_kernels(emulated_elman, case, relu, T):
    (min_cluster, rows, H), _ = CLUSTER_PLANS[case]
    assert_elman_layer_matches_the_cpu_kernels(
        lambda *a: emulated_elman.elman_layer_forward("cluster", min_cluster, rows, *a),
        lambda *a: emulated_elman.elman_layer_backward("cluster", min_cluster, rows, *a), H, relu, T)


@pytest.mark.parametrize("case", ELMAN_PERSISTENT_PLANS)
def test_elman_persistent_plans_are_the_ones_the_cases_name(emulated_elman, case):
    budget, expected = ELMAN_PERSISTENT_PLANS[case]
    assert emulated_elman.persistent_plan(6, 5, 20, 2, budget) == expected


@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("case", ELMAN_PERSISTENT_PLANS)
def test_elman_persistent_kernels_match_the_cpu_kernels(emulated_elman, case, relu):
    # The plans the CUDA path takes by default at small batch (verified on an H200), guarded here without a GPU.
    budget, _ = ELMAN_PERSISTENT_PLANS[case]
    assert_elman_layer_matches_the_cpu_kernels(
        lambda *a: emulated_elman.elman_layer_forward("persistent", budget, 0, *a),
        lambda *a: emulated_elman.elman_layer_backward("persistent", budget, 0, *a), 20, relu)


# name -> T, B, H, D, batch_sizes. The kernels' tiles are 16 batch rows by 64 columns, and K is staged 256
# (float32) or 128 (float64) at a time: one tile; 2 x 2 tiles a direction, both directions in each launch; the
# same packed (rows ending at every step, two tiles' rows included); K in two chunks (float64); K in two chunks
# (float64: three) and five column tiles, four of them full. The weight panel is copied 16 bytes at a time where H
# is a multiple of 16 bytes' values (4 in float32, 2 in float64: H = 20, 260, and in float64 70 and 130 too), else
# one value at a time.
FUSED_STEP_CASES = {
    "one-tile": (5, 3, 20, 1, None),
    "tiles-bidirectional": (4, 20, 70, 2, None),
    "tiles-bidirectional-packed": (5, 20, 70, 2, [20, 17, 17, 9, 2]),
    "two-chunks": (3, 2, 130, 1, None),
    "two-chunks-five-tiles": (3, 2, 260, 1, None),
}


def fused_step_args(case, relu, dtype):
    T, B, H, D, batch_sizes = FUSED_STEP_CASES[case]
    torch.manual_seed(1)
    scale = 0.5 if relu else 1.0  # keeps relu's states from growing over the steps
    make = lambda *shape: torch.randn(*shape, dtype=dtype)  # noqa: E731
    return (make(T, B, 3), make(D, B, H), make(D, H, 3) * scale, make(D, H, H) * scale / H**0.5, make(D, H),
            None if batch_sizes is None else torch.tensor(batch_sizes))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("case", FUSED_STEP_CASES)
def test_elman_fused_step_kernels_match_the_cpu_kernels(emulated_fused_step, case, relu, dtype):
    # Against the CPU kernels in float64: to rounding in float64 (the sums run in another order), to float32's
    # precision in float32. Outputs (zeros past each packed row's end included), h_n and every gradient.
    args = fused_step_args(case, relu, torch.float64)
    batch_sizes = args[-1]
    def close(got, want, name):
        if dtype == torch.float32:
            assert_close_to_float64(got, want, name)
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")

    cast = lambda ts: tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in ts)  # noqa: E731
    output, h_n = ops.elman_layer_forward(*args, relu)
    got = emulated_fused_step.elman_layer_forward(*cast(args), relu)
    close(got[0].double(), output, "output")
    close(got[1].double(), h_n, "h_n")
    grads = (torch.randn_like(output), torch.randn_like(h_n))
    backward_args = (*grads, *args[:4], output, batch_sizes)
    want = ops.elman_layer_backward(*backward_args, relu)
    got = emulated_fused_step.elman_layer_backward(*cast(backward_args), relu)
    for name, g, w in zip(["input", "hx", "weight_ih", "weight_hh", "bias"], got, want, strict=True):
        close(g.double(), w, f"grad {name}")


def reference_loop_layer(x, hx, w_ih, w_hh, bias, batch_sizes, relu):
    """The plain Python loop of tests/reference.py on a layer op's arguments, in their dtype: output, h_n."""
    T, B = x.shape[:2]
    lengths = [T] * B if batch_sizes is None else [int((batch_sizes > b).sum()) for b in range(B)]
    act = torch.relu if relu else torch.tanh
    directions = [reference_elman_layer(x, hx[d], w_ih[d], w_hh[d], bias[d], torch.zeros_like(bias[d]), act, d == 1,
                                        lengths) for d in range(hx.shape[0])]  # fmt: skip
    return torch.cat([output for output, _ in directions], 2), torch.stack([h_n for _, h_n in directions])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", FUSED_STEP_CASES)
def test_elman_fused_step_kernels_16bit_error_within_a_multiple_of_a_16bit_loop(emulated_fused_step, case, dtype):
    # 16-bit values with float32 sums, as the CUDA path runs them. As the GPU tests bound cuDNN's, and flash-attention
    # its kernels': the error against float64 (the CPU kernels, on the same 16-bit inputs) is within 3x that of the
    # plain reference loop run in the same dtype, for outputs, h_n and every gradient. tanh only: in 16 bits relu's
    # derivative flips wherever rounding moves a pre-activation across 0, in any implementation.
    exact = tuple(t.to(dtype).double() if t is not None and t.is_floating_point() else t
                  for t in fused_step_args(case, False, torch.float64))  # fmt: skip
    low = tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in exact)
    batch_sizes = exact[-1]
    output, h_n = ops.elman_layer_forward(*exact, False)
    grads = (torch.randn_like(output).to(dtype), torch.randn_like(h_n).to(dtype))
    truth = (output, h_n, *ops.elman_layer_backward(*(g.double() for g in grads), *exact[:4], output, batch_sizes,
                                                    False))  # fmt: skip
    ours = emulated_fused_step.elman_layer_forward(*low, False)
    ours = (*ours, *emulated_fused_step.elman_layer_backward(*grads, *low[:4], ours[0], batch_sizes, False))
    leaves = [t.clone().requires_grad_(True) for t in low[:5]]
    loop = reference_loop_layer(*leaves, batch_sizes, False)
    loop = (*loop, *torch.autograd.grad(loop, leaves, grads))
    names = ["output", "h_n", "grad input", "grad hx", "grad weight_ih", "grad weight_hh", "grad bias"]
    for name, t, o, r in zip(names, truth, ours, loop, strict=True):
        our_error, loop_error = (o.double() - t).abs().max().item(), (r.double() - t).abs().max().item()
        assert our_error <= 3 * loop_error + 1e-3 * t.abs().max().item(), (name, our_error, loop_error)


# (m, k, n): one tile; rows and columns past a tile's end, K in two float64 chunks; a gated step's shapes (the
# LSTM's h (B x P) @ W_hh^T (P x 4H), its backward's (B x 4H) @ (4H x P)).
TILED_PRODUCT_SHAPES = [(3, 5, 7), (17, 130, 65), (5, 24, 96), (5, 96, 24)]


@pytest.mark.parametrize("accumulate", [False, True], ids=["fresh", "accumulate"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("m,k,n", TILED_PRODUCT_SHAPES, ids=str)
def test_tiled_step_product_matches_a_float64_matmul(emulated_fused_step, m, k, n, dtype, accumulate):
    # Operands are views into wider buffers (row strides past their widths), as the step slices of a sequence are;
    # a fresh product must not read the NaN its output held, an accumulating one adds to it.
    torch.manual_seed(2)
    a = torch.randn(m, k + 3, dtype=torch.float64)[:, :k]
    b = torch.randn(k, n + 2, dtype=torch.float64)[:, :n]
    c_buffer = torch.randn(m, n + 1, dtype=torch.float64)
    c0 = c_buffer[:, :n]
    c = (c_buffer.to(dtype, copy=True) if accumulate else torch.full((m, n + 1), float("nan"), dtype=dtype))[:, :n]
    emulated_fused_step.tiled_product(a.to(dtype), b.to(dtype), c, accumulate)
    want = a @ b + (c0 if accumulate else 0)
    if dtype == torch.float64:
        torch.testing.assert_close(c, want, rtol=1e-12, atol=1e-12)
    else:
        assert_close_to_float64(c, want, "product")
