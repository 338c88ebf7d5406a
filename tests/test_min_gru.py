"""rnnfast.MinGRU against its one-step-at-a-time reference: outputs, h_n, gradients, gradcheck, input checks."""

import pytest
import torch

import rnnfast
from reference import reference_min_gru


def reference_outputs(module, x, hx):
    p = module.input_projection
    return reference_min_gru(x, hx[0], p.weight, p.bias)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T", [1, 37])
def test_matches_sequential_reference_in_float64(bias, T):
    module = rnnfast.MinGRU(4, 6, bias=bias).double()
    x, hx = torch.randn(T, 3, 4, dtype=torch.float64), torch.randn(1, 3, 6, dtype=torch.float64)
    output, h_n = module(x, hx)
    expected = reference_outputs(module, x, hx)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, expected[-1:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, output[-1:], rtol=0, atol=0)


def test_float32_matches_float64_reference():
    module = rnnfast.MinGRU(4, 6)
    x = torch.randn(50, 3, 4)
    output, _ = module(x)
    expected = reference_outputs(module.double(), x.double(), torch.zeros(1, 3, 6, dtype=torch.float64))
    torch.testing.assert_close(output.double(), expected, rtol=1e-5, atol=1e-5)


def test_batch_first_is_the_transpose():
    module = rnnfast.MinGRU(4, 6).double()
    batch_first = rnnfast.MinGRU(4, 6, batch_first=True).double()
    batch_first.load_state_dict(module.state_dict())
    x = torch.randn(9, 2, 4, dtype=torch.float64)
    output, h_n = module(x)
    output_bf, h_n_bf = batch_first(x.transpose(0, 1))
    torch.testing.assert_close(output_bf, output.transpose(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(h_n_bf, h_n, rtol=0, atol=0)


def test_gradients_match_reference_autograd():
    module = rnnfast.MinGRU(3, 5).double()
    x = torch.randn(30, 2, 3, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(1, 2, 5, dtype=torch.float64, requires_grad=True)
    leaves = [x, hx, *module.parameters()]
    w = torch.randn(30, 2, 5, dtype=torch.float64)
    got = torch.autograd.grad((module(x, hx)[0] * w).sum(), leaves)
    want = torch.autograd.grad((reference_outputs(module, x, hx) * w).sum(), leaves)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_passes_gradcheck():
    module = rnnfast.MinGRU(2, 3).double()
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, hx: module(x, hx), (x, hx), eps=1e-6, atol=1e-7)


BAD_INPUTS = {
    "2-D input": (lambda: (torch.randn(5, 4), None), "expected a 3-D input"),
    "input size": (lambda: (torch.randn(5, 2, 3), None), "expected input_size 4"),
    "hx shape": (lambda: (torch.randn(5, 2, 4), torch.randn(2, 6)), "expected hx of shape \\(1, 2, 6\\)"),
}


@pytest.mark.parametrize("make,message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        rnnfast.MinGRU(4, 6)(*make())


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="expected input_size and hidden_size > 0"):
        rnnfast.MinGRU(0, 6)
