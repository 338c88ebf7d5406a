"""Parallel-in-time evaluation of one Elman layer direction by Newton's method (DEER, Lim et al. 2024).

The hidden states h = (h_0 .. h_{T-1}) solve the fixed-point system h_t = f_t(h_{t-1}) = act(u_t + W_hh h_{t-1}),
u_t = W_ih x_t + b. Linearising around the current guess h^k gives the Newton step, a linear recurrence:

    h^{k+1}_t = J_t h^{k+1}_{t-1} + (f_t(h^k_{t-1}) - J_t h^k_{t-1}),     J_t = diag(act'(z_t)) W_hh,

solved for all t at once by a parallel scan (rnnfast.scan). "dense" uses the exact Jacobian (a matrix scan,
O(H^3) per step and row); "diagonal" keeps only diag(W_hh) (quasi-Newton, an elementwise scan). Either way the
first k steps are exact after k iterations, so T iterations always suffice in exact arithmetic; in practice a
contracting RNN takes a handful. When the cap is reached first, the sequential kernel computes the result.

The gradient uses the implicit function theorem at the converged h: it is the adjoint recurrence
g_t = dL/dh_t + J_{t+1}^T g_{t+1} of backpropagation through time, solved by the dense scan's backward ("dense")
or by the sequential kernel's backward ("diagonal", whose scan cannot carry the dense adjoint).
"""

from dataclasses import dataclass
from typing import Optional

import torch

from ._ops import needs_differentiable_twin, ops
from .scan import dense_linear_recurrence, linear_recurrence

METHODS = ("dense", "diagonal")
# "auto" takes "dense" while its Jacobians, (T, B, H, H), stay within this many elements (256 MiB in float32),
# else "diagonal", whose memory is that of the states.
DENSE_MAX_JACOBIAN_ELEMENTS = 1 << 26
# Newton stops when max |h - f(h)| <= tol * max(1, max |f(h)|). float64's default leaves the result within 1e-8
# of the sequential kernel's.
DEFAULT_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
DEFAULT_MAX_ITERATIONS = 50


@dataclass(frozen=True)
class NewtonReport:
    """How one parallel evaluation went."""

    method: str
    iterations: int  # scans run
    converged: bool  # reached the tolerance within the cap
    residual: float  # the last relative fixed-point residual max |h - f(h)| / max(1, max |f(h)|)
    fell_back: bool  # the result came from the sequential kernel, the cap reached first


@dataclass
class NewtonOptions:
    """The options of elman_parallel: method "dense", "diagonal" or "auto" (dense while its Jacobians fit
    DENSE_MAX_JACOBIAN_ELEMENTS), tolerance and iteration cap (None: the defaults above, the cap never above T,
    which always suffices)."""

    method: str = "auto"
    tol: Optional[float] = None
    max_iterations: Optional[int] = None

    def __post_init__(self):
        if self.method not in METHODS + ("auto",):
            raise ValueError(f"rnnfast: expected a Newton method in {METHODS + ('auto',)}, got {self.method!r}")
        if self.tol is not None and not self.tol > 0:
            raise ValueError(f"rnnfast: expected a tolerance > 0, got {self.tol}")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ValueError(f"rnnfast: expected max_iterations >= 1, got {self.max_iterations}")


def _derivative_from_output(h, relu):
    """act'(z) from h = act(z): [h > 0] for relu, 1 - h^2 for tanh. (T, B, H)"""
    return (h > 0).to(h.dtype) if relu else 1 - h * h


def _previous_states(h, h0):
    """The state each step starts from: h0, h_0 .. h_{T-2}. (T, B, H)"""
    return torch.cat((h0.unsqueeze(0), h[:-1]))


def _recurrent_products(h_prev, weight_hh):
    """h_{t-1} W_hh^T for every step, one product. (T, B, H)"""
    T, B, H = h_prev.shape
    return torch.mm(h_prev.reshape(T * B, H), weight_hh.t()).view(T, B, H)


def resolve_method(method, seq_len, batch, hidden_size):
    """The Newton method that "auto" stands for at this shape; "dense" and "diagonal" stand for themselves."""
    if method != "auto":
        return method
    return "dense" if seq_len * batch * hidden_size**2 <= DENSE_MAX_JACOBIAN_ELEMENTS else "diagonal"


