"""The layer stacks of the Elman RNN, LSTM and GRU: layers, directions and dropout, one fused op call per layer.
The sequential stacks are one call each into C++ (csrc/layer_stack.cpp); the Python stack here serves the Elman
RNN's parallel-in-time modes, whose layers are Python, and every call under torch.func transforms and forward-mode
AD, whose layers run their differentiable twins (rnnfast/_differentiable_twins.py) in place of the fused ops.

Tensors here are time-major and padded: input (T, B, I), hx (L*D, B, H)
(and c (L*D, B, H) for the LSTM). A packed sequence arrives as its
batch_sizes (T,), with its rows sorted by length; the kernels run each row for its own length.
"""

import torch
import torch.nn.functional as F

from . import parallel
from ._ops import call_layer, call_stack, needs_differentiable_twin

MODES = ("sequential", "parallel", "auto")


def _stack_directions(tensors):
    # One direction needs no copy: a view with a leading direction axis of size 1.
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _layer_parameters(flat_weights, layer, num_directions, bias, proj):
    """One layer's parameters from torch.nn's flat order (per layer, per direction, w_ih, w_hh[, b_ih, b_hh]
    [, w_hr]), each stacked over the directions: weight_ih (D, G*H, I), weight_hh (D, G*H, P), bias_ih and
    bias_hh (D, G*H) or None, weight_hr (D, P, H) or None."""
    per_direction = 2 + (2 if bias else 0) + (1 if proj else 0)
    first = layer * num_directions * per_direction
    groups = [flat_weights[first + d * per_direction : first + (d + 1) * per_direction] for d in range(num_directions)]
    stacked = [_stack_directions(list(column)) for column in zip(*groups, strict=True)]
    bias_ih, bias_hh = stacked[2:4] if bias else (None, None)
    return stacked[0], stacked[1], bias_ih, bias_hh, stacked[-1] if proj else None


def _run_layer_op(cell, layer_input, states, parameters, batch_sizes, relu=False):
    """One layer of `cell` ("elman", "lstm" or "gru"), every direction, through its fused op by call_layer (its
    differentiable twin where the op cannot serve). states: the layer's (D, B, .) initial states; parameters as
    _layer_parameters gives them. Returns the output (T, B, D*P) and the final states."""
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = parameters
    if cell == "gru":
        # Kept apart: b_hn sits inside the reset gate's product.
        output, h_n, _ = call_layer("gru_layer_forward", layer_input, states[0], weight_ih, weight_hh, bias_ih,
                                    bias_hh, batch_sizes)  # fmt: skip
        return output, (h_n,)
    summed_bias = None if bias_ih is None else bias_ih + bias_hh  # the other cells only ever use the sum
    if cell == "lstm":
        output, h_n, c_n, _ = call_layer("lstm_layer_forward", layer_input, states[0], states[1], weight_ih,
                                         weight_hh, summed_bias, weight_hr, batch_sizes)  # fmt: skip
        return output, (h_n, c_n)
    output, h_n = call_layer("elman_layer_forward", layer_input, states[0], weight_ih, weight_hh, summed_bias,
                             batch_sizes, relu)  # fmt: skip
    return output, (h_n,)


def _layer_op_stack(cell, input, states, flat_weights, num_layers, bias, bidirectional, dropout, training,
                    batch_sizes, relu=False, proj=False):  # fmt: skip
    """The stack of `cell`'s layer ops run from Python, layer by layer through call_layer: the twin of the C++
    stack (csrc/layer_stack.cpp) for the calls whose layers must run their differentiable twins
    (needs_differentiable_twin: torch.func transforms, forward-mode AD). Returns the output and final states."""
    num_directions = 2 if bidirectional else 1

    def run_layer(layer, layer_input, layer_states):
        parameters = _layer_parameters(flat_weights, layer, num_directions, bias, proj)
        return _run_layer_op(cell, layer_input, layer_states, parameters, batch_sizes, relu)

    return _stack(input, states, num_layers, bidirectional, dropout, training, run_layer)


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


