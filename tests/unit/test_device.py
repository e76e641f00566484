"""lmlab.device: counts by hand, timing with a fake clock, peaks from known flags."""

import statistics

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmlab import device
from lmlab.device import (
    Timing,
    arithmetic_intensity,
    matmul_bytes,
    matmul_flops,
    peak_flops,
    pick_device,
    roofline_time,
    time_fn,
)

dims = st.integers(min_value=1, max_value=10_000)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_matmul_flops_by_hand():
    # (2, 3) @ (3, 4): 8 outputs, each 3 multiplies + 3 adds
    assert matmul_flops(2, 4, 3) == 48


@given(dims, dims, dims)
def test_matmul_flops_matches_flop_counter_convention(m, n, k):
    assert matmul_flops(m, n, k) == 2 * m * n * k


def test_matmul_flops_agrees_with_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    a, b = torch.randn(7, 5), torch.randn(5, 3)
    with FlopCounterMode(display=False) as counter:
        a @ b
    assert counter.get_total_flops() == matmul_flops(7, 3, 5)


@given(dims, dims, dims, st.sampled_from([1, 2, 4, 8]))
def test_intensity_is_flops_over_bytes(m, n, k, b):
    assert matmul_bytes(m, n, k, b) == (m * k + k * n + m * n) * b
    assert arithmetic_intensity(m, n, k, b) == pytest.approx(2 * m * n * k / ((m * k + k * n + m * n) * b))


def test_square_matmul_intensity_is_n_over_6_in_fp32():
    assert arithmetic_intensity(600, 600, 600, 4) == pytest.approx(100.0)


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True, None])
def test_counts_reject_bad_dimensions(bad):
    with pytest.raises(ValueError, match="m must be a non-negative int"):
        matmul_flops(bad, 2, 2)


@given(st.floats(1, 1e15), st.floats(1, 1e12), st.floats(1e9, 1e15), st.floats(1e9, 1e13))
def test_roofline_time_is_the_slower_of_compute_and_memory(flops, nbytes, peak, bw):
    t = roofline_time(flops, nbytes, peak, bw)
    assert t == max(flops / peak, nbytes / bw)
    assert t >= flops / peak and t >= nbytes / bw


def test_roofline_time_rejects_zero_rates():
    with pytest.raises(ValueError, match="peak_flops and bandwidth must be > 0"):
        roofline_time(1, 1, 0, 1)


def test_time_fn_with_fake_clock_skips_warmup_and_takes_median():
    clock = FakeClock()
    durations = iter([5.0, 5.0, 0.01, 0.02, 0.5, 0.01, 0.03])

    def work():
        clock.now += next(durations)

    t = time_fn(work, warmup=2, repeat=5, clock=clock)
    assert t.samples == pytest.approx((0.01, 0.02, 0.5, 0.01, 0.03))
    assert t.median == pytest.approx(0.02)
    q = statistics.quantiles(t.samples, n=4, method="inclusive")
    assert t.iqr == pytest.approx(q[2] - q[0])


def test_time_fn_single_run_has_zero_iqr():
    clock = FakeClock()

    def work():
        clock.now += 0.25

    t = time_fn(work, warmup=0, repeat=1, clock=clock)
    assert (t.median, t.iqr) == (0.25, 0.0)


def test_time_fn_synchronizes_the_device(monkeypatch):
    calls = []
    monkeypatch.setattr(device, "synchronize", lambda d: calls.append(d))
    time_fn(lambda: None, warmup=1, repeat=3, device="cpu")
    assert len(calls) == 1 + 3  # once after warm-up, once after each timed run


@pytest.mark.parametrize("kwargs, message", [
    ({"warmup": -1}, "warmup must be >= 0"),
    ({"repeat": 0}, "repeat must be >= 1"),
])
def test_time_fn_rejects_bad_counts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        time_fn(lambda: None, **kwargs)


def test_time_fn_rejects_non_callables():
    with pytest.raises(TypeError, match="fn must be callable"):
        time_fn(3)


def test_timing_prints_readably():
    assert "ms" in str(Timing(0.002, 0.0004, (0.002,)))


def test_pick_device_defaults_to_an_available_device():
    dev = pick_device()
    assert dev.type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert dev.type in ("cpu", "mps")


def test_pick_device_explicit_cpu_and_errors():
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device name"):
        pick_device("gpu please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")


def test_peak_flops_from_flags(monkeypatch):
    info = {"model": "Test CPU", "vendor": "GenuineIntel", "family": 6, "cores": 4, "hz": 3.0e9,
            "flags": {"avx", "avx2", "fma"}, "llc_bytes": 8 * 2**20, "torch_capability": "AVX2"}
    monkeypatch.setattr(device, "cpu_info", lambda: info)
    peak = peak_flops("cpu")
    assert peak.flops_per_s == pytest.approx(4 * 3.0e9 * 32)
    assert "AVX2" in peak.how
    info["flags"] = info["flags"] | {"avx512f"}
    assert peak_flops("cpu").flops_per_s == pytest.approx(4 * 3.0e9 * 64)
    info.update(vendor="AuthenticAMD", family=25)  # Zen 4 runs AVX-512 on 256-bit pipes
    assert peak_flops("cpu").flops_per_s == pytest.approx(4 * 3.0e9 * 32)


def test_gpu_table_has_the_common_gpus():
    for name in ("H100", "A100", "V100", "T4", "L4"):
        assert device.GPU_PEAKS[name]["fp32"] > 1e12


def test_measured_matmul_is_below_the_estimated_peak():
    result = device.measure_matmul(256, repeat=3)
    assert 0 < result.flops_per_s < 1.5 * peak_flops("cpu").flops_per_s
    assert result.flops == matmul_flops(256, 256, 256)


def test_bandwidth_measurement_counts_read_and_write():
    r = device.measure_bandwidth(8 * 2**20, repeat=2)
    assert r.nbytes == 8 * 2**20
    assert r.bytes_per_s == pytest.approx(2 * r.nbytes / r.timing.median)


def test_default_bandwidth_array_exceeds_last_level_cache():
    llc = device.cpu_info()["llc_bytes"] or 0
    r = device.measure_bandwidth(repeat=1, warmup=0)
    assert r.nbytes >= 4 * llc
