"""The shared benchmark harness: run A and B interleaved, report the ratio, not seconds.

Shared machines are noisy: another process can slow one run by 2×. Comparing lmlab (A)
with its peer (B) in the same process, alternating A, B, A, B for several rounds, exposes
both to the same noise; the median of the per-round ratios A/B is stable where absolute
times are not.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from lmlab.device import Timing, time_fn

__all__ = ["Result", "compare", "ratio_stats", "threads"]


@dataclass
class Result:
    """One line of ``benchmarks/results.md``."""

    benchmark: str  # e.g. "attention"
    case: str  # e.g. "flash vs torch SDPA, T=1024"
    metric: str  # e.g. "time ratio lmlab/torch" or "analogy accuracy, points"
    value: float  # the median ratio (or the measured quantity)
    iqr: float = 0.0
    goal: str = ""  # e.g. "≤ 2×"
    met: bool | None = None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@contextmanager
def threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count.

    Most benchmarks time both sides on one thread: on a shared machine a multi-threaded
    kernel waits for its slowest (possibly descheduled) thread, and the ratio drowns in noise.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ratio_stats(ratios: list[float]) -> tuple[float, float]:
    """Median and IQR of a list of ratios."""
    if len(ratios) == 1:
        return ratios[0], 0.0
    q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q2, q3 - q1


def compare(
    fn_a: Callable[[], object],
    fn_b: Callable[[], object],
    *,
    rounds: int = 5,
    warmup: int = 2,
    repeat: int = 3,
    device=None,
    desc: str = "",
) -> tuple[float, float, list[Timing], list[Timing]]:
    """Time A and B in alternating rounds; return (median A/B, IQR, timings A, timings B)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):  # warm both up once, before any timing
        fn_a()
        fn_b()
    a_times, b_times, ratios = [], [], []
    for r in tqdm(range(rounds), desc=desc or "rounds", leave=False):
        order = [(fn_a, a_times), (fn_b, b_times)]
        for fn, times in order if r % 2 == 0 else reversed(order):
            times.append(time_fn(fn, warmup=0, repeat=repeat, device=device))
        ratios.append(a_times[-1].median / b_times[-1].median)
    median, iqr = ratio_stats(ratios)
    return median, iqr, a_times, b_times
