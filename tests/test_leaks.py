"""No memory leak: thousands of forward/backward calls of rnnfast.RNN, LSTM and GRU (padded, packed, under no_grad,
and calls that fail on bad input) leave the process's resident memory where it was after warm-up."""

import json
import subprocess
import sys
import textwrap

import pytest

CALLS = 3000

# A fresh process, so nothing else allocates while it is measured. Each call touches about 100 KiB of tensors,
# so leaking even one of them per call would grow the process by ~300 MiB.
MEASURE = textwrap.dedent(
    """
    import json, os, sys
    import torch, rnnfast
    from torch.nn.utils.rnn import pack_padded_sequence
    torch.set_num_threads(1)
    page = os.sysconf("SC_PAGE_SIZE")

    def resident_bytes():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    cell = sys.argv[2]
    rnn = getattr(rnnfast, cell)(16, 64, num_layers=2, bidirectional=True)
    bad_state = torch.zeros(1, 3, 64)  # a batch of 3 for an input batch of 4
    w_ih, w_hh = rnn.weight_ih_l0[None], rnn.weight_hh_l0[None]
    bad_op_call = {
        "RNN": lambda: torch.ops.rnnfast.elman_layer_forward(x, bad_state, w_ih, w_hh, None, None, False),
        "LSTM": lambda: torch.ops.rnnfast.lstm_layer_forward(x, bad_state, bad_state, w_ih, w_hh, None, None, None),
        "GRU": lambda: torch.ops.rnnfast.gru_layer_forward(x, bad_state, w_ih, w_hh, None, None, None),
    }[cell]
    x = torch.randn(50, 4, 16)
    lengths = torch.tensor([50, 31, 7, 22])

    def one_round():
        output, hidden = rnn(x)
        (output.sum() + sum(h.sum() for h in (hidden if isinstance(hidden, tuple) else (hidden,)))).backward()
        packed, _ = rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
        packed.data.sum().backward()
        with torch.no_grad():
            rnn(x)
        try:
            rnn(torch.randn(50, 4, 15))
        except RuntimeError:
            pass
        try:
            bad_op_call()
        except RuntimeError:
            pass
        rnn.zero_grad(set_to_none=True)

    for _ in range(200):
        one_round()
    before = resident_bytes()
    for _ in range(int(sys.argv[1])):
        one_round()
    print(json.dumps({"growth": resident_bytes() - before}))
    """
)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_thousands_of_calls_do_not_grow_resident_memory(cell):
    result = subprocess.run([sys.executable, "-c", MEASURE, str(CALLS), cell], capture_output=True, text=True,
                            timeout=900, check=True)  # fmt: skip
    growth = json.loads(result.stdout.strip().splitlines()[-1])["growth"]
    # Allocator noise is a few MiB; a per-call leak of any tensor here would be hundreds.
    assert growth < 16 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over {CALLS} calls"
