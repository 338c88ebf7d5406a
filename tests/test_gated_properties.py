"""Property tests (hypothesis) of the gated layers, as test_properties.py's of the Elman RNN: over random shapes
and layer options (LSTM projections included) rnnfast.LSTM and rnnfast.GRU give torch.nn's outputs, final states
and gradients; over random bad input they raise what torch.nn raises and keep working; and random arguments to
the layer ops themselves give a Python exception or consistent shapes, never a crash."""

import pytest
import torch

pytest.importorskip("hypothesis", reason="the property tests need hypothesis (requirements.txt)")
from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence

from rnn_pairs import assert_twins_agree, twin_modules
from test_properties import assert_same_outcome_then_still_working, random_tensor, sequence_lengths

kinds = st.sampled_from(["LSTM", "GRU"])
layer_options = st.fixed_dictionaries(
    {
        "num_layers": st.integers(1, 3),
        "bidirectional": st.booleans(),
        "bias": st.booleans(),
        "batch_first": st.booleans(),
        "input_size": st.integers(1, 5),
        "hidden_size": st.integers(1, 6),
    }
)


def draw_proj_size(data, kind, hidden_size):
    """An LSTM's proj_size: none, or one narrower than the hidden size as torch.nn requires."""
    if kind != "LSTM" or hidden_size == 1 or not data.draw(st.booleans(), label="projected"):
        return 0
    return data.draw(st.integers(1, hidden_size - 1), label="proj_size")


@given(kind=kinds, options=layer_options, T=sequence_lengths, B=st.integers(0, 4),
       form=st.sampled_from(["batched", "unbatched", "packed"]), with_hx=st.booleans(), data=st.data())  # fmt: skip
def test_matches_torch_nn_on_random_shapes_and_options(kind, options, T, B, form, with_hx, data):
    if form == "packed":
        assume(B > 0)  # torch.nn cannot pack an empty batch
    proj_size = draw_proj_size(data, kind, options["hidden_size"])
    if proj_size:
        options = {**options, "proj_size": proj_size}
    reference, fast = twin_modules(kind, **options)
    D = 2 if options["bidirectional"] else 1
    H, I, P = options["hidden_size"], options["input_size"], proj_size or options["hidden_size"]
    layers = options["num_layers"] * D
    batch = () if form == "unbatched" else (B,)
    if form == "unbatched":
        x = torch.randn(T, I, dtype=torch.float64)
    else:
        x = torch.randn((B, T, I) if options["batch_first"] else (T, B, I), dtype=torch.float64)
    h0 = torch.randn(layers, *batch, P, dtype=torch.float64)
    hx = (h0, torch.randn(layers, *batch, H, dtype=torch.float64)) if kind == "LSTM" else h0
    if form == "packed":
        lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths")
        x = pack_padded_sequence(x, lengths, batch_first=options["batch_first"], enforce_sorted=False)
    assert_twins_agree(reference, fast, x, hx if with_hx else None)


@given(kind=kinds, options=layer_options, data=st.data())
def test_random_module_input_raises_what_torch_nn_raises(kind, options, data):
    reference, fast = twin_modules(kind, torch.float32, **options)
    x = random_tensor(data.draw, "input")
    hx = None
    if data.draw(st.booleans(), label="with hx"):
        h0 = random_tensor(data.draw, "hx")
        hx = (h0, random_tensor(data.draw, "cx")) if kind == "LSTM" else h0
    assert_same_outcome_then_still_working(reference, fast, x, hx, options["input_size"])


def draw_batch_sizes(data):
    if not data.draw(st.booleans(), label="packed"):
        return None
    return torch.tensor(data.draw(st.lists(st.integers(-2, 5), max_size=6), label="batch_sizes"),
                        dtype=data.draw(st.sampled_from([torch.int64, torch.int32]), label="bs dtype"))  # fmt: skip


def optional_tensor(data, label):
    return random_tensor(data.draw, label) if data.draw(st.booleans(), label=f"with {label}") else None


@given(data=st.data(), save_workspace=st.booleans())
def test_random_lstm_op_arguments_raise_a_python_exception_or_give_the_right_shapes(data, save_workspace):
    x, hx, cx, w_ih, w_hh = (random_tensor(data.draw, name) for name in ("input", "hx", "cx", "w_ih", "w_hh"))
    bias, w_hr = optional_tensor(data, "bias"), optional_tensor(data, "w_hr")
    try:
        output, h_n, c_n, workspace = torch.ops.rnnfast.lstm_layer_forward(
            x, hx, cx, w_ih, w_hh, bias, w_hr, draw_batch_sizes(data), save_workspace)
    except RuntimeError:
        return
    # Accepted arguments are consistent ones: input (T, B, I), weight_ih (D, 4H, I), hx (D, B, P), cx (D, B, H).
    T, B, _ = x.shape
    D, H, P = w_ih.shape[0], w_ih.shape[1] // 4, w_hh.shape[2]
    assert w_ih.shape[1] == 4 * H and hx.shape == (D, B, P) and cx.shape == (D, B, H)
    assert output.shape == (T, B, D * P) and h_n.shape == (D, B, P) and c_n.shape == (D, B, H)
    assert workspace.shape == ((T, B, D * 6 * H) if save_workspace else (0,))


@given(data=st.data(), save_workspace=st.booleans())
def test_random_gru_op_arguments_raise_a_python_exception_or_give_the_right_shapes(data, save_workspace):
    x, hx, w_ih, w_hh = (random_tensor(data.draw, name) for name in ("input", "hx", "w_ih", "w_hh"))
    bias_ih, bias_hh = optional_tensor(data, "bias_ih"), optional_tensor(data, "bias_hh")
    try:
        output, h_n, workspace = torch.ops.rnnfast.gru_layer_forward(
            x, hx, w_ih, w_hh, bias_ih, bias_hh, draw_batch_sizes(data), save_workspace)
    except RuntimeError:
        return
    # Accepted arguments are consistent ones: input (T, B, I), weight_ih (D, 3H, I), hx (D, B, H).
    T, B, _ = x.shape
    D, H = w_ih.shape[0], w_ih.shape[1] // 3
    assert w_ih.shape[1] == 3 * H and hx.shape == (D, B, H)
    assert output.shape == (T, B, D * H) and h_n.shape == (D, B, H)
    assert workspace.shape == ((T, B, D * 4 * H) if save_workspace else (0,))
