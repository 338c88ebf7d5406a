"""Threads and determinism, for the RNN, LSTM and GRU: concurrent calls from Python threads give the single-thread
answers; repeated runs are bitwise identical; the loop over time is bitwise identical for any intra-op thread
count.

What is not bitwise identical across thread counts (README, "Guarantees"): the whole-sequence matrix products go
to PyTorch's BLAS, which for some shapes splits a product's reduction over its threads, so the input projection
and the weight gradients can differ in their last bits between torch.set_num_threads(1) and (2), exactly as
torch.nn.RNN's do. The tests below pin that down: results agree to float rounding across thread counts, and the
recurrence alone (no input projection) agrees bitwise.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import rnnfast


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def outputs_and_grads(module, x, hx):
    x = x.clone().requires_grad_(True)
    output, hidden = module(x, hx)
    states = list(hidden) if isinstance(hidden, tuple) else [hidden]  # an LSTM's (h_n, c_n)
    grads = torch.autograd.grad(output.square().sum() + sum(s.sum() for s in states), [x, *module.parameters()])
    return [output.detach(), *(s.detach() for s in states), *grads]


def assert_bitwise_equal(got, expected):
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert torch.equal(g, e), f"result {i} differs by up to {(g - e).abs().max().item():.3g}"


SHAPES = [(20, 3, 5, 7), (50, 32, 32, 64), (8, 8, 256, 512)]
CELLS = ["RNN", "LSTM", "GRU"]


def random_state(cell, layers, B, H):
    """A random initial state of `cell`'s form: h_0 (layers, B, H), and for an LSTM (h_0, c_0)."""
    h0 = torch.randn(layers, B, H)
    return (h0, torch.randn(layers, B, H)) if cell == "LSTM" else h0


def model_and_inputs(T, B, I, H, bidirectional=True, cell="RNN"):
    torch.manual_seed(0)
    module = getattr(rnnfast, cell)(I, H, num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    return module, torch.randn(T, B, I), random_state(cell, 2 * D, B, H)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("T,B,I,H", SHAPES)
def test_repeated_runs_are_bitwise_identical(T, B, I, H, threads, cell, restore_threads):
    torch.set_num_threads(threads)
    module, x, hx = model_and_inputs(T, B, I, H, cell=cell)
    first = outputs_and_grads(module, x, hx)
    for _ in range(3):
        assert_bitwise_equal(outputs_and_grads(module, x, hx), first)


def loop_over_time(cell, D, T=30, B=16, H=256):
    """One layer op of `cell` forward and backward with zero input and W_ih, which leave only the recurrence (and
    the BLAS-free activations) to compute: returns output, final states and dL/dh_0 (and an LSTM's dL/dc_0)."""
    torch.manual_seed(0)
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[cell]
    x, w_ih = torch.zeros(T, B, 8), torch.zeros(D, G * H, 8)
    h0, c0, w_hh = torch.randn(D, B, H), torch.randn(D, B, H), torch.randn(D, G * H, H) / H**0.5
    if cell == "RNN":
        output, h_n = torch.ops.rnnfast.elman_layer_forward(x, h0, w_ih, w_hh, None, None, False)
        grads = torch.ops.rnnfast.elman_layer_backward(output, h_n, x, h0, w_ih, w_hh, output, None, False)
        return [output, h_n, grads[1]]
    if cell == "LSTM":
        output, h_n, c_n, ws = torch.ops.rnnfast.lstm_layer_forward(x, h0, c0, w_ih, w_hh, None, None, None, True)
        grads = torch.ops.rnnfast.lstm_layer_backward(output, h_n, c_n, x, h0, c0, w_ih, w_hh, None, output, ws, None)
        return [output, h_n, c_n, grads[1], grads[2]]
    output, h_n, ws = torch.ops.rnnfast.gru_layer_forward(x, h0, w_ih, w_hh, None, None, None, True)
    grads = torch.ops.rnnfast.gru_layer_backward(output, h_n, x, h0, w_ih, w_hh, output, ws, None)
    return [output, h_n, grads[1]]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_loop_over_time_is_bitwise_identical_for_one_and_two_threads(cell, bidirectional, restore_threads):
    results = {}
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        results.setdefault(threads, loop_over_time(cell, 2 if bidirectional else 1))
    assert_bitwise_equal(results[2], results[1])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,I,H", SHAPES)
def test_results_agree_to_rounding_across_thread_counts(T, B, I, H, cell, restore_threads):
    module, x, hx = model_and_inputs(T, B, I, H, cell=cell)
    torch.set_num_threads(1)
    one = outputs_and_grads(module, x, hx)
    torch.set_num_threads(2)
    two = outputs_and_grads(module, x, hx)
    for a, b in zip(one, two, strict=True):
        # Float32 rounding of a sum scales with its largest terms, so the tolerance scales with the tensor.
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())


@pytest.mark.parametrize("cell", CELLS)
def test_concurrent_calls_from_python_threads_give_the_single_thread_answers(cell):
    module, _, _ = model_and_inputs(25, 4, 6, 16, cell=cell)
    inputs = [(torch.randn(25, 4, 6), random_state(cell, 4, 4, 16)) for _ in range(8)]
    expected = [outputs_and_grads(module, x, hx) for x, hx in inputs]
    start = threading.Barrier(4)

    def run(pair):
        start.wait(timeout=60)  # so the calls overlap
        return [outputs_and_grads(module, *pair) for _ in range(5)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        per_thread = list(pool.map(run, inputs[:4]))
        per_thread += list(pool.map(run, inputs[4:]))
    for got_runs, want in zip(per_thread, expected, strict=True):
        for got in got_runs:
            assert_bitwise_equal(got, want)
