"""Checks for exercise ch01_chips: counting FLOPs and bytes, the roofline, timing right."""

from __future__ import annotations

import random
import statistics
import time

from lmlab import device
from lmlab.checks.core import Case, Mistake, Part, close, make_check

__all__ = [
    "check_matmul_flops",
    "check_arithmetic_intensity",
    "check_roofline_time",
    "check_median_time",
    "FakeClock",
    "FakeWork",
]

CHAPTER = "ch01_chips"


def _shape_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = [Case((rng.randint(1, 4096), rng.randint(1, 4096), rng.randint(2, 4096)), label="random")
             for _ in range(8)]
    cases += [
        Case((1, 1, 1), label="edge: 1×1 times 1×1"),
        Case((1, 4096, 4096), label="edge: a vector times a matrix"),
        Case((3, 5, 7), label="edge: non-square"),
    ]
    return cases


# --------------------------------------------------------------------------- matmul_flops


check_matmul_flops = make_check(
    Part(
        name="matmul_flops",
        chapter=CHAPTER,
        reference=device.matmul_flops,
        cases=_shape_cases,
        compare=close(rtol=0, atol=0),
        guard=["lmlab.device.matmul_flops"],
        mistakes=[
            Mistake(
                "multiply-adds",
                "you counted m·n·k multiply-adds. Each multiply-add is two FLOPs (a multiply "
                "and an add), so a matmul costs 2·m·n·k.",
                lambda m, n, k: m * n * k,
            ),
            Mistake(
                "2k-1",
                "you counted m·n·(2k−1): k multiplies and k−1 adds per output. That is the "
                "exact count without a starting add, but FLOP counts (and fused multiply-add "
                "hardware) use 2·m·n·k.",
                lambda m, n, k: m * n * (2 * k - 1),
            ),
            Mistake(
                "square",
                "your count ignores the shape: it uses one dimension cubed. An (m, k) @ (k, n) "
                "product has m·n outputs, each a sum of k products.",
                lambda m, n, k: 2 * m**3,
            ),
        ],
    )
)


# --------------------------------------------------------------------------- intensity


def _intensity_cases(seed: int) -> list[Case]:
    rng = random.Random(seed + 1)
    cases = [Case(c.args + (rng.choice([2, 4, 8]),), label=c.label) for c in _shape_cases(seed)]
    cases.append(Case((4096, 4096, 4096, 2), label="edge: big square in bf16"))
    return cases


