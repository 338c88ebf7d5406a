"""rnnfast.RNN gives torch.nn.RNN's outputs, h_n and every gradient, over the grid of layer options."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_sequence

import rnnfast
from reference import reference_rnn
from rnn_pairs import assert_cells_agree, assert_same_dropout_masks, assert_twins_agree, twin_rnns

GRID = list(
    itertools.product(
        [1, 2, 3],  # num_layers
        [False, True],  # bidirectional
        [False, True],  # batch_first
        ["tanh", "relu"],
        [True, False],  # bias
        [True, False],  # hx given
    )
)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,nonlinearity,bias,with_hx", GRID)
def test_matches_torch_nn_over_option_grid(dtype, num_layers, bidirectional, batch_first, nonlinearity, bias,
                                           with_hx):  # fmt: skip
    T, B, I, H = 5, 3, 4, 6
    reference, fast = twin_rnns(dtype, input_size=I, hidden_size=H, num_layers=num_layers, nonlinearity=nonlinearity,
                                bias=bias, batch_first=batch_first, bidirectional=bidirectional)  # fmt: skip
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    D = 2 if bidirectional else 1
    hx = torch.randn(num_layers * D, B, H, dtype=dtype) if with_hx else None
    assert_twins_agree(reference, fast, x, hx)


@pytest.mark.parametrize(
    "T,B,I,H", [(1, 3, 4, 5), (6, 1, 4, 5), (6, 3, 4, 1), (1, 1, 1, 1), (40, 2, 3, 7)], ids=lambda v: str(v)
)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_torch_nn_at_edge_sizes(T, B, I, H, bidirectional):
    reference, fast = twin_rnns(input_size=I, hidden_size=H, num_layers=2, bidirectional=bidirectional)
    assert_twins_agree(reference, fast, torch.randn(T, B, I, dtype=torch.float64),
                       torch.randn(2 * (2 if bidirectional else 1), B, H, dtype=torch.float64))  # fmt: skip


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_matches_torch_nn(with_hx, batch_first):
    reference, fast = twin_rnns(input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                                batch_first=batch_first)  # fmt: skip
    hx = torch.randn(4, 4, dtype=torch.float64) if with_hx else None
    assert_twins_agree(reference, fast, torch.randn(7, 3, dtype=torch.float64), hx)
    out, h_n = fast(torch.randn(7, 3, dtype=torch.float64), hx)
    assert out.shape == (7, 8) and h_n.shape == (4, 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (3, True)])
@pytest.mark.parametrize("with_hx", [False, True])
def test_packed_sequences_with_unsorted_lengths_match_torch_nn(dtype, num_layers, bidirectional, with_hx):
    lengths = [3, 7, 1, 5, 7, 2]
    packed = pack_sequence([torch.randn(n, 4, dtype=dtype) for n in lengths], enforce_sorted=False)
    reference, fast = twin_rnns(dtype, input_size=4, hidden_size=5, num_layers=num_layers,
                                bidirectional=bidirectional)  # fmt: skip
    D = 2 if bidirectional else 1
    hx = torch.randn(num_layers * D, len(lengths), 5, dtype=dtype) if with_hx else None
    assert_twins_agree(reference, fast, packed, hx)


def test_packed_output_keeps_the_packing():
    lengths = [2, 5, 3]
    packed = pack_sequence([torch.randn(n, 2) for n in lengths], enforce_sorted=False)
    out, _ = rnnfast.RNN(2, 3)(packed)
    assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert torch.equal(out.sorted_indices, packed.sorted_indices)
    assert torch.equal(out.unsorted_indices, packed.unsorted_indices)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_matches_plain_python_reference_with_variable_lengths(bidirectional, nonlinearity):
    # Independent of torch.nn: a row-by-row Python loop, each row running its own length.
    lengths = [4, 6, 1, 3]
    seqs = [torch.randn(n, 3, dtype=torch.float64) for n in lengths]
    fast = rnnfast.RNN(3, 5, num_layers=2, bidirectional=bidirectional, nonlinearity=nonlinearity).double()
    D = 2 if bidirectional else 1
    hx = torch.randn(2 * D, len(lengths), 5, dtype=torch.float64)
    out, h_n = fast(pack_sequence(seqs, enforce_sorted=False), hx)
    expected_out, expected_h_n = reference_rnn(fast, pad_sequence(seqs), hx, lengths)
    padded_out, _ = torch.nn.utils.rnn.pad_packed_sequence(out)
    torch.testing.assert_close(padded_out, expected_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, expected_h_n, rtol=1e-12, atol=1e-12)


def test_dropout_between_layers_draws_the_same_mask_as_torch_nn():
    reference, fast = twin_rnns(input_size=3, hidden_size=8, num_layers=3, dropout=0.5)
    assert_same_dropout_masks(reference, fast)


def test_dropout_is_off_in_eval_mode():
    reference, fast = twin_rnns(input_size=3, hidden_size=8, num_layers=2, dropout=0.5)
    reference.eval(), fast.eval()
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast(x), fast(x), rtol=0, atol=0)


def test_empty_batch_gives_empty_output_like_torch_nn():
    reference, fast = twin_rnns(input_size=3, hidden_size=4)
    x = torch.randn(5, 0, 3, dtype=torch.float64)
    torch.testing.assert_close(fast(x), reference(x))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_cell_matches_torch_nn_rnncell(nonlinearity, bias, dtype):
    reference = torch.nn.RNNCell(4, 5, bias=bias, nonlinearity=nonlinearity).to(dtype)
    fast = rnnfast.RNNCell(4, 5, bias=bias, nonlinearity=nonlinearity).to(dtype)
    fast.load_state_dict(reference.state_dict())
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for x, hx in [(torch.randn(3, 4, dtype=dtype), torch.randn(3, 5, dtype=dtype)),
                  (torch.randn(3, 4, dtype=dtype), None),
                  (torch.randn(4, dtype=dtype), torch.randn(5, dtype=dtype))]:  # fmt: skip
        assert_cells_agree(reference, fast, x, hx, **tol)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_parametrized_and_reassigned_weights_are_honoured_like_torch_nn(name):
    # The layers read their weights on every call (from _parameters where they live there, by attribute where a
    # parametrization's property stands in for them): weight_norm's computed weight, a reassigned Parameter and
    # torch.func.functional_call's substitutes all reach the kernels as they reach torch.nn's.
    from rnn_pairs import twin_modules

    reference, fast = twin_modules(name, input_size=3, hidden_size=4, num_layers=2)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for module in (reference, fast):
        torch.nn.utils.parametrizations.weight_norm(module, "weight_hh_l1")
    with torch.no_grad():
        for module in (reference, fast):
            module.parametrizations.weight_hh_l1.original0.mul_(0.5)
    assert_twins_agree(reference, fast, x)
    replacement = torch.nn.Parameter(torch.randn_like(reference.weight_ih_l0))
    reference.weight_ih_l0 = replacement
    fast.weight_ih_l0 = torch.nn.Parameter(replacement.detach().clone())
    assert_twins_agree(reference, fast, x)
    substitute = {"bias_hh_l0": torch.randn_like(reference.bias_hh_l0)}
    expected = torch.func.functional_call(reference, substitute, (x,))
    got = torch.func.functional_call(fast, substitute, (x,))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(got[0], fast(x)[0])


def test_backward_is_exact_when_its_kept_buffer_is_reused_across_sizes_and_dtypes():
    # The CPU backward keeps its dL/dz buffer per thread between calls (csrc/cpu/reused_buffer.h): a large call,
    # then smaller ones of other dtypes and a stacked layer (two backward calls per step), then the large one
    # again, each against torch.nn.RNN.
    cases = [(torch.float64, 40, 8, 16, 1), (torch.float32, 5, 3, 7, 1), (torch.float64, 6, 2, 5, 2),
             (torch.float32, 9, 4, 33, 2), (torch.float64, 40, 8, 16, 1)]  # fmt: skip
    for dtype, T, B, H, layers in cases:
        reference, fast = twin_rnns(dtype, input_size=3, hidden_size=H, num_layers=layers)
        assert_twins_agree(reference, fast, torch.randn(T, B, 3, dtype=dtype))
