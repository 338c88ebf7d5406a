"""torch.func transforms (grad, vjp, jvp, jacrev, jacfwd, hessian, vmap) and forward-mode AD through the rnnfast
layers, cells and scans, against torch.nn's reverse-mode derivatives (float64) and the plain loops of
tests/reference.py; and the fused ops, called directly, refusing forward-mode AD rather than returning a zero
tangent."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfast
import rnnfast._ops
from reference import reference_linear_recurrence
from rnn_pairs import twin_modules

CLOSE = dict(rtol=1e-10, atol=1e-10)
T, B, I, H = 4, 2, 3, 3

LAYERS = [
    ("RNN", {}),
    ("RNN", dict(nonlinearity="relu", num_layers=2, bidirectional=True)),
    ("LSTM", dict(num_layers=2)),
    ("LSTM", dict(bidirectional=True, proj_size=2)),
    ("GRU", dict(num_layers=2, bidirectional=True)),
    ("GRU", dict(bias=False)),
]
LAYER_IDS = [f"{name}-{options}" for name, options in LAYERS]


def layer_pair(name, options):
    torch.manual_seed(0)
    return twin_modules(name, input_size=I, hidden_size=H, **options)


def output_of(module):
    """module's output as a function of its input (T, B, I)."""
    return lambda x: module(x)[0]


def reverse_mode_jacobian(module, x):
    """d output / d input by torch.autograd's reverse mode, (T, B, D*P, T, B, I)."""
    return torch.autograd.functional.jacobian(output_of(module), x)


def jacobian_times(jacobian, tangent):
    """The Jacobian (output shape + input shape) applied to a tangent of the input's shape."""
    output_shape = jacobian.shape[: jacobian.dim() - tangent.dim()]
    return (jacobian.reshape(output_shape.numel(), tangent.numel()) @ tangent.flatten()).view(output_shape)


@pytest.mark.parametrize("name,options", LAYERS, ids=LAYER_IDS)
def test_func_grad_of_parameters_equals_torch_nn(name, options):
    reference, fast = layer_pair(name, options)
    x = torch.randn(T, B, I, dtype=torch.float64)

    def loss(module):
        return lambda params: (functional_call(module, params, (x,))[0].sin()).sum()

    expected = torch.func.grad(loss(reference))(dict(reference.named_parameters()))
    got = torch.func.grad(loss(fast))(dict(fast.named_parameters()))
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], **CLOSE, msg=key)


@pytest.mark.parametrize("name,options", LAYERS, ids=LAYER_IDS)
def test_func_jvp_equals_reverse_mode_jacobian_of_torch_nn(name, options):
    # torch.nn.LSTM has no forward-mode rule on the CPU (oneDNN), so the reference is its reverse-mode Jacobian.
    reference, fast = layer_pair(name, options)
    x = torch.randn(T, B, I, dtype=torch.float64)
    tangent = torch.randn_like(x)
    primal, got = torch.func.jvp(output_of(fast), (x,), (tangent,))
    torch.testing.assert_close(primal, reference(x)[0], **CLOSE)
    torch.testing.assert_close(got, jacobian_times(reverse_mode_jacobian(reference, x), tangent), **CLOSE)


@pytest.mark.parametrize("name,options", LAYERS, ids=LAYER_IDS)
def test_jacfwd_and_jacrev_equal_torch_nn_jacobian(name, options):
    reference, fast = layer_pair(name, options)
    x = torch.randn(T, B, I, dtype=torch.float64)
    expected = reverse_mode_jacobian(reference, x)
    torch.testing.assert_close(torch.func.jacfwd(output_of(fast))(x), expected, **CLOSE)
    torch.testing.assert_close(torch.func.jacrev(output_of(fast))(x), expected, **CLOSE)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_forward_ad_tangents_of_input_and_state_equal_reverse_mode(name):
    reference, fast = layer_pair(name, dict(num_layers=2))
    x, tangent = torch.randn(T, B, I, dtype=torch.float64), torch.randn(T, B, I, dtype=torch.float64)
    shape = (2, B, H)
    h0 = torch.randn(shape, dtype=torch.float64)
    h0_tangent = torch.randn(shape, dtype=torch.float64)
    state = lambda h: (h, torch.zeros(shape, dtype=torch.float64)) if name == "LSTM" else h  # noqa: E731

    def output_from(module):
        return lambda x, h: module(x, state(h))[0]

    with fwAD.dual_level():
        output = fast(fwAD.make_dual(x, tangent), state(fwAD.make_dual(h0, h0_tangent)))[0]
        got = fwAD.unpack_dual(output).tangent
    jacobian_x, jacobian_h = torch.autograd.functional.jacobian(output_from(reference), (x, h0))
    torch.testing.assert_close(got, jacobian_times(jacobian_x, tangent) + jacobian_times(jacobian_h, h0_tangent),
                               **CLOSE)  # fmt: skip


