"""The implementations the suite compares. Adding one is one `register` call; every analysis, table and plot,
and the pytest-benchmark suite, pick it up from here."""

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch

from .problem import Problem


@dataclass(frozen=True)
class Workload:
    """One implementation set up at one problem."""

    # Inference: runs under torch.no_grad and returns (output (T, B, H), h_n (1, B, H)); an LSTM's c_n is left out.
    forward: Callable[[], Tuple[torch.Tensor, torch.Tensor]]
    # Training step: forward, then backward from problem.grad_output; returns the gradients of
    # (input, weight_ih, weight_hh, bias_ih, bias_hh), or of its own inputs where it computes another function.
    forward_backward: Callable[[], Tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Limits:
    """What a run is willing to wait for while setting implementations up."""

    compile_max_steps: int = 0  # longest sequence the torch.compile'd loop is built for; 0 builds none
    # Largest problem the Newton evaluations are timed at, in hidden-state values T*B*H (None: any). Each Newton
    # iteration redoes the whole sequence's work, so past this they take longer than everything else at a shape.
    newton_max_states: Optional[int] = None


@dataclass(frozen=True)
class Implementation:
    name: str
    description: str
    build: Callable[[Problem], Workload]
    # Why this implementation cannot or should not run this problem, or None when it can.
    skip_reason: Callable[[Problem, Limits], Optional[str]]
    # "sequential" for loops over time; the parallel-in-time methods register as "parallel".
    family: str
    # The torch.nn layer it computes, "RNN", "LSTM" or "GRU": it runs that layer's Problem and is compared with
    # that layer's baseline, the implementation named baseline_name(cell).
    cell: str = "RNN"
    # False for another recurrence timed beside the cell (the linear scan, minGRU): run on the same problem's
    # sizes and compared in time, but not checked against the baseline's results, which it does not compute.
    same_function: bool = True
    # For a parallel-in-time implementation, the sequential one it is to beat: the sequence-length sweep reports
    # the T from which it does.
    versus: Optional[str] = None


_REGISTRY: Dict[str, Implementation] = {}


def baseline_name(cell: str) -> str:
    """The implementation every other implementation of `cell` is compared with: PyTorch's own layer."""
    return f"torch.nn.{cell}"


def register(name: str, description: str, skip_reason=None, family: str = "sequential", cell: str = "RNN",
             same_function: bool = True, versus: Optional[str] = None):  # fmt: skip
    """Decorator for a builder `build(problem) -> Workload`: makes it the implementation `name` of `cell`."""

    def decorate(build):
        if name in _REGISTRY:
            raise ValueError(f"benchmark implementation {name!r} is already registered")
        _REGISTRY[name] = Implementation(name, description, build, skip_reason or (lambda problem, limits: None),
                                         family, cell, same_function, versus)  # fmt: skip
        return build

    return decorate


def registered(names: Optional[Iterable[str]] = None) -> List[Implementation]:
    """The registered implementations, in registration order, or the named ones."""
    from . import implementations  # noqa: F401  (registers the built-in implementations)

    if names is None:
        return list(_REGISTRY.values())
    unknown = [n for n in names if n not in _REGISTRY]
    if unknown:
        raise KeyError(f"unknown benchmark implementations {unknown}; registered: {list(_REGISTRY)}")
    return [_REGISTRY[n] for n in names]
