"""Threads and determinism, for the RNN, LSTM and GRU: concurrent calls from Python threads give the single-thread
answers; repeated runs are bitwise identical; the loop over time is bitwise identical for any intra-op thread
count.

What is not bitwise identical across thread counts (README, "Guarantees"): the whole-sequence matrix products go
to PyTorch's BLAS, which for some shapes splits a product's reduction over its threads, so the input projection
and the weight gradients can differ in their last bits between torch.set_num_threads(1) and (2), exactly as
torch.nn.RNN's do. The same holds for the loop's per-step product where it is the BLAS's, not rnnfast's register
tiles (small_step.h: on Intel CPUs, every step past hidden 256, and the gated cells' steps wherever their loop
does not split its batch rows over threads; MKL split the LSTM backward's step product dL/dgates @ W_hh over 2
and 16 threads, not over 3 or 4). The tests below pin that down: results agree to float rounding across thread
counts, and the recurrence alone (no input projection) agrees bitwise where it runs in rnnfast's tiles, the step
every CPU but Intel's takes.
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


@pytest.fixture
def own_step(monkeypatch):
    """The loops' per-step products in rnnfast's register tiles, whatever the CPU (auto picks them on every CPU but
    Intel's, where it often picks MKL's product)."""
    monkeypatch.setenv("RNNFAST_CPU_STEP", "fused")


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


def loop_over_time(cell, D, T=30, B=16, H=256, lengths=None, proj_size=0):
    """One layer op of `cell` forward and backward on one-hot inputs, whose projection picks one column of W_ih
    per row and step: exact in any summation order, so the BLAS's thread count cannot change its bits, and
    different in every row and step. That leaves the recurrence (and the BLAS-free activations) the only thing
    a thread count could change. Returns output, final states and dL/dh_0 (and an LSTM's dL/dc_0). lengths: each
    row's steps, longest first, for a packed batch; proj_size: an LSTM's projection."""
    torch.manual_seed(0)
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[cell]
    P = proj_size or H
    features = (torch.arange(T)[:, None] * 3 + torch.arange(B)[None, :]) % 8
    x, w_ih = torch.nn.functional.one_hot(features, 8).float(), torch.randn(D, G * H, 8)
    h0, c0, w_hh = torch.randn(D, B, P), torch.randn(D, B, H), torch.randn(D, G * H, P) / P**0.5
    w_hr = torch.randn(D, P, H) / H**0.5 if proj_size else None
    batch_sizes = None
    if lengths is not None:
        batch_sizes = torch.tensor([sum(length > t for length in lengths) for t in range(T)])
    if cell == "RNN":
        output, h_n = torch.ops.rnnfast.elman_layer_forward(x, h0, w_ih, w_hh, None, batch_sizes, False)
        grads = torch.ops.rnnfast.elman_layer_backward(output, h_n, x, h0, w_ih, w_hh, output, batch_sizes, False)
        return [output, h_n, grads[1]]
    if cell == "LSTM":
        output, h_n, c_n, ws = torch.ops.rnnfast.lstm_layer_forward(x, h0, c0, w_ih, w_hh, None, w_hr, batch_sizes,
                                                                    True)
        grads = torch.ops.rnnfast.lstm_layer_backward(output, h_n, c_n, x, h0, c0, w_ih, w_hh, w_hr, output, ws,
                                                      batch_sizes)
        return [output, h_n, c_n, grads[1], grads[2]]
    output, h_n, ws = torch.ops.rnnfast.gru_layer_forward(x, h0, w_ih, w_hh, None, None, batch_sizes, True)
    grads = torch.ops.rnnfast.gru_layer_backward(output, h_n, x, h0, w_ih, w_hh, output, ws, batch_sizes)
    return [output, h_n, grads[1]]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_loop_over_time_is_bitwise_identical_for_one_and_two_threads(cell, bidirectional, restore_threads,
                                                                         own_step):
    results = {}
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        results.setdefault(threads, loop_over_time(cell, 2 if bidirectional else 1))
    assert_bitwise_equal(results[2], results[1])


@pytest.mark.parametrize("cell", CELLS)
def test_the_loop_over_time_on_the_blas_step_agrees_to_rounding_across_thread_counts(cell, restore_threads,
                                                                                     monkeypatch):
    # With the BLAS's product as the step (auto's choice on Intel CPUs past hidden 256), the BLAS may split
    # the step's reduction over its threads: the bits may change with the thread count, the values only by float
    # rounding, which scales with each tensor's largest entries.
    monkeypatch.setenv("RNNFAST_CPU_STEP", "blas")
    torch.set_num_threads(1)
    one = loop_over_time(cell, 2)
    for threads in (2, 3):
        torch.set_num_threads(threads)
        for a, b in zip(one, loop_over_time(cell, 2), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * a.abs().max().item())


# Lengths of a packed batch of 16 rows, longest first: the loops' row groups (csrc/cpu/parallel_loops.h) split
# it where the rows' steps, not their count, are shared equally, and rows join the reverse pass late.
PACKED_LENGTHS = [30, 30, 28, 25, 25, 21, 17, 16, 12, 9, 9, 6, 4, 3, 1, 1]


@pytest.mark.parametrize("threads", [2, 3, 4, 16])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "LSTM-projection", "GRU"])
def test_the_loop_split_into_row_groups_gives_the_single_thread_bits(cell, bidirectional, packed, threads,
                                                                      restore_threads, own_step):
    # With more than one thread a direction's batch rows are split into groups that run their loops over time on
    # threads of their own: as many groups as the threads left to each direction, with 4 rows or more on
    # average (so 2 to 4 groups of these 16 rows here; a bidirectional layer at 2 and 3 threads keeps one group
    # per direction). Each row's arithmetic is the same in any group, so every output, final state and gradient
    # keeps its bits.
    kind, _, projection = cell.partition("-")
    options = dict(D=2 if bidirectional else 1, lengths=PACKED_LENGTHS if packed else None,
                   proj_size=64 if projection else 0)
    torch.set_num_threads(1)
    expected = loop_over_time(kind, **options)
    torch.set_num_threads(threads)
    assert_bitwise_equal(loop_over_time(kind, **options), expected)


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_row_groups_match_torch_nn_on_a_packed_unsorted_batch(cell, threads, restore_threads):
    # The groups' rows, offsets and lengths against an independent reference: torch.nn's layer of the same weights,
    # float64, on a batch of variable lengths in caller order, both directions, two layers, with a given state.
    torch.manual_seed(0)
    options = dict(num_layers=2, bidirectional=True, dtype=torch.float64)
    if cell == "LSTM":
        options["proj_size"] = 24
    reference = getattr(torch.nn, cell)(16, 48, **options)
    fast = getattr(rnnfast, cell)(16, 48, **options)
    fast.load_state_dict(reference.state_dict())
    lengths = torch.tensor([7, 40, 33, 1, 40, 18, 25, 2, 12, 39, 5, 21])
    x = torch.randn(40, 12, 16, dtype=torch.float64)
    P = options.get("proj_size", 48)
    hx = torch.randn(4, 12, P, dtype=torch.float64)
    state = (hx, torch.randn(4, 12, 48, dtype=torch.float64)) if cell == "LSTM" else hx
    torch.set_num_threads(threads)
    results = []
    for module in (reference, fast):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        output, final = module(packed, state)
        padded, _ = torch.nn.utils.rnn.pad_packed_sequence(output)
        finals = list(final) if isinstance(final, tuple) else [final]
        loss = (padded * torch.linspace(-1, 1, padded.shape[-1], dtype=torch.float64)).sum() + sum(
            (f * f).sum() for f in finals
        )
        grads = torch.autograd.grad(loss, list(module.parameters()))
        results.append([padded, *finals, *grads])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


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
