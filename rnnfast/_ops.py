"""Loads the compiled kernels and tells PyTorch how to trace (fake kernels) and differentiate (autograd) them."""

import torch
from torch.autograd import forward_ad

from . import _C  # noqa: F401  (loading it registers torch.ops.rnnfast.*)
from ._differentiable_twins import elman_layer_differentiable, gru_layer_differentiable, lstm_layer_differentiable

ops = torch.ops.rnnfast


def needs_differentiable_twin(tensors):
    """Whether a call of a fused layer op or scan on `tensors` must run its differentiable ATen twin
    (rnnfast/_differentiable_twins.py) instead: inside a torch.func transform (grad, vjp, jacrev, jvp, jacfwd,
    hessian, vmap), or in forward-mode AD (torch.autograd.forward_ad) with a tangent on any of them. The fused ops'
    autograd, registered with torch.library.register_autograd, is an autograd.Function that torch.func refuses (it
    has no separate setup_context) and that has no forward-mode derivative: the op raises there (with nothing
    requiring grad, csrc/forward_ad_guard.cpp refuses the tangents that autograd would drop). Under torch.compile
    only the transforms count: a compiled transform traces through the twins, and anything else keeps the ops,
    whose registrations the compiler traces itself. The transforms are counted by the depth of functorch's layer
    stack, which Dynamo reads as a guarded constant; it wraps peek_interpreter_stack's answer in an object that is
    never None, which sent every compiled call to the twins. Cost outside transforms: one C call."""
    if torch._C._functorch.get_dynamic_layer_stack_depth() > 0:
        return True
    if torch.compiler.is_compiling():
        return False
    return forward_ad._current_level >= 0 and any(
        isinstance(t, torch.Tensor) and forward_ad.unpack_dual(t).tangent is not None for t in tensors
    )


def _lstm_layer_twin(input, hx, cx, weight_ih, weight_hh, bias, weight_hr, batch_sizes, save_workspace=True):
    output, h_n, c_n = lstm_layer_differentiable(input, hx, cx, weight_ih, weight_hh, bias, weight_hr, batch_sizes)
    return output, h_n, c_n, input.new_empty(0)  # no workspace: autograd differentiates the ATen ops themselves


def _gru_layer_twin(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes, save_workspace=True):
    output, h_n = gru_layer_differentiable(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes)
    return output, h_n, input.new_empty(0)


# Each fused layer op's differentiable twin, called with the op's arguments and returning its outputs.
_LAYER_TWINS = {
    "elman_layer_forward": elman_layer_differentiable,
    "lstm_layer_forward": _lstm_layer_twin,
    "gru_layer_forward": _gru_layer_twin,
}


def call_layer(name, *args):
    """The fused layer op torch.ops.rnnfast.<name> (elman_layer_forward, lstm_layer_forward or gru_layer_forward)
    on args, or, where needs_differentiable_twin says the op cannot serve, its differentiable twin."""
    if needs_differentiable_twin(args):
        return _LAYER_TWINS[name](*args)
    return call_op(getattr(ops, name), *args)


def call_op(op, *args):
    """op(*args), skipping the op's Python autograd wrapper (about 13 us a call) when nothing needs a gradient,
    as in inference: the wrapper would only find that out and call the kernel. Under torch.compile the op is
    always called whole, for the tracer to see its autograd, and so under torch.jit.trace, whose check reruns the
    module without gradients and refuses a graph that took the other call."""
    if (
        torch.compiler.is_compiling()
        or (torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args))
        or torch.jit.is_tracing()
    ):
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op.default(*args)


def call_stack(name, tensors, *args):
    """The layer-stack op torch.ops.rnnfast.<name> (elman_rnn, lstm or gru) on args, through its direct binding
    in rnnfast._C (csrc/python_entry.cpp: the same op called through the dispatcher, about 4 us a call less than
    torch.ops' Python entry, which at the article's scale is a fifth of a module call). torch.ops is kept where
    the call must stay visible to Python: under torch.compile, which traces torch.ops calls, and when any of
    `tensors` (the call's tensor arguments) or an active TorchFunctionMode overrides __torch_function__."""
    if torch.compiler.is_compiling() or torch._C._has_torch_function(tensors):
        return getattr(ops, name)(*args)
    return getattr(_C, name)(*args)


@torch.library.register_fake("rnnfast::elman_layer_forward")
def _elman_layer_forward_fake(input, hx, weight_ih, weight_hh, bias, batch_sizes, relu):
    T, B, _ = input.shape
    D, H = weight_ih.shape[0], weight_ih.shape[1]
    return input.new_empty(T, B, D * H), input.new_empty(D, B, H)


