"""Parallel-in-time evaluation of the Elman RNN by Newton's method (rnnfast.parallel and RNN(mode=...)):
results and gradients against the plain-Python reference and the sequential kernel, the convergence report,
the fallback, and the argument checks."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import rnnfast
from rnnfast import parallel
from reference import reference_elman_layer
from rnn_pairs import outputs_and_grads

ops = torch.ops.rnnfast
METHODS = list(parallel.METHODS)


def layer(T=40, B=3, I=4, H=5, dtype=torch.float64, scale=1.0, requires_grad=False):
    """input, h0, weight_ih, weight_hh, bias; weight_hh ~ U(-scale, scale)/sqrt(H) (1: torch's initialisation)."""
    bound = H**-0.5
    tensors = (torch.randn(T, B, I, dtype=dtype), torch.randn(B, H, dtype=dtype),
               (torch.rand(H, I, dtype=dtype) * 2 - 1) * bound, (torch.rand(H, H, dtype=dtype) * 2 - 1) * bound * scale,
               (torch.rand(H, dtype=dtype) * 2 - 1) * bound)  # fmt: skip
    return [t.requires_grad_(requires_grad) for t in tensors]


def sequential(x, h0, w_ih, w_hh, bias, relu=False):
    output, h_n = ops.elman_layer_forward(x, h0[None], w_ih[None], w_hh[None], bias[None], None, relu)
    return output, h_n[0]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_float64_default_tolerance_matches_reference_and_sequential_kernel_to_1e_8(method, nonlinearity):
    x, h0, w_ih, w_hh, bias = layer(T=60)
    output, h_n, report = parallel.elman_parallel(x, h0, w_ih, w_hh, bias, nonlinearity=nonlinearity,
                                                  method=method)  # fmt: skip
    assert report.converged and not report.fell_back and 1 <= report.iterations <= 60
    act = torch.relu if nonlinearity == "relu" else torch.tanh
    expected, expected_h_n = reference_elman_layer(x, h0, w_ih, w_hh, bias, torch.zeros_like(bias), act, False,
                                                   [60] * 3)  # fmt: skip
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-8)
    torch.testing.assert_close(h_n, expected_h_n, rtol=0, atol=1e-8)
    kernel_output, _ = sequential(x, h0, w_ih, w_hh, bias, nonlinearity == "relu")
    torch.testing.assert_close(output, kernel_output, rtol=0, atol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_float32_matches_sequential_kernel_to_float32_tolerance(method):
    args = layer(T=100, dtype=torch.float32)
    output, _, report = parallel.elman_parallel(*args, method=method)
    assert report.converged
    torch.testing.assert_close(output, sequential(*args)[0], rtol=1e-4, atol=1e-4)


def test_dense_newton_converges_within_T_iterations_even_far_from_contraction():
    # DEER's guarantee: after k iterations the first k steps are exact, so T iterations reach the solution,
    # however strongly the steps depend on each other (here |W_hh| ~ 4/sqrt(H), far from a contraction).
    x, h0, w_ih, w_hh, bias = layer(T=8, scale=4.0)
    output, _, report = parallel.elman_parallel(x, h0, w_ih, w_hh, bias, max_iterations=8)
    assert report.converged and not report.fell_back and report.iterations <= 8
    torch.testing.assert_close(output, sequential(x, h0, w_ih, w_hh, bias)[0], rtol=0, atol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_iteration_cap_falls_back_to_the_sequential_kernel(method):
    x, h0, w_ih, w_hh, bias = layer(T=30, scale=3.0, requires_grad=True)
    output, h_n, report = parallel.elman_parallel(x, h0, w_ih, w_hh, bias, method=method, max_iterations=1)
    assert report.iterations == 1 and not report.converged and report.fell_back
    assert report.residual > 1e-10
    expected, expected_h_n = sequential(x, h0, w_ih, w_hh, bias)
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    # Gradients of the fallback's result still come from the implicit-function backward, exact at the solution.
    got = torch.autograd.grad(output.sum() + h_n.sum(), [x, h0, w_ih, w_hh, bias])
    want = torch.autograd.grad(expected.sum() + expected_h_n.sum(), [x, h0, w_ih, w_hh, bias])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_implicit_gradients_match_sequential_kernel_gradients(method, nonlinearity):
    args = layer(T=50, requires_grad=True)
    relu = nonlinearity == "relu"
    output, h_n, _ = parallel.elman_parallel(*args, nonlinearity=nonlinearity, method=method)
    expected, expected_h_n = sequential(*args, relu)
    w_out, w_h = torch.randn_like(output), torch.randn_like(h_n)
    got = torch.autograd.grad((output * w_out).sum() + (h_n * w_h).sum(), args)
    want = torch.autograd.grad((expected * w_out).sum() + (expected_h_n * w_h).sum(), args)
    for name, g, w in zip(["input", "h0", "weight_ih", "weight_hh", "bias"], got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-8, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_parallel_elman_passes_gradcheck(method, with_bias):
    x, h0, w_ih, w_hh, bias = layer(T=6, B=2, I=2, H=3, requires_grad=True)
    fn = lambda *a: parallel.elman_parallel(*a, method=method)[:2]  # noqa: E731
    torch.autograd.gradcheck(fn, (x, h0, w_ih, w_hh, bias if with_bias else None), eps=1e-6, atol=1e-7)


GRID = list(itertools.product([1, 2], [False, True], [False, True], ["tanh", "relu"], [True, False]))


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,nonlinearity,bias", GRID)
def test_rnn_parallel_mode_matches_sequential_mode(num_layers, bidirectional, batch_first, nonlinearity, bias):
    kwargs = dict(input_size=3, hidden_size=4, num_layers=num_layers, bidirectional=bidirectional,
                  batch_first=batch_first, nonlinearity=nonlinearity, bias=bias)  # fmt: skip
    seq = rnnfast.RNN(**kwargs, mode="sequential").double()
    par = rnnfast.RNN(**kwargs, mode="parallel").double()
    par.load_state_dict(seq.state_dict())
    D = 2 if bidirectional else 1
    x = torch.randn(*((2, 17) if batch_first else (17, 2)), 3, dtype=torch.float64)
    hx = torch.randn(num_layers * D, 2, 4, dtype=torch.float64)
    for want, got in zip(outputs_and_grads(seq, x, hx), outputs_and_grads(par, x, hx), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    assert len(par.last_newton_reports) == num_layers * D
    assert all(r.converged for r in par.last_newton_reports)
    assert seq.last_newton_reports == []


def test_rnn_parallel_mode_uses_newton_options():
    par = rnnfast.RNN(3, 4, mode="parallel").double()
    par.newton_options = parallel.NewtonOptions(method="diagonal", max_iterations=2)
    par(torch.randn(20, 2, 3, dtype=torch.float64))
    (report,) = par.last_newton_reports
    assert report.method == "diagonal" and report.iterations <= 2


def test_rnn_parallel_mode_runs_packed_sequences_sequentially():
    seq = rnnfast.RNN(3, 4, mode="sequential").double()
    par = rnnfast.RNN(3, 4, mode="parallel").double()
    par.load_state_dict(seq.state_dict())
    packed = pack_sequence([torch.randn(n, 3, dtype=torch.float64) for n in (5, 3, 2)])
    for want, got in zip(outputs_and_grads(seq, packed, None), outputs_and_grads(par, packed, None), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert par.last_newton_reports == []


def test_auto_mode_on_cuda_is_parallel_only_for_long_sequences_of_few_small_rows():
    # The H200's regions (BENCHMARKS.md): T >= 4096 with B = 1, H <= 32 or B <= 16, H <= 8.
    assert parallel.choose_mode(4096, 1, 32, "cuda") == "parallel"
    assert parallel.choose_mode(8192, 16, 8, "cuda") == "parallel"
    assert parallel.choose_mode(512, 1, 32, "cuda") == "sequential"
    assert parallel.choose_mode(4096, 16, 32, "cuda") == "sequential"
    assert parallel.choose_mode(4096, 1, 64, "cuda") == "sequential"


def test_auto_mode_is_sequential_where_parallel_never_won(monkeypatch):
    assert parallel.choose_mode(4096, 1, 2, "cpu") == "sequential"
    auto = rnnfast.RNN(3, 4, mode="auto").double()
    auto(torch.randn(9, 2, 3, dtype=torch.float64))
    assert auto.last_newton_reports == []
    # Inside a measured region (patched in here), auto runs the parallel evaluation.
    monkeypatch.setitem(parallel.PARALLEL_WINS, "cpu", ((4, 8, 2),))
    assert parallel.choose_mode(9, 2, 4, "cpu") == "parallel"
    assert parallel.choose_mode(9, 3, 4, "cpu") == "sequential"
    auto(torch.randn(9, 2, 3, dtype=torch.float64))
    assert len(auto.last_newton_reports) == 1


def test_auto_method_is_dense_while_its_jacobians_fit_else_diagonal(monkeypatch):
    args = layer(T=20, B=2, H=5)
    assert parallel.elman_parallel(*args)[2].method == "dense"
    monkeypatch.setattr(parallel, "DENSE_MAX_JACOBIAN_ELEMENTS", 20 * 2 * 5 * 5 - 1)
    output, _, report = parallel.elman_parallel(*args)
    assert report.method == "diagonal" and report.converged
    torch.testing.assert_close(output, sequential(*args)[0], rtol=0, atol=1e-8)


def test_repr_names_a_mode_other_than_sequential():
    assert "mode" not in repr(rnnfast.RNN(3, 4))
    assert repr(rnnfast.RNN(3, 4, mode="parallel")) == "RNN(3, 4, mode='parallel')"


def test_bad_mode_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="expected mode in .*'sequential', 'parallel', 'auto'.*got 'fast'"):
        rnnfast.RNN(3, 4, mode="fast")


BAD_OPTIONS = {
    "method": (dict(method="exact"), "expected a Newton method"),
    "tolerance": (dict(tol=0.0), "expected a tolerance > 0"),
    "cap": (dict(max_iterations=0), "expected max_iterations >= 1"),
    "nonlinearity": (dict(nonlinearity="gelu"), "expected nonlinearity 'tanh' or 'relu'"),
}


@pytest.mark.parametrize("options,message", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        parallel.elman_parallel(*layer(), **options)


BAD_ARGS = {
    "2-D input": (lambda a: [a[0][0]] + a[1:], "expected input of shape \\(T, B, I\\)"),
    "h0 shape": (lambda a: [a[0], a[1][:1]] + a[2:], "expected h0 of shape \\(3, 5\\), got \\(1, 5\\)"),
    "weight_ih shape": (lambda a: a[:2] + [a[2][:, :2]] + a[3:], "expected weight_ih of shape \\(5, 4\\)"),
    "bias shape": (lambda a: a[:4] + [a[4][:2]], "expected bias of shape \\(5,\\)"),
    "dtype": (lambda a: [a[0], a[1].float()] + a[2:], "expected h0 of dtype torch.float64"),
    "no steps": (lambda a: [a[0][:0]] + a[1:], "at least one step"),
}


@pytest.mark.parametrize("make_bad,message", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments_raise_a_clear_error(make_bad, message):
    with pytest.raises(ValueError, match=message):
        parallel.elman_parallel(*make_bad(layer()))


def _under_forward_ad(call, args):
    with torch.autograd.forward_ad.dual_level():
        return call(torch.autograd.forward_ad.make_dual(args[0], torch.ones_like(args[0])), *args[1:])


TRANSFORMS = {
    "grad": lambda call, args: torch.func.grad(lambda x: call(x, *args[1:])[0].sum())(args[0]),
    "jacrev": lambda call, args: torch.func.jacrev(lambda x: call(x, *args[1:])[0])(args[0]),
    "jvp": lambda call, args: torch.func.jvp(lambda x: call(x, *args[1:])[0], (args[0],), (args[0],)),
    "vmap": lambda call, args: torch.func.vmap(lambda x: call(x, *args[1:])[0])(args[0][None]),
    "forward_ad": _under_forward_ad,
}


@pytest.mark.parametrize("transform", TRANSFORMS.values(), ids=TRANSFORMS.keys())
def test_elman_parallel_under_torch_func_or_forward_ad_raises_a_clear_error_and_keeps_working(transform):
    """Newton's method cannot run there (a host-read residual, a custom backward): the error says so and where the
    same layer runs, where torch's own would blame a missing autograd.Function method; the next plain call works."""
    args = layer()
    with pytest.raises(NotImplementedError, match="rnnfast.elman_parallel cannot run under torch.func transforms"):
        transform(parallel.elman_parallel, args)
    output, h_n, report = parallel.elman_parallel(*args)
    x, h0, w_ih, w_hh, bias = args
    expected, expected_h_n = reference_elman_layer(x, h0, w_ih, w_hh, bias, torch.zeros_like(bias), torch.tanh,
                                                   False, [x.shape[0]] * x.shape[1])  # fmt: skip
    assert report.converged
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-8)
    torch.testing.assert_close(h_n, expected_h_n, rtol=0, atol=1e-8)
