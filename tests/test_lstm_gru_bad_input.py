"""Bad input to rnnfast.LSTM, GRU and their cells raises the exception torch.nn users know, and the module keeps
working. Where torch.nn's own message comes from deep inside its kernels, rnnfast's names the problem instead."""

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import rnnfast
from rnn_pairs import twin_modules
from test_bad_input import BAD_CELL_INPUT, BAD_CONSTRUCTOR, BAD_FORWARD, same_error, same_result_or_error

# The Elman RNN's bad inputs with the hidden state in each module's form: an LSTM's hx becomes (hx, cx) with cx
# of the same shape, which is wrong exactly where hx is.
LSTM_BAD_FORWARD = {
    name: (lambda make=make: (lambda x, hx: (x, None if hx is None else (hx, hx.clone())))(*make()))
    for name, make in BAD_FORWARD.items()
}
LSTM_BAD_FORWARD["cx wrong hidden, hx right"] = lambda: (torch.randn(5, 2, 4), (torch.randn(2, 2, 3),
                                                                                 torch.randn(2, 2, 5)))  # fmt: skip
LSTM_BAD_FORWARD["cx 2-D, hx 3-D"] = lambda: (torch.randn(5, 2, 4), (torch.randn(2, 2, 3), torch.randn(2, 3)))
CASES = [("GRU", make) for make in BAD_FORWARD.values()] + [("LSTM", make) for make in LSTM_BAD_FORWARD.values()]
IDS = [f"GRU-{n}" for n in BAD_FORWARD] + [f"LSTM-{n}" for n in LSTM_BAD_FORWARD]


@pytest.mark.parametrize("name,make", CASES, ids=IDS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_bad_forward_input_behaves_as_torch_nn_and_module_keeps_working(name, make, batch_first):
    # batch_first moves the batch axis, so some of these inputs become valid (an empty batch); the others must
    # fail with torch.nn's exception and message.
    reference, fast = twin_modules(name, torch.float32, input_size=4, hidden_size=3, num_layers=2,
                                   batch_first=batch_first)  # fmt: skip
    x, hx = make()
    same_result_or_error(reference, fast, x, hx)
    good = torch.randn(5, 2, 4)
    torch.testing.assert_close(fast(good), reference(good))


def test_lstm_projection_hx_of_hidden_width_raises_torch_nn_error():
    reference, fast = twin_modules("LSTM", torch.float32, input_size=4, hidden_size=3, proj_size=2)
    hx = (torch.randn(1, 2, 3), torch.randn(1, 2, 3))  # h_0 must be proj_size wide
    same_error(lambda: reference(torch.randn(5, 2, 4), hx), lambda: fast(torch.randn(5, 2, 4), hx))


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_state_of_another_dtype_is_named(name):
    fast = getattr(rnnfast, name)(4, 3)
    h = torch.randn(1, 2, 3, dtype=torch.float64)
    hx = (h, torch.randn(1, 2, 3)) if name == "LSTM" else h
    with pytest.raises(RuntimeError, match=r"Expected hx to have dtype torch.float32 \(the input's\), got torch.float64"):
        fast(torch.randn(5, 2, 4), hx)
    if name == "LSTM":
        with pytest.raises(RuntimeError, match=r"Expected cx to have dtype torch.float32"):
            fast(torch.randn(5, 2, 4), (torch.randn(1, 2, 3), h))


def test_packed_gru_hx_of_wrong_batch_raises_torch_nn_error():
    reference, fast = twin_modules("GRU", torch.float32, input_size=4, hidden_size=3)
    packed = pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    same_error(lambda: reference(packed, torch.randn(1, 3, 3)), lambda: fast(packed, torch.randn(1, 3, 3)))


def test_packed_lstm_hx_of_wrong_batch_names_the_expected_size():
    # torch.nn.LSTM fails here inside its kernel ("The size of tensor a (3) must match the size of tensor b (2)");
    # rnnfast says which state has which size, as torch.nn.LSTM does for padded input.
    fast = rnnfast.LSTM(4, 3)
    packed = pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 2, 3\), got \[1, 3, 3\]"):
        fast(packed, (torch.randn(1, 3, 3), torch.randn(1, 3, 3)))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[1\] size \(1, 2, 3\), got \[1, 2, 4\]"):
        fast(packed, (torch.randn(1, 2, 3), torch.randn(1, 2, 4)))


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_packed_input_of_wrong_feature_size_names_the_expected_size(name):
    # torch.nn.GRU gives this message; torch.nn.LSTM fails inside a matrix product ("mat1 and mat2 shapes cannot
    # be multiplied"). Both are RuntimeErrors.
    fast = getattr(rnnfast, name)(4, 3)
    packed = pack_sequence([torch.randn(3, 5), torch.randn(2, 5)])
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size. Expected 4, got 5"):
        fast(packed)
    with pytest.raises(RuntimeError):
        getattr(torch.nn, name)(4, 3)(packed)


