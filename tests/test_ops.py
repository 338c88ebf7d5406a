"""The registered ops on their own: gradcheck in float64, torch.library.opcheck, and the C++ argument checks."""

import re

import pytest
import torch

import rnnfast  # noqa: F401  (registers the ops)

ops = torch.ops.rnnfast


def layer_args(T=4, B=3, I=2, H=3, D=1, bias=True, batch_sizes=None, dtype=torch.float64, requires_grad=False):
    make = lambda *shape: torch.randn(*shape, dtype=dtype, requires_grad=requires_grad)  # noqa: E731
    return (make(T, B, I), make(D, B, H), make(D, H, I), make(D, H, H), make(D, H) if bias else None, batch_sizes)


CASES = {
    "uni-tanh": dict(D=1, relu=False),
    "bi-relu": dict(D=2, relu=True),
    "no-bias": dict(D=2, bias=False, relu=False),
    "packed-bi": dict(D=2, B=3, T=4, batch_sizes=torch.tensor([3, 3, 2, 1]), relu=False),
    "T1-B1-H1": dict(T=1, B=1, H=1, D=1, relu=False),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_forward_op_passes_gradcheck(case):
    case = dict(case)
    relu = case.pop("relu")
    args = layer_args(requires_grad=True, **case)
    torch.autograd.gradcheck(lambda *a: ops.elman_layer_forward(*a, relu), args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_forward_op_passes_opcheck(case):
    case = dict(case)
    relu = case.pop("relu")
    torch.library.opcheck(ops.elman_layer_forward.default, (*layer_args(requires_grad=True, **case), relu))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_backward_op_passes_opcheck(case):
    case = dict(case)
    relu = case.pop("relu")
    args = layer_args(**case)
    output, h_n = ops.elman_layer_forward(*args, relu)
    x, hx, w_ih, w_hh, _, batch_sizes = args
    backward_args = (torch.randn_like(output), torch.randn_like(h_n), x, hx, w_ih, w_hh, output, batch_sizes, relu)
    torch.library.opcheck(ops.elman_layer_backward.default, backward_args)


def test_forward_op_hand_worked_example():
    # The source article's example: W_x = 0.5, W_h = 1.0, biases 0, h_0 = 0, inputs 1, 2, 3.
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(3, 1, 1)
    w = lambda v: torch.tensor(v, dtype=torch.float64).view(1, 1, 1)  # noqa: E731
    out, h_n = ops.elman_layer_forward(x, torch.zeros(1, 1, 1, dtype=torch.float64), w(0.5), w(1.0), None, None, False)
    h1 = torch.tanh(torch.tensor(0.5, dtype=torch.float64))
    h2 = torch.tanh(1.0 + h1)
    h3 = torch.tanh(1.5 + h2)
    torch.testing.assert_close(out.view(3), torch.stack([h1, h2, h3]), rtol=0, atol=1e-15)
    torch.testing.assert_close(h_n.view(()), h3, rtol=0, atol=0)


BAD_FORWARD_ARGS = {
    "2-D input": (lambda a: (a[0][0],) + a[1:], "expected input of shape"),
    "wrong hx shape": (lambda a: (a[0], a[1][:, :2]) + a[2:], "expected hx of shape"),
    "wrong weight_hh": (lambda a: a[:3] + (a[3][:, :2],) + a[4:], "expected weight_hh of shape"),
    "hx dtype": (lambda a: (a[0], a[1].float()) + a[2:], "expected hx of dtype"),
    "integer input": (lambda a: (a[0].long(),) + a[1:], "floating-point input"),
    "bias shape": (lambda a: a[:4] + (a[4][:, :1],) + a[5:], "expected bias of shape"),
    "batch_sizes length": (lambda a: a[:5] + (torch.tensor([3, 2]),), "batch_sizes of length"),
    "batch_sizes increasing": (lambda a: a[:5] + (torch.tensor([3, 2, 3, 1]),), "never increase"),
    "batch_sizes start": (lambda a: a[:5] + (torch.tensor([2, 2, 1, 1]),), "start at the batch size"),
    "batch_sizes dtype": (lambda a: a[:5] + (torch.tensor([3.0, 3, 2, 1]),), "1-D int64 CPU tensor"),
}


@pytest.mark.parametrize("make_bad,message", BAD_FORWARD_ARGS.values(), ids=BAD_FORWARD_ARGS.keys())
def test_forward_op_rejects_bad_arguments_with_a_clear_error(make_bad, message):
    with pytest.raises(RuntimeError, match=message):
        ops.elman_layer_forward(*make_bad(layer_args()), False)
    # The op still works afterwards.
    out, _ = ops.elman_layer_forward(*layer_args(), False)
    assert torch.isfinite(out).all()


def test_error_messages_carry_the_numbers_they_name():
    # The numbers are formatted by the C++ iostreams: with a second, uninitialised copy of libstdc++ linked into
    # the extension (setup.py, shared_libstdcxx_link_args) they came out empty, or the process crashed.
    args = layer_args()
    with pytest.raises(RuntimeError, match=r"got 2-D input"):
        ops.elman_layer_forward(args[0][0], *args[1:], False)
    with pytest.raises(RuntimeError, match=re.escape("expected hx of shape [1, 3, 3], got [1, 2, 3]")):
        ops.elman_layer_forward(args[0], args[1][:, :2], *args[2:], False)


def test_backward_op_rejects_mismatched_gradients():
    args = layer_args()
    output, h_n = ops.elman_layer_forward(*args, False)
    x, hx, w_ih, w_hh, _, _ = args
    with pytest.raises(RuntimeError, match="expected grad_output of shape"):
        ops.elman_layer_backward(output[:1], h_n, x, hx, w_ih, w_hh, output, None, False)
    with pytest.raises(RuntimeError, match="expected grad_h_n of dtype"):
        ops.elman_layer_backward(output, h_n.float(), x, hx, w_ih, w_hh, output, None, False)


def test_backward_op_called_directly_on_tensors_that_need_grad_refuses_to_be_differentiated():
    args = layer_args()
    output, h_n = ops.elman_layer_forward(*args, False)
    x, hx, w_ih, w_hh, _, _ = args
    grad_output = torch.randn_like(output, requires_grad=True)
    grads = ops.elman_layer_backward(grad_output, h_n, x, hx, w_ih, w_hh, output, None, False)
    with pytest.raises(NotImplementedError, match="elman_layer_backward is not differentiable"):
        grads[2].sum().backward()


@pytest.mark.parametrize("N", [5, 12, 2], ids=["square", "gated-forward", "gated-backward"])
def test_recurrence_floor_computes_one_bare_product_per_step(N):
    h0, w = torch.randn(3, 5, dtype=torch.float64), torch.randn(N, 5, dtype=torch.float64)
    out = ops.recurrence_floor(h0, w, 4)
    torch.testing.assert_close(out, (h0 @ w.t()).expand(4, 3, N), rtol=1e-12, atol=1e-12)
    torch.library.opcheck(ops.recurrence_floor.default, (h0, w, 4))
    with pytest.raises(RuntimeError, match="expected h0 \\(B, H\\) and weight_hh \\(N, H\\)"):
        ops.recurrence_floor(h0, w[:, :4], 4)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_gated_backward_op_called_directly_on_tensors_that_need_grad_refuses_to_be_differentiated(name):
    # Gradients of gradients go through the forward op (test_double_backward.py), never the backward op.
    from test_gated_ops import gru_args, lstm_args

    args = (lstm_args if name == "LSTM" else gru_args)()
    forward = getattr(ops, f"{name.lower()}_layer_forward")
    outputs = forward(*args)
    grad_output = torch.randn_like(outputs[0], requires_grad=True)
    if name == "LSTM":
        x, hx, cx, w_ih, w_hh, _, w_hr, _ = args
        grads = ops.lstm_layer_backward(grad_output, outputs[1], outputs[2], x, hx, cx, w_ih, w_hh, w_hr, outputs[0],
                                        outputs[3], None)  # fmt: skip
    else:
        x, hx, w_ih, w_hh, _, _, _ = args
        grads = ops.gru_layer_backward(grad_output, outputs[1], x, hx, w_ih, w_hh, outputs[0], outputs[2], None)
    with pytest.raises(NotImplementedError, match=f"{name.lower()}_layer_backward is not differentiable"):
        grads[3].sum().backward()
