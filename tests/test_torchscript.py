"""TorchScript: torch.jit.trace of every rnnfast module records its rnnfast ops and passes trace's own checks, and
the traced module, saved and loaded or not, gives torch.nn's outputs and gradients at other batch sizes and
sequence lengths, and a model holding it scripts; torch.jit.script, which cannot compile the modules' Python
forward, raises an error that names the module and what works instead (rnnfast/_torchscript.py), and leaves the
module working."""

import io

import pytest
import torch

import rnnfast
from reference import reference_min_gru
from rnn_pairs import assert_cells_agree, assert_twins_agree, twin_modules

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch deprecates TorchScript

LAYERS = {
    "RNN": dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
    "LSTM": dict(input_size=3, hidden_size=4, num_layers=2, proj_size=2),
    "GRU": dict(input_size=3, hidden_size=4, num_layers=2, batch_first=True),
}
CELLS = ["RNNCell", "LSTMCell", "GRUCell"]


def saved_and_loaded(traced):
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def rnnfast_ops_in(traced):
    return [node.kind() for node in traced.inlined_graph.nodes() if node.kind().startswith("rnnfast::")]


def cell_state(name, batch, hidden):
    if name == "LSTMCell":
        return (torch.randn(batch, hidden, dtype=torch.float64), torch.randn(batch, hidden, dtype=torch.float64))
    return torch.randn(batch, hidden, dtype=torch.float64)


@pytest.mark.parametrize("save", [False, True], ids=["traced", "saved_and_loaded"])
@pytest.mark.parametrize("name", LAYERS)
def test_traced_layer_matches_torch_nn_at_other_shapes(name, save):
    reference, fast = twin_modules(name, **LAYERS[name])
    traced = torch.jit.trace(fast, (torch.randn(5, 2, 3, dtype=torch.float64),))  # trace's checks on by default
    assert rnnfast_ops_in(traced) == [f"rnnfast::{name.lower() if name != 'RNN' else 'elman_rnn'}"]
    if save:
        traced = saved_and_loaded(traced)
    assert_twins_agree(reference, traced, torch.randn(7, 3, 3, dtype=torch.float64))


@pytest.mark.parametrize("save", [False, True], ids=["traced", "saved_and_loaded"])
@pytest.mark.parametrize("name", CELLS)
def test_traced_cell_matches_torch_nn_at_other_batch_sizes(name, save):
    """Trace's check reruns the cell without gradients; the cell must call its op the same way there
    (rnnfast/_ops.py, call_op)."""
    reference, fast = twin_modules(name, input_size=3, hidden_size=4)
    traced = torch.jit.trace(fast, (torch.randn(2, 3, dtype=torch.float64), cell_state(name, 2, 4)))
    assert len(rnnfast_ops_in(traced)) == 1
    if save:
        traced = saved_and_loaded(traced)
    x = torch.randn(5, 3, dtype=torch.float64)
    assert_cells_agree(reference, traced, x, cell_state(name, 5, 4), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("save", [False, True], ids=["traced", "saved_and_loaded"])
def test_traced_min_gru_matches_the_plain_loop_and_its_gradients(save):
    module = rnnfast.MinGRU(3, 4).double()
    traced = torch.jit.trace(module, (torch.randn(5, 2, 3, dtype=torch.float64),))
    assert "rnnfast::linear_recurrence" in rnnfast_ops_in(traced)
    if save:
        traced = saved_and_loaded(traced)
    x = torch.randn(7, 3, 3, dtype=torch.float64)
    weight, bias = module.input_projection.weight, module.input_projection.bias
    output, h_n = traced(x)
    expected = reference_min_gru(x, x.new_zeros(3, 4), weight, bias)
    torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_n, expected[-1:], rtol=1e-10, atol=1e-10)
    traced_parameters = dict(traced.named_parameters())
    got = torch.autograd.grad((output * expected.detach().cos()).sum(), [traced_parameters[n] for n in
                              ("input_projection.weight", "input_projection.bias")])  # fmt: skip
    wanted = torch.autograd.grad((expected * expected.detach().cos()).sum(), [weight, bias])
    for g, w in zip(got, wanted, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


class BranchingModel(torch.nn.Module):
    """The article's many-to-one model (a recurrent layer, a Linear head on the last output) with data-dependent
    control flow, which only torch.jit.script keeps: a trace would bake in one branch."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.head = torch.nn.Linear((rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1), 1)

    def forward(self, x):
        output, _ = self.rnn(x)
        last = self.head(output[-1])
        if bool(x.sum() > 0):
            return last
        return -last


@pytest.mark.parametrize("name", LAYERS)
def test_a_model_holding_the_traced_layer_scripts_saves_loads_and_matches_torch_nn(name):
    """The way to TorchScript that rnnfast's script error names: the layer replaced by its trace, the model
    scripted around it; both branches of the model's control flow, after torch.jit.save and load, against the
    same model on torch.nn."""
    reference_rnn, fast_rnn = twin_modules(name, **LAYERS[name])
    reference = BranchingModel(reference_rnn).double()
    model = BranchingModel(fast_rnn).double()
    model.head.load_state_dict(reference.head.state_dict())
    model.rnn = torch.jit.trace(model.rnn, (torch.randn(5, 2, 3, dtype=torch.float64),))
    loaded = saved_and_loaded(torch.jit.script(model))
    assert "rnnfast::" in str(loaded.rnn.inlined_graph)
    branches = set()
    for seed in range(8):
        x = torch.randn(7, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        expected = reference(x)
        torch.testing.assert_close(loaded(x), expected, rtol=1e-10, atol=1e-10)
        branches.add(bool(x.sum() > 0))
    assert branches == {True, False}, "the inputs should take both branches"


class Holder(torch.nn.Module):
    """A model holding an rnnfast module, as a converted model does: scripting it meets the module."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


SCRIPTED = {
    **{name: (lambda name=name: twin_modules(name, **LAYERS[name]), lambda: torch.randn(5, 2, 3)) for name in LAYERS},
    **{name: (lambda name=name: twin_modules(name, input_size=3, hidden_size=4), lambda: torch.randn(2, 3))
       for name in CELLS},
}


@pytest.mark.parametrize("held", [False, True], ids=["module", "inside_a_model"])
@pytest.mark.parametrize("make,make_input", SCRIPTED.values(), ids=SCRIPTED.keys())
def test_script_raises_a_clear_error_and_the_module_keeps_working(make, make_input, held):
    reference, fast = make()
    name = type(fast).__name__
    x = make_input().double()
    with pytest.raises(NotImplementedError, match=f"torch.jit.script cannot compile rnnfast.{name}: .* "
                       "torch.jit.trace records .* the model scripts"):  # fmt: skip
        torch.jit.script(Holder(fast) if held else fast)
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-10, atol=1e-10)


def test_script_of_min_gru_raises_a_clear_error_and_it_keeps_working():
    module = rnnfast.MinGRU(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="torch.jit.script cannot compile rnnfast.MinGRU"):
        torch.jit.script(module)
    expected = reference_min_gru(x, x.new_zeros(2, 4), module.input_projection.weight, module.input_projection.bias)
    torch.testing.assert_close(module(x)[0], expected, rtol=1e-10, atol=1e-10)