def _stack(input, states, num_layers, bidirectional, dropout, training, run_layer):
    """The Python twin of csrc/layer_stack.cpp's run_stack, for layers that run in Python. Runs the layers in
    turn, dropout between them. states is a tuple of (L*D, B, .) initial states; run_layer(layer, layer_input,
    layer_states) runs one layer, both directions, given each state's (D, B, .) slice, and returns its output and
    final states. Returns the last output and the final states (L*D, B, .)."""
    num_directions = 2 if bidirectional else 1
    layer_input, finals = input, []
    for layer in range(num_layers):
        rows = slice(layer * num_directions, (layer + 1) * num_directions)
        output, layer_finals = run_layer(layer, layer_input, tuple(state[rows] for state in states))
        finals.append(layer_finals)
        if dropout > 0 and training and layer < num_layers - 1:
            output = F.dropout(output, dropout, training=True)
        layer_input = output
    return layer_input, tuple(torch.cat(f, 0) if len(f) > 1 else f[0] for f in zip(*finals))


def elman_rnn(input, hx, flat_weights, num_layers, bias, bidirectional, dropout, training, nonlinearity="tanh",
              batch_sizes=None, *, mode="sequential", newton_options=None, reports=None):
    """Runs the stack. flat_weights is torch.nn.RNN's order: per layer, per direction, w_ih, w_hh[, b_ih, b_hh].
    Returns output (T, B, D*H) and h_n (L*D, B, H).

    mode "sequential" is one call of the C++ stack (ops.elman_rnn, csrc/layer_stack.cpp). "parallel" evaluates
    each layer by Newton's method (parallel.elman_parallel, with newton_options, its NewtonReports appended to
    reports); "auto" picks per layer by parallel.choose_mode. A packed sequence always runs sequentially:
    Newton's form needs every row to run all T steps; so does every call under torch.func transforms and
    forward-mode AD, through the layers' differentiable twins."""
    relu = nonlinearity == "relu"
    tensors = (input, hx, *flat_weights)
    if needs_differentiable_twin(tensors):
        # In every mode: Newton's iteration reads its residual on the host, which torch.func cannot trace.
        output, (h_n,) = _layer_op_stack("elman", input, (hx,), flat_weights, num_layers, bias, bidirectional,
                                         dropout, training, batch_sizes, relu=relu)  # fmt: skip
        return output, h_n
    if mode == "sequential" or batch_sizes is not None:
        return call_stack("elman_rnn", tensors, input, hx, flat_weights, bias, num_layers, float(dropout), training,
                          bidirectional, relu, batch_sizes)  # fmt: skip
    num_directions = 2 if bidirectional else 1

    def run_layer(layer, layer_input, states):
        parameters = _layer_parameters(flat_weights, layer, num_directions, bias, False)
        weight_ih, weight_hh, bias_ih, bias_hh, _ = parameters
        layer_mode = mode
        if mode == "auto":
            T, B, _ = layer_input.shape
            layer_mode = parallel.choose_mode(T, B, weight_hh.shape[-1], layer_input.device)
        if layer_mode != "parallel":
            return _run_layer_op("elman", layer_input, states, parameters, None, relu)
        # b_ih and b_hh only ever appear summed; their gradients are equal.
        layer_bias = None if bias_ih is None else bias_ih + bias_hh  # (D, H)
        output, h_n = _parallel_layer(layer_input, states[0], weight_ih, weight_hh, layer_bias, nonlinearity,
                                      newton_options or parallel.NewtonOptions(),
                                      reports if reports is not None else [])  # fmt: skip
        return output, (h_n,)

    output, (h_n,) = _stack(input, (hx,), num_layers, bidirectional, dropout, training, run_layer)
    return output, h_n


