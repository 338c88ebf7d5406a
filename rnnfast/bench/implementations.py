"""The built-in implementations: rnnfast's fused layers and torch.nn's (RNN, LSTM, GRU), a plain Python loop of
the Elman recurrence, eager and under torch.compile, the parallel-in-time Elman evaluations (Newton), and, timed
beside them on the same sizes, other recurrences: the diagonal linear recurrence as a scan and as a loop, and
minGRU. Those of one cell run the weights and inputs of the same Problem."""

import copy

import torch

from .registry import Workload, register


def _module_workload(module, problem):
    x = problem.input.detach().requires_grad_()
    params = list(module.parameters())

    def forward():
        with torch.no_grad():
            output, hidden = module(problem.input, problem.initial_state)
        return output, hidden[0] if isinstance(hidden, tuple) else hidden

    def forward_backward():
        output, _ = module(x, problem.initial_state)
        return torch.autograd.grad(output, [x, *params], problem.grad_output)

    return Workload(forward, forward_backward)


# The op each cell's rnnfast layer calls, to ask the dispatcher whether this build has a kernel for a device.
_CELL_OPS = {"RNN": "elman_layer_forward", "LSTM": "lstm_layer_forward", "GRU": "gru_layer_forward"}


def rnnfast_missing_reason(device: torch.device, dtype: torch.dtype, cell: str = "RNN"):
    """Why rnnfast's kernels of `cell` cannot run on `device` in `dtype` in this build, or None when they can."""
    import rnnfast

    key = "CUDA" if device.type == "cuda" else "CPU"
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"rnnfast::{_CELL_OPS[cell]}", key):
        return f"rnnfast has no {key} kernel for {cell} in this build"
    try:
        getattr(rnnfast, cell)(1, 1).to(device=device, dtype=dtype)(torch.zeros(1, 1, 1, device=device, dtype=dtype))
    except RuntimeError as error:  # NotImplementedError included: a dtype the kernels are not built for
        return f"rnnfast: {str(error).splitlines()[0]}"
    return None


def _rnnfast_skip_reason(problem, limits):
    return rnnfast_missing_reason(problem.device, problem.dtype, problem.cell)


def build_torch_nn(problem):
    return _module_workload(problem.reference, problem)


def build_rnnfast(problem):
    from ..convert import convert

    return _module_workload(convert(copy.deepcopy(problem.reference)), problem)


register("torch.nn.RNN", "PyTorch's own layer (MKL/oneDNN on CPU, cuDNN on CUDA), the baseline")(build_torch_nn)
register("rnnfast.RNN", "rnnfast's fused layer: one input-projection product, then a C++ loop over time",
         skip_reason=_rnnfast_skip_reason)(build_rnnfast)  # fmt: skip
register("torch.nn.LSTM", "PyTorch's own LSTM (oneDNN on CPU, cuDNN on CUDA), the LSTM baseline",
         cell="LSTM")(build_torch_nn)  # fmt: skip
register("rnnfast.LSTM", "rnnfast's fused LSTM: one input-projection product, then a C++ loop over time",
         skip_reason=_rnnfast_skip_reason, cell="LSTM")(build_rnnfast)  # fmt: skip
register("torch.nn.GRU", "PyTorch's own GRU (its ATen loop on CPU, cuDNN on CUDA), the GRU baseline",
         cell="GRU")(build_torch_nn)  # fmt: skip
register("rnnfast.GRU", "rnnfast's fused GRU: one input-projection product, then a C++ loop over time",
         skip_reason=_rnnfast_skip_reason, cell="GRU")(build_rnnfast)  # fmt: skip


def _single_layer_skip_reason(problem):
    if not problem.shape.single_layer:
        return "timed on one-layer, one-direction shapes only"
    return None


def _scan_kernel_missing_reason(problem):
    key = "CUDA" if problem.device.type == "cuda" else "CPU"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("rnnfast::linear_recurrence", key):
        return f"rnnfast has no {key} scan kernel in this build"
    return None