def _newton_solve(u, h0, weight_hh, relu, method, options):
    """Newton's iteration by `method` ("dense" or "diagonal") on the pre-computed input projections
    u (T, B, H). Returns h (T, B, H) and the report; h is None when the cap was reached first."""
    T = u.shape[0]
    tol = options.tol if options.tol is not None else DEFAULT_TOLERANCE[u.dtype]
    cap = min(options.max_iterations or DEFAULT_MAX_ITERATIONS, T)
    diagonal = weight_hh.diagonal() if method == "diagonal" else None  # (H,)
    h = torch.zeros_like(u)  # (T, B, H), the first guess
    iterations = 0
    while True:
        previous = _previous_states(h, h0)  # (T, B, H)
        recurrent = _recurrent_products(previous, weight_hh)  # (T, B, H)
        f = torch.relu(u + recurrent) if relu else torch.tanh(u + recurrent)  # (T, B, H)
        slope = _derivative_from_output(f, relu)  # (T, B, H)
        residual = ((f - h).abs().max() / f.abs().max().clamp(min=1)).item()
        if residual <= tol:
            return f, NewtonReport(method, iterations, True, residual, False)
        if iterations == cap:
            return None, NewtonReport(method, iterations, False, residual, True)
        # f_t - J_t h^k_{t-1}, with J_t h^k_{t-1} = act'(z_t) * (h^k_{t-1} W_hh^T) for the exact Jacobian.
        if diagonal is None:
            jacobians = slope.unsqueeze(3) * weight_hh  # (T, B, H, H)
            h = dense_linear_recurrence(jacobians, f - slope * recurrent, h0)
        else:
            coefficients = slope * diagonal  # (T, B, H)
            h = linear_recurrence(coefficients, f - coefficients * previous, h0)
        iterations += 1


class _ParallelElman(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, h0, weight_ih, weight_hh, bias, relu, options, reports):
        T, B, I = input.shape
        u = torch.mm(input.reshape(T * B, I), weight_ih.t()).view(T, B, -1)  # (T, B, H), one product
        if bias is not None:
            u = u + bias
        method = resolve_method(options.method, T, B, weight_hh.shape[0])
        h, report = _newton_solve(u, h0, weight_hh, relu, method, options)
        if h is None:
            h, _ = ops.elman_layer_forward(input, h0[None], weight_ih[None], weight_hh[None],
                                           None if bias is None else bias[None], None, relu)  # fmt: skip
        reports.append(report)
        ctx.save_for_backward(input, h0, weight_ih, weight_hh, h)
        ctx.relu, ctx.method, ctx.has_bias = relu, method, bias is not None
        return h, h[-1]

    @staticmethod
    def backward(ctx, grad_output, grad_h_n):
        input, h0, weight_ih, weight_hh, h = ctx.saved_tensors
        grad_h = grad_output.clone()  # (T, B, H), dL/dh_t from the output and from h_n = h_{T-1}
        grad_h[-1] += grad_h_n
        if ctx.method == "diagonal":
            grads = ops.elman_layer_backward(grad_h, torch.zeros_like(h0)[None], input, h0[None], weight_ih[None],
                                             weight_hh[None], h, None, ctx.relu)  # fmt: skip
            grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_bias = grads
            return (grad_input, grad_h0[0], grad_w_ih[0], grad_w_hh[0], grad_bias[0] if ctx.has_bias else None,
                    None, None, None)  # fmt: skip
        T, B, I = input.shape
        slope = _derivative_from_output(h, ctx.relu)  # (T, B, H)
        jacobians = slope.unsqueeze(3) * weight_hh  # (T, B, H, H)
        # The adjoint recurrence by the dense scan's backward: g = dL/dh_t in total, grad_h0 = J_0^T g_0.
        _, g, grad_h0 = ops.dense_linear_recurrence_backward(grad_h, jacobians, h, h0)
        grad_z = (slope * g).view(T * B, -1)  # (T*B, H)
        grad_input = torch.mm(grad_z, weight_ih).view(T, B, I)
        grad_w_ih = torch.mm(grad_z.t(), input.reshape(T * B, I))
        grad_w_hh = torch.mm(grad_z.t(), _previous_states(h, h0).reshape(T * B, -1))
        grad_bias = grad_z.sum(0) if ctx.has_bias else None
        return grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_bias, None, None, None


