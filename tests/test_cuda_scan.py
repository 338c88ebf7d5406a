"""The CUDA scans (csrc/cuda/scan.cu) and what is built on them, against the sequential references and the CPU
kernels. Every test here is marked cuda and skips where no GPU is visible."""

import pytest
import torch

import rnnfast
import rnnfast.scan as scan
from reference import reference_linear_recurrence, reference_min_gru

pytestmark = pytest.mark.cuda
ops = torch.ops.rnnfast
KINDS = {"diagonal": (scan.linear_recurrence, False), "dense": (scan.dense_linear_recurrence, True)}
SCAN_OPS = ["linear_recurrence", "linear_recurrence_backward", "dense_linear_recurrence",
            "dense_linear_recurrence_backward"]  # fmt: skip


def make_inputs(dense, T, B, H, dtype=torch.float64, requires_grad=False):
    coef = torch.rand(T, B, H, H, dtype=dtype) * 0.9 / H if dense else torch.rand(T, B, H, dtype=dtype) * 1.8 - 0.9
    tensors = (coef, torch.randn(T, B, H, dtype=dtype), torch.randn(B, H, dtype=dtype))
    return tuple(t.cuda().requires_grad_(requires_grad) for t in tensors)


def test_scan_kernels_are_registered_for_cuda():
    for op in SCAN_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnfast::{op}", "CUDA"), op


# T from one step to many time chunks (diagonal: up to 32 chunks of 16 steps or more; dense: chunks of 32 steps
# or more for H <= 32, H = 32 the largest chunked map, H = 33 the plain loop); B*H not a multiple of the 32
# channels of a diagonal block.
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T,B,H", [(1, 1, 1), (15, 3, 5), (17, 2, 33), (100, 2, 32), (512, 2, 7), (5000, 1, 3)])
def test_float64_values_and_gradients_match_reference(kind, T, B, H):
    fn, dense = KINDS[kind]
    inputs = make_inputs(dense, T, B, H, requires_grad=True)
    grad_h = torch.randn(T, B, H, dtype=torch.float64, device="cuda")
    h = fn(*inputs)
    expected = reference_linear_recurrence(*inputs) if T <= 512 else fn(*(t.cpu() for t in inputs)).cuda()
    torch.testing.assert_close(h, expected, rtol=1e-10, atol=1e-10)
    got = torch.autograd.grad(h, inputs, grad_h)
    want_inputs = [t.detach().cpu().requires_grad_() for t in inputs]
    want = torch.autograd.grad(fn(*want_inputs), want_inputs, grad_h.cpu())
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_low_precision_accumulates_in_float32(kind, dtype, tol):
    # Inputs rounded to dtype, then the float64 reference on those very values: what remains is the kernel's
    # own arithmetic, float32 accumulation and one rounding of each stored state.
    fn, dense = KINDS[kind]
    inputs = tuple(t.to(dtype) for t in make_inputs(dense, 300, 2, 8))
    h = fn(*inputs)
    assert h.dtype == dtype
    expected = reference_linear_recurrence(*(t.double() for t in inputs))
    torch.testing.assert_close(h.double(), expected, rtol=tol, atol=tol * expected.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
def test_scan_passes_gradcheck_and_opcheck_on_cuda(kind):
    fn, dense = KINDS[kind]
    inputs = make_inputs(dense, 70, 2, 3, requires_grad=True)
    torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)
    op = ops.dense_linear_recurrence if dense else ops.linear_recurrence
    torch.library.opcheck(op.default, inputs)


@pytest.mark.parametrize("method", rnnfast.parallel.METHODS)
def test_parallel_rnn_on_cuda_matches_the_sequential_cuda_kernel(method):
    kwargs = dict(input_size=3, hidden_size=6, num_layers=2, bidirectional=True)
    seq = rnnfast.RNN(**kwargs).double().cuda()
    par = rnnfast.RNN(**kwargs, mode="parallel").double().cuda()
    par.load_state_dict(seq.state_dict())
    par.newton_options = rnnfast.parallel.NewtonOptions(method=method)
    x = torch.randn(200, 4, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    out_seq, h_seq = seq(x)
    out_par, h_par = par(x)
    torch.testing.assert_close(out_par, out_seq, rtol=0, atol=1e-8)
    torch.testing.assert_close(h_par, h_seq, rtol=0, atol=1e-8)
    assert all(r.converged for r in par.last_newton_reports)
    w = torch.randn_like(out_seq)
    params = [x, *seq.parameters()]
    want = torch.autograd.grad((out_seq * w).sum(), params)
    got = torch.autograd.grad((out_par * w).sum(), [x, *par.parameters()])
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-8)


def test_min_gru_on_cuda_matches_reference():
    module = rnnfast.MinGRU(4, 40).double().cuda()
    x = torch.randn(100, 3, 4, dtype=torch.float64, device="cuda")
    hx = torch.randn(1, 3, 40, dtype=torch.float64, device="cuda")
    output, _ = module(x, hx)
    p = module.input_projection
    torch.testing.assert_close(output, reference_min_gru(x, hx[0], p.weight, p.bias), rtol=1e-10, atol=1e-10)