def _parallel_skip_reason(method):
    def skip_reason(problem, limits):
        reason = (_single_layer_skip_reason(problem) or rnnfast_missing_reason(problem.device, problem.dtype)
                  or _scan_kernel_missing_reason(problem))  # fmt: skip
        if reason is not None:
            return reason
        from ..parallel import DENSE_MAX_JACOBIAN_ELEMENTS

        s = problem.shape
        states = s.seq_len * s.batch * s.hidden_size
        if limits.newton_max_states is not None and states > limits.newton_max_states:
            return (f"T*B*H = {states} > newton_max_states={limits.newton_max_states} in this plan: each Newton "
                    "iteration redoes the whole sequence's work (--full times it here)")  # fmt: skip
        elements = states * s.hidden_size
        if method == "dense" and elements > DENSE_MAX_JACOBIAN_ELEMENTS:
            # The dense iteration holds a Jacobian per step and row; past this it is not set up.
            return (f"the dense Newton iteration's Jacobians, T*B*H*H = {elements} elements, exceed "
                    f"{DENSE_MAX_JACOBIAN_ELEMENTS}")  # fmt: skip
        return None

    return skip_reason


def _register_parallel(method, description):
    @register(f"Newton ({method})", description, skip_reason=_parallel_skip_reason(method),
              family="parallel", versus="rnnfast.RNN")  # fmt: skip
    def build_parallel(problem):
        from ..convert import convert
        from ..parallel import NewtonOptions

        module = convert(copy.deepcopy(problem.reference))
        module.evaluation_mode = "parallel"
        module.newton_options = NewtonOptions(method=method)
        return _module_workload(module, problem)


_register_parallel("dense", "rnnfast.RNN(mode='parallel'): Newton's method over all steps at once, each iteration "
                   "a dense (H x H per step) parallel scan; implicit-function backward by the same scan")
_register_parallel("diagonal", "rnnfast.RNN(mode='parallel'), quasi-Newton: each iteration an elementwise "
                   "parallel scan with diag(W_hh); backward by the sequential adjoint kernel")


