"""Bad input to rnnfast's modules raises the exception torch.nn users know, and the module keeps working."""

import pytest
import torch

import rnnfast


def same_error(call_torch, call_fast):
    """Both calls raise the same exception type with the same message."""
    with pytest.raises(Exception) as expected:
        call_torch()
    with pytest.raises(expected.type) as got:
        call_fast()
    assert str(got.value) == str(expected.value)


def same_result_or_error(reference, fast, x, hx):
    """fast(x, hx) returns what reference(x, hx) returns, or raises the same exception with the same message."""
    try:
        expected = reference(x, hx)
    except Exception:
        same_error(lambda: reference(x, hx), lambda: fast(x, hx))
    else:
        torch.testing.assert_close(fast(x, hx), expected)


def twins(**kwargs):
    reference = torch.nn.RNN(**kwargs)
    fast = rnnfast.RNN(**kwargs)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


BAD_FORWARD = {
    "4-D input": lambda: (torch.randn(2, 3, 4, 1), None),
    "1-D input": lambda: (torch.randn(4), None),
    "wrong feature size": lambda: (torch.randn(5, 2, 7), None),
    "integer input": lambda: (torch.randint(0, 3, (5, 2, 4)), None),
    "float64 input into float32 module": lambda: (torch.randn(5, 2, 4, dtype=torch.float64), None),
    "hx wrong batch": lambda: (torch.randn(5, 2, 4), torch.randn(2, 3, 3)),
    "hx wrong layers": lambda: (torch.randn(5, 2, 4), torch.randn(1, 2, 3)),
    "hx wrong hidden": lambda: (torch.randn(5, 2, 4), torch.randn(2, 2, 5)),
    "hx 2-D for batched input": lambda: (torch.randn(5, 2, 4), torch.randn(2, 3)),
    "hx 3-D for unbatched input": lambda: (torch.randn(5, 4), torch.randn(2, 1, 3)),
    "empty sequence": lambda: (torch.randn(0, 2, 4), None),
}


@pytest.mark.parametrize("make", BAD_FORWARD.values(), ids=BAD_FORWARD.keys())
def test_bad_forward_input_raises_torch_nn_error_and_module_keeps_working(make):
    reference, fast = twins(input_size=4, hidden_size=3, num_layers=2)
    x, hx = make()
    same_error(lambda: reference(x, hx), lambda: fast(x, hx))
    good = torch.randn(5, 2, 4)
    torch.testing.assert_close(fast(good), reference(good))


@pytest.mark.parametrize("make", BAD_FORWARD.values(), ids=BAD_FORWARD.keys())
def test_batch_first_module_behaves_as_torch_nn_on_the_same_inputs(make):
    # batch_first moves the batch axis: some of these inputs become valid (an empty batch), the others must
    # still fail with torch.nn's message naming the right sizes.
    reference, fast = twins(input_size=4, hidden_size=3, num_layers=2, batch_first=True)
    x, hx = make()
    same_result_or_error(reference, fast, x, hx)


def test_hx_of_another_dtype_names_hx():
    fast = rnnfast.RNN(4, 3)
    with pytest.raises(RuntimeError, match=r"Expected hx to have dtype torch.float32 \(the input's\), got torch.float64"):
        fast(torch.randn(5, 2, 4), torch.randn(1, 2, 3, dtype=torch.float64))
    assert fast(torch.randn(5, 2, 4))[0].shape == (5, 2, 3)


def test_packed_hx_of_wrong_batch_raises_torch_nn_error():
    reference, fast = twins(input_size=4, hidden_size=3)
    packed = torch.nn.utils.rnn.pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    same_error(lambda: reference(packed, torch.randn(1, 3, 3)), lambda: fast(packed, torch.randn(1, 3, 3)))


def test_packed_input_of_wrong_feature_size_raises_torch_nn_error():
    reference, fast = twins(input_size=4, hidden_size=3)
    packed = torch.nn.utils.rnn.pack_sequence([torch.randn(3, 5), torch.randn(2, 5)])
    same_error(lambda: reference(packed), lambda: fast(packed))


BAD_CONSTRUCTOR = {
    "zero hidden": dict(input_size=3, hidden_size=0),
    "float hidden": dict(input_size=3, hidden_size=2.5),
    "zero layers": dict(input_size=3, hidden_size=2, num_layers=0),
    "bad nonlinearity": dict(input_size=3, hidden_size=2, nonlinearity="sigmoid"),
    "dropout above 1": dict(input_size=3, hidden_size=2, dropout=1.5),
    "proj_size": dict(input_size=3, hidden_size=2, proj_size=1),
}


@pytest.mark.parametrize("kwargs", BAD_CONSTRUCTOR.values(), ids=BAD_CONSTRUCTOR.keys())
def test_bad_constructor_arguments_raise_torch_nn_error(kwargs):
    same_error(lambda: torch.nn.RNN(**kwargs), lambda: rnnfast.RNN(**kwargs))


BAD_CELL_INPUT = {
    "3-D input": lambda: (torch.randn(2, 3, 4), None),
    "3-D hx": lambda: (torch.randn(2, 4), torch.randn(1, 2, 3)),
    "wrong feature size": lambda: (torch.randn(2, 5), None),
    "hx wrong batch": lambda: (torch.randn(2, 4), torch.randn(3, 3)),
    "hx wrong hidden": lambda: (torch.randn(2, 4), torch.randn(2, 5)),
}


@pytest.mark.parametrize("make", BAD_CELL_INPUT.values(), ids=BAD_CELL_INPUT.keys())
def test_bad_cell_input_raises_torch_nn_error(make):
    reference = torch.nn.RNNCell(4, 3)
    fast = rnnfast.RNNCell(4, 3)
    fast.load_state_dict(reference.state_dict())
    x, hx = make()
    same_error(lambda: reference(x, hx), lambda: fast(x, hx))
    good = torch.randn(2, 4)
    torch.testing.assert_close(fast(good), reference(good))


def test_integer_cell_input_raises_a_clear_error():
    with pytest.raises(ValueError, match=r"RNNCell input dtype \(torch.int64\) does not match weight dtype"):
        rnnfast.RNNCell(4, 3)(torch.randint(0, 3, (2, 4)))
