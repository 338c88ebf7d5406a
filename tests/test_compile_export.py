"""rnnfast layers under torch.compile (fullgraph, no graph break) and torch.export, and the fake kernels' output
shapes for every input form."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfast
from rnn_pairs import outputs_and_grads as module_outputs_and_grads
from rnn_pairs import twin_modules


class Tagger(torch.nn.Module):
    """A model that uses rnnfast the way users do: RNN stack, cell, linear head."""

    def __init__(self, batch_first=True):
        super().__init__()
        self.rnn = rnnfast.RNN(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
        self.cell = rnnfast.RNNCell(8, 5, nonlinearity="relu")
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x, hx=None):
        output, h_n = self.rnn(x, hx)
        return self.head(self.cell(output[:, -1] if self.rnn.batch_first else output[-1])), h_n


def outputs_and_grads(model, *inputs):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    y, h_n = model(*leaves)
    loss = (y * torch.arange(y.numel()).view_as(y)).sum() + h_n.square().sum()
    wrt = [t for t in leaves if t is not None] + list(model.parameters())
    return [y.detach(), h_n.detach(), *torch.autograd.grad(loss, wrt)]


def assert_compiled_matches_eager(model, inputs, backend):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    # fullgraph=True raises on any graph break, so reaching the comparison means one graph.
    for got, expected in zip(outputs_and_grads(compiled, *inputs), outputs_and_grads(model, *inputs), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_compile_fullgraph_with_inductor_matches_eager_forward_and_gradients():
    torch.manual_seed(0)
    assert_compiled_matches_eager(Tagger(), (torch.randn(2, 6, 3), torch.randn(4, 2, 4)), "inductor")


@pytest.mark.parametrize("form", ["time_major", "unbatched", "no_hx"])
def test_compile_fullgraph_over_input_forms_matches_eager(form):
    torch.manual_seed(0)
    model = Tagger(batch_first=False)
    inputs = {
        "time_major": (torch.randn(6, 2, 3), torch.randn(4, 2, 4)),
        "unbatched": (torch.randn(6, 3), torch.randn(4, 4)),  # the cell then gets 1-D input too
        "no_hx": (torch.randn(6, 2, 3), None),
    }[form]
    assert_compiled_matches_eager(model, inputs, "aot_eager")


def test_compile_of_packed_input_matches_eager():
    # A PackedSequence's batch_sizes are read on the host (as torch.nn.RNN does), a data-dependent value that
    # Dynamo compiles around with a graph break, so this form is checked without fullgraph.
    class Packed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnnfast.RNN(3, 4, bidirectional=True, batch_first=True)

        def forward(self, x, lengths):
            output, h_n = self.rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
            return output.data, h_n

    torch.manual_seed(0)
    torch._dynamo.reset()
    model, x, lengths = Packed(), torch.randn(3, 5, 3), torch.tensor([2, 5, 4])
    for got, expected in zip(torch.compile(model)(x, lengths), model(x, lengths), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def export_with_dynamic_length(model, hx):
    """model (batch-first, 3 input features) exported on a (2, 6, 3) input with the sequence length dynamic.
    Returns the op names the program calls, and those after decomposition. The program must give model's
    results exactly at other lengths."""
    T = torch.export.Dim("T", min=2, max=4096)
    program = torch.export.export(model, (torch.randn(2, 6, 3), hx), dynamic_shapes={"x": {1: T}, "hx": None})
    for length in (6, 11):
        x = torch.randn(2, length, 3)
        for got, expected in zip(program.module()(x, hx), model(x, hx), strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    return targets, [str(node.target) for node in program.run_decompositions().graph.nodes]


def test_export_puts_the_rnnfast_ops_in_the_graph_and_runs_at_other_sequence_lengths():
    torch.manual_seed(0)
    targets, decomposed = export_with_dynamic_length(Tagger().eval(), torch.randn(4, 2, 4))
    # The two-layer RNN is one stack op (which decomposes into its layer ops), the cell one layer op.
    assert targets.count("rnnfast.elman_rnn.default") == 1
    assert targets.count("rnnfast.elman_layer_forward.default") == 1
    assert decomposed.count("rnnfast.elman_layer_forward.default") == 3


FORMS = {
    "time_major": dict(batch_first=False, shape=(7, 3, 5), hx=(4, 3, 6)),
    "batch_first": dict(batch_first=True, shape=(3, 7, 5), hx=None),
    "unbatched": dict(batch_first=False, shape=(7, 5), hx=(4, 6)),
    "unbatched_batch_first": dict(batch_first=True, shape=(7, 5), hx=None),
}


@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_fake_kernels_give_the_real_output_shapes(form):
    model = rnnfast.RNN(5, 6, num_layers=2, bidirectional=True, batch_first=form["batch_first"])
    real_x = torch.randn(form["shape"])
    real_hx = torch.randn(form["hx"]) if form["hx"] else None
    expected = model(real_x, real_hx)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake_x = mode.from_tensor(real_x)
        fake_hx = mode.from_tensor(real_hx) if real_hx is not None else None
        got = model(fake_x, fake_hx)
    assert [t.shape for t in got] == [t.shape for t in expected]
    assert [t.dtype for t in got] == [t.dtype for t in expected]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fake_kernel_gives_the_real_shapes_for_packed_batch_sizes(bidirectional):
    # The module pads a PackedSequence before the op and packs after it, so the op's fake kernel sees padded
    # (T, B, I) data with batch_sizes; its shapes must be the real kernel's.
    D, T, B, I, H = (2 if bidirectional else 1), 4, 3, 2, 5
    args = (torch.randn(T, B, I), torch.randn(D, B, H), torch.randn(D, H, I), torch.randn(D, H, H),
            torch.randn(D, H), torch.tensor([3, 2, 2, 1]), False)  # fmt: skip
    expected = torch.ops.rnnfast.elman_layer_forward(*args)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        got = torch.ops.rnnfast.elman_layer_forward(*[mode.from_tensor(a) if torch.is_tensor(a) and
                                                      a.is_floating_point() else a for a in args])  # fmt: skip
    assert [t.shape for t in got] == [t.shape for t in expected]


class GatedTagger(torch.nn.Module):
    """The gated layers as users stack them: an LSTM with a projection feeding a GRU, a linear head."""

    def __init__(self):
        super().__init__()
        self.lstm = rnnfast.LSTM(3, 5, proj_size=2, bidirectional=True, batch_first=True)
        self.gru = rnnfast.GRU(4, 3, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x, hx=None):
        output, _ = self.lstm(x)
        output, h_n = self.gru(output, hx)
        return self.head(output[:, -1]), h_n


def test_gated_layers_compile_fullgraph_with_inductor_matches_eager_forward_and_gradients():
    torch.manual_seed(0)
    assert_compiled_matches_eager(GatedTagger(), (torch.randn(2, 6, 3), torch.randn(2, 2, 3)), "inductor")


def test_export_puts_the_gated_stack_ops_in_the_graph_and_runs_at_other_sequence_lengths():
    torch.manual_seed(0)
    targets, decomposed = export_with_dynamic_length(GatedTagger().eval(), torch.randn(2, 2, 3))
    assert targets.count("rnnfast.lstm.default") == 1 and targets.count("rnnfast.gru.default") == 1
    # One LSTM layer and two GRU layers, each one layer op after decomposition.
    assert decomposed.count("rnnfast.lstm_layer_forward.default") == 1
    assert decomposed.count("rnnfast.gru_layer_forward.default") == 2


GATED_MODULES = {
    "LSTM": lambda batch_first: rnnfast.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=batch_first),
    "LSTM projected": lambda batch_first: rnnfast.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=4,
                                                       batch_first=batch_first),  # fmt: skip
    "GRU": lambda batch_first: rnnfast.GRU(5, 6, num_layers=2, bidirectional=True, batch_first=batch_first),
}


@pytest.mark.parametrize("make", GATED_MODULES.values(), ids=GATED_MODULES.keys())
@pytest.mark.parametrize("form", FORMS.values(), ids=FORMS.keys())
def test_gated_fake_kernels_give_the_real_output_shapes(make, form):
    model = make(form["batch_first"])
    real_x = torch.randn(form["shape"])
    expected = model(real_x)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        got = model(mode.from_tensor(real_x))
    flat = lambda out: [out[0], *(out[1] if isinstance(out[1], tuple) else (out[1],))]  # noqa: E731
    assert [t.shape for t in flat(got)] == [t.shape for t in flat(expected)]
    assert [t.dtype for t in flat(got)] == [t.dtype for t in flat(expected)]


def compile_keeping_graphs(model, dynamic=None):
    """model under torch.compile(fullgraph=True) with a backend that runs Dynamo's graphs as they are and keeps
    them, one per compilation."""
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    return torch.compile(model, backend=keep, fullgraph=True, dynamic=dynamic), graphs


STACK_OPS = {
    "RNN": (dict(num_layers=2, bidirectional=True), "rnnfast.elman_rnn"),
    "LSTM": (dict(num_layers=2, proj_size=2), "rnnfast.lstm"),
    "GRU": (dict(num_layers=2, batch_first=True), "rnnfast.gru"),
}


@pytest.mark.parametrize("name", STACK_OPS)
def test_compiled_layer_calls_its_fused_stack_op_not_the_differentiable_twin(name):
    """Outside torch.func transforms a compiled module runs the fused stack op, as eager does; the twins (a Python
    loop over time, traced step by step into the graph) are for transforms only (rnnfast/_ops.py,
    needs_differentiable_twin). Dynamo once answered that check's transform test with True everywhere."""
    options, op = STACK_OPS[name]
    compiled, graphs = compile_keeping_graphs(getattr(rnnfast, name)(3, 4, **options))
    compiled(torch.randn(6, 2, 3))
    targets = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert sum(op in target for target in targets) == 1, targets


@pytest.mark.parametrize("name", STACK_OPS)
def test_dynamic_compile_serves_other_lengths_and_batches_with_torch_nn_results(name):
    """torch.compile(dynamic=True): one graph for every sequence length and batch size from 2 on (torch
    specialises sizes 0 and 1), its outputs and gradients those of torch.nn. The stack's C++ once read a state's
    sizes as integers, fixing the batch size in the graph."""
    options, _ = STACK_OPS[name]
    reference, fast = twin_modules(name, input_size=3, hidden_size=4, **options)
    compiled, graphs = compile_keeping_graphs(fast, dynamic=True)
    for T, B in [(5, 2), (7, 3), (9, 4)]:
        x = torch.randn((B, T, 3) if fast.batch_first else (T, B, 3), dtype=torch.float64)
        # The compiled module holds fast's parameters (under _orig_mod.), in the same order.
        got, expected = module_outputs_and_grads(compiled, x, None), module_outputs_and_grads(reference, x, None)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)
    assert len(graphs) == 1
