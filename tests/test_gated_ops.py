"""The LSTM and GRU layer ops on their own: gradcheck in float64, torch.library.opcheck, and the C++ argument
checks."""

import pytest
import torch

import rnnfast  # noqa: F401  (registers the ops)

ops = torch.ops.rnnfast


def lstm_args(T=4, B=3, I=2, H=3, D=1, P=None, bias=True, batch_sizes=None, dtype=torch.float64,
              requires_grad=False):  # fmt: skip
    """lstm_layer_forward's arguments: P is proj_size (None: no projection, h of width H)."""
    make = lambda *shape: torch.randn(*shape, dtype=dtype, requires_grad=requires_grad)  # noqa: E731
    width = H if P is None else P
    return (make(T, B, I), make(D, B, width), make(D, B, H), make(D, 4 * H, I), make(D, 4 * H, width),
            make(D, 4 * H) if bias else None, make(D, width, H) if P is not None else None, batch_sizes)  # fmt: skip


def gru_args(T=4, B=3, I=2, H=3, D=1, bias=True, batch_sizes=None, dtype=torch.float64, requires_grad=False):
    make = lambda *shape: torch.randn(*shape, dtype=dtype, requires_grad=requires_grad)  # noqa: E731
    return (make(T, B, I), make(D, B, H), make(D, 3 * H, I), make(D, 3 * H, H), make(D, 3 * H) if bias else None,
            make(D, 3 * H) if bias else None, batch_sizes)  # fmt: skip


CASES = {
    "uni": dict(D=1),
    "bi": dict(D=2),
    "no-bias": dict(D=2, bias=False),
    "packed-bi": dict(D=2, B=3, T=4, batch_sizes=torch.tensor([3, 3, 2, 1])),
    "T1-B1-H1": dict(T=1, B=1, H=1, D=1),
}
LSTM_CASES = {**CASES, "proj-bi": dict(D=2, H=4, P=2), "proj-packed": dict(D=2, H=3, P=1,
                                                                          batch_sizes=torch.tensor([3, 2, 2, 1]))}


