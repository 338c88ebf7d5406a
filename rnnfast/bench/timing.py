"""Wall-clock timing of several callables against each other: warm-up, calibration, interleaved repetitions.

The callables compared at one shape are timed round by round (each round runs every callable once, in an
order that rotates) so that a slow spell of a shared, noisy machine falls on all of them alike instead of on
whichever ran during it. The clock and the device synchronisation are injected, so the arithmetic is testable
on a fake clock.
"""

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one callable, one sample per repetition (each sample the mean of `calls` calls)."""

    samples: Sequence[float]
    calls: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def q25(self) -> float:
        return _quantile(self.samples, 0.25)

    @property
    def q75(self) -> float:
        return _quantile(self.samples, 0.75)

    @property
    def iqr(self) -> float:
        return self.q75 - self.q25

    @property
    def relative_spread(self) -> float:
        """Interquartile range over median: 0.05 means the middle half of the samples lies within 5%."""
        return self.iqr / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "median_s": self.median,
            "q25_s": self.q25,
            "q75_s": self.q75,
            "iqr_s": self.iqr,
            "min_s": min(self.samples),
            "max_s": max(self.samples),
            "calls_per_sample": self.calls,
            "samples_s": list(self.samples),
        }


def _quantile(values: Sequence[float], q: float) -> float:
    # Linear interpolation between order statistics (numpy's default), without needing numpy.
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class TimingConfig:
    # Calls of each callable before the repetitions; the last is timed and sets how many calls make a sample,
    # so there is always at least one.
    warmup: int = 1
    repeats: int = 7  # samples per callable, the most taken
    min_repeats: int = 3  # samples per callable even when the time budget is short
    min_sample_s: float = 0.01  # calls are batched until one sample lasts at least this long
    budget_s: float = 2.0  # the time the repetitions of one comparison should take, all callables together


def time_interleaved(
    callables: Mapping[str, Callable[[], object]],
    config: TimingConfig = TimingConfig(),
    clock: Callable[[], float] = time.perf_counter,
    synchronize: Callable[[], None] = lambda: None,
    called_s: Optional[Mapping[str, float]] = None,
) -> Dict[str, Timing]:
    """Times every callable in `callables` against the others and returns name -> Timing.

    `synchronize` is called before reading the clock, so that queued device work (CUDA) is counted.
    `called_s`: for callables the caller has already called once, how long that call took. One that took at
    least a sample's length (min_sample_s) gets no warm-up: the caller's call was its first, and its samples are
    one call each, which no calibration would change. At the widest shapes that saves a call of seconds.
    """
    called_s = called_s or {}
    names = list(callables)
    slow = {name for name in names if name in called_s and called_s[name] >= config.min_sample_s}
    for name in names:
        for _ in range(0 if name in slow else config.warmup - 1):
            callables[name]()
    synchronize()

    # The last warm-up call of each, timed, tells how many calls make a sample long enough for the clock's
    # resolution. It is not a sample: it runs before the interleaved rounds. A calibration call of its own would
    # cost as much as one more round, which at the largest shapes is seconds.
    calls = {name: 1 for name in slow}
    one_call = {name: called_s[name] for name in slow}
    for name in names:
        if name in slow:
            continue
        start = clock()
        callables[name]()
        synchronize()
        one_call[name] = max(clock() - start, 0.0)
        calls[name] = max(1, math.ceil(config.min_sample_s / one_call[name])) if one_call[name] > 0 else 1

    round_s = sum(one_call[name] * calls[name] for name in names)
    affordable = int(config.budget_s / round_s) if round_s > 0 else config.repeats
    repeats = max(config.min_repeats, min(config.repeats, affordable))

    samples = {name: [] for name in names}
    for r in range(repeats):
        # Rotating the order keeps any effect of running first or last (caches, clocks) off one callable.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = callables[name], calls[name]
            start = clock()
            for _ in range(n):
                fn()
            synchronize()
            samples[name].append((clock() - start) / n)
    return {name: Timing(tuple(samples[name]), calls[name]) for name in names}
