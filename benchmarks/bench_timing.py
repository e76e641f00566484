"""Chapter 1: lmlab.device.time_fn against torch.utils.benchmark.Timer on the same matmul,
and the machine's measured matmul FLOP/s and copy bandwidth against its estimated peak."""

from __future__ import annotations

import torch
import torch.utils.benchmark as tb

from benchmarks.harness import Result, ratio_stats
from lmlab.device import measure_bandwidth, measure_matmul, peak_flops, time_fn

NAME = "timing"


def run(quick: bool = False) -> list[Result]:
    n = 128 if quick else 1024
    rounds = 2 if quick else 7
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    ratios = []
    for _ in range(rounds):
        ours = time_fn(lambda: a @ b, warmup=3, repeat=10).median
        timer = tb.Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
        theirs = timer.blocked_autorange(min_run_time=0.05 if quick else 0.5).median
        ratios.append(ours / theirs)
    median, iqr = ratio_stats(ratios)
    results = [
        Result(NAME, f"time_fn vs torch.utils.benchmark.Timer, {n}×{n} matmul", "median ratio",
               median, iqr, "within 5% (0.95–1.05)", 0.95 <= median <= 1.05),
    ]
    big = 256 if quick else 2048
    achieved = measure_matmul(big, repeat=3 if quick else 7).flops_per_s
    peak = peak_flops("cpu")
    results.append(Result(NAME, f"fp32 matmul {big}³ vs estimated peak", "fraction of peak",
                          achieved / peak.flops_per_s, 0.0, "", None,
                          {"achieved_gflops": achieved / 1e9, "peak_gflops": peak.flops_per_s / 1e9,
                           "peak_how": peak.how}))
    bw = measure_bandwidth(16 * 2**20 if quick else None, repeat=3 if quick else 7).bytes_per_s
    results.append(Result(NAME, "copy bandwidth (array 4× last-level cache)", "GB/s", bw / 1e9))
    return results
