"""The persistent gated CUDA kernels' own source, compiled for the CPU on an emulation of CUDA's threads, blocks,
warps and barriers (tests/cuda_emulation), checked against the CPU kernels in float64: outputs, final states, the
saved workspace and every gradient, on both plans (one block per direction, and a direction split over blocks
that meet at a grid-wide barrier every step). No GPU needed; what it cannot show is in emulated_cuda.h."""

import os

import pytest
import torch
from torch.utils import cpp_extension

from test_gated_ops import gru_args, lstm_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ops = torch.ops.rnnfast
ONE_BLOCK_BUDGET = 160 * 1024  # kSmemBudget of csrc/cuda/gated_persistent_kernels.cuh
SPLIT_BUDGET = 4096  # small enough to split H = 20 over blocks of 7 units and B = 5 over two batch blocks


@pytest.fixture(scope="module")
def emulated():
    build = os.path.join(ROOT, "build", "cuda_emulation")
    os.makedirs(build, exist_ok=True)
    return cpp_extension.load(
        name="rnnfast_cuda_emulation",
        sources=[os.path.join(ROOT, "tests", "cuda_emulation", "gated_persistent.cpp"),
                 os.path.join(ROOT, "csrc", "gated_layer.cpp"), os.path.join(ROOT, "csrc", "layer_states.cpp")],
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O1", "-std=c++20", "-Wno-unknown-pragmas"],
        build_directory=build,
    )  # fmt: skip


CELLS = {"LSTM": (lstm_args, 4), "GRU": (gru_args, 3)}
PLANS = {"one-block": ONE_BLOCK_BUDGET, "split": SPLIT_BUDGET}


def layer_args(cell, bias):
    make, _ = CELLS[cell]
    args = make(T=5, B=5, I=4, H=20, D=2, bias=bias)
    return args[:-2] if cell == "LSTM" else args[:-1]  # without weight_hr and batch_sizes



@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("cell", CELLS)
def test_plans_are_the_ones_the_cases_name(emulated, cell, plan):
    units, blocks, rows, batch_blocks, grid_sync = emulated.plan(5, 5, 20, 2, CELLS[cell][1], PLANS[plan])
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


def emulated_forward(emulated, cell, budget, args32, save_workspace):
    layer = emulated.lstm_layer_forward if cell == "LSTM" else emulated.gru_layer_forward
    return layer(budget, *args32, save_workspace)


def as_float32(args):
    return tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)


def assert_close_to_float64(got, want, name):
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=2e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_matches_the_cpu_kernels(emulated, cell, plan, bias):
    args = layer_args(cell, bias)
    want = cpu_forward(cell, args, True)
    got = emulated_forward(emulated, cell, PLANS[plan], as_float32(args), True)
    names = ["output", "h_n", "c_n", "workspace"] if cell == "LSTM" else ["output", "h_n", "workspace"]
    for name, g, w in zip(names, got, want, strict=True):
        assert_close_to_float64(g, w, name)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_without_a_saved_workspace_matches_the_cpu_kernels(emulated, cell, plan):
    # Inference: the kernel overwrites one step's scratch workspace (ws_step = 0) and returns the same states.
    args = layer_args(cell, True)
    want = cpu_forward(cell, args, False)
    got = emulated_forward(emulated, cell, PLANS[plan], as_float32(args), False)
    assert got[-1].shape == (0,)
    for g, w in zip(got[:-1], want[:-1], strict=True):
        assert_close_to_float64(g, w, "output or final state")


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_the_cpu_kernels(emulated, cell, plan):
    # Every gradient (input, initial states, weights, biases) from the emulated backward kernel, run on the CPU
    # forward's output and workspace, against the CPU backward on the same arguments.
    args = layer_args(cell, True)
    forward = cpu_forward(cell, args, True)
    output, workspace = forward[0], forward[-1]
    grads = [torch.randn_like(t) for t in forward[:-1]]  # dL/d(output, h_n[, c_n])
    if cell == "LSTM":
        input, hx, cx, w_ih, w_hh, _ = args
        want = ops.lstm_layer_backward(*grads, input, hx, cx, w_ih, w_hh, None, output, workspace, None)[:-1]
        got = emulated.lstm_layer_backward(PLANS[plan], *as_float32((*grads, input, hx, cx, w_ih, w_hh, output,
                                                                     workspace)))  # fmt: skip
        got = got[:-1]  # grad_weight_hr: empty without a projection
    else:
        input, hx, w_ih, w_hh, _, _ = args
        want = ops.gru_layer_backward(*grads, input, hx, w_ih, w_hh, output, workspace, None)
        got = emulated.gru_layer_backward(PLANS[plan], *as_float32((*grads, input, hx, w_ih, w_hh, output,
                                                                    workspace)))  # fmt: skip
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_close_to_float64(g, w, f"gradient {i}")