BAD_GATED_CONSTRUCTOR = {
    **{k: v for k, v in BAD_CONSTRUCTOR.items() if k not in ("proj_size", "bad nonlinearity")},
    "nonlinearity": dict(input_size=3, hidden_size=2, nonlinearity="relu"),
    "unknown keyword": dict(input_size=3, hidden_size=2, foo=1),
}
LSTM_BAD_CONSTRUCTOR = {
    "proj_size not below hidden_size": dict(input_size=3, hidden_size=2, proj_size=2),
    "negative proj_size": dict(input_size=3, hidden_size=2, proj_size=-1),
}


@pytest.mark.parametrize("name,kwargs", [(n, k) for n in ("LSTM", "GRU") for k in BAD_GATED_CONSTRUCTOR.values()]
                         + [("LSTM", k) for k in LSTM_BAD_CONSTRUCTOR.values()]
                         + [("GRU", dict(input_size=3, hidden_size=4, proj_size=1))],
                         ids=[f"{n}-{k}" for n in ("LSTM", "GRU") for k in BAD_GATED_CONSTRUCTOR]
                         + [f"LSTM-{k}" for k in LSTM_BAD_CONSTRUCTOR] + ["GRU-proj_size"])  # fmt: skip
def test_bad_constructor_arguments_raise_torch_nn_error(name, kwargs):
    same_error(lambda: getattr(torch.nn, name)(**kwargs), lambda: getattr(rnnfast, name)(**kwargs))


LSTM_CELL_BAD_INPUT = {
    name: (lambda make=make: (lambda x, hx: (x, None if hx is None else (hx, hx.clone())))(*make()))
    for name, make in BAD_CELL_INPUT.items()
}
LSTM_CELL_BAD_INPUT["c wrong batch, h right"] = lambda: (torch.randn(2, 4), (torch.randn(2, 3), torch.randn(3, 3)))
LSTM_CELL_BAD_INPUT["c wrong hidden, h right"] = lambda: (torch.randn(2, 4), (torch.randn(2, 3), torch.randn(2, 5)))
LSTM_CELL_BAD_INPUT["one state"] = lambda: (torch.randn(2, 4), (torch.randn(2, 3),))
CELL_CASES = [("GRUCell", m) for m in BAD_CELL_INPUT.values()] + [("LSTMCell", m) for m in LSTM_CELL_BAD_INPUT.values()]
CELL_IDS = [f"GRUCell-{n}" for n in BAD_CELL_INPUT] + [f"LSTMCell-{n}" for n in LSTM_CELL_BAD_INPUT]


@pytest.mark.parametrize("name,make", CELL_CASES, ids=CELL_IDS)
def test_bad_cell_input_raises_torch_nn_error(name, make):
    reference, fast = twin_modules(name, torch.float32, input_size=4, hidden_size=3)
    x, hx = make()
    same_error(lambda: reference(x, hx), lambda: fast(x, hx))
    good = torch.randn(2, 4)
    torch.testing.assert_close(fast(good), reference(good))


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_integer_cell_input_raises_a_clear_error(name):
    # torch.nn's cells fail inside a matrix product ("mat1 and mat2 must have the same dtype").
    with pytest.raises(ValueError, match=rf"{name} input dtype \(torch.int64\) does not match weight dtype"):
        getattr(rnnfast, name)(4, 3)(torch.randint(0, 3, (2, 4)))
