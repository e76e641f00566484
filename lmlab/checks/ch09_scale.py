"""Checks for exercise ch09_scale: training FLOPs, compute-optimal size, Adam's memory,
the pipeline bubble, and GPU-hours."""

from __future__ import annotations

import math
import random

from lmlab import scaling
from lmlab.checks.core import Case, Mistake, Part, close, make_check

__all__ = [
    "check_training_flops",
    "check_chinchilla_optimal",
    "check_adam_memory_bytes",
    "check_pipeline_bubble",
    "check_gpu_hours",
]

CHAPTER = "ch09_scale"


# --------------------------------------------------------------------------- training_flops


def _flops_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = [Case((round(10 ** rng.uniform(6, 12)), round(10 ** rng.uniform(9, 13))), label="random")
             for _ in range(8)]
    cases += [
        Case((175_000_000_000, 300_000_000_000), label="GPT-3: 175B parameters, 300B tokens"),
        Case((1, 1), label="edge: one parameter, one token"),
        Case((124_000_000, 0), label="edge: no tokens"),
    ]
    return cases


check_training_flops = make_check(
    Part(
        name="training_flops",
        chapter=CHAPTER,
        reference=scaling.training_flops,
        cases=_flops_cases,
        compare=close(rtol=1e-9, atol=0),
        guard=["lmlab.scaling.training_flops"],
        mistakes=[
            Mistake(
                "forward-only",
                "you counted the forward pass only (2·N·D). Training also runs the backward "
                "pass, which costs twice the forward (gradients for the activations and for "
                "the weights): 2 + 4 = 6 FLOPs per parameter per token, 6·N·D.",
                lambda n, d: 2 * n * d,
            ),
            Mistake(
                "half-backward",
                "you counted 4·N·D: the forward pass (2·N·D) and one backward matmul. The "
                "backward pass has two matmuls per layer (one for the input gradient, one "
                "for the weight gradient), 4·N·D together: 6·N·D in all.",
                lambda n, d: 4 * n * d,
            ),
            Mistake(
                "multiply-adds",
                "you counted one FLOP per weight per pass (3·N·D). A multiply-add is two "
                "FLOPs, so each pass costs 2·N per token: 2 + 4 = 6 per parameter per token.",
                lambda n, d: 3 * n * d,
            ),
            Mistake(
                "per-weight",
                "you counted N·D: one operation per weight per token. A forward pass is a "
                "multiply and an add per weight (2·N·D) and the backward pass twice that: 6·N·D.",
                lambda n, d: n * d,
            ),
            Mistake(
                "recompute",
                "you counted 8·N·D, which includes recomputing the forward pass (activation "
                "checkpointing). The model's training FLOPs are 6·N·D; recomputation is extra "
                "hardware work that MFU does not credit.",
                lambda n, d: 8 * n * d,
            ),
            Mistake(
                "sum",
                "you added parameters and tokens: every token passes through every weight, so "
                "the cost is a product, 6·N·D.",
                lambda n, d: 6 * (n + d),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- chinchilla


def _compute_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = [Case((10 ** rng.uniform(17, 26),), label="random") for _ in range(8)]
    cases += [
        Case((5.76e23,), label="Chinchilla's budget (70B parameters, 1.4T tokens)"),
        Case((120.0,), label="edge: C = 120 gives N = 1, D = 20"),
        Case((1e30,), label="edge: a huge budget"),
    ]
    return cases


def _swap(fn):
    def swapped(c):
        n, d = fn(c)
        return d, n

    return swapped


check_chinchilla_optimal = make_check(
    Part(
        name="chinchilla_optimal",
        chapter=CHAPTER,
        reference=scaling.chinchilla_optimal,
        cases=_compute_cases,
        compare=close(rtol=1e-6, atol=0),
        guard=["lmlab.scaling.chinchilla_optimal"],
        mistakes=[
            Mistake(
                "no-six",
                "you solved C = N·D with D = 20·N, giving N = sqrt(C/20). The budget is in "
                "training FLOPs, C = 6·N·D, so N = sqrt(C / (6·20)) = sqrt(C/120).",
                lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)),
            ),
            Mistake(
                "forward-only",
                "you used C = 2·N·D (forward pass only), giving N = sqrt(C/40). Training "
                "costs 6·N·D, so N = sqrt(C/120).",
                lambda c: (math.sqrt(c / 40), 20 * math.sqrt(c / 40)),
            ),
            Mistake(
                "swapped",
                "you returned (tokens, params), or used twenty parameters per token. The rule "
                "is twenty tokens per parameter, D = 20·N, and the parameters come first: "
                "(N, D) = (sqrt(C/120), 20·sqrt(C/120)).",
                _swap(scaling.chinchilla_optimal),
            ),
            Mistake(
                "no-sqrt",
                "you solved C = 120·N instead of C = 6·N·(20·N) = 120·N²: N grows as the "
                "square root of the budget, N = sqrt(C/120).",
                lambda c: (c / 120, 20 * c / 120),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- adam memory


def _memory_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = [Case((rng.randint(10**5, 10**11), rng.choice(["fp32", "mixed", "bf16"])), label="random")
             for _ in range(9)]
    cases += [
        Case((7_000_000_000, "fp32"), label="a 7B model in fp32"),
        Case((7_000_000_000, "mixed"), label="a 7B model in mixed precision"),
        Case((7_000_000_000, "bf16"), label="a 7B model all in bf16"),
        Case((1, "mixed"), label="edge: one parameter"),
    ]
    return cases


def _adam(weights, grads, states):
    def fn(n, precision):
        return n * (weights[precision] + grads[precision] + states[precision])

    return fn


_W = {"fp32": 4, "mixed": 2, "bf16": 2}

check_adam_memory_bytes = make_check(
    Part(
        name="adam_memory_bytes",
        chapter=CHAPTER,
        reference=scaling.adam_memory_bytes,
        cases=_memory_cases,
        compare=close(rtol=1e-9, atol=0),
        guard=["lmlab.scaling.adam_memory_bytes", "lmlab.scaling.memory_estimate"],
        mistakes=[
            Mistake(
                "no-optimizer-states",
                "you counted weights and gradients only. Adam keeps two moments per parameter "
                "(m and v: 8 bytes in fp32), and in mixed precision an fp32 master copy of the "
                "weights too: 16 bytes per parameter in fp32 and in mixed precision.",
                _adam(_W, _W, {"fp32": 0, "mixed": 0, "bf16": 0}),
            ),
            Mistake(
                "no-master-weights",
                "in mixed precision you forgot the fp32 master copy of the weights. The "
                "optimizer updates an fp32 copy (16-bit weights cannot hold small updates) "
                "and keeps its two moments in fp32: 2 + 2 + 4 + 4 + 4 = 16 bytes per parameter.",
                _adam(_W, _W, {"fp32": 8, "mixed": 8, "bf16": 4}),
            ),
            Mistake(
                "mixed-states-in-16-bits",
                "in mixed precision you stored Adam's moments in 16 bits and forgot the master "
                "weights: the optimizer side of mixed precision is all fp32 (master weights, "
                "m and v: 12 bytes) on top of 16-bit weights and gradients (4 bytes).",
                _adam(_W, _W, {"fp32": 8, "mixed": 4, "bf16": 4}),
            ),
            Mistake(
                "one-moment",
                "you kept one optimizer value per parameter (that is SGD with momentum). "
                "Adam keeps two moments, m (mean of gradients) and v (mean of squares).",
                _adam(_W, _W, {"fp32": 4, "mixed": 8, "bf16": 2}),
            ),
            Mistake(
                "no-gradients",
                "you forgot the gradients: backward writes one gradient per parameter (4 bytes "
                "in fp32, 2 in 16 bits) that lives until the optimizer step.",
                _adam(_W, {"fp32": 0, "mixed": 0, "bf16": 0}, {"fp32": 8, "mixed": 12, "bf16": 4}),
            ),
            Mistake(
                "bits",
                "your result is 8× too large: you counted bits (32 per fp32 value) instead of "
                "bytes (4). Memory is quoted in bytes.",
                lambda n, p: 8 * scaling.adam_memory_bytes(n, p),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- pipeline bubble


def _bubble_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = [Case((rng.randint(2, 64), rng.randint(1, 256)), label="random") for _ in range(8)]
    cases += [
        Case((1, 8), label="edge: one stage, no pipeline"),
        Case((4, 1), label="edge: one micro-batch"),
        Case((8, 8), label="edge: p = m"),
        Case((2, 1000), label="edge: many micro-batches"),
    ]
    return cases


check_pipeline_bubble = make_check(
    Part(
        name="pipeline_bubble",
        chapter=CHAPTER,
        reference=scaling.pipeline_bubble,
        cases=_bubble_cases,
        compare=close(rtol=1e-9, atol=1e-12),
        guard=["lmlab.scaling.pipeline_bubble"],
        mistakes=[
            Mistake(
                "relative-to-ideal",
                "you returned (p-1)/m, the idle time relative to the ideal (bubble-free) step, "
                "as Narayanan et al. 2021 quote it. The fraction of the whole step spent idle "
                "divides by the whole step, m + p - 1 slots: (p-1)/(m+p-1).",
                lambda p, m: (p - 1) / m,
            ),
            Mistake(
                "p-over-m",
                "you returned p/m, stages over micro-batches. The idle slots are the p - 1 it "
                "takes to fill (and drain) the pipeline, out of a step of m + p - 1 slots: "
                "(p-1)/(m+p-1).",
                lambda p, m: p / m,
            ),
            Mistake(
                "p-over-total",
                "your numerator is p; the pipeline fills in p - 1 slots (the first stage starts "
                "at once), so the bubble is (p-1)/(m+p-1), and 0 for a single stage.",
                lambda p, m: p / (m + p - 1),
            ),
            Mistake(
                "swapped",
                "you swapped p and m: the idle slots come from filling and draining the p "
                "stages, so the numerator is p - 1: (p-1)/(m+p-1).",
                lambda p, m: (m - 1) / (m + p - 1),
            ),
            Mistake(
                "busy-fraction",
                "you returned the fraction of time each stage is busy, m/(m+p-1). The bubble "
                "is the idle part: 1 - m/(m+p-1) = (p-1)/(m+p-1).",
                lambda p, m: m / (m + p - 1),
            ),
            Mistake(
                "off-by-one",
                "the step lasts m + p - 1 micro-batch slots (the last stage starts p - 1 slots "
                "late and then runs m), not m + p: bubble = (p-1)/(m+p-1).",
                lambda p, m: (p - 1) / (m + p),
            ),
            Mistake(
                "integer-division",
                "you used integer division (//), which rounds the fraction down to 0. Use / "
                "for a float: (p-1)/(m+p-1).",
                lambda p, m: (p - 1) // (m + p - 1),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- gpu hours


def _hours_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    peaks = [chip.peak_flops("bf16") for chip in scaling.ACCELERATORS.values()]
    cases = [Case((10 ** rng.uniform(18, 26), rng.choice(peaks), round(rng.uniform(0.2, 0.6), 2)),
                  label="random") for _ in range(8)]
    cases += [
        Case((3.14e23, 125e12, 0.3), label="GPT-3 on V100s at 30 % MFU"),
        Case((989e12 * 3600, 989e12, 1.0), label="edge: one hour at full peak"),
        Case((0.0, 312e12, 0.5), label="edge: no work"),
    ]
    return cases


check_gpu_hours = make_check(
    Part(
        name="gpu_hours",
        chapter=CHAPTER,
        reference=scaling.gpu_hours,
        cases=_hours_cases,
        compare=close(rtol=1e-9, atol=1e-9),
        guard=["lmlab.scaling.gpu_hours", "lmlab.scaling.training_cost"],
        mistakes=[
            Mistake(
                "seconds",
                "you returned GPU-seconds: divide by 3600 for hours.",
                lambda f, p, u: f / (p * u),
            ),
            Mistake(
                "no-mfu",
                "you assumed the chip runs at its datasheet peak. Real runs sustain a fraction "
                "of it (the MFU): divide by peak_flops · mfu.",
                lambda f, p, u: f / p / 3600,
            ),
            Mistake(
                "times-mfu",
                "you multiplied by the MFU. A lower utilization means *more* hours: the chip "
                "delivers peak_flops · mfu FLOP/s, so hours = flops / (peak_flops · mfu) / 3600.",
                lambda f, p, u: f / p * u / 3600,
            ),
            Mistake(
                "minutes",
                "you divided by 60: that gives GPU-minutes. An hour is 3600 seconds.",
                lambda f, p, u: f / (p * u) / 60,
            ),
        ],
    )
)