@torch.library.register_fake("rnnfast::elman_layer_backward")
def _elman_layer_backward_fake(grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, batch_sizes, relu):
    D, H = weight_ih.shape[0], weight_ih.shape[1]
    return (
        torch.empty_like(input, memory_format=torch.contiguous_format),
        torch.empty_like(hx, memory_format=torch.contiguous_format),
        torch.empty_like(weight_ih, memory_format=torch.contiguous_format),
        torch.empty_like(weight_hh, memory_format=torch.contiguous_format),
        input.new_empty(D, H),
    )


@torch.library.register_fake("rnnfast::recurrence_floor")
def _recurrence_floor_fake(h0, weight_hh, steps):
    return h0.new_empty(steps, h0.shape[0], weight_hh.shape[0])


def _elman_setup_context(ctx, inputs, output):
    input, hx, weight_ih, weight_hh, bias, batch_sizes, relu = inputs
    # The outputs are the hidden states, all that the activation's derivative needs (tanh' = 1 - h^2).
    # The bias is kept only for gradients of gradients, which recompute the layer.
    ctx.save_for_backward(input, hx, weight_ih, weight_hh, bias, output[0])
    ctx.batch_sizes = batch_sizes
    ctx.relu = relu
    ctx.has_bias = bias is not None


def _elman_backward(ctx, grad_output, grad_h_n):
    input, hx, weight_ih, weight_hh, bias, output = ctx.saved_tensors
    if torch.is_grad_enabled():
        # create_graph=True: the gradients must themselves be differentiable.
        layer = lambda *tensors: elman_layer_differentiable(*tensors, ctx.batch_sizes, ctx.relu)  # noqa: E731
        return _differentiable_backward(ctx, layer, (input, hx, weight_ih, weight_hh, bias), (grad_output, grad_h_n))
    grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias = call_op(
        ops.elman_layer_backward, grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, ctx.batch_sizes,
        ctx.relu,
    )
    return grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias if ctx.has_bias else None, None, None


def _differentiable_backward(ctx, layer, inputs, grads):
    """A forward op's backward when its gradients must be differentiable themselves (create_graph=True):
    recompute the layer in ATen ops, layer(*inputs) (rnnfast/_differentiable_twins.py), and differentiate that
    with create_graph. inputs: the op's tensor inputs, its first len(inputs) arguments; grads: the gradient of
    each of the layer's outputs, None where the loss does not use it. Returns one gradient per op input."""
    wanted = [i for i, needed in enumerate(ctx.needs_input_grad[: len(inputs)]) if needed]
    used = [(k, grad) for k, grad in enumerate(grads) if grad is not None]
    result = [None] * len(ctx.needs_input_grad)
    if not wanted or not used:
        return tuple(result)
    with torch.enable_grad():
        outputs = layer(*inputs)
    computed = torch.autograd.grad([outputs[k] for k, _ in used], [inputs[i] for i in wanted],
                                   [grad for _, grad in used], create_graph=True, allow_unused=True)  # fmt: skip
    for i, grad in zip(wanted, computed, strict=True):
        result[i] = torch.zeros_like(inputs[i]) if grad is None else grad
    return tuple(result)


torch.library.register_autograd(
    "rnnfast::elman_layer_forward", _elman_backward, setup_context=_elman_setup_context
)


def _register_not_differentiable(backward_op, message):
    """Makes differentiating backward_op's outputs raise NotImplementedError(message), rather than give a silently
    incomplete second derivative."""

    def double_backward(ctx, *grads):
        raise NotImplementedError(message)

    torch.library.register_autograd(backward_op, double_backward, setup_context=lambda ctx, inputs, output: None)


# Reached only when the backward op is called directly on tensors that require grad: differentiating through the
# forward op with create_graph=True never calls it (see _elman_backward).
_register_not_differentiable(
    "rnnfast::elman_layer_backward",
    "rnnfast::elman_layer_backward is not differentiable; for gradients of gradients, differentiate "
    "rnnfast::elman_layer_forward (or rnnfast.RNN) with create_graph=True",
)


# Saved quantities per hidden unit and step in the gated ops' workspace: LstmCell::kSavedCount and
# GruCell::kSavedCount in csrc/gate_math.h.
LSTM_SAVED_PER_UNIT = 6
GRU_SAVED_PER_UNIT = 4


