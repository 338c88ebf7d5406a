"""The CUDA LSTM and GRU kernels, on every path (general; persistent under RNNFAST_CUDA_PATH=persistent; the general
loop with rnnfast's tiled per-step products under RNNFAST_CUDA_PATH=fused), against torch.nn.LSTM / GRU on CUDA
(cuDNN). Every test here is marked cuda and skips where no GPU is visible."""

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import rnnfast
from rnn_pairs import assert_twins_agree, outputs_and_grads, twin_modules
from test_gated_ops import gru_args, lstm_args

pytestmark = pytest.mark.cuda
ops = torch.ops.rnnfast
KINDS = {"LSTM": ("LSTM", {}), "LSTM-proj": ("LSTM", {"proj_size": 3}), "GRU": ("GRU", {})}


@pytest.fixture(autouse=True)
def _exact_float32_in_cudnn(monkeypatch):
    # Parity is checked against exact float32 products on both sides.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def initial_state(name, extra, num_states, batch, hidden_size, dtype=torch.float64):
    h = torch.randn(num_states, batch, extra.get("proj_size", hidden_size), dtype=dtype, device="cuda")
    if name == "GRU":
        return h
    return h, torch.randn(num_states, batch, hidden_size, dtype=dtype, device="cuda")


def on_cuda(args, batch_sizes, requires_grad=False):
    """An op's arguments with every tensor but the (host) batch_sizes moved to the GPU, as leaves if asked."""
    return tuple(a.detach().cuda().requires_grad_(requires_grad) if isinstance(a, torch.Tensor) and a is not batch_sizes
                 else a for a in args)  # fmt: skip


@pytest.fixture(params=["general", "persistent", "fused"])
def cuda_path(request, monkeypatch):
    monkeypatch.setenv("RNNFAST_CUDA_PATH", request.param)
    return request.param


@pytest.fixture(params=["general", "fused"])
def product_path(request, monkeypatch):
    """The paths that run float64 and packed input: the general loop with cuBLAS's or rnnfast's tiled products."""
    monkeypatch.setenv("RNNFAST_CUDA_PATH", request.param)
    return request.param


def test_gated_kernels_are_registered_for_cuda():
    for op in ["lstm_layer_forward", "lstm_layer_backward", "gru_layer_forward", "gru_layer_backward"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnfast::{op}", "CUDA")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias",
                         [(1, False, False, True), (2, True, False, True), (2, True, True, False)])  # fmt: skip
def test_float64_matches_cudnn(product_path, kind, num_layers, bidirectional, batch_first, bias):
    name, extra = KINDS[kind]
    T, B, I, H = 9, 4, 5, 16
    options = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    reference, fast = twin_modules(name, torch.float64, "cuda", input_size=I, hidden_size=H, **options, **extra)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=torch.float64, device="cuda")
    hx = initial_state(name, extra, num_layers * (2 if bidirectional else 1), B, H)
    assert_twins_agree(reference, fast, x, hx)


@pytest.mark.parametrize("kind", KINDS)
def test_packed_sequences_match_cudnn(product_path, kind):
    name, extra = KINDS[kind]
    lengths = [3, 7, 1, 5, 7, 2]
    packed = pack_sequence([torch.randn(n, 4, device="cuda", dtype=torch.float64) for n in lengths],
                           enforce_sorted=False)  # fmt: skip
    reference, fast = twin_modules(name, torch.float64, "cuda", input_size=4, hidden_size=5, num_layers=2,
                                   bidirectional=True, **extra)  # fmt: skip
    assert_twins_agree(reference, fast, packed, initial_state(name, extra, 4, len(lengths), 5))


def assert_takes_path(path, kind, x, weight_hh):
    """Under RNNFAST_CUDA_PATH=persistent the persistent kernels run every float32 (or widened 16-bit) layer here
    but the projected LSTM, which they do not cover."""
    expected = path == "persistent" and kind != "LSTM-proj"
    assert ops.gated_cuda_uses_persistent(KINDS[kind][0], x, weight_hh.unsqueeze(0), False) == expected


