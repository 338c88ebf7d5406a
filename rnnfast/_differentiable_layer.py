"""One Elman layer written in differentiable ATen ops, for gradients of gradients only.

The fused backward op computes first derivatives and is not itself differentiable. When autograd asks for a
differentiable backward (create_graph=True: gradient penalties, meta-learning, gradgradcheck), the layer's
backward instead recomputes the layer from its saved inputs with these ops and lets autograd differentiate the
recomputation, so every derivative order is exact. Tensors follow the op's layout: input (T, B, I),
hx (D, B, H), weight_ih (D, H, I), weight_hh (D, H, H), bias (D, H) or None, batch_sizes (T,) or None.
"""

import torch


def _direction(projection, h0, weight_hh, act, reverse, running_rows):
    # projection (T, B, H): input projection plus bias; h0 (B, H). Rows past running_rows[t] do not step at t:
    # their state stays (a finished row keeps its last state, a row not yet started in reverse keeps h0) and their
    # output is zero.
    T = projection.size(0)
    h = h0
    outputs = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        rows = running_rows[t]
        stepped = act(projection[t, :rows] + h[:rows] @ weight_hh.t())  # (rows, H)
        if rows == h.size(0):
            h = outputs[t] = stepped
            continue
        h = torch.cat([stepped, h[rows:]])
        outputs[t] = torch.cat([stepped, stepped.new_zeros(h.size(0) - rows, h.size(1))])
    return torch.stack(outputs), h


def elman_layer_differentiable(input, hx, weight_ih, weight_hh, bias, batch_sizes, relu):
    """Returns output (T, B, D*H) and h_n (D, B, H), as the fused forward op does, built from ATen ops."""
    act = torch.relu if relu else torch.tanh
    T, B = input.shape[:2]
    running_rows = [B] * T if batch_sizes is None else batch_sizes.tolist()
    outputs, h_n = [], []
    for d in range(weight_ih.size(0)):
        projection = input @ weight_ih[d].t()  # (T, B, H)
        if bias is not None:
            projection = projection + bias[d]
        output, last = _direction(projection, hx[d], weight_hh[d], act, d == 1, running_rows)
        outputs.append(output)
        h_n.append(last)
    return torch.cat(outputs, dim=2), torch.stack(h_n)
