"""The CUDA kernels against torch.nn.RNN on CUDA (cuDNN), on every CUDA path (general, persistent, the persistent
path's cluster plan, which runs float32 on sm_90 GPUs and leaves the rest to the general path, and the fused-step
path) and every dtype.
Every test here is marked cuda and skips where no GPU is visible."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import rnnfast
from rnn_pairs import assert_twins_agree, outputs_and_grads, twin_modules, twin_rnns

pytestmark = pytest.mark.cuda
ops = torch.ops.rnnfast
PATHS = ["general", "persistent", "cluster", "fused"]


@pytest.fixture(autouse=True)
def _exact_float32_in_cudnn(monkeypatch):
    # cuDNN's RNN uses TF32 for float32 by default (10-bit mantissa products); rnnfast's float32 is exact
    # float32, so parity is checked against exact cuDNN.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


@pytest.fixture(params=PATHS)
def cuda_path(request, monkeypatch):
    monkeypatch.setenv("RNNFAST_CUDA_PATH", request.param)
    return request.param


def test_kernels_are_registered_for_cuda():
    for op in ["elman_layer_forward", "elman_layer_backward"]:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnfast::{op}", "CUDA")


def assert_error_within_multiple_of_cudnn(dtype, x, hx, multiple=3, **kwargs):
    """As flash-attention tests low precision: rnnfast's error at dtype against a float64 run is bounded by a
    multiple of cuDNN's own error at dtype against that same float64 run, for the outputs and every gradient."""
    exact, _ = twin_rnns(torch.float64, "cuda", **kwargs)
    reference = torch.nn.RNN(**kwargs).to("cuda", dtype)
    fast = rnnfast.RNN(**kwargs).to("cuda", dtype)
    reference.load_state_dict(exact.state_dict())
    fast.load_state_dict(exact.state_dict())
    truth = outputs_and_grads(exact, x, hx)
    cudnn = outputs_and_grads(reference, x.to(dtype), hx.to(dtype))
    ours = outputs_and_grads(fast, x.to(dtype), hx.to(dtype))
    floor = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-3}[dtype]
    for t, c, o in zip(truth, cudnn, ours, strict=True):
        cudnn_error = (c.double() - t).abs().max().item()
        our_error = (o.double() - t).abs().max().item()
        assert our_error <= multiple * cudnn_error + floor * t.abs().max().item(), (our_error, cudnn_error)


GRID = list(itertools.product([1, 2], [False, True], [False, True], ["tanh", "relu"], [True, False]))


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,nonlinearity,bias", GRID)
def test_float64_matches_cudnn_over_option_grid(cuda_path, num_layers, bidirectional, batch_first, nonlinearity,
                                                bias):  # fmt: skip
    T, B, I, H = 9, 4, 5, 16
    reference, fast = twin_rnns(torch.float64, "cuda", input_size=I, hidden_size=H, num_layers=num_layers,
                                nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
                                bidirectional=bidirectional)  # fmt: skip
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=torch.float64, device="cuda")
    hx = torch.randn(num_layers * (2 if bidirectional else 1), B, H, dtype=torch.float64, device="cuda")
    assert_twins_agree(reference, fast, x, hx)


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,nonlinearity,bias", GRID)
def test_float32_error_within_multiple_of_cudnn_over_option_grid(cuda_path, num_layers, bidirectional, batch_first,
                                                                 nonlinearity, bias):  # fmt: skip
    T, B, I, H = 9, 4, 5, 16
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=torch.float64, device="cuda")
    hx = torch.randn(num_layers * (2 if bidirectional else 1), B, H, dtype=torch.float64, device="cuda")
    if cuda_path == "persistent":
        assert ops.elman_cuda_uses_persistent(x.float().transpose(0, 1) if batch_first else x.float(),
                                              torch.empty(1, H, H, device="cuda"), False)  # fmt: skip
    assert_error_within_multiple_of_cudnn(torch.float32, x, hx, input_size=I, hidden_size=H, num_layers=num_layers,
                                          nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
                                          bidirectional=bidirectional)  # fmt: skip


