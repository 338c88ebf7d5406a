"""Gradients of gradients (create_graph=True) through rnnfast.RNN, LSTM and GRU: gradgradcheck in float64 over
the layer options, and second derivatives equal to torch.nn's."""

import itertools

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfast
from rnn_pairs import twin_modules, twin_rnns

OPTIONS = list(
    itertools.product(
        [1, 2],  # num_layers
        [False, True],  # bidirectional
        ["tanh", "relu"],
        [True, False],  # bias
    )
)


def as_function_of_tensors(module, names, batch_first, lengths, num_states=1):
    """module's forward as a function of (input, *states, *parameters), returning the output and the final states
    as plain tensors: (output, h_n), or (output, h_n, c_n) for an LSTM's two states."""

    def run(x, *tensors):
        states, params = tensors[:num_states], tensors[num_states:]
        hx = states[0] if num_states == 1 else tuple(states)
        input = pack_padded_sequence(x, lengths, enforce_sorted=False, batch_first=batch_first) if lengths else x
        output, hidden = functional_call(module, dict(zip(names, params, strict=True)), (input, hx))
        return (output.data if lengths else output), *(hidden if num_states > 1 else (hidden,))

    return run


@pytest.mark.parametrize("num_layers,bidirectional,nonlinearity,bias", OPTIONS)
@pytest.mark.parametrize("layout", ["padded", "batch_first", "packed"])
def test_rnn_passes_gradgradcheck(num_layers, bidirectional, nonlinearity, bias, layout):
    T, B, I, H = 3, 2, 2, 2
    fast = rnnfast.RNN(I, H, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
                       bidirectional=bidirectional, batch_first=layout == "batch_first").double()  # fmt: skip
    names = [n for n, _ in fast.named_parameters()]
    # relu has a kink at 0: keep pre-activations away from it, so finite differences see one side only.
    params = [(p.detach() + 0.1).requires_grad_(True) for p in fast.parameters()]
    D = 2 if bidirectional else 1
    x = torch.rand((B, T, I) if layout == "batch_first" else (T, B, I), dtype=torch.float64, requires_grad=True)
    hx = torch.rand(num_layers * D, B, H, dtype=torch.float64, requires_grad=True)
    lengths = [T, T - 1] if layout == "packed" else None
    run = as_function_of_tensors(fast, names, batch_first=layout == "batch_first", lengths=lengths)
    assert torch.autograd.gradgradcheck(run, (x, hx, *params), eps=1e-6, atol=1e-6)
    # The differentiable first derivatives equal the fused backward's.
    output, h_n = run(x, hx, *params)
    loss = output.square().sum() + h_n.sum()
    differentiable = torch.autograd.grad(loss, (x, hx, *params), create_graph=True)
    fused = torch.autograd.grad(loss, (x, hx, *params))
    for a, b in zip(differentiable, fused, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradient_penalty_matches_torch_nn(nonlinearity):
    # A gradient penalty, as in WGAN-GP: the norm of d(output)/d(input), differentiated again for the weights.
    reference, fast = twin_rnns(input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                                nonlinearity=nonlinearity)  # fmt: skip
    x = torch.randn(6, 2, 3, dtype=torch.float64)

    def penalty_grads(module):
        input = x.clone().requires_grad_(True)
        output, h_n = module(input)
        (grad_input,) = torch.autograd.grad(output.sum() + h_n.square().sum(), input, create_graph=True)
        penalty = grad_input.square().sum()
        return torch.autograd.grad(penalty, list(module.parameters()))

    for got, expected in zip(penalty_grads(fast), penalty_grads(reference), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_first_derivatives_without_create_graph_still_use_the_fused_backward(monkeypatch):
    import rnnfast._ops as registered

    def refuse(*args):
        raise AssertionError("the differentiable recomputation ran without create_graph")

    monkeypatch.setattr(registered, "elman_layer_differentiable", refuse)
    fast = rnnfast.RNN(3, 4).double()
    fast(torch.randn(5, 2, 3, dtype=torch.float64))[0].sum().backward()
    assert fast.weight_hh_l0.grad is not None


# The gated layers: the LSTM with and without a projection, and the GRU.
GATED = {"LSTM": ("LSTM", {}), "LSTM-proj": ("LSTM", {"proj_size": 1}), "GRU": ("GRU", {})}


@pytest.mark.parametrize("kind", GATED)
@pytest.mark.parametrize("num_layers,bidirectional,bias", [(1, False, True), (2, True, True), (1, True, False)])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_gated_layers_pass_gradgradcheck(kind, num_layers, bidirectional, bias, layout):
    name, extra = GATED[kind]
    T, B, I, H = 3, 2, 2, 2
    fast = getattr(rnnfast, name)(I, H, num_layers=num_layers, bias=bias, bidirectional=bidirectional,
                                  **extra).double()  # fmt: skip
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in fast.parameters()]
    D, width = 2 if bidirectional else 1, extra.get("proj_size", H)
    x = torch.rand(T, B, I, dtype=torch.float64, requires_grad=True)
    states = [torch.rand(num_layers * D, B, width, dtype=torch.float64, requires_grad=True)]
    if name == "LSTM":
        states.append(torch.rand(num_layers * D, B, H, dtype=torch.float64, requires_grad=True))
    lengths = [T, T - 1] if layout == "packed" else None
    run = as_function_of_tensors(fast, names, batch_first=False, lengths=lengths, num_states=len(states))
    assert torch.autograd.gradgradcheck(run, (x, *states, *params), eps=1e-6, atol=1e-6)
    # The differentiable first derivatives equal the fused backward's.
    outputs = run(x, *states, *params)
    loss = outputs[0].square().sum() + sum(state.sum() for state in outputs[1:])
    differentiable = torch.autograd.grad(loss, (x, *states, *params), create_graph=True)
    fused = torch.autograd.grad(loss, (x, *states, *params))
    for a, b in zip(differentiable, fused, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", GATED)
def test_gated_gradient_penalty_matches_torch_nn(kind):
    name, extra = GATED[kind]
    reference, fast = twin_modules(name, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, **extra)
    x = torch.randn(6, 2, 3, dtype=torch.float64)

    def penalty_grads(module):
        input = x.clone().requires_grad_(True)
        output, hidden = module(input)
        h_n = hidden[0] if name == "LSTM" else hidden
        (grad_input,) = torch.autograd.grad(output.sum() + h_n.square().sum(), input, create_graph=True)
        penalty = grad_input.square().sum()
        return torch.autograd.grad(penalty, list(module.parameters()))

    for got, expected in zip(penalty_grads(fast), penalty_grads(reference), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_gated_first_derivatives_without_create_graph_still_use_the_fused_backward(monkeypatch, name):
    import rnnfast._ops as registered

    def refuse(*args):
        raise AssertionError("the differentiable recomputation ran without create_graph")

    monkeypatch.setattr(registered, f"{name.lower()}_layer_differentiable", refuse)
    fast = getattr(rnnfast, name)(3, 4).double()
    fast(torch.randn(5, 2, 3, dtype=torch.float64))[0].sum().backward()
    assert fast.weight_hh_l0.grad is not None
