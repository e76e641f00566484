"""Quantization: what int8/int4 cost in quality, save in bytes and gain (or lose) in speed.

Quality: validation loss of the chapter's small GPT at fp32, int8 per channel and int4 in
groups of 128, and what the sizes shrink to. The quantized model is the deployable one:
every matrix in integers (Linear weights and the embeddings; the tied output head shares
the token embedding's integers) and what stays floating point (scales, biases, LayerNorms)
in fp16, as deployment formats store it. Speed: lmlab's ``QuantLinear`` int8 path (per-row
quantized activations times int8 weights: oneDNN's u8 x s8 kernel, ``torch._int_mm`` for a
single row) against PyTorch's dynamic int8 quantization
(``torch.ao.quantization.quantize_dynamic``, fbgemm/x86 kernels) on the same Linear-heavy
model, at batch 1 and 32.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from benchmarks.harness import Result, compare, ratio_stats, threads
from lmlab.quantize import QuantLinear, has_int8_kernel, model_size_bytes, quantize_model

NAME = "quantize"


def _mlp(width: int, depth: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width)]
    return nn.Sequential(*layers).eval()


def _dynamic(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is marked deprecated
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def speed(quick: bool) -> list[Result]:
    # One thread: on a shared machine a multi-threaded kernel waits for its slowest thread,
    # and a descheduled thread turns the timings into noise; per-core ratios stay meaningful.
    with threads(1):
        return _speed(quick)


def _int8_vs_dynamic(model: nn.Module, x: torch.Tensor, quick: bool) -> tuple[float, float]:
    """Median and IQR of the per-round time ratios QuantLinear int8 / quantize_dynamic.

    A forward at batch 1 takes ~0.3 ms and moves with whatever else shares the caches and
    memory bus, by up to 30% from one process (or build) to the next: the rounds are
    spread over three fresh builds of both models, each timed with many repeats.
    """
    ratios = []
    for _ in range(1 if quick else 3):
        ours, theirs = quantize_model(model, 8, kernel="int8"), _dynamic(model)
        _, _, t_ours, t_theirs = compare(lambda m=ours: m(x), lambda m=theirs: m(x),
                                         rounds=3 if quick else 7, repeat=3 if quick else 50,
                                         desc=f"int8 batch {len(x)}")
        ratios += [a.median / b.median for a, b in zip(t_ours, t_theirs, strict=True)]
    return ratio_stats(ratios)


def int8_isa() -> str:
    """Which int8 dot-product instructions this CPU has, for the results table: the int8
    kernels' speed depends on them (VNNI multiplies four int8 pairs per lane at once)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown ISA"
    for flag, name in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"),
                       ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2 without VNNI")):
        if flag in flags:
            return name
    return "no AVX2"


def _speed(quick: bool) -> list[Result]:
    width, depth = (128, 1) if quick else (1024, 2)
    isa = int8_isa()
    model = _mlp(width, depth)
    ours = quantize_model(model, 8, kernel="int8")
    results = []
    for batch in (1, 32):
        x = torch.randn(batch, width)
        with torch.inference_mode():
            ratio, iqr = _int8_vs_dynamic(model, x, quick)
            fp32_ratio, fp32_iqr, _, _ = compare(lambda x=x: ours(x), lambda x=x: model(x),
                                                 rounds=3 if quick else 7, desc=f"fp32 batch {batch}")
        results.append(Result(
            NAME, f"QuantLinear int8 vs quantize_dynamic, MLP {width}x{4 * width}x{depth}, batch {batch}, "
                  f"1 thread, {isa}",
            "time ratio lmlab/torch", ratio, iqr, goal="≤ 1.43× (≥ 0.7× its speed)",
            met=ratio <= 1 / 0.7, details={"int8_kernel_flags": has_int8_kernel()}))
        results.append(Result(
            NAME, f"QuantLinear int8 vs fp32 nn.Linear, MLP {width}x{4 * width}x{depth}, batch {batch}, 1 thread",
            "time ratio lmlab/torch", fp32_ratio, fp32_iqr, goal="(informative)"))
    n = 256 if quick else 1024
    a = torch.randint(-127, 128, (32, n), dtype=torch.int8)
    b = torch.randint(-127, 128, (n, n), dtype=torch.int8)
    af, bf = a.float(), b.float()
    ratio, iqr, _, _ = compare(lambda: torch._int_mm(a, b), lambda: af @ bf,
                               rounds=3 if quick else 7, desc="_int_mm")
    results.append(Result(NAME, f"torch._int_mm vs fp32 matmul, 32x{n}x{n}, 1 thread",
                          "time ratio int8/fp32", ratio, iqr, goal="(informative: < 1 needs VNNI/AMX)"))
    return results


def _linear_bytes(model: nn.Module) -> int:
    """Bytes of the Linear layers' weights (with their scales), biases excluded."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
        elif isinstance(m, QuantLinear):
            total += m.qweight.numel() * m.qweight.element_size()
            total += m.scale.numel() * m.scale.element_size()
    return total


def quality() -> list[Result]:
    from lmlab.train import evaluate, small_char_gpt

    model, _, _, val_ids = small_char_gpt()
    base_loss, _ = evaluate(model, val_ids)
    base_size = model_size_bytes(model)
    results = []
    for label, bits, group, goal_loss, goal_size in [
        ("int8 per channel", 8, None, 0.5, 3.9),
        ("int4 group 128", 4, 128, 5.0, 6.5),
    ]:
        q = quantize_model(model, bits, group, float_dtype=torch.float16)
        loss, _ = evaluate(q, val_ids)
        delta = 100 * (loss - base_loss) / base_loss
        deployed = f"small char GPT, {label}, embeddings too, fp16 scales/biases/norms"
        results.append(Result(NAME, deployed, "Δ val loss vs fp32, %", delta,
                              goal=f"≤ {goal_loss}%", met=delta <= goal_loss,
                              details={"fp32_loss": base_loss, "loss": loss}))
        size_ratio = base_size / model_size_bytes(q)
        fp32_parts = base_size / model_size_bytes(quantize_model(model, bits, group))
        results.append(Result(NAME, f"small char GPT, {label}, embeddings too, fp32 scales/biases/norms",
                              "whole model: times smaller", fp32_parts, goal="(informative)"))
        results.append(Result(NAME, deployed, "whole model: times smaller",
                              size_ratio, goal=f"≥ {goal_size}×", met=size_ratio >= goal_size,
                              details={"fp32_bytes": base_size, "bytes": model_size_bytes(q)}))
        weights_ratio = _linear_bytes(model) / _linear_bytes(q)
        results.append(Result(NAME, f"small char GPT, {label}", "Linear weights: times smaller",
                              weights_ratio, goal=f"≥ {goal_size}×", met=weights_ratio >= goal_size))
    return results


def run(quick: bool = False) -> list[Result]:
    results = speed(quick)
    if not quick:  # the quality numbers need the trained model (minutes to train uncached)
        results += quality()
    return results


if __name__ == "__main__":
    for r in run(quick=False):
        print(f"{r.case:75s} {r.metric:28s} {r.value:8.3f}  goal {r.goal}  met={r.met}")
