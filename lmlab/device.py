"""Chips and clocks: which device to use, how to time code on it, and how fast it could be.

Chapter 1 of the book reads this module top to bottom. Three ideas:

1. *Counting*: a matrix multiply of an (m, k) by a (k, n) matrix costs ``2·m·n·k`` FLOPs
   (one multiply and one add per term) and moves at least ``(m·k + k·n + m·n)`` elements.
2. *Timing*: warm up first, wait for the device (CUDA runs asynchronously), repeat, and
   report the median and the spread (IQR), never the mean of a single run.
3. *Peaks*: a processor's peak FLOP/s is cores × clock × FLOPs per cycle per core; the
   roofline says an operation is limited by compute or by memory bandwidth, whichever
   takes longer.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

__all__ = [
    "pick_device",
    "Timing",
    "time_fn",
    "synchronize",
    "matmul_flops",
    "matmul_bytes",
    "arithmetic_intensity",
    "roofline_time",
    "MatmulResult",
    "measure_matmul",
    "BandwidthResult",
    "measure_bandwidth",
    "PeakEstimate",
    "peak_flops",
    "cpu_info",
    "GPU_PEAKS",
]


# --------------------------------------------------------------------------- devices


def _mps_usable() -> bool:
    """MPS (Apple GPUs) is used only where this torch handles it well (2.3 and later)."""
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        return False
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 3)


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    With ``prefer=None`` (or ``"auto"``): CUDA if present, else MPS where usable, else CPU.
    With an explicit choice (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) that device is
    returned after checking it exists, so a notebook asking for a GPU on a laptop fails with
    a clear message instead of deep inside PyTorch.
    """
    if prefer is None or (isinstance(prefer, str) and prefer.lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_usable():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(prefer)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"prefer={prefer!r} is not a device name: expected None, 'auto', 'cpu', 'cuda', "
            f"'cuda:N' or 'mps'"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"prefer={prefer!r} but this machine has no CUDA device")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"prefer={prefer!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps" and not _mps_usable():
        raise ValueError(f"prefer={prefer!r} but MPS is not available (or torch < 2.3)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"prefer={prefer!r}: expected a cpu, cuda or mps device")
    return device


def synchronize(device: str | torch.device | None) -> None:
    """Wait until every queued kernel on ``device`` has finished (no-op on the CPU)."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and interquartile range of ``samples``."""

    median: float
    iqr: float
    samples: tuple[float, ...] = field(repr=False)

    def __str__(self) -> str:
        return f"{_fmt_seconds(self.median)} ± {_fmt_seconds(self.iqr / 2)} (median ± IQR/2)"


def _fmt_seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q1, q2, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q2, q3


def time_fn(
    fn: Callable[[], object],
    *,
    warmup: int = 3,
    repeat: int = 10,
    device: str | torch.device | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``fn()`` the right way and return a :class:`Timing` in seconds per call.

    * ``warmup`` calls are made first and discarded (caches, lazy init, allocator, JIT);
    * on CUDA/MPS the device is synchronized before starting the clock and before reading
      it, because kernel launches return before the work is done;
    * each of the ``repeat`` calls is timed on its own and the median and IQR are reported,
      robust to the odd slow run caused by another process on a shared machine.

    ``clock`` is the seam tests use to inject a fake clock.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples = []
    for _ in range(repeat):
        start = clock()
        fn()
        synchronize(device)
        samples.append(clock() - start)
    q1, median, q3 = _quartiles(samples)
    return Timing(median=median, iqr=q3 - q1, samples=tuple(samples))


# --------------------------------------------------------------------------- counting


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def matmul_flops(m: int, n: int, k: int) -> int:
    """FLOPs of ``(m, k) @ (k, n)``: m·n outputs, each k multiplies and k adds → ``2·m·n·k``."""
    _check_dims(m=m, n=n, k=k)
    return 2 * m * n * k


def matmul_bytes(m: int, n: int, k: int, bytes_per_element: int = 4) -> int:
    """Minimum bytes moved by ``(m, k) @ (k, n)``: read A and B once, write C once."""
    _check_dims(m=m, n=n, k=k, bytes_per_element=bytes_per_element)
    return (m * k + k * n + m * n) * bytes_per_element


def arithmetic_intensity(m: int, n: int, k: int, bytes_per_element: int = 4) -> float:
    """FLOPs per byte of a matmul: high → compute bound, low → memory bound."""
    nbytes = matmul_bytes(m, n, k, bytes_per_element)
    if nbytes == 0:
        raise ValueError("the matmul moves no bytes: m, n, k and bytes_per_element must be > 0")
    return matmul_flops(m, n, k) / nbytes


def roofline_time(flops: float, nbytes: float, peak_flops: float, bandwidth: float) -> float:
    """Lower bound on run time: the slower of computing and moving the data (seconds)."""
    if peak_flops <= 0 or bandwidth <= 0:
        raise ValueError(
            f"peak_flops and bandwidth must be > 0, got {peak_flops!r} and {bandwidth!r}"
        )
    return max(flops / peak_flops, nbytes / bandwidth)


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class MatmulResult:
    n: int
    dtype: torch.dtype
    device: torch.device
    flops: int
    timing: Timing

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.timing.median


def measure_matmul(
    n: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = "cpu",
    *,
    warmup: int = 2,
    repeat: int = 5,
    seed: int = 0,
) -> MatmulResult:
    """Time an ``(n, n) @ (n, n)`` matmul on ``device`` and return the achieved FLOP/s."""
    _check_dims(n=n)
    device = pick_device(device)
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    timing = time_fn(lambda: a @ b, warmup=warmup, repeat=repeat, device=device)
    return MatmulResult(n, dtype, device, matmul_flops(n, n, n), timing)


@dataclass(frozen=True)
class BandwidthResult:
    nbytes: int
    device: torch.device
    timing: Timing

    @property
    def bytes_per_s(self) -> float:
        """A copy reads ``nbytes`` and writes ``nbytes``."""
        return 2 * self.nbytes / self.timing.median


def measure_bandwidth(
    nbytes: int | None = None,
    device: str | torch.device | None = "cpu",
    *,
    warmup: int = 2,
    repeat: int = 5,
) -> BandwidthResult:
    """Measure memory bandwidth with a large copy (``dst.copy_(src)``).

    The array must not fit in any cache, otherwise we would time the cache: by default it
    is 4× the last-level cache (and at least 64 MiB).
    """
    if nbytes is None:
        nbytes = max(4 * (cpu_info()["llc_bytes"] or 0), 64 * 2**20)
    _check_dims(nbytes=nbytes)
    device = pick_device(device)
    n = max(nbytes // 4, 1)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    timing = time_fn(lambda: dst.copy_(src), warmup=warmup, repeat=repeat, device=device)
    return BandwidthResult(n * 4, device, timing)


# --------------------------------------------------------------------------- peaks

# Dense peak FLOP/s (no sparsity) from the vendors' datasheets:
# NVIDIA H100 SXM and H200 datasheets (2023/2024), A100 datasheet (2020, SXM 80GB),
# V100 datasheet (SXM2), T4 and L4 datasheets, RTX 4090 Ada whitepaper (fp16 with fp32
# accumulate). Keys are matched as substrings of torch.cuda.get_device_name().
GPU_PEAKS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67e12, "tf32": 494e12, "bf16": 989e12, "fp16": 989e12, "bandwidth": 4.8e12},
    "H100": {"fp32": 67e12, "tf32": 494e12, "bf16": 989e12, "fp16": 989e12, "bandwidth": 3.35e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12, "bandwidth": 2.0e12},
    "V100": {"fp32": 15.7e12, "fp16": 125e12, "bandwidth": 0.9e12},
    "L4": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12, "bandwidth": 0.3e12},
    "T4": {"fp32": 8.1e12, "fp16": 65e12, "bandwidth": 0.32e12},
    "4090": {"fp32": 82.6e12, "bf16": 165e12, "fp16": 165e12, "bandwidth": 1.0e12},
}

