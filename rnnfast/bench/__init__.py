"""rnnfast's benchmark suite: what the recurrence costs, and how much of it is inherently sequential.

Run it as `python -m rnnfast.bench`. A new implementation joins every comparison with one `register` call
(see registry.py and implementations.py).
"""

from .registry import Implementation, Limits, Workload, register, registered

__all__ = ["Implementation", "Limits", "Workload", "register", "registered"]
