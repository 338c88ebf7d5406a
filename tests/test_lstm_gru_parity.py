"""rnnfast.LSTM and rnnfast.GRU give torch.nn.LSTM's and torch.nn.GRU's outputs, final states and every gradient
over the grid of layer options (LSTM's proj_size included), and agree with the plain-loop references."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence, pad_sequence

import rnnfast
from reference import reference_gated
from rnn_pairs import assert_cells_agree, assert_same_dropout_masks, assert_twins_agree, twin_modules

# (module name, constructor arguments beyond the grid's): the LSTM with and without a projection, and the GRU.
KINDS = {"LSTM": ("LSTM", {}), "LSTM-proj": ("LSTM", {"proj_size": 3}), "GRU": ("GRU", {})}

GRID = list(
    itertools.product(
        KINDS,
        [1, 2, 3],  # num_layers
        [False, True],  # bidirectional
        [False, True],  # batch_first
        [True, False],  # bias
        [True, False],  # hx given
    )
)


def initial_state(kind, num_states, batch, hidden_size, dtype, unbatched=False):
    """A random hx of the module's form: (h_0, c_0) for an LSTM (h_0 of width proj_size if any), h_0 for a GRU."""
    name, extra = KINDS[kind]
    batch_shape = () if unbatched else (batch,)
    h = torch.randn(num_states, *batch_shape, extra.get("proj_size", hidden_size), dtype=dtype)
    if name == "GRU":
        return h
    return h, torch.randn(num_states, *batch_shape, hidden_size, dtype=dtype)