_DTYPE_KEY = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class PeakEstimate:
    """An estimated peak in FLOP/s, with the arithmetic that produced it."""

    flops_per_s: float
    how: str

    def __float__(self) -> float:
        return self.flops_per_s


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """What this CPU is: model, cores we may use, clock (Hz), SIMD flags, last-level cache."""
    text = ""
    if Path("/proc/cpuinfo").exists():
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    flags = set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) if "flags" in text else set()
    model = (re.findall(r"^model name\s*:\s*(.*)$", text, re.M) or [platform.processor() or "?"])[0]
    vendor = (re.findall(r"^vendor_id\s*:\s*(.*)$", text, re.M) or [""])[0]
    family = int((re.findall(r"^cpu family\s*:\s*(\d+)", text, re.M) or ["0"])[0])
    return {
        "model": model.strip(),
        "vendor": vendor.strip(),
        "family": family,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "hz": _cpu_hz(text, model),
        "flags": flags,
        "llc_bytes": _last_level_cache_bytes(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _cpu_hz(cpuinfo: str, model: str) -> float | None:
    for path in ("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",):
        if Path(path).exists():
            return int(Path(path).read_text()) * 1e3  # kHz
    nominal = re.search(r"@\s*([\d.]+)\s*GHz", model)
    if nominal:
        return float(nominal.group(1)) * 1e9
    mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)
    return float(mhz[0]) * 1e6 if mhz else None


def _last_level_cache_bytes() -> int | None:
    best = None
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            size = (index / "size").read_text().strip()
            level = int((index / "level").read_text())
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
        nbytes = int(size.rstrip("KMG")) * scale
        if best is None or level > best[0]:
            best = (level, nbytes)
    return best[1] if best else None


def _fp32_flops_per_cycle(info: dict) -> tuple[int, str]:
    """Single-precision FLOPs per cycle per core from the SIMD width and FMA units."""
    flags = info["flags"]
    if "avx512f" in flags:
        if info["vendor"] == "AuthenticAMD" and info["family"] == 25:
            return 32, "AVX-512 on Zen 4 (two 256-bit FMA pipes): 2 × 8 lanes × 2"
        return 64, "AVX-512: 2 FMA units × 16 fp32 lanes × 2 FLOPs"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2+FMA: 2 FMA units × 8 fp32 lanes × 2 FLOPs"
    if "avx" in flags:
        return 16, "AVX: 8 lanes × (1 mul + 1 add)"
    if platform.machine() in ("arm64", "aarch64"):
        return 16, "NEON: 4 FMA pipes × 4 fp32 lanes (Apple M-class estimate)"
    return 8, "SSE: 4 lanes × (1 mul + 1 add)"


def peak_flops(
    device: str | torch.device | None = "cpu", dtype: torch.dtype = torch.float32
) -> PeakEstimate:
    """Estimate the device's peak FLOP/s.

    CPU: cores × clock × FLOPs/cycle/core, the last from the SIMD flags (fp32; other dtypes
    use the same estimate, an upper bound). GPU: a table of datasheet numbers
    (:data:`GPU_PEAKS`), falling back to a note when the model is unknown.
    """
    device = pick_device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = _DTYPE_KEY.get(dtype, "fp32")
        for model, peaks in GPU_PEAKS.items():
            if model in name:
                value = peaks.get(key, peaks["fp32"])
                return PeakEstimate(value, f"{name}: datasheet dense {key} peak")
        raise ValueError(f"no datasheet peak for GPU {name!r}; add it to lmlab.device.GPU_PEAKS")
    if device.type == "mps":
        raise ValueError("no peak table for Apple GPUs yet; measure with measure_matmul instead")
    info = cpu_info()
    per_cycle, why = _fp32_flops_per_cycle(info)
    hz = info["hz"] or 2.0e9
    cores = info["cores"] or 1
    value = cores * hz * per_cycle
    how = f"{cores} cores × {hz / 1e9:.2f} GHz × {per_cycle} FLOP/cycle ({why})"
    return PeakEstimate(value, how)