def test_forward_ad_through_packed_sequence_equals_reverse_mode():
    reference, fast = layer_pair("GRU", dict(bidirectional=True))
    # Packed first: torch's pack_padded_sequence has no forward-mode rule itself.
    packed = pack_padded_sequence(torch.randn(T, B, I, dtype=torch.float64), [T, T - 2])
    tangent = torch.randn_like(packed.data)

    def data_of(module):
        return lambda data: module(packed._replace(data=data))[0].data

    with fwAD.dual_level():
        got = fwAD.unpack_dual(data_of(fast)(fwAD.make_dual(packed.data, tangent))).tangent
    expected = jacobian_times(torch.autograd.functional.jacobian(data_of(reference), packed.data), tangent)
    torch.testing.assert_close(got, expected, **CLOSE)


def test_rnn_hessian_equals_torch_nn():
    reference, fast = layer_pair("RNN", dict(num_layers=2))
    x = torch.randn(3, 1, I, dtype=torch.float64)

    def loss(module):
        return lambda x: module(x)[0].pow(3).sum()

    expected = torch.autograd.functional.hessian(loss(reference), x)
    torch.testing.assert_close(torch.func.hessian(loss(fast))(x), expected, **CLOSE)


@pytest.mark.parametrize("name", ["RNN", "LSTM"])
def test_compiled_func_grad_equals_torch_nn(name):
    # torch.compile traces the transform, and with it the twin; the fused ops' Function would fail there.
    reference, fast = layer_pair(name, {})
    x = torch.randn(T, B, I, dtype=torch.float64)

    def loss(module):
        return lambda x: module(x)[0].sin().sum()

    got = torch.compile(torch.func.grad(loss(fast)), backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(got, torch.func.grad(loss(reference))(x), **CLOSE)


@pytest.mark.parametrize("name,options", LAYERS, ids=LAYER_IDS)
def test_vmap_equals_a_loop_over_the_mapped_axis(name, options):
    # torch.nn's layers have no batching rule (aten::rnn_tanh, lstm, gru); rnnfast's twin maps like any ATen code.
    _, fast = layer_pair(name, options)
    xs = torch.randn(3, T, B, I, dtype=torch.float64)
    expected = torch.stack([fast(x)[0] for x in xs])
    torch.testing.assert_close(torch.func.vmap(output_of(fast))(xs), expected, **CLOSE)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_batched_backward_of_the_fused_ops_equals_torch_nn(name):
    # Outside a transform the fused ops run the forward; these vmap their backward over many output gradients.
    reference, fast = layer_pair(name, {})
    x = torch.randn(T, B, I, dtype=torch.float64)
    expected = reverse_mode_jacobian(reference, x)
    got = torch.autograd.functional.jacobian(output_of(fast), x, vectorize=True)
    torch.testing.assert_close(got, expected, **CLOSE)
    x.requires_grad_(True)
    output, reference_output = fast(x)[0], reference(x)[0]
    cotangents = torch.randn(3, *output.shape, dtype=torch.float64)
    (batched,) = torch.autograd.grad(output, x, cotangents, is_grads_batched=True)
    for k in range(3):
        (one,) = torch.autograd.grad(reference_output, x, cotangents[k], retain_graph=True)
        torch.testing.assert_close(batched[k], one, **CLOSE)


def test_per_sample_gradients_by_vmap_of_grad_equal_one_backward_per_sample():
    _, fast = layer_pair("LSTM", {})
    params = {k: v.detach() for k, v in fast.named_parameters()}
    xs = torch.randn(3, T, 1, I, dtype=torch.float64)

    def loss(params, x):
        return functional_call(fast, params, (x,))[0].square().sum()

    got = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, xs)
    for k, x in enumerate(xs):
        fast.zero_grad()
        fast(x)[0].square().sum().backward()
        for key, p in fast.named_parameters():
            torch.testing.assert_close(got[key][k], p.grad, **CLOSE, msg=f"sample {k}, {key}")


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_jvp_and_grad_equal_torch_nn(name):
    torch.manual_seed(0)
    reference, fast = twin_modules(name, input_size=I, hidden_size=H)
    x, tangent = torch.randn(B, I, dtype=torch.float64), torch.randn(B, I, dtype=torch.float64)

    def h_of(module):
        return lambda x: module(x)[0] if name == "LSTMCell" else module(x)

    expected = jacobian_times(torch.autograd.functional.jacobian(h_of(reference), x), tangent)
    torch.testing.assert_close(torch.func.jvp(h_of(fast), (x,), (tangent,))[1], expected, **CLOSE)
    grad = lambda module: torch.func.grad(lambda x: h_of(module)(x).sin().sum())(x)  # noqa: E731
    torch.testing.assert_close(grad(fast), grad(reference), **CLOSE)


