"""The layer stack of an Elman RNN: layers, directions and dropout, one fused op call per layer.

Tensors here are time-major and padded: input (T, B, I), hx (L*D, B, H). A packed sequence arrives as its
batch_sizes (T,), with its rows sorted by length; the kernels run each row for its own length.
"""

import torch
import torch.nn.functional as F

from ._ops import ops


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


def elman_rnn(input, hx, flat_weights, *, num_layers, bias, nonlinearity, bidirectional, dropout, training,
              batch_sizes=None):
    """Runs the stack. flat_weights is torch.nn.RNN's order: per layer, per direction, w_ih, w_hh[, b_ih, b_hh].
    Returns output (T, B, D*H) and h_n (L*D, B, H)."""
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