# Sizes that take each persistent plan: all of W_hh in one block (H = 64; the GRU's also at H = 100), or a
# direction split over blocks with a grid-wide barrier per step, evenly (H = 256: 32 blocks of 8 units) or not
# (the LSTM at H = 100: 13 blocks, the last with 4 units).
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("B,H", [(4, 64), (5, 100), (32, 256)], ids=str)
def test_float32_error_within_multiple_of_cudnn(cuda_path, kind, B, H):
    # rnnfast's float32 error against a float64 run is bounded by a multiple of cuDNN's own float32 error.
    name, extra = KINDS[kind]
    exact, _ = twin_modules(name, torch.float64, "cuda", input_size=16, hidden_size=H, bidirectional=True, **extra)
    reference = getattr(torch.nn, name)(16, H, bidirectional=True, **extra).cuda()
    fast = getattr(rnnfast, name)(16, H, bidirectional=True, **extra).cuda()
    reference.load_state_dict(exact.state_dict())
    fast.load_state_dict(exact.state_dict())
    x = torch.randn(50, B, 16, device="cuda", dtype=torch.float64)
    to32 = lambda s: tuple(t.float() for t in s) if isinstance(s, tuple) else s.float()  # noqa: E731
    hx = initial_state(name, extra, 2, B, H)
    assert_takes_path(cuda_path, kind, x.float(), fast.weight_hh_l0)
    truth = outputs_and_grads(exact, x, hx)
    cudnn = outputs_and_grads(reference, x.float(), to32(hx))
    ours = outputs_and_grads(fast, x.float(), to32(hx))
    for t, c, o in zip(truth, cudnn, ours, strict=True):
        cudnn_error = (c.double() - t).abs().max().item()
        our_error = (o.double() - t).abs().max().item()
        assert our_error <= 3 * cudnn_error + 1e-6 * t.abs().max().item(), (our_error, cudnn_error)


@pytest.mark.parametrize("packed", [False, True])
def test_gated_ops_pass_gradcheck_and_opcheck_on_cuda(product_path, packed):
    batch_sizes = torch.tensor([3, 3, 2, 1]) if packed else None
    for args, op, outputs in [(lstm_args(D=2, H=4, P=2, batch_sizes=batch_sizes), ops.lstm_layer_forward, 3),
                              (gru_args(D=2, batch_sizes=batch_sizes), ops.gru_layer_forward, 2)]:  # fmt: skip
        args = on_cuda(args, batch_sizes, requires_grad=True)
        torch.autograd.gradcheck(lambda *a, op=op, n=outputs: op(*a)[:n], args, eps=1e-6, atol=1e-7)
        torch.library.opcheck(op.default, args)