def test_newton_mode_under_jvp_equals_torch_nn():
    reference, sequential = layer_pair("RNN", {})
    fast = rnnfast.RNN(I, H, mode="parallel").double()
    fast.load_state_dict(sequential.state_dict())
    x, tangent = torch.randn(T, B, I, dtype=torch.float64), torch.randn(T, B, I, dtype=torch.float64)
    expected = jacobian_times(reverse_mode_jacobian(reference, x), tangent)
    torch.testing.assert_close(torch.func.jvp(output_of(fast), (x,), (tangent,))[1], expected, **CLOSE)


@pytest.mark.parametrize("dense", [False, True], ids=["diagonal", "dense"])
def test_scans_under_transforms_equal_the_reference_loop(dense):
    from rnnfast.scan import dense_linear_recurrence, linear_recurrence

    scan = dense_linear_recurrence if dense else linear_recurrence
    coef = torch.rand((T, B, H, H) if dense else (T, B, H), dtype=torch.float64) * 0.5
    b, h0 = torch.randn(T, B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    tangents = [torch.randn_like(t) for t in (coef, b, h0)]
    _, got = torch.func.jvp(scan, (coef, b, h0), tuple(tangents))
    _, expected = torch.func.jvp(reference_linear_recurrence, (coef, b, h0), tuple(tangents))
    torch.testing.assert_close(got, expected, **CLOSE)
    loss = lambda f: lambda *args: f(*args).sin().sum()  # noqa: E731
    for g, e in zip(torch.func.grad(loss(scan), argnums=(0, 1, 2))(coef, b, h0),
                    torch.func.grad(loss(reference_linear_recurrence), argnums=(0, 1, 2))(coef, b, h0)):  # fmt: skip
        torch.testing.assert_close(g, e, **CLOSE)
    batched = torch.func.vmap(scan, in_dims=(None, 0, None))(coef, torch.stack([b, 2 * b]), h0)
    torch.testing.assert_close(batched, torch.stack([scan(coef, b, h0), scan(coef, 2 * b, h0)]), **CLOSE)


def test_scan_twin_refuses_the_shapes_the_fused_scan_refuses():
    from rnnfast.scan import linear_recurrence

    b, h0 = torch.randn(T, B, H), torch.randn(B, H)
    # Broadcasting would accept a of shape (T, 1, H); the fused op, and so its twin, must not.
    with pytest.raises(RuntimeError, match=r"expected a of shape \[4, 2, 3\], got \[4, 1, 3\]"):
        torch.func.jvp(lambda b: linear_recurrence(torch.rand(T, 1, H), b, h0), (b,), (b,))
    with pytest.raises(RuntimeError, match="expected h0 of dtype torch.float32, got torch.float64"):
        torch.func.grad(lambda b: linear_recurrence(torch.rand(T, B, H), b, h0.double()).sum())(b)


def test_min_gru_jvp_equals_reverse_mode_jacobian():
    torch.manual_seed(0)
    layer = rnnfast.MinGRU(I, H).double()
    x, tangent = torch.randn(T, B, I, dtype=torch.float64), torch.randn(T, B, I, dtype=torch.float64)
    expected = jacobian_times(torch.autograd.functional.jacobian(output_of(layer), x), tangent)
    torch.testing.assert_close(torch.func.jvp(output_of(layer), (x,), (tangent,))[1], expected, **CLOSE)


def test_fused_ops_serve_every_call_outside_transforms(monkeypatch):
    """The twins stand in only where the fused ops cannot: with the twins made to fail, ordinary training,
    inference and create_graph-free backward still work (even inside a dual level with no tangent in sight),
    and a transform reaches them."""

    def refuse(*args):
        raise AssertionError("a differentiable twin ran")

    monkeypatch.setattr(rnnfast._ops, "_LAYER_TWINS", dict.fromkeys(rnnfast._ops._LAYER_TWINS, refuse))
    for name in ("RNN", "LSTM", "GRU"):
        _, fast = layer_pair(name, dict(num_layers=2))
        x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
        fast(x)[0].sum().backward()
        with torch.no_grad():
            fast(x)
        with fwAD.dual_level():
            fast(x)
        with pytest.raises(AssertionError, match="a differentiable twin ran"):
            torch.func.jvp(output_of(fast), (x.detach(),), (torch.ones_like(x),))


def layer_op_arguments():
    """Each fused forward op's name and arguments for a small layer, float64."""
    x, h = torch.randn(T, B, I, dtype=torch.float64), torch.zeros(1, B, H, dtype=torch.float64)
    w = lambda rows, cols: torch.randn(1, rows, cols, dtype=torch.float64)  # noqa: E731
    a, b, h0 = torch.rand(T, B, H, dtype=torch.float64), torch.randn(T, B, H, dtype=torch.float64), h[0]
    return [
        ("elman_layer_forward", (x, h, w(H, I), w(H, H), None, None, False)),
        ("lstm_layer_forward", (x, h, h, w(4 * H, I), w(4 * H, H), None, None, None)),
        ("gru_layer_forward", (x, h, w(3 * H, I), w(3 * H, H), None, None, None)),
        ("linear_recurrence", (a, b, h0)),
        ("dense_linear_recurrence", (torch.rand(T, B, H, H, dtype=torch.float64), b, h0)),
    ]


@pytest.mark.parametrize("name,args", layer_op_arguments(), ids=[n for n, _ in layer_op_arguments()])
def test_fused_ops_called_directly_refuse_forward_mode_ad(name, args):
    # Nothing requires grad, so the op's reverse-mode autograd lets the call through: without the refusal its
    # outputs would carry no tangent, a zero derivative.
    op = getattr(torch.ops.rnnfast, name)
    tangent_arg = 0 if name.endswith("layer_forward") else 1  # the input x, or the scans' b
    message = f"rnnfast::{name} has no forward-mode derivative"

    def with_tangent_at(value):
        return [value if k == tangent_arg else arg for k, arg in enumerate(args)]

    with fwAD.dual_level(), pytest.raises(NotImplementedError, match=message):
        op(*with_tangent_at(fwAD.make_dual(args[tangent_arg], torch.ones_like(args[tangent_arg]))))
    with pytest.raises(NotImplementedError, match=message):
        torch.func.jvp(lambda t: op(*with_tangent_at(t)), (args[tangent_arg],), (torch.ones_like(args[tangent_arg]),))
    op(*args)  # and the op keeps working


def test_fused_backward_op_refuses_forward_mode_ad():
    x, h = torch.randn(T, B, I, dtype=torch.float64), torch.zeros(1, B, H, dtype=torch.float64)
    w_ih, w_hh = torch.randn(1, H, I, dtype=torch.float64), torch.randn(1, H, H, dtype=torch.float64)
    output, h_n = torch.ops.rnnfast.elman_layer_forward(x, h, w_ih, w_hh, None, None, False)
    grad_output = torch.randn_like(output)
    with fwAD.dual_level():
        dual = fwAD.make_dual(grad_output, torch.ones_like(grad_output))
        with pytest.raises(NotImplementedError, match="elman_layer_backward has no forward-mode"):
            torch.ops.rnnfast.elman_layer_backward(dual, torch.zeros_like(h_n), x, h, w_ih, w_hh, output, None, False)