def twins(kind, dtype=torch.float64, **kwargs):
    name, extra = KINDS[kind]
    return twin_modules(name, dtype, **extra, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,num_layers,bidirectional,batch_first,bias,with_hx", GRID)
def test_matches_torch_nn_over_option_grid(dtype, kind, num_layers, bidirectional, batch_first, bias, with_hx):
    T, B, I, H = 5, 3, 4, 6
    reference, fast = twins(kind, dtype, input_size=I, hidden_size=H, num_layers=num_layers, bias=bias,
                            batch_first=batch_first, bidirectional=bidirectional)  # fmt: skip
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    D = 2 if bidirectional else 1
    hx = initial_state(kind, num_layers * D, B, H, dtype) if with_hx else None
    assert_twins_agree(reference, fast, x, hx)


@pytest.mark.parametrize(
    "T,B,I,H", [(1, 3, 4, 5), (6, 1, 4, 5), (6, 3, 4, 1), (1, 1, 1, 1), (40, 2, 3, 7)], ids=lambda v: str(v)
)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_matches_torch_nn_at_edge_sizes(kind, T, B, I, H, bidirectional):
    reference, fast = twins(kind, input_size=I, hidden_size=H, num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    assert_twins_agree(reference, fast, torch.randn(T, B, I, dtype=torch.float64),
                       initial_state(kind, 2 * D, B, H, torch.float64))  # fmt: skip


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_long_sequences_projected_in_blocks_of_steps_match_torch_nn(kind, bidirectional):
    # The CPU loop computes the input projection a block of steps at a time, about 1 MiB of gates and at least 512
    # rows (csrc/cpu/gated.cpp): at B = 16, H = 64 in float64 a block is 32 LSTM or 42 GRU steps, so T = 70
    # crosses block boundaries in both directions and ends on a partial block. Training keeps the workspace;
    # inference (no_grad) overwrites one step's scratch instead.
    T, B, I, H = 70, 16, 5, 64
    reference, fast = twins(kind, input_size=I, hidden_size=H, bidirectional=bidirectional)
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert_twins_agree(reference, fast, x)
    with torch.no_grad():
        (out, hidden), (expected_out, expected_hidden) = fast(x), reference(x)
    torch.testing.assert_close(out, expected_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hidden, expected_hidden, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("proj_size", [1, 4])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_projection_sizes_match_torch_nn(proj_size, bidirectional):
    # proj_size 1 is the narrowest h; 4 of hidden 5 the widest torch.nn allows.
    reference, fast = twin_modules("LSTM", input_size=3, hidden_size=5, num_layers=2, proj_size=proj_size,
                                   bidirectional=bidirectional)  # fmt: skip
    D = 2 if bidirectional else 1
    hx = (torch.randn(2 * D, 4, proj_size, dtype=torch.float64), torch.randn(2 * D, 4, 5, dtype=torch.float64))
    assert_twins_agree(reference, fast, torch.randn(7, 4, 3, dtype=torch.float64), hx)


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input_matches_torch_nn(kind, with_hx, batch_first):
    reference, fast = twins(kind, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                            batch_first=batch_first)  # fmt: skip
    hx = initial_state(kind, 4, None, 4, torch.float64, unbatched=True) if with_hx else None
    x = torch.randn(7, 3, dtype=torch.float64)
    assert_twins_agree(reference, fast, x, hx)
    out, hidden = fast(x, hx)
    expected_out, expected_hidden = reference(x, hx)
    assert out.shape == expected_out.shape
    if kind == "GRU":
        assert hidden.shape == expected_hidden.shape == (4, 4)
    else:
        assert [s.shape for s in hidden] == [s.shape for s in expected_hidden]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (3, True)])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_sequences_with_unsorted_lengths_match_torch_nn(kind, dtype, num_layers, bidirectional, with_hx):
    lengths = [3, 7, 1, 5, 7, 2]
    packed = pack_sequence([torch.randn(n, 4, dtype=dtype) for n in lengths], enforce_sorted=False)
    reference, fast = twins(kind, dtype, input_size=4, hidden_size=5, num_layers=num_layers,
                            bidirectional=bidirectional)  # fmt: skip
    D = 2 if bidirectional else 1
    hx = initial_state(kind, num_layers * D, len(lengths), 5, dtype) if with_hx else None
    assert_twins_agree(reference, fast, packed, hx)


@pytest.mark.parametrize("kind", KINDS)
def test_packed_output_keeps_the_packing(kind):
    packed = pack_sequence([torch.randn(n, 2) for n in [2, 5, 3]], enforce_sorted=False)
    _, fast = twins(kind, torch.float32, input_size=2, hidden_size=4)
    out, _ = fast(packed)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert torch.equal(out.sorted_indices, packed.sorted_indices)
    assert torch.equal(out.unsorted_indices, packed.unsorted_indices)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_plain_python_reference_with_variable_lengths(kind, bidirectional):
    # Independent of torch.nn: a row-by-row Python loop of the cell's equations, each row running its own length.
    lengths = [4, 6, 1, 3]
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in lengths]
    name, extra = KINDS[kind]
    fast = getattr(rnnfast, name)(3, 5, num_layers=2, bidirectional=bidirectional, **extra).double()
    D = 2 if bidirectional else 1
    hx = initial_state(kind, 2 * D, len(lengths), 5, torch.float64)
    out, hidden = fast(pack_sequence(seqs, enforce_sorted=False), hx)
    expected_out, expected_hidden = reference_gated(fast, pad_sequence(seqs), hx, lengths)
    padded_out, _ = pad_packed_sequence(out)
    torch.testing.assert_close(padded_out, expected_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hidden, expected_hidden, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_between_layers_draws_the_same_mask_as_torch_nn(kind):
    reference, fast = twins(kind, input_size=3, hidden_size=8, num_layers=3, dropout=0.5)
    assert_same_dropout_masks(reference, fast)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_is_off_in_eval_mode(kind):
    reference, fast = twins(kind, input_size=3, hidden_size=8, num_layers=2, dropout=0.5)
    reference.eval(), fast.eval()
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast(x), fast(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch_gives_empty_output_like_torch_nn(kind):
    reference, fast = twins(kind, input_size=3, hidden_size=4)
    x = torch.randn(5, 0, 3, dtype=torch.float64)
    torch.testing.assert_close(fast(x), reference(x))



def test_backward_is_exact_when_the_kept_buffer_is_reused_across_cells_sizes_and_dtypes():
    # The CPU backwards take dL/dgates (the GRU's two buffers as one) from the per-thread buffer that the Elman
    # backward also keeps between calls (csrc/cpu/reused_buffer.h): a large call, then smaller ones of other cells,
    # dtypes, directions and layer counts (several backward calls per step), packed ones whose finished rows must
    # be zeroed over what the buffer held, then the large one again, each against torch.nn.
    cases = [("GRU", torch.float64, 40, 8, 16, 1, False), ("LSTM", torch.float32, 5, 3, 7, 2, True),
             ("RNN", torch.float64, 6, 2, 5, 2, False), ("LSTM-proj", torch.float64, 9, 4, 33, 1, True),
             ("GRU", torch.float32, 7, 5, 3, 3, True), ("LSTM", torch.float64, None, 6, 16, 2, True),
             ("GRU", torch.float64, None, 6, 16, 1, True), ("GRU", torch.float64, 40, 8, 16, 1, False)]  # fmt: skip
    for kind, dtype, T, B, H, layers, bidirectional in cases:
        options = dict(input_size=3, hidden_size=H, num_layers=layers, bidirectional=bidirectional)
        reference, fast = twin_modules("RNN", dtype, **options) if kind == "RNN" else twins(kind, dtype, **options)
        if T is None:  # packed, lengths 1-9
            x = pack_sequence([torch.randn(n, 3, dtype=dtype) for n in [3, 9, 1, 5, 9, 2][:B]], enforce_sorted=False)
        else:
            x = torch.randn(T, B, 3, dtype=dtype)
        assert_twins_agree(reference, fast, x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("used", ["output", "h_n", "c_n"])
def test_gradients_when_the_loss_uses_only_some_outputs_match_torch_nn(kind, used):
    # Autograd hands the backward None for outputs the loss does not use (the kernels' workspace always, and here
    # some of output, h_n, c_n), which the backward must read as zeros.
    name, extra = KINDS[kind]
    if used == "c_n" and name != "LSTM":
        pytest.skip("only the LSTM has c_n")
    reference, fast = twin_modules(name, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, **extra)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    grads = []
    for module in (reference, fast):
        output, state = module(x)
        h_n, c_n = state if name == "LSTM" else (state, None)
        chosen = {"output": output, "h_n": h_n, "c_n": c_n}[used]
        (chosen * torch.arange(chosen.numel(), dtype=chosen.dtype).view_as(chosen)).sum().backward()
        grads.append([p.grad for p in module.parameters()])
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)

@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_loads_into_torch_nn_and_back(kind):
    name, extra = KINDS[kind]
    fast = getattr(rnnfast, name)(3, 5, num_layers=2, bidirectional=True, **extra).double()
    reference = getattr(torch.nn, name)(3, 5, num_layers=2, bidirectional=True, **extra).double()
    reference.load_state_dict(fast.state_dict())
    assert list(reference.state_dict()) == list(fast.state_dict())
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-10, atol=1e-10)
    assert isinstance(fast, torch.nn.RNNBase) and fast.mode == name


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_cell_matches_torch_nn_cell(name, bias, dtype):
    reference, fast = twin_modules(name, dtype, input_size=4, hidden_size=5, bias=bias)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    state = lambda *shape: torch.randn(*shape, dtype=dtype)  # noqa: E731
    pair = name == "LSTMCell"
    for x, hx in [(state(3, 4), (state(3, 5), state(3, 5)) if pair else state(3, 5)),
                  (state(3, 4), None),
                  (state(4), (state(5), state(5)) if pair else state(5))]:  # fmt: skip
        assert_cells_agree(reference, fast, x, hx, **tol)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_traces_whole_under_torch_compile_fullgraph(kind):
    # The fake kernels and autograd registrations stand in while tracing; aot_eager runs the traced graphs.
    reference, fast = twins(kind, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = compiled(x)
    torch.testing.assert_close(out, reference(x)[0], rtol=1e-10, atol=1e-10)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected,) = torch.autograd.grad(reference(x)[0].sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-10)
