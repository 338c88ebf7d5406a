"""Both CPU step kernels, the fused register-tiled step (csrc/cpu/small_step.cpp) and the BLAS product plus
activation pass, give torch.nn.RNN's numbers on either side of the automatic threshold, at hidden sizes that hit
every edge of the fused kernel's register tile (full tiles, partial columns, partial rows); and both per-step
products of the gated cells' loops (the tiles on packed weights, and BLAS) give torch.nn.LSTM's and GRU's."""

import os
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import rnnfast
from rnn_pairs import assert_twins_agree, twin_modules, twin_rnns

# The tile is 4 rows x 64 float32 (32 float64) columns: hidden sizes below, at and past it, and past the
# automatic threshold of 256.
HIDDEN = [1, 7, 32, 64, 65, 130, 300]


@pytest.fixture(params=["fused", "blas"])
def step_kernel(request, monkeypatch):
    monkeypatch.setenv("RNNFAST_CPU_STEP", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("H", HIDDEN)
@pytest.mark.parametrize("B", [1, 6])
def test_step_kernel_matches_torch_nn(step_kernel, H, B, dtype):
    reference, fast = twin_rnns(dtype, input_size=3, hidden_size=H, num_layers=2, bidirectional=True,
                                nonlinearity="tanh" if H % 2 else "relu")  # fmt: skip
    assert_twins_agree(reference, fast, torch.randn(5, B, 3, dtype=dtype), torch.randn(4, B, H, dtype=dtype))


@pytest.mark.parametrize("H", [5, 70])
def test_step_kernel_matches_torch_nn_on_packed_input(step_kernel, H):
    reference, fast = twin_rnns(input_size=3, hidden_size=H, bidirectional=True)
    lengths = [6, 2, 5, 1, 6]
    packed = pack_sequence([torch.randn(n, 3, dtype=torch.float64) for n in lengths], enforce_sorted=False)
    assert_twins_agree(reference, fast, packed, torch.randn(2, len(lengths), H, dtype=torch.float64))


# Gated widths G*H (and P, the LSTM's projection) below, at and past a tile's 64 float32 (32 float64) columns,
# with 1 to 6 batch rows against its 4 rows.
GATED = {
    "LSTM-H1": ("LSTM", 1, {}),
    "LSTM-H16": ("LSTM", 16, {}),
    "LSTM-H17-proj5": ("LSTM", 17, {"proj_size": 5}),
    "LSTM-H40-proj33": ("LSTM", 40, {"proj_size": 33}),
    "GRU-H7": ("GRU", 7, {}),
    "GRU-H22": ("GRU", 22, {}),
    "GRU-H70": ("GRU", 70, {}),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cell", GATED.values(), ids=GATED.keys())
@pytest.mark.parametrize("B", [1, 6])
def test_gated_step_product_matches_torch_nn(step_kernel, cell, B, dtype):
    name, H, extra = cell
    reference, fast = twin_modules(name, dtype, input_size=3, hidden_size=H, num_layers=2, bidirectional=True,
                                   **extra)  # fmt: skip
    assert_twins_agree(reference, fast, torch.randn(5, B, 3, dtype=dtype))


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_gated_step_product_matches_torch_nn_on_packed_input(step_kernel, name):
    reference, fast = twin_modules(name, input_size=3, hidden_size=20, bidirectional=True)
    lengths = [6, 2, 5, 1, 6]
    packed = pack_sequence([torch.randn(n, 3, dtype=torch.float64) for n in lengths], enforce_sorted=False)
    assert_twins_agree(reference, fast, packed)


@pytest.mark.parametrize("step", ["fused", "blas"])
def test_float32_tanh_is_within_5_ulp_of_float64_tanh_and_saturates_exactly(step, monkeypatch):
    # The CPU's float32 tanh is a rational approximation (csrc/cell_math.h), in each step path's activation. One
    # step of a one-unit layer with W_ih = 1 and nothing else gives tanh of its inputs, one per batch row: a dense
    # grid over the range where tanh is not yet 1, small magnitudes, and values past saturation.
    monkeypatch.setenv("RNNFAST_CPU_STEP", step)
    layer = rnnfast.RNN(1, 1)
    with torch.no_grad():
        layer.weight_ih_l0.fill_(1.0)
        layer.weight_hh_l0.zero_()
        layer.bias_ih_l0.zero_()
        layer.bias_hh_l0.zero_()
        x = torch.cat([torch.linspace(-9, 9, 400_001), torch.logspace(-8, 0, 20_001), -torch.logspace(-8, 0, 20_001)])
        h = layer(x.view(1, -1, 1))[0].view(-1)
        exact = torch.tanh(x.double())
        ulp = (exact.float().nextafter(torch.tensor(2.0)) - exact.float()).double()
        assert ((h.double() - exact).abs() / ulp).max().item() <= 5
        saturated = torch.tensor([7.9989, 8.0, 9.0, 1e6, float("inf")])
        h_saturated = layer(torch.cat([saturated, -saturated]).view(1, -1, 1))[0].view(-1)
        assert torch.equal(h_saturated, torch.cat([torch.ones(5), -torch.ones(5)]))


def test_unknown_instruction_set_override_is_a_clear_error():
    # RNNFAST_CPU_SIMD is read once per process, so the bad value goes to a process of its own.
    root = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    env = dict(os.environ, RNNFAST_CPU_SIMD="sse2",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    run = "import torch, rnnfast\nrnnfast.LSTM(3, 4)(torch.randn(5, 2, 3))"
    result = subprocess.run([sys.executable, "-c", run], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "RNNFAST_CPU_SIMD must be baseline or avx2 (or unset), got 'sse2'" in result.stderr


def test_unknown_step_kernel_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RNNFAST_CPU_STEP", "fastest")
    with pytest.raises(RuntimeError, match="RNNFAST_CPU_STEP must be auto, fused or blas, got 'fastest'"):
        rnnfast.RNN(3, 4)(torch.randn(5, 2, 3))


BASELINE_RUN = r"""
import torch, rnnfast
from rnn_pairs import assert_twins_agree, twin_modules, twin_rnns
for H in (7, 65, 130):
    for dtype in (torch.float64, torch.float32):
        reference, fast = twin_rnns(dtype, input_size=3, hidden_size=H, num_layers=2, bidirectional=True)
        assert_twins_agree(reference, fast, torch.randn(5, 6, 3, dtype=dtype), torch.randn(4, 6, H, dtype=dtype))
        for name, extra in (("LSTM", {"proj_size": 5}), ("GRU", {})):
            reference, fast = twin_modules(name, dtype, input_size=3, hidden_size=H, bidirectional=True, **extra)
            assert_twins_agree(reference, fast, torch.randn(5, 6, 3, dtype=dtype))
"""


@pytest.mark.parametrize("variant", ["baseline", "avx2"])
def test_fused_step_narrower_variants_match_torch_nn(variant):
    # The instruction-set variant is chosen once per process, so the baseline (SSE2, no FMA) one and the AVX2 one
    # (on a CPU with AVX-512) run in their own.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.abspath(rnnfast.__file__)))
    env = dict(os.environ, RNNFAST_CPU_SIMD=variant, RNNFAST_CPU_STEP="fused",
               PYTHONPATH=os.pathsep.join([root, tests_dir, os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    subprocess.run([sys.executable, "-c", BASELINE_RUN], env=env, check=True, timeout=300)


# The input projection is a plain loop up to I * D * H = 256 multiply-adds a row and 2**13 in all
# (csrc/cpu/elman.cpp, project_input_small), a BLAS product past either bound: (T, I, H, bidirectional) on
# both sides of each.
PROJECTION_SHAPES = {
    "loop": (32, 16, 16, False),
    "past-total": (33, 16, 16, False),
    "loop-bidirectional": (16, 16, 8, True),
    "past-row": (2, 1, 129, True),
    "loop-row-bound": (2, 1, 128, True),
}


@pytest.mark.parametrize("shape", PROJECTION_SHAPES.values(), ids=PROJECTION_SHAPES.keys())
@pytest.mark.parametrize("bias", [True, False])
def test_input_projection_matches_torch_nn_on_both_sides_of_its_loop_bounds(shape, bias):
    T, I, H, bidirectional = shape
    reference, fast = twin_rnns(input_size=I, hidden_size=H, bidirectional=bidirectional, bias=bias)
    assert_twins_agree(reference, fast, torch.randn(T, 1, I, dtype=torch.float64))
