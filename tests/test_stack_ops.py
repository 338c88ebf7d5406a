"""The layer-stack ops (rnnfast::elman_rnn, lstm, gru; csrc/layer_stack.cpp) on their own: the same results as
torch's own stacks (torch._VF.rnn_tanh, lstm, gru: what torch.nn calls, with the same flat parameter list),
gradcheck in float64, torch.library.opcheck, argument errors, and the no-gradient path."""

import pytest
import torch

import rnnfast

ops = torch.ops.rnnfast

CASES = {
    "1-layer": dict(num_layers=1, bidirectional=False, bias=True),
    "2-layer-bi": dict(num_layers=2, bidirectional=True, bias=True),
    "3-layer-no-bias": dict(num_layers=3, bidirectional=False, bias=False),
}


def stack_args(cell, num_layers, bidirectional, bias, T=4, B=3, I=2, H=3, requires_grad=False):
    """A torch.nn module's flat parameters (float64) and matching input and states, time-major."""
    torch.manual_seed(0)
    module = getattr(torch.nn, cell)(I, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                                     dtype=torch.float64)  # fmt: skip
    params = [p.detach().clone().requires_grad_(requires_grad) for p in module._flat_weights]
    states = num_layers * (2 if bidirectional else 1)
    make = lambda *shape: torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)  # noqa: E731
    hx = [make(states, B, H)] + ([make(states, B, H)] if cell == "LSTM" else [])
    return make(T, B, I), hx, params


def call_ours(cell, x, hx, params, case, dropout=0.0, train=False):
    flags = (case["bias"], case["num_layers"], dropout, train, case["bidirectional"])
    if cell == "RNN":
        return ops.elman_rnn(x, hx[0], params, *flags, False, None)
    if cell == "LSTM":
        output, h_n, c_n = ops.lstm(x, hx[0], hx[1], params, *flags, False, None)
        return output, h_n, c_n
    return ops.gru(x, hx[0], params, *flags, None)


def call_torch(cell, x, hx, params, case, dropout=0.0, train=False):
    flags = (case["bias"], case["num_layers"], dropout, train, case["bidirectional"], False)
    if cell == "RNN":
        return torch._VF.rnn_tanh(x, hx[0], params, *flags)
    if cell == "LSTM":
        return torch._VF.lstm(x, tuple(hx), params, *flags)
    return torch._VF.gru(x, hx[0], params, *flags)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_stack_op_matches_torchs_own_stack(cell, case):
    x, hx, params = stack_args(cell, **case)
    for got, expected in zip(call_ours(cell, x, hx, params, case), call_torch(cell, x, hx, params, case),
                             strict=True):  # fmt: skip
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_stack_op_applies_dropout_between_layers_only_when_training(cell):
    case = CASES["2-layer-bi"]
    x, hx, params = stack_args(cell, **case)
    # Dropout with the same generator state drops the same units as torch's stack does.
    torch.manual_seed(1)
    ours = call_ours(cell, x, hx, params, case, dropout=0.5, train=True)
    torch.manual_seed(1)
    expected = call_torch(cell, x, hx, params, case, dropout=0.5, train=True)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    not_training = call_ours(cell, x, hx, params, case, dropout=0.5, train=False)
    for got, want in zip(not_training, call_ours(cell, x, hx, params, case), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_stack_op_passes_gradcheck_and_opcheck(cell, case):
    x, hx, params = stack_args(cell, T=3, B=2, H=2, requires_grad=True, **case)
    n_states = len(hx)

    def run(x, *rest):
        return call_ours(cell, x, list(rest[:n_states]), list(rest[n_states:]), case)

    torch.autograd.gradcheck(run, (x, *hx, *params), eps=1e-6, atol=1e-7)
    op = {"RNN": ops.elman_rnn, "LSTM": ops.lstm, "GRU": ops.gru}[cell].default
    flags = (case["bias"], case["num_layers"], 0.0, False, case["bidirectional"])
    extra = {"RNN": (False, None), "LSTM": (False, None), "GRU": (None,)}[cell]
    torch.library.opcheck(op, (x, *hx, params, *flags, *extra))


def test_stack_op_without_gradients_returns_plain_tensors():
    # No gradient needed (no_grad, or nothing requires grad): the layer ops run below autograd, and nothing is
    # recorded; with gradients needed the output carries a graph back to the parameters.
    case = CASES["2-layer-bi"]
    x, hx, params = stack_args("RNN", requires_grad=True, **case)
    with torch.no_grad():
        output, h_n = call_ours("RNN", x, hx, params, case)
    assert not output.requires_grad and output.grad_fn is None and not h_n.requires_grad
    output, h_n = call_ours("RNN", x, hx, params, case)
    assert output.requires_grad and h_n.requires_grad
    grads = torch.autograd.grad(output.sum(), params)
    assert all(g is not None for g in grads)


def test_stack_op_rejects_a_short_parameter_list():
    case = CASES["2-layer-bi"]
    x, hx, params = stack_args("RNN", **case)
    with pytest.raises(RuntimeError, match="expected 4 parameters per layer and direction, got 7 in all"):
        call_ours("RNN", x, hx, params[:7], case)
    with pytest.raises(RuntimeError, match="expected num_layers >= 1, got 0"):
        ops.elman_rnn(x, hx[0], params, True, 0, 0.0, False, True, False, None)
    with pytest.raises(RuntimeError, match=r"expected each state to be \(4, B, .\) for 2 layers of 2 directions"):
        call_ours("RNN", x, [hx[0][:2]], params, case)


def call_direct(cell, x, hx, params, case):
    """call_ours through the stack op's direct binding in rnnfast._C instead of torch.ops."""
    flags = (case["bias"], case["num_layers"], 0.0, False, case["bidirectional"])
    if cell == "RNN":
        return rnnfast._C.elman_rnn(x, hx[0], params, *flags, False, None)
    if cell == "LSTM":
        return rnnfast._C.lstm(x, hx[0], hx[1], params, *flags, False, None)
    return rnnfast._C.gru(x, hx[0], params, *flags, None)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_direct_binding_is_the_same_op_as_torch_ops(cell):
    # The binding calls the registered op through the dispatcher: the same outputs and, through the layer ops'
    # autograd rules, the same gradients, bit for bit; and the same argument errors.
    case = CASES["2-layer-bi"]
    x, hx, params = stack_args(cell, requires_grad=True, **case)
    inputs = (x, *hx, *params)
    via_ops = call_ours(cell, x, hx, params, case)
    direct = call_direct(cell, x, hx, params, case)
    for got, want in zip(direct, via_ops, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    grads_direct = torch.autograd.grad([out.sum() for out in direct], inputs)
    grads_ops = torch.autograd.grad([out.sum() for out in via_ops], inputs)
    for got, want in zip(grads_direct, grads_ops, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="expected 4 parameters per layer and direction, got 7 in all"):
        call_direct(cell, x, hx, params[:7], case)


class _RecordingMode(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_modules_call_the_stack_through_torch_ops_when_a_torch_function_mode_is_active(cell):
    # The direct binding would hide the call from a TorchFunctionMode (a tracer, a FLOP counter); with one active
    # the module goes through torch.ops, and the mode sees the stack op.
    torch.manual_seed(0)
    module = getattr(rnnfast, cell)(3, 4)
    x = torch.randn(5, 2, 3)
    expected = module(x)[0]
    mode = _RecordingMode()
    with mode:
        got = module(x)[0]
    stack_op = {"RNN": ops.elman_rnn, "LSTM": ops.lstm, "GRU": ops.gru}[cell]
    assert stack_op.default in mode.seen or stack_op in mode.seen
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