check_arithmetic_intensity = make_check(
    Part(
        name="arithmetic_intensity",
        chapter=CHAPTER,
        reference=device.arithmetic_intensity,
        cases=_intensity_cases,
        compare=close(rtol=1e-9, atol=0),
        guard=["lmlab.device.arithmetic_intensity"],
        helpers=["matmul_flops"],
        mistakes=[
            Mistake(
                "no-output",
                "you counted only the reads of A and B. The output C (m·n elements) has to "
                "be written back to memory too: bytes = (m·k + k·n + m·n) · bytes_per_element.",
                lambda m, n, k, b: 2 * m * n * k / ((m * k + k * n) * b),
            ),
            Mistake(
                "elements",
                "you divided by the number of elements, not bytes: multiply by "
                "bytes_per_element.",
                lambda m, n, k, b: 2 * m * n * k / (m * k + k * n + m * n),
            ),
            Mistake(
                "flops-not-doubled",
                "the FLOP count is m·n·k; each multiply-add is two FLOPs (2·m·n·k).",
                lambda m, n, k, b: m * n * k / ((m * k + k * n + m * n) * b),
            ),
            Mistake(
                "bits",
                "you multiplied by bits, not bytes (8× too many): bytes_per_element is "
                "already in bytes.",
                lambda m, n, k, b: 2 * m * n * k / ((m * k + k * n + m * n) * b * 8),
            ),
            Mistake(
                "inverted",
                "you computed bytes per FLOP. Arithmetic intensity is FLOPs / bytes.",
                lambda m, n, k, b: (m * k + k * n + m * n) * b / (2 * m * n * k),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- roofline


def _roofline_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for _ in range(10):
        peak = 10 ** rng.uniform(10, 15)
        bandwidth = 10 ** rng.uniform(10, 12.5)
        flops = 10 ** rng.uniform(6, 14)
        intensity = 10 ** rng.uniform(-1, 3)
        cases.append(Case((flops, flops / intensity, peak, bandwidth), label="random"))
    cases.append(Case((2e12, 1e6, 1e12, 1e11), label="edge: compute bound"))
    cases.append(Case((1e6, 4e9, 1e12, 1e11), label="edge: memory bound"))
    return cases


check_roofline_time = make_check(
    Part(
        name="roofline_time",
        chapter=CHAPTER,
        reference=device.roofline_time,
        cases=_roofline_cases,
        compare=close(rtol=1e-9, atol=0),
        guard=["lmlab.device.roofline_time"],
        mistakes=[
            Mistake(
                "sum",
                "you added compute time and memory time. The roofline assumes they overlap, "
                "so the bound is the slower of the two: max(flops/peak, bytes/bandwidth).",
                lambda f, b, p, w: f / p + b / w,
            ),
            Mistake(
                "min",
                "you took the faster of the two times; the operation cannot finish before the "
                "slower one is done: use max.",
                lambda f, b, p, w: min(f / p, b / w),
            ),
            Mistake(
                "compute-only",
                "you ignored memory traffic: the time is at least nbytes / bandwidth too.",
                lambda f, b, p, w: f / p,
            ),
            Mistake(
                "memory-only",
                "you ignored compute: the time is at least flops / peak_flops too.",
                lambda f, b, p, w: b / w,
            ),
            Mistake(
                "rates",
                "you divided rates by amounts (peak / flops); time = amount / rate.",
                lambda f, b, p, w: max(p / f, w / b),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- median_time


class FakeClock:
    """A clock that only moves when :class:`FakeWork` says so (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


class FakeWork:
    """A function whose ``i``-th call takes ``durations[i]`` seconds on ``clock``."""

    def __init__(self, clock: FakeClock, durations: list[float]) -> None:
        self.clock = clock
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> None:
        self.clock.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1

    def __repr__(self) -> str:
        return f"<fn taking {self.durations[:4]}... s>"


def median_time_reference(fn, warmup, repeat, clock) -> float:
    return device.time_fn(fn, warmup=warmup, repeat=repeat, clock=clock).median


def _timing_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for i in range(8):
        warmup = rng.randint(1, 4)
        repeat = rng.choice([5, 7, 9, 11]) if i < 6 else rng.choice([6, 10])
        slow_start = [rng.uniform(0.5, 2.0) for _ in range(warmup)]  # cold caches, lazy init
        steady = [rng.uniform(0.010, 0.020) for _ in range(repeat)]
        steady[rng.randrange(repeat)] = rng.uniform(0.2, 0.5)  # another process got the core
        clock = FakeClock()
        label = "even repeat" if repeat % 2 == 0 else "random"
        cases.append(Case((FakeWork(clock, slow_start + steady), warmup, repeat, clock), label=label))
    clock = FakeClock()
    cases.append(Case((FakeWork(clock, [0.25, 0.001, 0.002, 0.003]), 1, 3, clock), label="edge: repeat 3"))
    clock = FakeClock()
    cases.append(Case((FakeWork(clock, [0.004]), 0, 1, clock), label="edge: no warm-up, one run"))
    return cases


def _samples(fn, warmup, repeat, clock, *, timed_warmup=False):
    for _ in range(0 if timed_warmup else warmup):
        fn()
    samples = []
    for _ in range(repeat + (warmup if timed_warmup else 0)):
        start = clock()
        fn()
        samples.append(clock() - start)
    return samples


def _real_clock(fn, warmup, repeat, clock):
    return statistics.median(_samples(fn, warmup, repeat, time.perf_counter))


check_median_time = make_check(
    Part(
        name="median_time",
        chapter=CHAPTER,
        reference=median_time_reference,
        cases=_timing_cases,
        compare=close(rtol=1e-9, atol=1e-6),
        guard=["lmlab.device.time_fn"],
        mistakes=[
            Mistake(
                "timed-warmup",
                "you timed the warm-up runs too. Warm-up calls exist to be thrown away: "
                "the first calls pay for cold caches, lazy initialization and allocation.",
                lambda fn, w, r, c: statistics.median(_samples(fn, w, r, c, timed_warmup=True)),
            ),
            Mistake(
                "mean",
                "you returned the mean. One slow run (another process took the core) drags "
                "the mean up; the median ignores it.",
                lambda fn, w, r, c: statistics.mean(_samples(fn, w, r, c)),
            ),
            Mistake(
                "max",
                "you returned the slowest run (max); return the median of the timed runs.",
                lambda fn, w, r, c: max(_samples(fn, w, r, c)),
            ),
            Mistake(
                "min",
                "you returned the fastest run (min); the exercise asks for the median.",
                lambda fn, w, r, c: min(_samples(fn, w, r, c)),
            ),
            Mistake(
                "lower-middle",
                "for an even number of runs you picked one middle sample (torch.median and "
                "sorted(x)[n//2] do that); the median of an even count is the mean of the two "
                "middle samples (statistics.median).",
                lambda fn, w, r, c: sorted(_samples(fn, w, r, c))[(r - 1) // 2],
            ),
            Mistake(
                "upper-middle",
                "for an even number of runs you picked one middle sample; the median of an "
                "even count is the mean of the two middle samples (statistics.median).",
                lambda fn, w, r, c: sorted(_samples(fn, w, r, c))[r // 2],
            ),
            Mistake(
                "real-clock",
                "you read time.perf_counter() instead of the clock argument. Use the clock "
                "you are given: that is how the check (and any caller) controls time.",
                _real_clock,
            ),
        ],
    )
)
