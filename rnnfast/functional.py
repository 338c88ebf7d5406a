"""The layer stack of an Elman RNN: layers, directions and dropout, one fused op call per layer.

Tensors here are time-major and padded: input (T, B, I), hx (L*D, B, H). A packed sequence arrives as its
batch_sizes (T,), with its rows sorted by length; the kernels run each row for its own length.
"""

import torch
import torch.nn.functional as F

from . import parallel
from ._ops import ops

MODES = ("sequential", "parallel", "auto")


def _layer_forward(input, hx, weight_ih, weight_hh, bias, batch_sizes, relu):
    """The forward op, skipping its Python autograd wrapper (about 13 us a call) when nothing needs a gradient, as
    in inference: the wrapper would only find that out and call the kernel. Under torch.compile the op is always
    called whole, for the tracer to see its autograd."""
    if not torch.compiler.is_compiling() and not (
        torch.is_grad_enabled()
        and (input.requires_grad or hx.requires_grad or weight_ih.requires_grad or weight_hh.requires_grad
             or (bias is not None and bias.requires_grad))  # fmt: skip
    ):
        with torch._C._AutoDispatchBelowAutograd():
            return ops.elman_layer_forward.default(input, hx, weight_ih, weight_hh, bias, batch_sizes, relu)
    return ops.elman_layer_forward(input, hx, weight_ih, weight_hh, bias, batch_sizes, relu)


def _stack_directions(tensors):
    # One direction needs no copy: a view with a leading direction axis of size 1.
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _parallel_layer(layer_input, hx, weight_ih, weight_hh, bias, nonlinearity, options, reports):
    """One layer, each direction by parallel.elman_parallel; the reverse direction runs on the time-flipped input.
    Returns output (T, B, D*H) and h_n (D, B, H); appends each direction's NewtonReport to reports."""
    outputs, h_n = [], []
    for d in range(weight_ih.shape[0]):
        x = layer_input.flip(0) if d else layer_input
        output, last, report = parallel.elman_parallel(
            x, hx[d], weight_ih[d], weight_hh[d], None if bias is None else bias[d], nonlinearity=nonlinearity,
            method=options.method, tol=options.tol, max_iterations=options.max_iterations,
        )  # fmt: skip
        outputs.append(output.flip(0) if d else output)
        h_n.append(last)
        reports.append(report)
    return torch.cat(outputs, 2) if len(outputs) > 1 else outputs[0], torch.stack(h_n)


def elman_rnn(input, hx, flat_weights, *, num_layers, bias, nonlinearity, bidirectional, dropout, training,
              batch_sizes=None, mode="sequential", newton_options=None, reports=None):
    """Runs the stack. flat_weights is torch.nn.RNN's order: per layer, per direction, w_ih, w_hh[, b_ih, b_hh].
    Returns output (T, B, D*H) and h_n (L*D, B, H).

    mode "parallel" evaluates each layer by Newton's method (parallel.elman_parallel, with newton_options, its
    NewtonReports appended to reports); "auto" picks per layer by parallel.choose_mode. A packed sequence
    always runs sequentially: Newton's form needs every row to run all T steps."""
    num_directions = 2 if bidirectional else 1
    per_direction = 4 if bias else 2
    relu = nonlinearity == "relu"
    layer_input = input
    h_n = []
    for layer in range(num_layers):
        first = layer * num_directions
        groups = [
            flat_weights[(first + d) * per_direction : (first + d + 1) * per_direction] for d in range(num_directions)
        ]
        weight_ih = _stack_directions([g[0] for g in groups])  # (D, H, I)
        weight_hh = _stack_directions([g[1] for g in groups])  # (D, H, H)
        # b_ih and b_hh only ever appear summed; their gradients are equal.
        layer_bias = _stack_directions([g[2] + g[3] for g in groups]) if bias else None  # (D, H)
        layer_mode = mode
        if mode == "auto":
            T, B, _ = layer_input.shape
            layer_mode = parallel.choose_mode(T, B, weight_hh.shape[-1], layer_input.device)
        if layer_mode == "parallel" and batch_sizes is None:
            output, layer_h_n = _parallel_layer(layer_input, hx[first : first + num_directions], weight_ih,
                                                weight_hh, layer_bias, nonlinearity,
                                                newton_options or parallel.NewtonOptions(),
                                                reports if reports is not None else [])  # fmt: skip
        else:
            output, layer_h_n = _layer_forward(
                layer_input, hx[first : first + num_directions], weight_ih, weight_hh, layer_bias, batch_sizes, relu
            )
        h_n.append(layer_h_n)
        if dropout > 0 and training and layer < num_layers - 1:
            output = F.dropout(output, dropout, training=True)
        layer_input = output
    return layer_input, torch.cat(h_n, 0) if len(h_n) > 1 else h_n[0]


def elman_cell(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity):
    """One step: input (B, I), hx (B, H) -> h' (B, H), through the same fused op with T = 1."""
    bias = (bias_ih + bias_hh).unsqueeze(0) if bias_ih is not None else None
    _, h_n = _layer_forward(
        input.unsqueeze(0), hx.unsqueeze(0), weight_ih.unsqueeze(0), weight_hh.unsqueeze(0), bias, None,
        nonlinearity == "relu",
    )
    return h_n[0]


def packed_positions(batch_sizes, device):
    """Where each row of a PackedSequence's data sits in the padded (T*B) layout: time-major, sorted rows."""
    T, B = batch_sizes.numel(), int(batch_sizes[0])
    running = torch.arange(B).unsqueeze(0) < batch_sizes.unsqueeze(1)  # (T, B)
    return running.view(-1).nonzero().squeeze(1).to(device), T, B
