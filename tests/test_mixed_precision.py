"""Low precision: under torch.autocast (bfloat16, float16; on the CPU, and on CUDA where a GPU is visible) and as
16-bit modules, rnnfast returns torch.nn's dtypes, and its error against a float64 reference is bounded by a small
multiple of torch.nn's own error in the same precision (the flash-attention test convention)."""

import pytest
import torch

import rnnfast
from rnn_pairs import outputs_and_grads

LOW_PRECISION = [torch.bfloat16, torch.float16]
# How much larger than torch.nn's own low-precision error rnnfast's may be. rnnfast keeps the hidden state in
# float32 between steps, so in practice its error is the smaller one; the slack covers unlucky roundings.
ERROR_FACTOR = 2.0


def twins(module_class, device="cpu", **kwargs):
    torch.manual_seed(0)
    reference = getattr(torch.nn, module_class)(**kwargs).to(device)
    fast = getattr(rnnfast, module_class)(**kwargs).to(device)
    fast.load_state_dict(reference.state_dict())
    exact = getattr(torch.nn, module_class)(**kwargs).to(device, torch.float64)
    exact.load_state_dict(reference.state_dict())
    return reference, fast, exact


def assert_error_bounded_by_torch_nn(got, expected, exact, name):
    assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype}, torch.nn gives {expected.dtype}"
    fast_error = (got.double() - exact).abs().max().item()
    reference_error = (expected.double() - exact).abs().max().item()
    # An absolute floor of one float32 ulp at 1 covers tensors that torch.nn happens to get exactly right.
    assert fast_error <= ERROR_FACTOR * reference_error + 1e-6, (
        f"{name}: rnnfast's error {fast_error:.3g} exceeds {ERROR_FACTOR} x torch.nn's {reference_error:.3g}"
    )


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=["bf16", "f16"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_under_autocast_matches_torch_nn_to_its_own_precision(dtype, nonlinearity, device):
    reference, fast, exact = twins("RNN", device, input_size=8, hidden_size=16, num_layers=2, bidirectional=True,
                                   nonlinearity=nonlinearity)  # fmt: skip
    x, hx = torch.randn(40, 4, 8, device=device), torch.randn(4, 4, 16, device=device)
    with torch.autocast(device, dtype=dtype):
        expected = outputs_and_grads(reference, x, hx)
        got = outputs_and_grads(fast, x, hx)
    exact_results = outputs_and_grads(exact, x.double(), hx.double())
    names = ["output", "h_n", "grad input", "grad hx"] + ["grad " + n for n, _ in reference.named_parameters()]
    for name, g, e, ex in zip(names, got, expected, exact_results, strict=True):
        assert_error_bounded_by_torch_nn(g, e, ex, name)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=["bf16", "f16"])
def test_rnn_cell_under_cpu_autocast_matches_torch_nn_to_its_own_precision(dtype):
    reference, fast, exact = twins("RNNCell", input_size=8, hidden_size=16)
    x, hx = torch.randn(4, 8), torch.randn(4, 16)
    with torch.autocast("cpu", dtype=dtype):
        expected, got = reference(x, hx), fast(x, hx)
    assert_error_bounded_by_torch_nn(got, expected, exact(x.double(), hx.double()), "h'")


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=["bf16", "f16"])
def test_16bit_module_matches_torch_nn_to_its_own_precision(dtype):
    reference, fast, exact = twins("RNN", input_size=8, hidden_size=16, bidirectional=True)
    x, hx = torch.randn(30, 3, 8), torch.randn(2, 3, 16)
    expected = outputs_and_grads(reference.to(dtype), x.to(dtype), hx.to(dtype))
    got = outputs_and_grads(fast.to(dtype), x.to(dtype), hx.to(dtype))
    # The float64 reference starts from the same rounded weights and inputs.
    exact.load_state_dict(reference.state_dict())
    exact_results = outputs_and_grads(exact.double(), x.to(dtype).double(), hx.to(dtype).double())
    names = ["output", "h_n", "grad input", "grad hx"] + ["grad " + n for n, _ in reference.named_parameters()]
    for name, g, e, ex in zip(names, got, expected, exact_results, strict=True):
        assert_error_bounded_by_torch_nn(g, e, ex, name)


def test_float64_stays_float64_under_autocast_as_in_torch_nn():
    _, fast, exact = twins("RNN", input_size=3, hidden_size=4)
    fast = fast.double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _ = fast(x)
    assert output.dtype == torch.float64
    torch.testing.assert_close(output, exact(x)[0], rtol=1e-10, atol=1e-10)


def test_mismatched_16bit_dtypes_are_reported_not_widened():
    w = lambda *s: torch.randn(*s, dtype=torch.bfloat16)  # noqa: E731
    with pytest.raises(RuntimeError, match="expected hx of dtype BFloat16"):
        torch.ops.rnnfast.elman_layer_forward(w(3, 2, 4), torch.randn(1, 2, 5), w(1, 5, 4), w(1, 5, 5), None, None,
                                              False)  # fmt: skip