# Where parallel evaluation measured faster than the sequential kernel, per device type, as regions
# (max hidden size, min sequence length, max batch) in which "auto" picks it. CPU: nowhere. On the 2-core
# development machine the sequential kernel won at every shape measured, inference and training (B 1 and 16,
# H 2 to 64, T 64 to 4096; BENCHMARKS.md, "Parallel in time"): Newton's 3 to 4 dense iterations (5 to 19
# diagonal) each cost more than the whole sequential pass. CUDA, on an H200 (BENCHMARKS.md, "Parallel in time
# on CUDA", timed against the default persistent path): at T = 4096 dense Newton took 0.7x-0.8x the sequential
# time forward and 0.5x-0.7x forward+backward at B = 1, H <= 32 and at B = 16, H <= 8; at T <= 512, at B = 16,
# H = 32 and at H = 64 (its H*H Jacobians) the sequential loop won.
PARALLEL_WINS = {"cpu": (), "cuda": ((32, 4096, 1), (8, 4096, 16))}


def choose_mode(seq_len, batch, hidden_size, device):
    """"sequential" or "parallel" for mode="auto": parallel only inside a measured region where it won."""
    for max_hidden, min_seq_len, max_batch in PARALLEL_WINS.get(torch.device(device).type, ()):
        if hidden_size <= max_hidden and seq_len >= min_seq_len and batch <= max_batch:
            return "parallel"
    return "sequential"


def _check_args(input, h0, weight_ih, weight_hh, bias):
    if input.dim() != 3:
        raise ValueError(f"rnnfast: expected input of shape (T, B, I), got {input.dim()}-D input")
    T, B, I = input.shape
    H = weight_hh.shape[0] if weight_hh.dim() == 2 else -1
    expected = {"h0": (h0, (B, H)), "weight_ih": (weight_ih, (H, I)), "weight_hh": (weight_hh, (H, H))}
    if bias is not None:
        expected["bias"] = (bias, (H,))
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"rnnfast: expected {name} of shape {shape}, got {tuple(tensor.shape)}")
        if tensor.dtype != input.dtype or tensor.device != input.device:
            raise ValueError(f"rnnfast: expected {name} of dtype {input.dtype} on {input.device}, got "
                             f"{tensor.dtype} on {tensor.device}")  # fmt: skip
    if T == 0:
        raise ValueError("rnnfast: expected a sequence of at least one step, got T = 0")


def elman_parallel(input, h0, weight_ih, weight_hh, bias=None, *, nonlinearity="tanh", method="auto", tol=None,
                   max_iterations=None):  # fmt: skip
    """One Elman layer direction, all steps at once by Newton's method.

    input (T, B, I), h0 (B, H), weight_ih (H, I), weight_hh (H, H), bias = b_ih + b_hh (H,) or None.
    Returns output (T, B, H), h_n (B, H) and a NewtonReport. Differentiable in every tensor argument."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnnfast: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}")
    options = NewtonOptions(method, tol, max_iterations)
    _check_args(input, h0, weight_ih, weight_hh, bias)
    if needs_differentiable_twin((input, h0, weight_ih, weight_hh, bias)):
        # Newton's iteration count follows a residual read on the host, which vmap cannot batch, and its
        # derivative is a custom backward, which torch.func and forward-mode AD cannot call.
        raise NotImplementedError(
            "rnnfast.elman_parallel cannot run under torch.func transforms (grad, vjp, jacrev, jvp, jacfwd, "
            "hessian, vmap) or forward-mode AD (torch.autograd.forward_ad); rnnfast.RNN and "
            "rnnfast.functional.elman_rnn compute the same layer there, in any mode, by the sequential recurrence"
        )
    reports = []
    output, h_n = _ParallelElman.apply(input, h0, weight_ih, weight_hh, bias, nonlinearity == "relu", options,
                                       reports)  # fmt: skip
    return output, h_n, reports[0]
