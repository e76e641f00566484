"""lmlab attention (naive and flash) against torch.nn.functional.scaled_dot_product_attention.

fp32 on the CPU, causal, shapes (1, 12, T, 64). Three figures per T: the time ratio of
lmlab's naive attention and of ``flash_attention`` to PyTorch's fused kernel (interleaved
rounds, median ratio), and at the largest T the peak extra memory of flash against naive
(``lmlab.attention.peak_memory``: live tensor bytes, operator by operator) and the largest
error against PyTorch.

Timing runs on one thread (both sides): on a shared 2-core machine, many small operators
with two threads each spend their time waiting for each other whenever another process
holds a core, which measures the machine's load, not the algorithm. One thread compares
the algorithms like for like.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.harness import Result, compare, threads
from lmlab.attention import flash_attention, peak_memory, scaled_dot_product_attention

NAME = "attention"
HEADS, HEAD_DIM = 12, 64
THREADS = 1


def _inputs(T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, HEADS, T, HEAD_DIM, generator=g) for _ in range(3))


def _time_ratios(T: int, rounds: int, repeat: int) -> list[Result]:
    q, k, v = _inputs(T)
    peer = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    ours = {
        "naive": lambda: scaled_dot_product_attention(q, k, v, causal=True),
        "flash": lambda: flash_attention(q, k, v, causal=True),
    }
    results = []
    for name, fn in ours.items():
        ratio, iqr, a, b = compare(fn, peer, rounds=rounds, warmup=1, repeat=repeat,
                                   desc=f"{name} T={T}")
        goal = "≤ 2×" if name == "flash" else ""
        results.append(Result(
            NAME, f"{name} vs torch SDPA, causal, (1, {HEADS}, {T}, {HEAD_DIM}), fp32, {THREADS} thread",
            "time ratio lmlab/torch", ratio, iqr, goal=goal,
            met=(ratio <= 2.0) if goal else None,
            details={"lmlab_s": a[0].median, "torch_s": b[0].median},
        ))
    return results


def _memory_and_error(T: int) -> list[Result]:
    q, k, v = _inputs(T, seed=1)
    naive = peak_memory(scaled_dot_product_attention, q, k, v, causal=True)
    flash = peak_memory(flash_attention, q, k, v, causal=True)
    with torch.no_grad():
        error = (flash_attention(q, k, v, causal=True)
                 - F.scaled_dot_product_attention(q, k, v, is_causal=True)).abs().max().item()
    return [
        Result(NAME, f"flash vs naive peak extra memory, T={T}", "memory ratio flash/naive",
               flash / naive, goal="≤ 0.1", met=flash / naive <= 0.1,
               details={"flash_MiB": flash / 2**20, "naive_MiB": naive / 2**20}),
        Result(NAME, f"flash vs torch SDPA, T={T}, causal", "max abs error", error,
               goal="≤ 1e-5", met=error <= 1e-5),
    ]


def run(quick: bool = False) -> list[Result]:
    lengths = [128] if quick else [1024, 4096]
    with threads(THREADS):
        results = []
        for T in lengths:
            results += _time_ratios(T, rounds=1 if quick else 3, repeat=1 if quick else 3)
        results += _memory_and_error(256 if quick else lengths[-1])
        return results


if __name__ == "__main__":
    for result in run(quick=False):
        print(f"{result.case:70s} {result.metric:28s} {result.value:10.4g}  {result.goal} {result.met}")