def _workspace_fake(input, per_step, save_workspace):
    T, B, _ = input.shape
    return input.new_empty(T, B, per_step) if save_workspace else input.new_empty(0)


def _check_workspace_saved(ctx, op):
    if not ctx.save_workspace:
        raise RuntimeError(f"rnnfast::{op} was called with save_workspace=False, which keeps nothing for the "
                           "backward; call it with save_workspace=True to differentiate its outputs")  # fmt: skip


@torch.library.register_fake("rnnfast::lstm_layer_forward")
def _lstm_layer_forward_fake(input, hx, cx, weight_ih, weight_hh, bias, weight_hr, batch_sizes, save_workspace=True):
    T, B, _ = input.shape
    D, H, P = weight_ih.shape[0], weight_ih.shape[1] // 4, hx.shape[2]
    return (input.new_empty(T, B, D * P), input.new_empty(D, B, P), input.new_empty(D, B, H),
            _workspace_fake(input, D * LSTM_SAVED_PER_UNIT * H, save_workspace))  # fmt: skip


@torch.library.register_fake("rnnfast::lstm_layer_backward")
def _lstm_layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, hx, cx, weight_ih, weight_hh, weight_hr,
                              output, workspace, batch_sizes):  # fmt: skip
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    D, G_H = weight_ih.shape[0], weight_ih.shape[1]
    grad_weight_hr = like(weight_hr) if weight_hr is not None else input.new_empty(0)
    return like(input), like(hx), like(cx), like(weight_ih), like(weight_hh), input.new_empty(D, G_H), grad_weight_hr


def _zeros_if_none(grad, like):
    return torch.zeros_like(like, memory_format=torch.contiguous_format) if grad is None else grad


def _lstm_setup_context(ctx, inputs, output):
    input, hx, cx, weight_ih, weight_hh, bias, weight_hr, batch_sizes, save_workspace = inputs
    # The workspace is an output only for the backward to read: autograd would otherwise fill a zero gradient
    # for it on every backward (T x B x 6H values, most of a small layer's backward time).
    ctx.set_materialize_grads(False)
    # The output and the workspace (gates, c_{t-1}, tanh(c_t)) are all the backward needs of the forward.
    # The bias only for gradients of gradients, which recompute the layer.
    ctx.save_for_backward(input, hx, cx, weight_ih, weight_hh, weight_hr, output[0], output[3], bias)
    ctx.batch_sizes = batch_sizes
    ctx.has_bias = bias is not None
    ctx.save_workspace = save_workspace


def _lstm_backward(ctx, grad_output, grad_h_n, grad_c_n, grad_workspace):
    _check_workspace_saved(ctx, "lstm_layer_forward")
    input, hx, cx, weight_ih, weight_hh, weight_hr, output, workspace, bias = ctx.saved_tensors
    if torch.is_grad_enabled():
        layer = lambda *tensors: lstm_layer_differentiable(*tensors, ctx.batch_sizes)  # noqa: E731
        return _differentiable_backward(ctx, layer, (input, hx, cx, weight_ih, weight_hh, bias, weight_hr),
                                        (grad_output, grad_h_n, grad_c_n))  # fmt: skip
    grad_output, grad_h_n, grad_c_n = (_zeros_if_none(grad_output, output), _zeros_if_none(grad_h_n, hx),
                                       _zeros_if_none(grad_c_n, cx))  # fmt: skip
    grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias, grad_weight_hr = call_op(
        ops.lstm_layer_backward, grad_output, grad_h_n, grad_c_n, input, hx, cx, weight_ih, weight_hh, weight_hr,
        output, workspace, ctx.batch_sizes,
    )
    return (grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias if ctx.has_bias else None,
            grad_weight_hr if weight_hr is not None else None, None, None)  # fmt: skip


torch.library.register_autograd("rnnfast::lstm_layer_forward", _lstm_backward, setup_context=_lstm_setup_context)


@torch.library.register_fake("rnnfast::gru_layer_forward")
def _gru_layer_forward_fake(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes, save_workspace=True):
    T, B, _ = input.shape
    D, H = weight_ih.shape[0], weight_ih.shape[1] // 3
    return (input.new_empty(T, B, D * H), input.new_empty(D, B, H),
            _workspace_fake(input, D * GRU_SAVED_PER_UNIT * H, save_workspace))  # fmt: skip


@torch.library.register_fake("rnnfast::gru_layer_backward")
def _gru_layer_backward_fake(grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, workspace,
                             batch_sizes):  # fmt: skip
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    D, G_H = weight_ih.shape[0], weight_ih.shape[1]
    return like(input), like(hx), like(weight_ih), like(weight_hh), input.new_empty(D, G_H), input.new_empty(D, G_H)


