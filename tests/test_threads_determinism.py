"""Threads and determinism: concurrent calls from Python threads give the single-thread answers; repeated runs
are bitwise identical; the loop over time is bitwise identical for any intra-op thread count.

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
    output, h_n = module(x, hx)
    grads = torch.autograd.grad(output.square().sum() + h_n.sum(), [x, *module.parameters()])
    return [output.detach(), h_n.detach(), *grads]


def assert_bitwise_equal(got, expected):
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert torch.equal(g, e), f"result {i} differs by up to {(g - e).abs().max().item():.3g}"


SHAPES = [(20, 3, 5, 7), (50, 32, 32, 64), (8, 8, 256, 512)]


def model_and_inputs(T, B, I, H, bidirectional=True):
    torch.manual_seed(0)
    module = rnnfast.RNN(I, H, num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    return module, torch.randn(T, B, I), torch.randn(2 * D, B, H)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("T,B,I,H", SHAPES)
def test_repeated_runs_are_bitwise_identical(T, B, I, H, threads, restore_threads):
    torch.set_num_threads(threads)
    module, x, hx = model_and_inputs(T, B, I, H)
    first = outputs_and_grads(module, x, hx)
    for _ in range(3):
        assert_bitwise_equal(outputs_and_grads(module, x, hx), first)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_loop_over_time_is_bitwise_identical_for_one_and_two_threads(bidirectional, restore_threads):
    # Zero input and W_ih leave only the recurrence (and the BLAS-free activation) to compute.
    T, B, H = 30, 16, 256
    D = 2 if bidirectional else 1
    args = (torch.zeros(T, B, 8), torch.randn(D, B, H), torch.zeros(D, H, 8), torch.randn(D, H, H) / H**0.5, None,
            None, False)  # fmt: skip
    results = {}
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        output, h_n = torch.ops.rnnfast.elman_layer_forward(*args)
        grads = torch.ops.rnnfast.elman_layer_backward(output, h_n, args[0], args[1], args[2], args[3], output, None,
                                                       False)  # fmt: skip
        results.setdefault(threads, [output, h_n, grads[1]])
    assert_bitwise_equal(results[2], results[1])


@pytest.mark.parametrize("T,B,I,H", SHAPES)
def test_results_agree_to_rounding_across_thread_counts(T, B, I, H, restore_threads):
    module, x, hx = model_and_inputs(T, B, I, H)
    torch.set_num_threads(1)
    one = outputs_and_grads(module, x, hx)
    torch.set_num_threads(2)
    two = outputs_and_grads(module, x, hx)
    for a, b in zip(one, two, strict=True):
        # Float32 rounding of a sum scales with its largest terms, so the tolerance scales with the tensor.
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def test_concurrent_calls_from_python_threads_give_the_single_thread_answers():
    module, _, _ = model_and_inputs(25, 4, 6, 16)
    inputs = [(torch.randn(25, 4, 6), torch.randn(4, 4, 16)) for _ in range(8)]
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
