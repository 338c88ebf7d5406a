"""The slow, obviously correct Elman RNN that every kernel is checked against: a plain Python loop over time,
layers and directions, one row of the batch at a time, on torch.nn.RNN's parameter layout."""

import torch


def reference_elman_layer(x, h0, w_ih, w_hh, b_ih, b_hh, act, reverse, lengths):
    """x (T, B, I), h0 (B, H); each row b runs lengths[b] steps. Returns output (T, B, H) and h_n (B, H)."""
    T, B, _ = x.shape
    H = w_hh.shape[0]
    output = x.new_zeros(T, B, H)
    h_n = []
    for b in range(B):
        steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        h = h0[b]
        for t in steps:
            z = w_ih @ x[t, b] + w_hh @ h
            if b_ih is not None:
                z = z + b_ih + b_hh
            h = act(z)
            output[t, b] = h
        h_n.append(h)
    return output, torch.stack(h_n)


def reference_rnn(module, x, h0, lengths=None):
    """Runs module's parameters through the reference. x (T, B, I) time-major, h0 (L*D, B, H)."""
    T, B, _ = x.shape
    lengths = [T] * B if lengths is None else list(lengths)
    act = torch.tanh if module.nonlinearity == "tanh" else torch.relu
    D = 2 if module.bidirectional else 1
    layer_input, h_n = x, []
    for layer in range(module.num_layers):
        outputs = []
        for d in range(D):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            p = lambda name: getattr(module, name + suffix, None)  # noqa: E731
            out, hn = reference_elman_layer(layer_input, h0[layer * D + d], p("weight_ih"), p("weight_hh"),
                                            p("bias_ih"), p("bias_hh"), act, d == 1, lengths)  # fmt: skip
            outputs.append(out)
            h_n.append(hn)
        layer_input = torch.cat(outputs, dim=2)
    return layer_input, torch.stack(h_n)


def reference_linear_recurrence(coef, b, h0):
    """h_t = coef_t * h_{t-1} + b_t one step at a time: coef (T, B, H) elementwise, or (T, B, H, H) a matrix per
    step and row. b (T, B, H), h0 (B, H). Returns h (T, B, H); differentiable by autograd."""
    h, states = h0, []
    for t in range(b.shape[0]):
        carried = (coef[t] @ h.unsqueeze(-1)).squeeze(-1) if coef.dim() == 4 else coef[t] * h
        h = carried + b[t]
        states.append(h)
    return torch.stack(states) if states else b.new_zeros(b.shape)


def reference_min_gru(x, h0, weight, bias):
    """minGRU one step at a time: x (T, B, I), h0 (B, H), weight (2H, I) and bias (2H,) or None, the gate's rows
    then the candidate's. Returns output (T, B, H)."""
    H = h0.shape[1]
    h, states = h0, []
    for x_t in x:
        projected = x_t @ weight.t() + (bias if bias is not None else 0)
        z, candidate = torch.sigmoid(projected[:, :H]), projected[:, H:]
        h = (1 - z) * h + z * candidate
        states.append(h)
    return torch.stack(states)
