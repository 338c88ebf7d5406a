"""Builds a torch.nn module (RNN, LSTM, GRU) and its rnnfast twin with the same weights, and compares them in full."""

import torch
from torch.nn.utils.rnn import PackedSequence

import rnnfast

TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def twin_modules(name, dtype=torch.float64, device="cpu", **kwargs):
    """torch.nn.<name> and rnnfast.<name> (RNN, LSTM, GRU or a cell) with the same weights."""
    reference = getattr(torch.nn, name)(**kwargs).to(device=device, dtype=dtype)
    fast = getattr(rnnfast, name)(**kwargs).to(device=device, dtype=dtype)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def twin_rnns(dtype=torch.float64, device="cpu", **kwargs):
    return twin_modules("RNN", dtype, device, **kwargs)


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def named_outputs_and_grads(module, input, hx):
    """Runs module, then backpropagates a loss that weighs every output and final-state entry differently, so a
    wrong gradient anywhere shows. hx is a tensor, an LSTM's (h_0, c_0), or None. Returns (name, value) pairs:
    output, h_n[, c_n], d input[, d hx[, d cx]], d each parameter."""
    if isinstance(input, PackedSequence):
        data = input.data.detach().clone().requires_grad_(True)
        leaves = [data]
        input = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
    else:
        input = input.detach().clone().requires_grad_(True)
        leaves = [input]
    if isinstance(hx, tuple):
        hx = tuple(_leaf(h) for h in hx)
        leaves.extend(hx)
    elif hx is not None:
        hx = _leaf(hx)
        leaves.append(hx)
    output, hidden = module(input, hx) if hx is not None else module(input)
    out_data = output.data if isinstance(output, PackedSequence) else output
    states = list(hidden) if isinstance(hidden, tuple) else [hidden]
    gen = torch.Generator(device=out_data.device).manual_seed(1)
    weigh = lambda t: (t * torch.randn(t.shape, generator=gen, dtype=t.dtype, device=t.device)).sum()  # noqa: E731
    loss = weigh(out_data) + sum(weigh(s) for s in states)
    named_params = list(module.named_parameters())
    grads = torch.autograd.grad(loss, leaves + [p for _, p in named_params])
    names = ["output", "h_n", "c_n"][: 1 + len(states)] + ["grad input", "grad hx", "grad cx"][: len(leaves)]
    names += ["grad " + n for n, _ in named_params]
    return list(zip(names, [out_data.detach(), *(s.detach() for s in states), *grads], strict=True))


def outputs_and_grads(module, input, hx):
    """The values of named_outputs_and_grads: [output, h_n[, c_n], d input[, d hx, ...], d each parameter]."""
    return [value for _, value in named_outputs_and_grads(module, input, hx)]


def assert_same_dropout_masks(reference, fast):
    """In training mode with dropout, the same seed gives the same output (the same masks), and another draw
    another output (the masks are applied). Both modules take input_size 3."""
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    torch.manual_seed(7)
    expected = reference(x)
    torch.manual_seed(7)
    got = fast(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(fast(x)[0], got[0])


def assert_cells_agree(reference, fast, x, hx, **tolerance):
    """One step of two cells (RNNCell, LSTMCell, GRUCell) with the same weights: the same outputs, and the same
    gradients of x, of the states in hx (a tensor, a tuple, or None) and of every parameter, for a loss that
    weighs every output entry differently."""
    states = list(hx) if isinstance(hx, tuple) else [] if hx is None else [hx]
    leaves = [x.requires_grad_()] + [s.requires_grad_() for s in states]
    expected, got = reference(x, hx), fast(x, hx)
    torch.testing.assert_close(got, expected, **tolerance)
    expected, got = (list(v) if isinstance(v, tuple) else [v] for v in (expected, got))
    weights = [torch.randn_like(e) for e in expected]
    loss = lambda outs: sum((o * w).sum() for o, w in zip(outs, weights, strict=True))  # noqa: E731
    ge = torch.autograd.grad(loss(expected), leaves + list(reference.parameters()))
    gg = torch.autograd.grad(loss(got), leaves + list(fast.parameters()))
    for a, b in zip(gg, ge, strict=True):
        torch.testing.assert_close(a, b, **tolerance)


def assert_twins_agree(reference, fast, input, hx=None, **tolerance):
    dtype = next(reference.parameters()).dtype
    tolerance = tolerance or TOLERANCE[dtype]
    expected = named_outputs_and_grads(reference, input, hx)
    got = named_outputs_and_grads(fast, input, hx)
    assert [name for name, _ in got] == [name for name, _ in expected]
    for (name, e), (_, g) in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, msg=lambda m, name=name: f"{name}: {m}", **tolerance)