def _gru_setup_context(ctx, inputs, output):
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes, save_workspace = inputs
    # As for the LSTM: no zero gradient filled for the workspace.
    ctx.set_materialize_grads(False)
    # The output and the workspace (r, z, n and the recurrent term of n) are all the backward needs.
    # The biases only for gradients of gradients, which recompute the layer.
    ctx.save_for_backward(input, hx, weight_ih, weight_hh, output[0], output[2], bias_ih, bias_hh)
    ctx.batch_sizes = batch_sizes
    ctx.has_bias = bias_ih is not None
    ctx.save_workspace = save_workspace


def _gru_backward(ctx, grad_output, grad_h_n, grad_workspace):
    _check_workspace_saved(ctx, "gru_layer_forward")
    input, hx, weight_ih, weight_hh, output, workspace, bias_ih, bias_hh = ctx.saved_tensors
    if torch.is_grad_enabled():
        layer = lambda *tensors: gru_layer_differentiable(*tensors, ctx.batch_sizes)  # noqa: E731
        return _differentiable_backward(ctx, layer, (input, hx, weight_ih, weight_hh, bias_ih, bias_hh),
                                        (grad_output, grad_h_n))  # fmt: skip
    grad_output, grad_h_n = _zeros_if_none(grad_output, output), _zeros_if_none(grad_h_n, hx)
    grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh = call_op(
        ops.gru_layer_backward, grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, workspace,
        ctx.batch_sizes,
    )
    biases = (grad_bias_ih, grad_bias_hh) if ctx.has_bias else (None, None)
    return grad_input, grad_hx, grad_weight_ih, grad_weight_hh, *biases, None, None


torch.library.register_autograd("rnnfast::gru_layer_forward", _gru_backward, setup_context=_gru_setup_context)


# As for the Elman op: differentiating through the forward op with create_graph=True never calls these.
for _op in ("lstm_layer", "gru_layer"):
    _register_not_differentiable(
        f"rnnfast::{_op}_backward",
        f"rnnfast::{_op}_backward is not differentiable; for gradients of gradients, differentiate "
        f"rnnfast::{_op}_forward (or the rnnfast module) with create_graph=True",
    )


# The linear recurrences h_t = a_t * h_{t-1} + b_t (diagonal) and h_t = A_t h_{t-1} + b_t (dense).


@torch.library.register_fake("rnnfast::linear_recurrence")
def _linear_recurrence_fake(a, b, h0):
    return torch.empty_like(b, memory_format=torch.contiguous_format)


@torch.library.register_fake("rnnfast::dense_linear_recurrence")
def _dense_linear_recurrence_fake(A, b, h0):
    return torch.empty_like(b, memory_format=torch.contiguous_format)


def _recurrence_backward_fake(grad_h, coef, h, h0):
    return (
        torch.empty_like(coef, memory_format=torch.contiguous_format),
        torch.empty_like(grad_h, memory_format=torch.contiguous_format),
        torch.empty_like(h0, memory_format=torch.contiguous_format),
    )


torch.library.register_fake("rnnfast::linear_recurrence_backward", _recurrence_backward_fake)
torch.library.register_fake("rnnfast::dense_linear_recurrence_backward", _recurrence_backward_fake)


def _recurrence_setup_context(ctx, inputs, output):
    coef, _, h0 = inputs
    ctx.save_for_backward(coef, output, h0)


def _recurrence_autograd(backward_op):
    def backward(ctx, grad_h):
        coef, h, h0 = ctx.saved_tensors
        return call_op(backward_op, grad_h.contiguous(), coef, h, h0)

    return backward


torch.library.register_autograd(
    "rnnfast::linear_recurrence", _recurrence_autograd(ops.linear_recurrence_backward),
    setup_context=_recurrence_setup_context,
)  # fmt: skip
torch.library.register_autograd(
    "rnnfast::dense_linear_recurrence", _recurrence_autograd(ops.dense_linear_recurrence_backward),
    setup_context=_recurrence_setup_context,
)  # fmt: skip


for _name in ("linear_recurrence_backward", "dense_linear_recurrence_backward"):
    _register_not_differentiable(
        f"rnnfast::{_name}",
        "rnnfast: double backward (gradients of gradients, create_graph=True) through the linear-recurrence scans "
        "is not supported yet; differentiate the sequential reference instead",
    )