def lstm(input, hx, flat_weights, num_layers, bias, bidirectional, dropout, training, proj_size=0, batch_sizes=None):
    """Runs the stack, one call of the C++ stack (ops.lstm). hx is (h_0 (L*D, B, P), c_0 (L*D, B, H)) with
    P = proj_size or H. flat_weights is torch.nn.LSTM's order: per layer, per direction, w_ih, w_hh[, b_ih, b_hh]
    [, w_hr]. Returns output (T, B, D*P) and (h_n (L*D, B, P), c_n (L*D, B, H))."""
    tensors = (input, *hx, *flat_weights)
    if needs_differentiable_twin(tensors):
        return _layer_op_stack("lstm", input, tuple(hx), flat_weights, num_layers, bias, bidirectional, dropout,
                               training, batch_sizes, proj=proj_size > 0)  # fmt: skip
    output, h_n, c_n = call_stack("lstm", tensors, input, hx[0], hx[1], flat_weights, bias, num_layers,
                                  float(dropout), training, bidirectional, proj_size > 0, batch_sizes)  # fmt: skip
    return output, (h_n, c_n)


def gru(input, hx, flat_weights, num_layers, bias, bidirectional, dropout, training, batch_sizes=None):
    """Runs the stack, one call of the C++ stack (ops.gru). flat_weights is torch.nn.GRU's order: per layer, per
    direction, w_ih, w_hh[, b_ih, b_hh]. Returns output (T, B, D*H) and h_n (L*D, B, H)."""
    tensors = (input, hx, *flat_weights)
    if needs_differentiable_twin(tensors):
        output, (h_n,) = _layer_op_stack("gru", input, (hx,), flat_weights, num_layers, bias, bidirectional, dropout,
                                         training, batch_sizes)  # fmt: skip
        return output, h_n
    return call_stack("gru", tensors, input, hx, flat_weights, bias, num_layers, float(dropout), training,
                      bidirectional, batch_sizes)  # fmt: skip


def elman_cell(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity):
    """One step: input (B, I), hx (B, H) -> h' (B, H), through the same fused op with T = 1."""
    bias = (bias_ih + bias_hh).unsqueeze(0) if bias_ih is not None else None
    _, h_n = call_layer(
        "elman_layer_forward",
        input.unsqueeze(0), hx.unsqueeze(0), weight_ih.unsqueeze(0), weight_hh.unsqueeze(0), bias, None,
        nonlinearity == "relu",
    )
    return h_n[0]


def lstm_cell(input, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One step: input (B, I), h and c (B, H) -> h', c' (B, H), through the fused layer op with T = 1."""
    bias = (bias_ih + bias_hh).unsqueeze(0) if bias_ih is not None else None
    _, h_n, c_n, _ = call_layer(
        "lstm_layer_forward",
        input.unsqueeze(0), h.unsqueeze(0), c.unsqueeze(0), weight_ih.unsqueeze(0), weight_hh.unsqueeze(0), bias, None,
        None,
    )
    return h_n[0], c_n[0]


def gru_cell(input, hx, weight_ih, weight_hh, bias_ih, bias_hh):
    """One step: input (B, I), hx (B, H) -> h' (B, H), through the fused layer op with T = 1."""
    unsqueeze = lambda t: t.unsqueeze(0) if t is not None else None  # noqa: E731
    _, h_n, _ = call_layer("gru_layer_forward", input.unsqueeze(0), hx.unsqueeze(0), weight_ih.unsqueeze(0),
                           weight_hh.unsqueeze(0), unsqueeze(bias_ih), unsqueeze(bias_hh), None)  # fmt: skip
    return h_n[0]


def packed_positions(batch_sizes, device):
    """Where each row of a PackedSequence's data sits in the padded (T*B) layout: time-major, sorted rows."""
    T, B = batch_sizes.numel(), int(batch_sizes[0])
    running = torch.arange(B).unsqueeze(0) < batch_sizes.unsqueeze(1)  # (T, B)
    return running.view(-1).nonzero().squeeze(1).to(device), T, B
