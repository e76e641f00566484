"""Chapter 1 checks accept different correct implementations and name specific mistakes."""

import math
import statistics

import numpy as np
import pytest
import torch

from lmlab.checks import (
    check_arithmetic_intensity,
    check_matmul_flops,
    check_median_time,
    check_roofline_time,
)


def flops_by_loops(m, n, k):
    total = 0
    for _ in range(m):
        for _ in range(n):
            total += k + k  # k multiplies, k adds
    return total


def flops_numpy(m, n, k):
    return np.int64(2) * m * n * k


def test_matmul_flops_two_ways():
    check_matmul_flops(lambda m, n, k: 2 * m * n * k)
    check_matmul_flops(flops_numpy)


def test_matmul_flops_loop_version_on_small_inputs():
    assert flops_by_loops(3, 5, 7) == 2 * 3 * 5 * 7


def test_intensity_two_ways():
    check_arithmetic_intensity(lambda m, n, k, b: 2 * m * n * k / ((m * k + k * n + m * n) * b))

    def via_tensors(m, n, k, b):
        elements = torch.tensor([m * k, k * n, m * n], dtype=torch.float64).sum()
        return (torch.tensor(2.0, dtype=torch.float64) * m * n * k / (elements * b)).item()

    check_arithmetic_intensity(via_tensors)


def test_roofline_two_ways():
    check_roofline_time(lambda f, b, p, w: max(f / p, b / w))

    def branchy(flops, nbytes, peak, bandwidth):
        compute, memory = flops / peak, nbytes / bandwidth
        return compute if compute > memory else memory

    check_roofline_time(branchy)


def median_time_sorted(fn, warmup, repeat, clock):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    samples.sort()
    mid = len(samples) // 2
    return samples[mid] if len(samples) % 2 else (samples[mid - 1] + samples[mid]) / 2


def median_time_torch(fn, warmup, repeat, clock):
    [fn() for _ in range(warmup)]
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return float(torch.tensor(times, dtype=torch.float64).quantile(0.5))


def test_median_time_three_ways():
    check_median_time(median_time_sorted)
    check_median_time(median_time_torch)
    check_median_time(lambda fn, w, r, c: statistics.median(_timed(fn, w, r, c)))


def _timed(fn, warmup, repeat, clock):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def test_median_with_torch_median_is_diagnosed():
    def torch_median(fn, w, r, c):
        return torch.tensor(_timed(fn, w, r, c)).median().item()

    with pytest.raises(AssertionError, match="lower middle|pick.* one middle sample"):
        check_median_time(torch_median)


def test_flops_returned_as_float_is_accepted():
    check_matmul_flops(lambda m, n, k: 2.0 * m * n * k)


def test_nan_result_is_reported():
    with pytest.raises(AssertionError, match="is nan|NaN"):
        check_roofline_time(lambda f, b, p, w: math.nan)