@pytest.mark.parametrize("packed", [False, True])
def test_forward_ops_without_a_saved_workspace_match_the_cpu_on_cuda(packed):
    # Inference overwrites one step's scratch workspace (workspace_step_stride): the outputs and final states are
    # the CPU kernels' on the same float64 arguments, and the workspace comes back empty.
    batch_sizes = torch.tensor([3, 3, 2, 1]) if packed else None
    for args, op in [(lstm_args(D=2, H=4, P=2, batch_sizes=batch_sizes), ops.lstm_layer_forward),
                     (gru_args(D=2, batch_sizes=batch_sizes), ops.gru_layer_forward)]:  # fmt: skip
        expected, got = op(*args, False), op(*on_cuda(args, batch_sizes), False)
        assert got[-1].shape == (0,)
        for want, have in zip(expected[:-1], got[:-1], strict=True):
            torch.testing.assert_close(have.cpu(), want, rtol=1e-12, atol=1e-12)
        torch.library.opcheck(op.default, (*on_cuda(args, batch_sizes), False))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_persistent_path_is_opt_in_and_declines_what_it_cannot_run(kind, monkeypatch):
    # Under auto (the default) the general path: the persistent gated kernels wait for a GPU check. Under
    # persistent, float32 and 16-bit layers take it; float64 and packed sequences stay on the general path.
    G = 4 if kind == "LSTM" else 3
    x, w_hh = torch.randn(20, 2, 8, device="cuda"), torch.randn(1, G * 16, 16, device="cuda")
    monkeypatch.delenv("RNNFAST_CUDA_PATH", raising=False)
    assert not ops.gated_cuda_uses_persistent(kind, x, w_hh, False)
    monkeypatch.setenv("RNNFAST_CUDA_PATH", "persistent")
    assert ops.gated_cuda_uses_persistent(kind, x, w_hh, False)
    assert ops.gated_cuda_uses_persistent(kind, x.bfloat16(), w_hh.bfloat16(), False)
    assert not ops.gated_cuda_uses_persistent(kind, x.double(), w_hh.double(), False)
    assert not ops.gated_cuda_uses_persistent(kind, x, w_hh, True)
    with pytest.raises(RuntimeError, match="expected cell LSTM or GRU, got RNN"):
        ops.gated_cuda_uses_persistent("RNN", x, w_hh, False)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_persistent_path_matches_cudnn_at_a_long_sequence(kind, monkeypatch):
    # 600 steps through the persistent kernels' state hand-over between blocks (H = 128: split over 16 blocks a
    # direction), against cuDNN in float32 with exact products.
    monkeypatch.setenv("RNNFAST_CUDA_PATH", "persistent")
    name, extra = KINDS[kind]
    reference, fast = twin_modules(name, torch.float32, "cuda", input_size=8, hidden_size=128, bidirectional=True,
                                   **extra)  # fmt: skip
    x = torch.randn(600, 3, 8, device="cuda")
    assert_takes_path("persistent", kind, x, fast.weight_hh_l0)
    assert_twins_agree(reference, fast, x, initial_state(name, extra, 2, 3, 128, torch.float32), rtol=1e-4,
                       atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("kind", KINDS)
def test_16bit_modules_within_multiple_of_cudnn_error(cuda_path, kind, dtype):
    # 16-bit layers run on float32 copies and round once: their error against float64 stays within twice
    # cuDNN's own 16-bit error (which rounds the state every step), on both paths.
    name, extra = KINDS[kind]
    exact, _ = twin_modules(name, torch.float64, "cuda", input_size=8, hidden_size=32, bidirectional=True, **extra)
    reference = getattr(torch.nn, name)(8, 32, bidirectional=True, **extra).to("cuda", dtype)
    fast = getattr(rnnfast, name)(8, 32, bidirectional=True, **extra).to("cuda", dtype)
    reference.load_state_dict(exact.state_dict())
    fast.load_state_dict(exact.state_dict())
    exact.load_state_dict(reference.state_dict())  # the float64 reference starts from the rounded weights
    x = torch.randn(30, 3, 8, device="cuda").to(dtype)
    hx = initial_state(name, extra, 2, 3, 32, dtype)
    assert_takes_path(cuda_path, kind, x, fast.weight_hh_l0)
    hx64 = tuple(h.double() for h in hx) if isinstance(hx, tuple) else hx.double()
    truth = outputs_and_grads(exact, x.double(), hx64)
    cudnn, ours = outputs_and_grads(reference, x, hx), outputs_and_grads(fast, x, hx)
    for t, c, o in zip(truth, cudnn, ours, strict=True):
        assert o.dtype == c.dtype == dtype
        cudnn_error = (c.double() - t).abs().max().item()
        our_error = (o.double() - t).abs().max().item()
        assert our_error <= 2 * cudnn_error + 1e-3 * t.abs().max().item(), (our_error, cudnn_error)
