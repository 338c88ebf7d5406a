"""Builds a torch.nn module and its rnnfast twin with the same weights, and compares them in full."""

import torch
from torch.nn.utils.rnn import PackedSequence

import rnnfast

TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def twin_rnns(dtype=torch.float64, device="cpu", **kwargs):
    reference = torch.nn.RNN(**kwargs).to(device=device, dtype=dtype)
    fast = rnnfast.RNN(**kwargs).to(device=device, dtype=dtype)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def outputs_and_grads(module, input, hx):
    """Runs module, then backpropagates a loss that weighs every output and h_n entry differently, so a wrong
    gradient anywhere shows. Returns [output, h_n, d input, d hx, d each parameter]."""
    if isinstance(input, PackedSequence):
        data = input.data.detach().clone().requires_grad_(True)
        leaves = [data]
        input = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
    else:
        input = input.detach().clone().requires_grad_(True)
        leaves = [input]
    if hx is not None:
        hx = hx.detach().clone().requires_grad_(True)
        leaves.append(hx)
    output, h_n = module(input, hx) if hx is not None else module(input)
    out_data = output.data if isinstance(output, PackedSequence) else output
    gen = torch.Generator(device=out_data.device).manual_seed(1)
    w_out = torch.randn(out_data.shape, generator=gen, dtype=out_data.dtype, device=out_data.device)
    w_h = torch.randn(h_n.shape, generator=gen, dtype=h_n.dtype, device=h_n.device)
    loss = (out_data * w_out).sum() + (h_n * w_h).sum()
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, leaves + params)
    return [out_data.detach(), h_n.detach(), *grads]


def assert_twins_agree(reference, fast, input, hx=None, **tolerance):
    dtype = next(reference.parameters()).dtype
    tolerance = tolerance or TOLERANCE[dtype]
    names = ["output", "h_n", "grad input"] + (["grad hx"] if hx is not None else [])
    names += ["grad " + n for n, _ in reference.named_parameters()]
    expected = outputs_and_grads(reference, input, hx)
    got = outputs_and_grads(fast, input, hx)
    for name, e, g in zip(names, expected, got, strict=True):
        torch.testing.assert_close(g, e, msg=lambda m, name=name: f"{name}: {m}", **tolerance)