def elman_loop(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
    """The textbook Elman RNN in PyTorch ops: every step's input projection as one product, then one addmm and
    one tanh per step. x (T, B, I), h0 (B, H) -> output (T, B, H), h_n (B, H)."""
    T, B, I = x.shape
    z = torch.addmm(bias_ih + bias_hh, x.reshape(T * B, I), weight_ih.t()).view(T, B, -1)
    h = h0
    outputs = []
    # unbind, not z[t]: the backward of T separate selections would write T full-size gradients of z,
    # making training quadratic in T.
    for z_t in z.unbind(0):
        h = torch.tanh(torch.addmm(z_t, h, weight_hh.t()))
        outputs.append(h)
    return torch.stack(outputs), h


def _loop_workload(problem, loop):
    ref = problem.reference
    params = [p.detach().clone().requires_grad_() for p in
              (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)]  # fmt: skip
    x = problem.input.detach().requires_grad_()
    h0 = problem.hx[0]

    def forward():
        with torch.no_grad():
            output, h_n = loop(problem.input, h0, *params)
        return output, h_n.unsqueeze(0)

    def forward_backward():
        output, _ = loop(x, h0, *params)
        return torch.autograd.grad(output, [x, *params], problem.grad_output)

    return Workload(forward, forward_backward)


@register("python loop", "the Elman recurrence as a Python loop: input projection precomputed, addmm + tanh a step",
          skip_reason=lambda problem, limits: _single_layer_skip_reason(problem))  # fmt: skip
def build_python_loop(problem):
    return _loop_workload(problem, elman_loop)


def _compile_skip_reason(problem, limits):
    if _single_layer_skip_reason(problem):
        return _single_layer_skip_reason(problem)
    T = problem.shape.seq_len
    if T > limits.compile_max_steps:
        return (f"T={T} > compile_max_steps={limits.compile_max_steps}: torch.compile unrolls the loop, "
                "so compile time grows with T")  # fmt: skip
    return None


@register("torch.compile loop", "the same loop under torch.compile (inductor), unrolled over time",
          skip_reason=_compile_skip_reason)  # fmt: skip
def build_compiled_loop(problem):
    # A fresh compile cache per problem: dynamo would otherwise count each new shape as a recompile of the same
    # code and, past its recompile limit, silently run the loop eagerly.
    import torch._inductor.config

    torch._dynamo.reset()
    # Compiling in this process, not in a pool of worker processes that would stay behind, competing for the
    # cores with everything timed afterwards.
    torch._inductor.config.compile_threads = 1
    workload = _loop_workload(problem, torch.compile(elman_loop, dynamic=False, fullgraph=True))
    # Compiling here (the graphs with and without grad differ) keeps compile time out of the warm-up.
    workload.forward()
    workload.forward_backward()
    return workload


# Other recurrences, timed beside the Elman RNN on the same sizes (same_function=False: they compute something
# else, so their results are not checked against torch.nn.RNN's): the diagonal linear recurrence that the
# parallel-in-time methods and minGRU are built on, as one parallel scan and as a loop over time, and minGRU.


def linear_recurrence_loop(a, b, h0):
    """h_t = a_t * h_{t-1} + b_t one step at a time (one addcmul a step): what the parallel scan replaces.
    a, b (T, B, H), h0 (B, H) -> h (T, B, H)."""
    h = h0
    outputs = []
    for a_t, b_t in zip(a.unbind(0), b.unbind(0)):
        h = torch.addcmul(b_t, a_t, h)
        outputs.append(h)
    return torch.stack(outputs)


def _linear_recurrence_workload(problem, recurrence):
    # Coefficients of the problem's size from its Elman input projection, as minGRU forms them: a gate in (0, 1)
    # keeps the recurrence bounded. Formed once here, so only the recurrence is timed.
    ref = problem.reference
    with torch.no_grad():
        z = torch.nn.functional.linear(problem.input, ref.weight_ih_l0, ref.bias_ih_l0)  # (T, B, H)
        a = torch.sigmoid(z)
        b = (1 - a) * torch.tanh(z)
    h0 = problem.hx[0]
    leaves = [t.detach().clone().requires_grad_() for t in (a, b, h0)]

    def forward():
        with torch.no_grad():
            output = recurrence(a, b, h0)
        return output, output[-1:]

    def forward_backward():
        return torch.autograd.grad(recurrence(*leaves), leaves, problem.grad_output)

    return Workload(forward, forward_backward)


def _scan_skip_reason(problem, limits):
    return _single_layer_skip_reason(problem) or _scan_kernel_missing_reason(problem)


@register("scan (linear recurrence)", "not the Elman RNN: h_t = a_t * h_{t-1} + b_t over all steps at once, "
          "rnnfast.scan.linear_recurrence", skip_reason=_scan_skip_reason, family="parallel",
          same_function=False, versus="loop (linear recurrence)")  # fmt: skip
def build_linear_scan(problem):
    from ..scan import linear_recurrence

    return _linear_recurrence_workload(problem, linear_recurrence)


@register("loop (linear recurrence)", "not the Elman RNN: the same linear recurrence, one addcmul a step",
          skip_reason=lambda problem, limits: _single_layer_skip_reason(problem), same_function=False)  # fmt: skip
def build_linear_loop(problem):
    return _linear_recurrence_workload(problem, linear_recurrence_loop)


@register("rnnfast.MinGRU", "not the Elman RNN: minGRU (gates from the input alone), trained in parallel over time "
          "by the scan", skip_reason=_scan_skip_reason, family="parallel", same_function=False,
          versus="rnnfast.RNN")  # fmt: skip
def build_min_gru(problem):
    from ..min_gru import MinGRU

    shape = problem.shape
    generator = torch.Generator().manual_seed(0)
    module = MinGRU(shape.input_size, shape.hidden_size)
    with torch.no_grad():  # the Elman layer's initialisation range, seeded
        bound = shape.hidden_size**-0.5
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
    module = module.to(device=problem.device, dtype=problem.dtype)
    return _module_workload(module, problem)
