"""rnnfast.scan's linear recurrences against the one-step-at-a-time reference: values and gradients, on the
plain path and the chunked parallel path, gradcheck, opcheck and the argument checks."""

import pytest
import torch

import rnnfast.scan as scan
from reference import reference_linear_recurrence

ops = torch.ops.rnnfast

KINDS = {"diagonal": (scan.linear_recurrence, False), "dense": (scan.dense_linear_recurrence, True)}
# None: the kernel's own choice; 1: one chunk; 3 and 7: the chunked scan's three passes (7 > T for short T).
TIME_CHUNKS = [None, "1", "3", "7"]


def make_inputs(dense, T=13, B=2, H=3, dtype=torch.float64, requires_grad=False):
    # |coefficients| < 1 keeps long recurrences bounded, as in a stable RNN.
    coef = torch.rand(T, B, H, H, dtype=dtype) * 0.9 / H if dense else torch.rand(T, B, H, dtype=dtype) * 1.8 - 0.9
    tensors = (coef, torch.randn(T, B, H, dtype=dtype), torch.randn(B, H, dtype=dtype))
    return tuple(t.requires_grad_(requires_grad) for t in tensors)


@pytest.fixture(params=TIME_CHUNKS, ids=lambda n: f"chunks={n or 'auto'}")
def time_chunks(request, monkeypatch):
    if request.param is None:
        monkeypatch.delenv("RNNFAST_SCAN_TIME_CHUNKS", raising=False)
    else:
        monkeypatch.setenv("RNNFAST_SCAN_TIME_CHUNKS", request.param)
    return request.param


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("T,B,H", [(13, 2, 3), (1, 1, 1), (200, 3, 5)])
def test_scan_matches_sequential_reference(kind, dtype, tol, T, B, H, time_chunks):
    fn, dense = KINDS[kind]
    coef, b, h0 = make_inputs(dense, T, B, H, dtype)
    expected = reference_linear_recurrence(coef.double(), b.double(), h0.double())
    torch.testing.assert_close(fn(coef, b, h0).double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_h0_means_zeros(kind):
    fn, dense = KINDS[kind]
    coef, b, h0 = make_inputs(dense)
    torch.testing.assert_close(fn(coef, b), fn(coef, b, torch.zeros_like(h0)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_reference_autograd(kind, time_chunks):
    fn, dense = KINDS[kind]
    inputs = make_inputs(dense, T=70, requires_grad=True)
    grad_h = torch.randn(70, 2, 3, dtype=torch.float64)
    ours = torch.autograd.grad(fn(*inputs), inputs, grad_h)
    expected = torch.autograd.grad(reference_linear_recurrence(*inputs), inputs, grad_h)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_scan_passes_gradcheck(kind, time_chunks):
    fn, dense = KINDS[kind]
    torch.autograd.gradcheck(fn, make_inputs(dense, T=9, B=2, H=2, requires_grad=True), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_op_passes_opcheck(kind):
    _, dense = KINDS[kind]
    op = ops.dense_linear_recurrence if dense else ops.linear_recurrence
    torch.library.opcheck(op.default, make_inputs(dense, requires_grad=True))


@pytest.mark.parametrize("kind", KINDS)
def test_backward_op_passes_opcheck(kind):
    fn, dense = KINDS[kind]
    op = ops.dense_linear_recurrence_backward if dense else ops.linear_recurrence_backward
    coef, b, h0 = make_inputs(dense)
    torch.library.opcheck(op.default, (torch.randn_like(b), coef, fn(coef, b, h0), h0))


@pytest.mark.parametrize("kind", KINDS)
def test_zero_steps_give_empty_output_and_zero_gradients(kind):
    fn, dense = KINDS[kind]
    coef, b, h0 = make_inputs(dense, T=0, requires_grad=True)
    h = fn(coef, b, h0)
    assert h.shape == (0, 2, 3)
    (grad_h0,) = torch.autograd.grad(h.sum(), [h0], allow_unused=True)
    assert grad_h0 is None or not grad_h0.any()


def test_scan_is_not_twice_differentiable():
    coef, b, h0 = make_inputs(False, requires_grad=True)
    (grad_b,) = torch.autograd.grad(scan.linear_recurrence(coef, b, h0).sum(), [b], create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        grad_b.sum().backward()


BAD_ARGS = {
    "2-D b": (lambda c, b, h: (c, b[0], h), "expected b of shape \\(T, B, H\\)"),
    "coefficient shape": (lambda c, b, h: (c[:, :1], b, h), "of shape"),
    "h0 shape": (lambda c, b, h: (c, b, h[:1]), "expected h0 of shape"),
    "h0 dtype": (lambda c, b, h: (c, b, h.float()), "expected h0 of dtype"),
    "coefficient dtype": (lambda c, b, h: (c.float(), b, h), "of dtype"),
    "integer b": (lambda c, b, h: (c.long(), b.long(), h.long()), "floating-point b"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make_bad,message", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments_raise_a_clear_error(kind, make_bad, message):
    fn, dense = KINDS[kind]
    with pytest.raises((RuntimeError, ValueError), match=message):
        fn(*make_bad(*make_inputs(dense)))


@pytest.mark.parametrize("kind", KINDS)
def test_backward_op_rejects_mismatched_gradient_and_states(kind):
    fn, dense = KINDS[kind]
    op = ops.dense_linear_recurrence_backward if dense else ops.linear_recurrence_backward
    coef, b, h0 = make_inputs(dense)
    h, grad_h = fn(coef, b, h0), torch.randn_like(b)
    with pytest.raises(RuntimeError, match="expected h of shape"):
        op(grad_h, coef, h[:1], h0)
    with pytest.raises(RuntimeError, match="expected h of dtype"):
        op(grad_h, coef, h.float(), h0)
    with pytest.raises(RuntimeError, match="expected grad_h of shape \\(T, B, H\\)"):
        op(grad_h[0], coef, h, h0)


def test_bad_time_chunk_setting_is_rejected(monkeypatch):
    monkeypatch.setenv("RNNFAST_SCAN_TIME_CHUNKS", "zero")
    with pytest.raises(RuntimeError, match="RNNFAST_SCAN_TIME_CHUNKS must be a positive integer"):
        scan.linear_recurrence(*make_inputs(False))