# Sizes that take each persistent plan: W_hh in one block (H <= 200), or split over blocks with a grid barrier.
@pytest.mark.parametrize("B,H,T", [(1, 64, 300), (5, 100, 30), (64, 33, 50), (16, 256, 64), (3, 1000, 20)], ids=str)
def test_float32_error_within_multiple_of_cudnn_at_benchmark_like_sizes(cuda_path, B, H, T):
    x = torch.randn(T, B, 32, device="cuda", dtype=torch.float64)
    hx = torch.randn(2, B, H, device="cuda", dtype=torch.float64) * 0.1
    assert_error_within_multiple_of_cudnn(torch.float32, x, hx, input_size=32, hidden_size=H, bidirectional=True)


def test_float64_matches_cudnn_at_a_long_sequence(cuda_path):
    reference, fast = twin_rnns(torch.float64, "cuda", input_size=8, hidden_size=40, bidirectional=True)
    x = torch.randn(500, 3, 8, device="cuda", dtype=torch.float64)
    assert_twins_agree(reference, fast, x, torch.randn(2, 3, 40, device="cuda", dtype=torch.float64))


def test_packed_sequences_match_cudnn(cuda_path):
    lengths = [3, 7, 1, 5, 7, 2]
    packed = pack_sequence([torch.randn(n, 4, device="cuda", dtype=torch.float64) for n in lengths],
                           enforce_sorted=False)  # fmt: skip
    reference, fast = twin_rnns(torch.float64, "cuda", input_size=4, hidden_size=5, num_layers=2, bidirectional=True)
    assert_twins_agree(reference, fast, packed, torch.randn(4, 6, 5, device="cuda", dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("B,H", [(4, 64), (32, 256), (2, 600)], ids=str)
def test_low_precision_error_is_within_a_small_multiple_of_cudnn_error(cuda_path, dtype, B, H):
    x = torch.randn(50, B, 16, device="cuda", dtype=torch.float64)
    hx = torch.randn(4, B, H, device="cuda", dtype=torch.float64) * 0.5
    assert_error_within_multiple_of_cudnn(dtype, x, hx, input_size=16, hidden_size=H, num_layers=2,
                                          bidirectional=True)  # fmt: skip


@pytest.mark.parametrize("D,relu,packed", [(1, False, False), (2, True, False), (2, False, True)])
def test_ops_pass_gradcheck_and_opcheck_on_cuda(cuda_path, D, relu, packed):
    T, B, I, H = 4, 3, 2, 3
    make = lambda *s: torch.randn(*s, dtype=torch.float64, device="cuda", requires_grad=True)  # noqa: E731
    batch_sizes = torch.tensor([3, 3, 2, 1]) if packed else None
    args = (make(T, B, I), make(D, B, H), make(D, H, I), make(D, H, H), make(D, H), batch_sizes)
    torch.autograd.gradcheck(lambda *a: ops.elman_layer_forward(*a, relu), args, eps=1e-6, atol=1e-7)
    torch.library.opcheck(ops.elman_layer_forward.default, (*args, relu))
    output, h_n = ops.elman_layer_forward(*args, relu)
    backward_args = (torch.randn_like(output), torch.randn_like(h_n), *[a.detach() for a in args[:4]],
                     output.detach(), batch_sizes, relu)  # fmt: skip
    torch.library.opcheck(ops.elman_layer_backward.default, backward_args)


def test_state_on_another_device_is_a_clear_error():
    fast = rnnfast.RNN(4, 3).cuda()
    with pytest.raises(RuntimeError, match="Expected hx to be on device cuda:0"):
        fast(torch.randn(5, 2, 4, device="cuda"), torch.randn(1, 2, 3))
    with pytest.raises(RuntimeError, match="Input and parameter tensors are not at the same device"):
        fast(torch.randn(5, 2, 4))
    assert fast(torch.randn(5, 2, 4, device="cuda"))[0].is_cuda


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_func_transforms_on_cuda_equal_torch_nn_and_the_cpu(name):
    # Under torch.func the layers run their differentiable twins (tests/test_func_transforms.py checks them on the
    # CPU): vjp against cuDNN's reverse mode, jvp against the same layer's jvp on the CPU; and the fused op, called
    # directly with a tangent, refuses it on CUDA too.
    torch.manual_seed(0)
    reference, fast = twin_modules(name, torch.float64, "cuda", input_size=3, hidden_size=4, bidirectional=True)
    x = torch.randn(5, 2, 3, device="cuda", dtype=torch.float64)
    output, pullback = torch.func.vjp(lambda x: fast(x)[0], x)
    cotangent = torch.randn_like(output)
    x_leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(reference(x_leaf)[0], x_leaf, cotangent)
    torch.testing.assert_close(pullback(cotangent)[0], expected, rtol=1e-10, atol=1e-10)
    tangent = torch.randn_like(x)
    _, on_cuda = torch.func.jvp(lambda x: fast(x)[0], (x,), (tangent,))
    fast.cpu()
    _, on_cpu = torch.func.jvp(lambda x: fast(x)[0], (x.cpu(),), (tangent.cpu(),))
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-10, atol=1e-10)
    w = torch.randn(1, 4, 3, device="cuda")
    with pytest.raises(NotImplementedError, match="rnnfast::elman_layer_forward has no forward-mode derivative"):
        torch.func.jvp(lambda x: ops.elman_layer_forward(x, torch.zeros(1, 2, 4, device="cuda"), w,
                                                         torch.randn(1, 4, 4, device="cuda"), None, None, False)[0],
                       (x.float(),), (tangent.float(),))  # fmt: skip


def test_unknown_cuda_path_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RNNFAST_CUDA_PATH", "fastest")
    with pytest.raises(RuntimeError, match="RNNFAST_CUDA_PATH must be general, persistent, auto, cluster or fused"):
        rnnfast.RNN(4, 3).cuda()(torch.randn(5, 2, 4, device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="thread-block clusters need an sm_90 GPU")  # fmt: skip
def test_cluster_plan_runs_float32_up_to_hidden_256_and_is_opt_in(monkeypatch):
    # Under RNNFAST_CUDA_PATH=cluster the cluster kernels take float32 layers whose units fit a cluster's registers
    # (H <= 256); the rest, float64 and packed input go to the general path. auto never picks them.
    x = torch.randn(20, 3, 8, device="cuda")
    monkeypatch.setenv("RNNFAST_CUDA_PATH", "cluster")
    for H in [1, 64, 200, 256]:
        assert ops.elman_cuda_uses_persistent(x, torch.empty(1, H, H, device="cuda"), False), H
    assert not ops.elman_cuda_uses_persistent(x, torch.empty(1, 300, 300, device="cuda"), False)
    assert not ops.elman_cuda_uses_persistent(x.double(), torch.empty(1, 64, 64, device="cuda").double(), False)
    assert not ops.elman_cuda_uses_persistent(x, torch.empty(1, 64, 64, device="cuda"), True)


def test_default_cuda_path_is_auto_persistent_at_small_batch_general_at_large(monkeypatch):
    # Unset means auto: the persistent path where it measured faster (small batch), the general one elsewhere.
    monkeypatch.delenv("RNNFAST_CUDA_PATH", raising=False)
    w_hh = torch.randn(1, 64, 64, device="cuda")
    small, large = torch.randn(8, 1, 64, device="cuda"), torch.randn(8, 256, 64, device="cuda")
    assert ops.elman_cuda_uses_persistent(small, w_hh, False)
    assert not ops.elman_cuda_uses_persistent(large, w_hh, False)
    monkeypatch.setenv("RNNFAST_CUDA_PATH", "general")
    assert not ops.elman_cuda_uses_persistent(small, w_hh, False)
