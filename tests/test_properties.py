"""Property tests (hypothesis): over random shapes and layer options rnnfast.RNN gives torch.nn.RNN's outputs
and gradients; over random bad input it raises what torch.nn raises, and random arguments to the op itself give
a Python exception or a correct result, never a crash."""

import pytest
import torch

pytest.importorskip("hypothesis", reason="the property tests need hypothesis (requirements.txt)")
from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence

import rnnfast
from rnn_pairs import assert_twins_agree, twin_rnns

layer_options = st.fixed_dictionaries(
    {
        "num_layers": st.integers(1, 3),
        "bidirectional": st.booleans(),
        "nonlinearity": st.sampled_from(["tanh", "relu"]),
        "bias": st.booleans(),
        "batch_first": st.booleans(),
        "input_size": st.integers(1, 5),
        "hidden_size": st.integers(1, 6),
    }
)
# Mostly short sequences, sometimes long ones: a bug in the carried state shows over many steps.
sequence_lengths = st.one_of(st.integers(1, 8), st.integers(100, 400))


@given(options=layer_options, T=sequence_lengths, B=st.integers(0, 4), form=st.sampled_from(["batched", "unbatched",
       "packed"]), with_hx=st.booleans(), data=st.data())  # fmt: skip
def test_matches_torch_nn_on_random_shapes_and_options(options, T, B, form, with_hx, data):
    if form == "packed":
        assume(B > 0)  # torch.nn cannot pack an empty batch
    reference, fast = twin_rnns(**options)
    D = 2 if options["bidirectional"] else 1
    H, I = options["hidden_size"], options["input_size"]
    layers = options["num_layers"] * D
    if form == "unbatched":
        x, hx = torch.randn(T, I, dtype=torch.float64), torch.randn(layers, H, dtype=torch.float64)
    else:
        x = torch.randn((B, T, I) if options["batch_first"] else (T, B, I), dtype=torch.float64)
        hx = torch.randn(layers, B, H, dtype=torch.float64)
    if form == "packed":
        lengths = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B), label="lengths")
        x = pack_padded_sequence(x, lengths, batch_first=options["batch_first"], enforce_sorted=False)
    assert_twins_agree(reference, fast, x, hx if with_hx else None)


def random_tensor(draw, label):
    dims = draw(st.integers(0, 4), label=f"{label} dims")
    shape = draw(st.lists(st.integers(0, 4), min_size=dims, max_size=dims), label=f"{label} shape")
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.bool]),
                 label=f"{label} dtype")  # fmt: skip
    return torch.randn(shape).to(dtype) if dtype.is_floating_point else torch.randint(0, 2, shape).to(dtype)


def assert_same_outcome_then_still_working(reference, fast, x, hx, input_size):
    """fast(x, hx) returns what reference(x, hx) returns or raises the same exception type (float32 modules); and
    afterwards, on good input of input_size features, both still agree."""
    try:
        expected = reference(x, hx)
    except Exception as error:  # noqa: BLE001 - any torch.nn error is the expected behaviour
        with pytest.raises(type(error)):
            fast(x, hx)
    else:
        torch.testing.assert_close(fast(x, hx), expected, rtol=1e-5, atol=1e-5)
    x_ok = torch.randn(3, 2, input_size)
    torch.testing.assert_close(fast(x_ok), reference(x_ok), rtol=1e-5, atol=1e-5)


@given(data=st.data(), options=layer_options)
def test_random_module_input_raises_what_torch_nn_raises(data, options):
    reference, fast = twin_rnns(dtype=torch.float32, **options)
    x = random_tensor(data.draw, "input")
    hx = random_tensor(data.draw, "hx") if data.draw(st.booleans(), label="with hx") else None
    assert_same_outcome_then_still_working(reference, fast, x, hx, options["input_size"])


@given(data=st.data(), relu=st.booleans())
def test_random_op_arguments_raise_a_python_exception_or_give_the_right_shapes(data, relu):
    args = [random_tensor(data.draw, name) for name in ("input", "hx", "weight_ih", "weight_hh")]
    args.append(random_tensor(data.draw, "bias") if data.draw(st.booleans(), label="with bias") else None)
    batch_sizes = None
    if data.draw(st.booleans(), label="packed"):
        batch_sizes = torch.tensor(data.draw(st.lists(st.integers(-2, 5), max_size=6), label="batch_sizes"),
                                   dtype=data.draw(st.sampled_from([torch.int64, torch.int32]), label="bs dtype"))
    try:
        output, h_n = torch.ops.rnnfast.elman_layer_forward(*args, batch_sizes, relu)
    except RuntimeError:
        return
    # Accepted arguments are consistent ones: (T, B, I), (D, B, H), (D, H, I), (D, H, H).
    x, hx, w_ih = args[:3]
    T, B, _ = x.shape
    D, H = w_ih.shape[:2]
    assert output.shape == (T, B, D * H) and h_n.shape == (D, B, H) and hx.shape == (D, B, H)


@given(data=st.data(), T=st.integers(1, 4), B=st.integers(1, 3), I=st.integers(1, 3), H=st.integers(1, 3),
       D=st.integers(1, 2), relu=st.booleans())  # fmt: skip
def test_op_arguments_with_one_thing_wrong_raise_a_python_exception(data, T, B, I, H, D, relu):
    # Consistent arguments, then one tensor's shape, dtype or layout spoiled: the checks deep in the op are
    # reached, not only the first one.
    shapes = {"input": (T, B, I), "hx": (D, B, H), "weight_ih": (D, H, I), "weight_hh": (D, H, H), "bias": (D, H)}
    args = {name: torch.randn(shape, dtype=torch.float64) for name, shape in shapes.items()}
    lengths = [T] + data.draw(st.lists(st.integers(1, T), min_size=B - 1, max_size=B - 1), label="lengths")
    lengths.sort(reverse=True)
    batch_sizes = torch.tensor([sum(1 for n in lengths if n > t) for t in range(T)], dtype=torch.int64)
    victim = data.draw(st.sampled_from([*shapes, "batch_sizes"]), label="spoiled")
    spoil = data.draw(st.sampled_from(["grow", "shrink", "extra dim", "dtype", "non-contiguous"]), label="how")
    tensor = batch_sizes if victim == "batch_sizes" else args[victim]
    dim = data.draw(st.integers(0, tensor.dim() - 1), label="dim")
    if spoil == "grow":
        tensor = torch.cat([tensor, tensor.narrow(dim, 0, 1) + 7], dim)
    elif spoil == "shrink":
        assume(tensor.size(dim) > 1 or victim == "batch_sizes")
        tensor = tensor.narrow(dim, 0, tensor.size(dim) - 1)
    elif spoil == "extra dim":
        tensor = tensor.unsqueeze(dim)
    elif spoil == "dtype":
        tensor = tensor.to(torch.float32 if tensor.is_floating_point() else torch.float64)
    else:
        # Not an error: a transposed view must give the same answer as its contiguous copy.
        tensor = tensor.mT.contiguous().mT if tensor.dim() >= 2 else tensor
    if victim == "batch_sizes":
        batch_sizes = tensor
    else:
        args[victim] = tensor
    call = lambda: torch.ops.rnnfast.elman_layer_forward(*args.values(), batch_sizes, relu)  # noqa: E731
    if spoil == "non-contiguous":
        expected = torch.ops.rnnfast.elman_layer_forward(*[a.contiguous() for a in args.values()],
                                                         batch_sizes.contiguous(), relu)  # fmt: skip
        for g, e in zip(call(), expected, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=0)
    else:
        with pytest.raises(RuntimeError, match="rnnfast: expected"):
            call()
