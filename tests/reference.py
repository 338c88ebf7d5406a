"""The slow, obviously correct Elman RNN, LSTM and GRU that every kernel is checked against: plain Python loops
over time, layers and directions, one row of the batch at a time, on torch.nn's parameter layouts."""

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


def reference_lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, lengths):
    """torch.nn.LSTM's equations, gates i, f, g, o. x (T, B, I), h0 (B, P), c0 (B, H); w_hr (P, H) or None.
    Returns output (T, B, P), h_n (B, P) and c_n (B, H)."""
    T, B, _ = x.shape
    output = x.new_zeros(T, B, h0.shape[1])
    h_n, c_n = [], []
    for b in range(B):
        steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        h, c = h0[b], c0[b]
        for t in steps:
            gates = w_ih @ x[t, b] + w_hh @ h
            if b_ih is not None:
                gates = gates + b_ih + b_hh
            i, f, g, o = gates.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            if w_hr is not None:
                h = w_hr @ h
            output[t, b] = h
        h_n.append(h)
        c_n.append(c)
    return output, torch.stack(h_n), torch.stack(c_n)


def reference_gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, lengths):
    """torch.nn.GRU's equations, gates r, z, n, with b_hn inside the reset gate's product. x (T, B, I),
    h0 (B, H). Returns output (T, B, H) and h_n (B, H)."""
    T, B, _ = x.shape
    output = x.new_zeros(T, B, h0.shape[1])
    h_n = []
    for b in range(B):
        steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
        h = h0[b]
        for t in steps:
            from_input, from_hidden = w_ih @ x[t, b], w_hh @ h
            if b_ih is not None:
                from_input, from_hidden = from_input + b_ih, from_hidden + b_hh
            i_r, i_z, i_n = from_input.chunk(3)
            h_r, h_z, h_n_part = from_hidden.chunk(3)
            r = torch.sigmoid(i_r + h_r)
            z = torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n_part)
            h = (1 - z) * n + z * h
            output[t, b] = h
        h_n.append(h)
    return output, torch.stack(h_n)


def reference_gated(module, x, hx, lengths=None):
    """Runs an LSTM's or GRU's parameters through the references above. x (T, B, I) time-major; hx is
    (h0 (L*D, B, P), c0 (L*D, B, H)) for an LSTM, h0 (L*D, B, H) for a GRU. Returns output and the final
    state(s) in the module's own form."""
    T, B, _ = x.shape
    lengths = [T] * B if lengths is None else list(lengths)
    D = 2 if module.bidirectional else 1
    is_lstm = module.mode == "LSTM"
    layer_input, finals = x, []
    for layer in range(module.num_layers):
        outputs = []
        for d in range(D):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            p = lambda name: getattr(module, name + suffix, None)  # noqa: E731
            k = layer * D + d
            if is_lstm:
                weights = [p(n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
                out, *states = reference_lstm_layer(layer_input, hx[0][k], hx[1][k], *weights, d == 1, lengths)
            else:
                out, *states = reference_gru_layer(layer_input, hx[k], p("weight_ih"), p("weight_hh"), p("bias_ih"),
                                                   p("bias_hh"), d == 1, lengths)  # fmt: skip
            outputs.append(out)
            finals.append(states)
        layer_input = torch.cat(outputs, dim=2)
    stacked = [torch.stack(s) for s in zip(*finals)]
    return layer_input, tuple(stacked) if is_lstm else stacked[0]


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
