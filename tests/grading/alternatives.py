"""Correct but different implementations of graded parts, as a student might write them
(loops instead of vectorized code, other library calls). Keyed by chapter and part."""

ALTERNATIVES = {
    "ch01_chips": {
        "matmul_flops": (
            "def matmul_flops(m, n, k):\n"
            "    total = 0\n"
            "    for _ in range(m):\n"
            "        total += n * (k + k)  # k multiplies and k adds per output\n"
            "    return total\n"
        ),
        "arithmetic_intensity": (
            "import torch\n"
            "def arithmetic_intensity(m, n, k, bytes_per_element):\n"
            "    elements = torch.tensor([m * k, k * n, m * n], dtype=torch.float64).sum()\n"
            "    return float(2.0 * m * n * k / (elements * bytes_per_element))\n"
        ),
        "roofline_time": (
            "def roofline_time(flops, nbytes, peak_flops, bandwidth):\n"
            "    compute, memory = flops / peak_flops, nbytes / bandwidth\n"
            "    return compute if compute > memory else memory\n"
        ),
        "median_time": (
            "def median_time(fn, warmup, repeat, clock):\n"
            "    [fn() for _ in range(warmup)]\n"
            "    samples = []\n"
            "    for _ in range(repeat):\n"
            "        t0 = clock(); fn(); samples.append(clock() - t0)\n"
            "    samples.sort()\n"
            "    mid = repeat // 2\n"
            "    return samples[mid] if repeat % 2 else (samples[mid - 1] + samples[mid]) / 2\n"
        ),
    },
}
