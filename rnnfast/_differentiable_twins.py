"""The fused ops written in differentiable ATen ops: their twins, for what the fused ops' autograd cannot do.

The fused ops' autograd (torch.library.register_autograd) computes first derivatives in reverse mode. Two things
it cannot do run these twins instead, which autograd and torch.func differentiate like any ATen code:
- gradients of gradients (create_graph=True: gradient penalties, meta-learning, gradgradcheck): the fused backward
  ops are not differentiable, so a layer's backward recomputes the layer from its saved inputs with these ops
  and lets autograd differentiate the recomputation (rnnfast/_ops.py, _differentiable_backward);
- torch.func transforms (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap) and forward-mode AD, which refuse the
  fused ops' autograd.Function or have no derivative for it: there the layer stacks and scans call these in place
  of the ops (rnnfast/_ops.py, needs_differentiable_twin).
Every derivative order is then exact, at the price of a loop over time in Python. Tensors follow the ops' layout:
input (T, B, I), states (D, B, .), weight_ih (D, G*H, I), weight_hh (D, G*H, P), biases (D, G*H) or None,
batch_sizes (T,) or None; the scans' a and b (T, B, H), A (T, B, H, H), h0 (B, H).
"""

import torch


def _direction(projection, states, step, reverse, running_rows):
    """One direction's loop over time. projection (T, B, G*H): the input projection plus the biases summed up
    front; states: the initial states, each (B, .); step(projection_t, states) -> (h_t, new states) for the
    running rows. Rows past running_rows[t] do not step at t: their states stay (a finished row keeps its last
    state, a row not yet started in reverse keeps its initial one) and their output is zero.
    Returns the outputs (T, B, P) and the final states."""
    T = projection.size(0)
    outputs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        rows = running_rows[t]
        h, stepped = step(projection[t, :rows], [s[:rows] for s in states])
        if rows == states[0].size(0):
            outputs[t], states = h, stepped
            continue
        states = [torch.cat([new, old[rows:]]) for new, old in zip(stepped, states, strict=True)]
        outputs[t] = torch.cat([h, h.new_zeros(states[0].size(0) - rows, h.size(1))])
    return torch.stack(outputs), states


def _layer(input, states, weight_ih, bias, batch_sizes, step_of_direction):
    """Every direction of a layer: step_of_direction(d) is direction d's step function (see _direction).
    Returns the output (T, B, D*P) and each final state stacked over directions (D, B, .)."""
    T, B = input.shape[:2]
    running_rows = [B] * T if batch_sizes is None else batch_sizes.tolist()
    outputs, finals = [], []
    for d in range(weight_ih.size(0)):
        projection = input @ weight_ih[d].t()  # (T, B, G*H)
        if bias is not None:
            projection = projection + bias[d]
        output, last = _direction(projection, [s[d] for s in states], step_of_direction(d), d == 1, running_rows)
        outputs.append(output)
        finals.append(last)
    return torch.cat(outputs, dim=2), [torch.stack(per_direction) for per_direction in zip(*finals, strict=True)]


def elman_layer_differentiable(input, hx, weight_ih, weight_hh, bias, batch_sizes, relu):
    """Returns output (T, B, D*H) and h_n (D, B, H), as the fused forward op does, built from ATen ops."""
    act = torch.relu if relu else torch.tanh

    def step_of_direction(d):
        def step(projection, states):
            h = act(projection + states[0] @ weight_hh[d].t())
            return h, [h]

        return step

    output, (h_n,) = _layer(input, [hx], weight_ih, bias, batch_sizes, step_of_direction)
    return output, h_n


def lstm_layer_differentiable(input, hx, cx, weight_ih, weight_hh, bias, weight_hr, batch_sizes):
    """Returns output (T, B, D*P), h_n (D, B, P) and c_n (D, B, H), as lstm_layer_forward does. bias is
    b_ih + b_hh; gates i, f, g, o; h_t = (o * tanh(c_t)) W_hr^T with a projection."""

    def step_of_direction(d):
        def step(projection, states):
            h, c = states
            i, f, g, o = (projection + h @ weight_hh[d].t()).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            if weight_hr is not None:
                h = h @ weight_hr[d].t()
            return h, [h, c]

        return step

    output, (h_n, c_n) = _layer(input, [hx, cx], weight_ih, bias, batch_sizes, step_of_direction)
    return output, h_n, c_n


def gru_layer_differentiable(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes):
    """Returns output (T, B, D*H) and h_n (D, B, H), as gru_layer_forward does: gates r, z, n, with b_hn inside
    the reset gate's product."""

    def step_of_direction(d):
        def step(projection, states):
            (h,) = states
            hidden = h @ weight_hh[d].t()
            if bias_hh is not None:
                hidden = hidden + bias_hh[d]
            x_r, x_z, x_n = projection.chunk(3, dim=1)
            h_r, h_z, h_n = hidden.chunk(3, dim=1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)
            h = n + z * (h - n)
            return h, [h]

        return step

    output, (h_n,) = _layer(input, [hx], weight_ih, bias_ih, batch_sizes, step_of_direction)
    return output, h_n


def _check_scan_arguments(coef, b, h0, dense):
    # The fused scans' argument checks (csrc/linear_recurrence.cpp), with their messages: ATen's broadcasting
    # would otherwise accept shapes and dtypes the ops refuse.
    coef_name = "A" if dense else "a"
    if b.dim() != 3:
        raise RuntimeError(f"rnnfast: expected b of shape (T, B, H), got {b.dim()}-D b of shape {list(b.shape)}")
    if not b.is_floating_point():
        raise RuntimeError(f"rnnfast: expected a floating-point b, got {b.dtype}")
    T, B, H = b.shape
    for name, tensor, shape in ((coef_name, coef, (T, B, H, H) if dense else (T, B, H)), ("h0", h0, (B, H))):
        if tuple(tensor.shape) != shape:
            raise RuntimeError(f"rnnfast: expected {name} of shape {list(shape)}, got {list(tensor.shape)}")
        if tensor.device != b.device:
            raise RuntimeError(f"rnnfast: expected {name} on device {b.device}, got {tensor.device}")
        if tensor.dtype != b.dtype:
            raise RuntimeError(f"rnnfast: expected {name} of dtype {b.dtype}, got {tensor.dtype}")


def _scan(b, h0, step):
    """Every h_t = step(t, h_{t-1}) + b_t from h_{-1} = h0, stacked (T, B, H)."""
    h, states = h0, []
    for t in range(b.size(0)):
        h = step(t, h) + b[t]
        states.append(h)
    return torch.stack(states) if states else b.clone()


def linear_recurrence_differentiable(a, b, h0):
    """h_t = a_t * h_{t-1} + b_t, as rnnfast::linear_recurrence returns it (T, B, H)."""
    _check_scan_arguments(a, b, h0, dense=False)
    return _scan(b, h0, lambda t, h: a[t] * h)


def dense_linear_recurrence_differentiable(A, b, h0):
    """h_t = A_t @ h_{t-1} + b_t, as rnnfast::dense_linear_recurrence returns it (T, B, H)."""
    _check_scan_arguments(A, b, h0, dense=True)
    return _scan(b, h0, lambda t, h: (A[t] @ h.unsqueeze(-1)).squeeze(-1))