@pytest.mark.parametrize("case", LSTM_CASES.values(), ids=LSTM_CASES.keys())
def test_lstm_forward_op_passes_gradcheck(case):
    args = lstm_args(requires_grad=True, **case)
    # The workspace is an implementation detail, not a differentiable output.
    forward = lambda *a: ops.lstm_layer_forward(*a)[:3]  # noqa: E731
    torch.autograd.gradcheck(forward, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_gru_forward_op_passes_gradcheck(case):
    args = gru_args(requires_grad=True, **case)
    forward = lambda *a: ops.gru_layer_forward(*a)[:2]  # noqa: E731
    torch.autograd.gradcheck(forward, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", LSTM_CASES.values(), ids=LSTM_CASES.keys())
def test_lstm_ops_pass_opcheck(case):
    torch.library.opcheck(ops.lstm_layer_forward.default, lstm_args(requires_grad=True, **case))
    args = lstm_args(**case)
    output, h_n, c_n, workspace = ops.lstm_layer_forward(*args)
    x, hx, cx, w_ih, w_hh, _, w_hr, batch_sizes = args
    backward_args = (torch.randn_like(output), torch.randn_like(h_n), torch.randn_like(c_n), x, hx, cx, w_ih, w_hh,
                     w_hr, output, workspace, batch_sizes)  # fmt: skip
    torch.library.opcheck(ops.lstm_layer_backward.default, backward_args)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_gru_ops_pass_opcheck(case):
    torch.library.opcheck(ops.gru_layer_forward.default, gru_args(requires_grad=True, **case))
    args = gru_args(**case)
    output, h_n, workspace = ops.gru_layer_forward(*args)
    x, hx, w_ih, w_hh, _, _, batch_sizes = args
    backward_args = (torch.randn_like(output), torch.randn_like(h_n), x, hx, w_ih, w_hh, output, workspace,
                     batch_sizes)  # fmt: skip
    torch.library.opcheck(ops.gru_layer_backward.default, backward_args)


def gated_forward_cases():
    for case_id, case in LSTM_CASES.items():
        yield pytest.param(ops.lstm_layer_forward, lstm_args, case, id=f"LSTM-{case_id}")
    for case_id, case in CASES.items():
        yield pytest.param(ops.gru_layer_forward, gru_args, case, id=f"GRU-{case_id}")


@pytest.mark.parametrize("op,make_args,case", gated_forward_cases())
def test_forward_ops_without_a_saved_workspace_give_the_same_outputs(op, make_args, case):
    """Inference drops the workspace (each step overwrites one step's scratch): outputs and final states keep
    their bits, the workspace comes back empty, and the fake kernel agrees (opcheck)."""
    args = make_args(**case)
    saved, unsaved = op(*args), op(*args, False)
    assert unsaved[-1].shape == (0,)
    for with_workspace, without in zip(saved[:-1], unsaved[:-1]):
        assert torch.equal(with_workspace, without)
    torch.library.opcheck(op.default, (*args, False))


@pytest.mark.parametrize("op,make_args,name", [(ops.lstm_layer_forward, lstm_args, "lstm_layer_forward"),
                                               (ops.gru_layer_forward, gru_args, "gru_layer_forward")])  # fmt: skip
def test_differentiating_a_forward_without_a_saved_workspace_raises_a_clear_error(op, make_args, name):
    output = op(*make_args(requires_grad=True), False)[0]
    with pytest.raises(RuntimeError, match=f"rnnfast::{name} was called with save_workspace=False"):
        output.sum().backward()


def test_lstm_forward_op_hand_worked_example():
    # One unit, one input, all weights 0.5, no bias, h_0 = c_0 = 0, inputs 1 then 2, worked by hand:
    # every gate's pre-activation is 0.5 x_t + 0.5 h_{t-1}.
    x = torch.tensor([1.0, 2.0], dtype=torch.float64).view(2, 1, 1)
    zeros = torch.zeros(1, 1, 1, dtype=torch.float64)
    half = torch.full((1, 4, 1), 0.5, dtype=torch.float64)
    out, h_n, c_n, _ = ops.lstm_layer_forward(x, zeros, zeros, half, half, None, None, None)
    s, tanh = torch.sigmoid, torch.tanh
    a1 = torch.tensor(0.5, dtype=torch.float64)
    c1 = s(a1) * tanh(a1)
    h1 = s(a1) * tanh(c1)
    a2 = 1.0 + 0.5 * h1
    c2 = s(a2) * c1 + s(a2) * tanh(a2)
    h2 = s(a2) * tanh(c2)
    torch.testing.assert_close(out.view(2), torch.stack([h1, h2]), rtol=0, atol=1e-15)
    torch.testing.assert_close(h_n.view(()), h2, rtol=0, atol=0)
    torch.testing.assert_close(c_n.view(()), c2, rtol=0, atol=1e-15)


def test_gru_forward_op_hand_worked_example():
    # One unit, all weights 0.5, b_hn = 1 and the other biases 0, h_0 = 0, input 1: b_hn sits inside r * (...).
    x = torch.ones(1, 1, 1, dtype=torch.float64)
    half = torch.full((1, 3, 1), 0.5, dtype=torch.float64)
    bias_ih = torch.zeros(1, 3, dtype=torch.float64)
    bias_hh = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    out, h_n, _ = ops.gru_layer_forward(x, torch.zeros(1, 1, 1, dtype=torch.float64), half, half, bias_ih, bias_hh,
                                        None)  # fmt: skip
    r = z = torch.sigmoid(torch.tensor(0.5, dtype=torch.float64))
    n = torch.tanh(0.5 + r * 1.0)
    torch.testing.assert_close(h_n.view(()), (1 - z) * n, rtol=0, atol=1e-15)
    torch.testing.assert_close(out.view(()), h_n.view(()), rtol=0, atol=0)


BAD_LSTM_ARGS = {
    "2-D input": (lambda a: (a[0][0],) + a[1:], "expected input of shape"),
    "weight_ih rows not 4 gates": (lambda a: a[:3] + (a[3][:, :-1],) + a[4:], "expected weight_ih of shape"),
    "wrong hx shape": (lambda a: (a[0], a[1][:, :2]) + a[2:], "expected hx of shape"),
    "wrong cx shape": (lambda a: a[:2] + (a[2][:, :, :2],) + a[3:], "expected cx of shape"),
    "wrong weight_hh": (lambda a: a[:4] + (a[4][:, :, :2],) + a[5:], "expected weight_hh of shape"),
    "cx dtype": (lambda a: a[:2] + (a[2].float(),) + a[3:], "expected cx of dtype"),
    "integer input": (lambda a: (a[0].long(),) + a[1:], "floating-point input"),
    "bias shape": (lambda a: a[:5] + (a[5][:, :3],) + a[6:], "expected bias of shape"),
    "weight_hr of another hidden size": (lambda a: a[:6] + (torch.randn(1, 3, 2, dtype=torch.float64),) + a[7:],
                                         "expected weight_hr of shape"),  # fmt: skip
    "weight_hr narrower than weight_hh": (lambda a: a[:6] + (torch.randn(1, 2, 3, dtype=torch.float64),) + a[7:],
                                          "expected weight_hh of shape"),  # fmt: skip
    "batch_sizes increasing": (lambda a: a[:7] + (torch.tensor([3, 2, 3, 1]),), "never increase"),
}


@pytest.mark.parametrize("make_bad,message", BAD_LSTM_ARGS.values(), ids=BAD_LSTM_ARGS.keys())
def test_lstm_forward_op_rejects_bad_arguments_with_a_clear_error(make_bad, message):
    with pytest.raises(RuntimeError, match=message):
        ops.lstm_layer_forward(*make_bad(lstm_args()))
    # The op still works afterwards.
    assert torch.isfinite(ops.lstm_layer_forward(*lstm_args())[0]).all()


BAD_GRU_ARGS = {
    "2-D input": (lambda a: (a[0][0],) + a[1:], "expected input of shape"),
    "weight_ih rows not 3 gates": (lambda a: a[:2] + (a[2][:, :-1],) + a[3:], "expected weight_ih of shape"),
    "wrong hx shape": (lambda a: (a[0], a[1][:, :2]) + a[2:], "expected hx of shape"),
    "hx dtype": (lambda a: (a[0], a[1].float()) + a[2:], "expected hx of dtype"),
    "bias_ih without bias_hh": (lambda a: a[:5] + (None,) + a[6:], "both bias_ih and bias_hh, or neither"),
    "bias_hh shape": (lambda a: a[:5] + (a[5][:, :2],) + a[6:], "expected bias_hh of shape"),
    "batch_sizes length": (lambda a: a[:6] + (torch.tensor([3, 2]),), "batch_sizes of length"),
}


@pytest.mark.parametrize("make_bad,message", BAD_GRU_ARGS.values(), ids=BAD_GRU_ARGS.keys())
def test_gru_forward_op_rejects_bad_arguments_with_a_clear_error(make_bad, message):
    with pytest.raises(RuntimeError, match=message):
        ops.gru_layer_forward(*make_bad(gru_args()))
    assert torch.isfinite(ops.gru_layer_forward(*gru_args())[0]).all()


def test_backward_ops_reject_mismatched_gradients_and_workspaces():
    args = lstm_args()
    output, h_n, c_n, workspace = ops.lstm_layer_forward(*args)
    x, hx, cx, w_ih, w_hh, _, _, _ = args
    with pytest.raises(RuntimeError, match="expected grad_c_n of shape"):
        ops.lstm_layer_backward(output, h_n, c_n[:, :1], x, hx, cx, w_ih, w_hh, None, output, workspace, None)
    with pytest.raises(RuntimeError, match="expected workspace of shape"):
        ops.lstm_layer_backward(output, h_n, c_n, x, hx, cx, w_ih, w_hh, None, output, workspace[:, :, :-1], None)
    args = gru_args()
    output, h_n, workspace = ops.gru_layer_forward(*args)
    x, hx, w_ih, w_hh, _, _, _ = args
    with pytest.raises(RuntimeError, match="expected grad_output of shape"):
        ops.gru_layer_backward(output[:1], h_n, x, hx, w_ih, w_hh, output, workspace, None)
    with pytest.raises(RuntimeError, match="expected grad_h_n of dtype"):
        ops.gru_layer_backward(output, h_n.float(), x, hx, w_ih, w_hh, output, workspace, None)

