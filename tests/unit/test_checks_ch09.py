"""The ch09_scale checks accept different correct solutions and name the catalogued mistakes."""

from __future__ import annotations

import math

import pytest

from lmlab import scaling
from lmlab.checks import (
    PARTS,
    check_adam_memory_bytes,
    check_chinchilla_optimal,
    check_gpu_hours,
    check_pipeline_bubble,
    check_training_flops,
)

SEEDS = [0, 7]


# --------------------------------------------------------------------------- correct solutions


def flops_product(n_params, n_tokens):
    return 6 * n_params * n_tokens


def flops_by_pass(n_params, n_tokens):
    forward = 2 * n_params  # per token: a multiply and an add per weight
    backward = 2 * forward  # input gradients and weight gradients
    return float((forward + backward) * n_tokens)


def chinchilla_closed_form(compute):
    n = math.sqrt(compute / 120)
    return n, 20 * n


def chinchilla_bisection(compute):
    """Find N with 6·N·(20·N) = C by bisection on a log scale (no closed form)."""
    lo, hi = 1e-3, 1e20
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if 120 * mid * mid < compute:
            lo = mid
        else:
            hi = mid
    n = math.sqrt(lo * hi)
    return [n, compute / (6 * n)]


def adam_table(n_params, precision):
    per_param = {"fp32": 4 + 4 + 4 + 4, "mixed": 2 + 2 + 4 + 4 + 4, "bf16": 2 + 2 + 2 + 2}
    return n_params * per_param[precision]


def adam_by_parts(n_params, precision):
    size = 4 if precision == "fp32" else 2
    weights = grads = n_params * size
    moments = 2 * n_params * (4 if precision in ("fp32", "mixed") else 2)
    master = 4 * n_params if precision == "mixed" else 0
    return weights + grads + moments + master


def bubble_formula(p, m):
    return (p - 1) / (m + p - 1)


def bubble_by_schedule(p, m):
    """Count idle (stage, slot) pairs of a GPipe schedule."""
    slots = m + p - 1
    busy = sum(1 for s in range(p) for t in range(slots) if 0 <= t - s < m)
    return 1 - busy / (p * slots)


def hours_direct(flops, peak_flops, mfu):
    return flops / (peak_flops * mfu) / 3600


def hours_by_steps(flops, peak_flops, mfu):
    sustained = peak_flops * mfu  # FLOP/s really delivered
    seconds = flops / sustained
    return seconds / 60 / 60


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "check, fns",
    [
        (check_training_flops, [flops_product, flops_by_pass]),
        (check_chinchilla_optimal, [chinchilla_closed_form, chinchilla_bisection]),
        (check_adam_memory_bytes, [adam_table, adam_by_parts]),
        (check_pipeline_bubble, [bubble_formula, bubble_by_schedule]),
        (check_gpu_hours, [hours_direct, hours_by_steps]),
    ],
)
def test_correct_implementations_pass(check, fns, seed, capsys):
    for fn in fns:
        check(fn, seed=seed)
    assert "✔" in capsys.readouterr().out


# --------------------------------------------------------------------------- diagnoses


def _fails_with(check, fn, text):
    with pytest.raises(AssertionError) as info:
        check(fn)
    assert text in str(info.value), str(info.value)
    return str(info.value)


def test_forward_only_flops_named():
    message = _fails_with(check_training_flops, lambda n, d: 2 * n * d, "forward pass only")
    assert "Likely mistake" in message


def test_chinchilla_without_six_named():
    _fails_with(check_chinchilla_optimal, lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)),
                "C = 6·N·D")


def test_adam_without_master_weights_named():
    def no_master(n, precision):
        return n * {"fp32": 16, "mixed": 12, "bf16": 8}[precision]

    _fails_with(check_adam_memory_bytes, no_master, "master copy")


def test_adam_bits_named():
    _fails_with(check_adam_memory_bytes, lambda n, p: adam_table(n, p) * 8, "bits")


def test_bubble_inverted_named():
    _fails_with(check_pipeline_bubble, lambda p, m: (m - 1) / (m + p - 1), "swapped p and m")
    _fails_with(check_pipeline_bubble, lambda p, m: (p - 1) / m, "Narayanan")


def test_gpu_hours_in_seconds_named():
    _fails_with(check_gpu_hours, lambda f, p, u: f / (p * u), "divide by 3600")


def test_delegating_to_lmlab_is_refused():
    _fails_with(check_pipeline_bubble, lambda p, m: scaling.pipeline_bubble(p, m), "write yourself")

    def via_estimate(n, precision):
        return scaling.memory_estimate(n, optimizer="adam", precision=precision).total

    _fails_with(check_adam_memory_bytes, via_estimate, "write yourself")


def test_wrong_return_type_is_reported():
    _fails_with(check_chinchilla_optimal, lambda c: math.sqrt(c / 120), "expected a tuple")


@pytest.mark.parametrize(
    "name", ["training_flops", "chinchilla_optimal", "adam_memory_bytes", "pipeline_bubble", "gpu_hours"]
)
def test_every_catalogued_mistake_is_named(name):
    part = PARTS[name]
    assert part.chapter == "ch09_scale"
    for mistake in part.mistakes:
        with pytest.raises(AssertionError) as info:
            from lmlab.checks.core import run_part

            run_part(part, mistake.fn, quiet=True)
        assert mistake.hint in str(info.value), mistake.name
