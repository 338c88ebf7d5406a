"""Long sequences and non-finite values: T = 100,000 trains within memory proportional to T*B*H, inference
keeps no more than its output (for the RNN, LSTM and GRU), and NaN and inf propagate as they do in torch.nn.RNN,
LSTM and GRU."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from rnn_pairs import assert_twins_agree, twin_modules

T, B, I, H = 100_000, 4, 4, 32
FLOAT_BYTES = 4

# Runs in a fresh process, so its peak resident memory (ru_maxrss) belongs to this one job. A short warm-up
# call first loads every library and kernel, so the peak growth after it is what the long sequence costs.
MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    import torch, rnnfast
    T, B, I, H, mode, cell = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:]
    torch.set_num_threads(1)
    rnn = getattr(rnnfast, cell)(I, H)

    def run(steps):
        x = torch.randn(steps, B, I)
        if mode == "inference":
            with torch.no_grad():
                output, _ = rnn(x)
            return output.shape, output.grad_fn
        output, _ = rnn(x)
        output.sum().backward()
        return output.shape, None

    run(10)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shape, grad_fn = run(T)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"growth": peak_after - peak_before, "shape": list(shape), "grad_fn": str(grad_fn)}))
    """
)


def peak_memory_growth(mode, cell):
    result = subprocess.run([sys.executable, "-c", MEASURE, str(T), str(B), str(I), str(H), mode, cell],
                            capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


# Live at the training step's peak, in (T, B, H) state sizes, with the smaller input-sized tensors beside them.
# RNN: the saved output, grad_output, dL/dz and the previous states (about 3.3 measured). LSTM: the saved
# workspace (6: four gates, c_{t-1}, tanh c_t) and output, then grad_output, its running copy, dL/dgates (4) and
# the previous states (13.25 measured; torch.nn.LSTM 15.3). GRU: workspace (4) and output, grad_output and its
# copy, dL/dgates for the input and the recurrent products (3 each) and the previous states (13.25 measured;
# torch.nn.GRU 44). Anything per-step or quadratic would be far past these bounds.
TRAINING_STATE_SIZES = {"RNN": 5, "LSTM": 15, "GRU": 15}


@pytest.mark.parametrize("cell", TRAINING_STATE_SIZES)
def test_training_on_100k_steps_needs_memory_proportional_to_t_b_h(cell):
    measured = peak_memory_growth("training", cell)
    assert measured["shape"] == [T, B, H]
    state_bytes = T * B * H * FLOAT_BYTES  # one (T, B, H) float32 tensor: 51 MB here
    bound = TRAINING_STATE_SIZES[cell] * state_bytes
    assert measured["growth"] <= bound, f"peak grew by {measured['growth'] / 2**20:.0f} MiB"


@pytest.mark.parametrize("cell", TRAINING_STATE_SIZES)
def test_inference_under_no_grad_keeps_only_the_output(cell):
    measured = peak_memory_growth("inference", cell)
    assert measured["grad_fn"] == "None"
    output_bytes = T * B * H * FLOAT_BYTES
    input_bytes = T * B * I * FLOAT_BYTES
    # The RNN computes its output in place over the input projection; the LSTM and GRU project the input a block
    # of steps at a time into one reused buffer. Nothing else of the output's size exists.
    assert measured["growth"] <= 1.5 * output_bytes + input_bytes, f"peak grew by {measured['growth'] / 2**20:.0f} MiB"


TOLERANCE_FOR = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}
NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
# Each module's options, and where a NaN or inf is put: the input, h_0, an LSTM's c_0, or W_hh.
CELL_OPTIONS = {"RNN tanh": ("RNN", {"nonlinearity": "tanh"}), "RNN relu": ("RNN", {"nonlinearity": "relu"}),
                "LSTM": ("LSTM", {}), "GRU": ("GRU", {})}  # fmt: skip
PLACES = [(name, where) for name in CELL_OPTIONS for where in ("input", "hx", "cx", "weight")
          if where != "cx" or name == "LSTM"]  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("value", NONFINITE.values(), ids=NONFINITE.keys())
@pytest.mark.parametrize("name,where", PLACES, ids=[f"{name}-{where}" for name, where in PLACES])
def test_nonfinite_values_propagate_as_in_torch_nn(name, where, value, dtype):
    kind, options = CELL_OPTIONS[name]
    reference, fast = twin_modules(kind, dtype, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                                   **options)  # fmt: skip
    x = torch.randn(6, 2, 3, dtype=dtype)
    h0, c0 = torch.randn(4, 2, 4, dtype=dtype), torch.randn(4, 2, 4, dtype=dtype)
    if where == "input":
        x[3, 1, 0] = value
    elif where == "hx":
        h0[1, 0, 2] = value
    elif where == "cx":
        c0[1, 0, 2] = value
    else:
        with torch.no_grad():
            for module in (reference, fast):
                module.weight_hh_l0[1, 2] = value
    hx = (h0, c0) if kind == "LSTM" else h0
    assert_twins_agree(reference, fast, x, hx, equal_nan=True, **TOLERANCE_FOR[dtype])
