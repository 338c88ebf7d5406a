"""Loads the compiled kernels and tells PyTorch how to trace (fake kernels) and differentiate (autograd) them."""

import torch

from . import _C  # noqa: F401  (loading it registers torch.ops.rnnfast.*)

ops = torch.ops.rnnfast


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


def _elman_setup_context(ctx, inputs, output):
    input, hx, weight_ih, weight_hh, bias, batch_sizes, relu = inputs
    # The outputs are the hidden states, all that the activation's derivative needs (tanh' = 1 - h^2).
    ctx.save_for_backward(input, hx, weight_ih, weight_hh, output[0])
    ctx.batch_sizes = batch_sizes
    ctx.relu = relu
    ctx.has_bias = bias is not None


def _elman_backward(ctx, grad_output, grad_h_n):
    input, hx, weight_ih, weight_hh, output = ctx.saved_tensors
    grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias = ops.elman_layer_backward(
        grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, ctx.batch_sizes, ctx.relu
    )
    return grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias if ctx.has_bias else None, None, None


torch.library.register_autograd(
    "rnnfast::elman_layer_forward", _elman_backward, setup_context=_elman_setup_context
)


# Saved quantities per hidden unit and step in the gated ops' workspace: LstmCell::kSavedCount and
# GruCell::kSavedCount in csrc/gate_math.h.
LSTM_SAVED_PER_UNIT = 6
GRU_SAVED_PER_UNIT = 4


@torch.library.register_fake("rnnfast::lstm_layer_forward")
def _lstm_layer_forward_fake(input, hx, cx, weight_ih, weight_hh, bias, weight_hr, batch_sizes):
    T, B, _ = input.shape
    D, H, P = weight_ih.shape[0], weight_ih.shape[1] // 4, hx.shape[2]
    return (input.new_empty(T, B, D * P), input.new_empty(D, B, P), input.new_empty(D, B, H),
            input.new_empty(T, B, D * LSTM_SAVED_PER_UNIT * H))  # fmt: skip


@torch.library.register_fake("rnnfast::lstm_layer_backward")
def _lstm_layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, hx, cx, weight_ih, weight_hh, weight_hr,
                              output, workspace, batch_sizes):  # fmt: skip
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    D, G_H = weight_ih.shape[0], weight_ih.shape[1]
    grad_weight_hr = like(weight_hr) if weight_hr is not None else input.new_empty(0)
    return like(input), like(hx), like(cx), like(weight_ih), like(weight_hh), input.new_empty(D, G_H), grad_weight_hr


def _lstm_setup_context(ctx, inputs, output):
    input, hx, cx, weight_ih, weight_hh, bias, weight_hr, batch_sizes = inputs
    # The output and the workspace (gates, c_{t-1}, tanh(c_t)) are all the backward needs of the forward.
    ctx.save_for_backward(input, hx, cx, weight_ih, weight_hh, weight_hr, output[0], output[3])
    ctx.batch_sizes = batch_sizes
    ctx.has_bias = bias is not None


def _lstm_backward(ctx, grad_output, grad_h_n, grad_c_n, grad_workspace):
    input, hx, cx, weight_ih, weight_hh, weight_hr, output, workspace = ctx.saved_tensors
    grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias, grad_weight_hr = ops.lstm_layer_backward(
        grad_output, grad_h_n, grad_c_n, input, hx, cx, weight_ih, weight_hh, weight_hr, output, workspace,
        ctx.batch_sizes,
    )
    return (grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias if ctx.has_bias else None,
            grad_weight_hr if weight_hr is not None else None, None)  # fmt: skip


torch.library.register_autograd("rnnfast::lstm_layer_forward", _lstm_backward, setup_context=_lstm_setup_context)


@torch.library.register_fake("rnnfast::gru_layer_forward")
def _gru_layer_forward_fake(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes):
    T, B, _ = input.shape
    D, H = weight_ih.shape[0], weight_ih.shape[1] // 3
    return input.new_empty(T, B, D * H), input.new_empty(D, B, H), input.new_empty(T, B, D * GRU_SAVED_PER_UNIT * H)


@torch.library.register_fake("rnnfast::gru_layer_backward")
def _gru_layer_backward_fake(grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, workspace,
                             batch_sizes):  # fmt: skip
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    D, G_H = weight_ih.shape[0], weight_ih.shape[1]
    return like(input), like(hx), like(weight_ih), like(weight_hh), input.new_empty(D, G_H), input.new_empty(D, G_H)


def _gru_setup_context(ctx, inputs, output):
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes = inputs
    # The output and the workspace (r, z, n and the recurrent term of n) are all the backward needs.
    ctx.save_for_backward(input, hx, weight_ih, weight_hh, output[0], output[2])
    ctx.batch_sizes = batch_sizes
    ctx.has_bias = bias_ih is not None


def _gru_backward(ctx, grad_output, grad_h_n, grad_workspace):
    input, hx, weight_ih, weight_hh, output, workspace = ctx.saved_tensors
    grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh = ops.gru_layer_backward(
        grad_output, grad_h_n, input, hx, weight_ih, weight_hh, output, workspace, ctx.batch_sizes
    )
    biases = (grad_bias_ih, grad_bias_hh) if ctx.has_bias else (None, None)
    return grad_input, grad_hx, grad_weight_ih, grad_weight_hh, *biases, None


torch.library.register_autograd("rnnfast::gru_layer_forward", _gru_backward, setup_context=_gru_setup_context)


def _register_no_double_backward(backward_op, cell):
    """Gradients of gradients (create_graph=True) would need the backward op's own derivative; until it exists,
    say so rather than return a silently incomplete second derivative."""

    def double_backward(ctx, *grads):
        raise NotImplementedError(
            f"rnnfast: double backward (gradients of gradients, create_graph=True) through the {cell} kernels is "
            f"not supported yet; use torch.nn.{cell} for gradient penalties or meta-learning"
        )

    torch.library.register_autograd(backward_op, double_backward, setup_context=lambda ctx, inputs, output: None)


_register_no_double_backward("rnnfast::elman_layer_backward", "RNN")
_register_no_double_backward("rnnfast::lstm_layer_backward", "LSTM")
_register_no_double_backward("rnnfast::gru_layer_backward", "GRU")
