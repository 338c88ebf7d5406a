"""Low precision: under torch.autocast (bfloat16, float16; on the CPU, and on CUDA where a GPU is visible) and as
16-bit modules, rnnfast returns torch.nn's dtypes, and its error against a float64 reference is bounded by a small
multiple of torch.nn's own error in the same precision (the flash-attention test convention)."""

import pytest
import torch

import rnnfast
from rnn_pairs import named_outputs_and_grads

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


def in_float64(state):
    """A state (a tensor, or an LSTM's (h, c)) in float64, for the exact reference."""
    return tuple(t.double() for t in state) if isinstance(state, tuple) else state.double()


def assert_error_bounded_by_torch_nn(got, expected, exact, name, check_dtype=True):
    if check_dtype:
        assert got.dtype == expected.dtype, f"{name}: dtype {got.dtype}, torch.nn gives {expected.dtype}"
    fast_error = (got.double() - exact).abs().max().item()
    reference_error = (expected.double() - exact).abs().max().item()
    # An absolute floor of one float32 ulp at 1 covers tensors that torch.nn happens to get exactly right.
    assert fast_error <= ERROR_FACTOR * reference_error + 1e-6, (
        f"{name}: rnnfast's error {fast_error:.3g} exceeds {ERROR_FACTOR} x torch.nn's {reference_error:.3g}"
    )


LAYERS = {
    "RNN-tanh": ("RNN", dict(nonlinearity="tanh")),
    "RNN-relu": ("RNN", dict(nonlinearity="relu")),
    "LSTM": ("LSTM", {}),
    "LSTM-proj": ("LSTM", dict(proj_size=8)),
    "GRU": ("GRU", {}),
}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=["bf16", "f16"])
@pytest.mark.parametrize("layer", LAYERS.values(), ids=LAYERS.keys())
def test_layer_under_autocast_matches_torch_nn_to_its_own_precision(layer, dtype, device):
    # Whatever dtype torch.nn computes in under autocast (on the CPU its GRU stays in float32), rnnfast returns
    # the same, within the error bound.
    module_class, options = layer
    if (module_class, dtype, device) == ("LSTM", torch.float16, "cpu") and not options:
        pytest.skip("torch.nn.LSTM itself fails here (oneDNN has no float16 LSTM on this CPU)")
    reference, fast, exact = twins(module_class, device, input_size=8, hidden_size=16, num_layers=2,
                                   bidirectional=True, **options)  # fmt: skip
    x = torch.randn(40, 4, 8, device=device)
    h_size = options.get("proj_size", 16)
    hx = torch.randn(4, 4, h_size, device=device)
    if module_class == "LSTM":
        hx = (hx, torch.randn(4, 4, 16, device=device))
    with torch.autocast(device, dtype=dtype):
        expected = named_outputs_and_grads(reference, x, hx)
        got = named_outputs_and_grads(fast, x, hx)
    exact_results = named_outputs_and_grads(exact, x.double(), in_float64(hx))
    # torch.nn's projected LSTM on the CPU runs its composite path, whose c_n comes out in float32 (a product of
    # the float32 c_0 with lower-precision gates); rnnfast's c_n is in the autocast dtype (docs/dropin.md).
    mixed_c_n = module_class == "LSTM" and "proj_size" in options and device == "cpu"
    for (name, g), (_, e), (_, ex) in zip(got, expected, exact_results, strict=True):
        assert_error_bounded_by_torch_nn(g, e, ex, name, check_dtype=not (mixed_c_n and name == "c_n"))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=["bf16", "f16"])
def test_rnn_cell_under_cpu_autocast_matches_torch_nn_to_its_own_precision(dtype):
    reference, fast, exact = twins("RNNCell", input_size=8, hidden_size=16)
    x, hx = torch.randn(4, 8), torch.randn(4, 16)
    with torch.autocast("cpu", dtype=dtype):
        expected, got = reference(x, hx), fast(x, hx)
    assert_error_bounded_by_torch_nn(got, expected, exact(x.double(), hx.double()), "h'")


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=["bf16", "f16"])
@pytest.mark.parametrize("module_class", ["RNN", "LSTM", "GRU"])
def test_16bit_module_matches_torch_nn_to_its_own_precision(module_class, dtype):
    reference, fast, exact = twins(module_class, input_size=8, hidden_size=16, bidirectional=True)
    x = torch.randn(30, 3, 8).to(dtype)
    hx = torch.randn(2, 3, 16).to(dtype)
    if module_class == "LSTM":
        hx = (hx, torch.randn(2, 3, 16).to(dtype))
    try:
        expected = named_outputs_and_grads(reference.to(dtype), x, hx)
    except RuntimeError as error:  # torch.nn's own kernels lack some 16-bit CPU paths (oneDNN's LSTM in float16)
        pytest.skip(f"torch.nn.{module_class} itself fails in {dtype}: {str(error).splitlines()[0]}")
    got = named_outputs_and_grads(fast.to(dtype), x, hx)
    # The float64 reference starts from the same rounded weights and inputs.
    exact.load_state_dict(reference.state_dict())
    exact_results = named_outputs_and_grads(exact.double(), x.double(), in_float64(hx))
    for (name, g), (_, e), (_, ex) in zip(got, expected, exact_results, strict=True):
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
