"""Scale: what a training run costs in FLOPs, memory, time and money, and how to split it.

Chapter 9 of the book reads this module top to bottom. Five ideas:

1. *Compute*: training a dense Transformer with ``N`` parameters on ``D`` tokens costs
   about ``6·N·D`` FLOPs (Kaplan et al. 2020, section 2.1): a forward pass is 2 FLOPs per
   weight per token (a multiply and an add), the backward pass twice that (gradients for
   the inputs and for the weights). Attention adds ``12·L·T·d`` per token (PaLM,
   Chowdhery et al. 2022, appendix B). :func:`training_flops`, checked against
   ``torch.utils.flop_counter.FlopCounterMode`` by :func:`measure_training_flops`.
2. *Compute-optimal size*: for a budget ``C``, Chinchilla (Hoffmann et al. 2022) trains
   ``N`` and ``D`` in proportion, about 20 tokens per parameter. :func:`chinchilla_optimal`.
3. *Memory*: weights, gradients and optimizer states cost a fixed number of bytes per
   parameter (16 for Adam in fp32 or in mixed precision, Rajbhandari et al. 2020), and
   activations grow with batch × sequence × width × depth. :func:`memory_estimate`,
   checked against what a real model keeps by :func:`measure_training_memory`.
4. *Money*: GPU-hours = FLOPs / (peak FLOP/s × MFU). :func:`training_cost`, with a table
   of accelerators (:data:`ACCELERATORS`).
5. *Parallelism*: data, tensor and pipeline parallel steps, their communication and the
   pipeline bubble ``(p-1)/(m+p-1)``. :func:`simulate_step`, :func:`memory_per_gpu`.

Symbols: ``N`` parameters, ``D`` training tokens, ``C`` FLOPs, ``L`` layers, ``d`` (or
``C`` in the transformer module) model width, ``H`` heads, ``T`` sequence length,
``B`` batch size (sequences), ``V`` vocabulary size.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from lmlab.device import GPU_PEAKS
from lmlab.presets import preset
from lmlab.transformer import GPTConfig, flops_per_token, kv_cache_bytes_per_token, param_count

__all__ = [
    "Accelerator",
    "ACCELERATORS",
    "get_accelerator",
    "Run",
    "KNOWN_RUNS",
    "training_flops",
    "measure_training_flops",
    "matmul_params",
    "model_shape",
    "ChinchillaFit",
    "CHINCHILLA_FITS",
    "chinchilla_loss",
    "chinchilla_optimal",
    "BYTES_PER_VALUE",
    "OPTIMIZER_STATES",
    "ActivationProfile",
    "ACTIVATION_PROFILES",
    "MemoryEstimate",
    "memory_estimate",
    "inference_memory",
    "adam_memory_bytes",
    "activation_bytes",
    "SavedTensorMeter",
    "measure_training_memory",
    "Cost",
    "gpu_hours",
    "training_cost",
    "pipeline_bubble",
    "ring_allreduce_time",
    "Layout",
    "StepTime",
    "simulate_step",
    "memory_per_gpu",
    "NETWORK_BANDWIDTH",
]


def _positive(name: str, value, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _count(name: str, value, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------- accelerators


@dataclass(frozen=True)
class Accelerator:
    """One chip: dense peak FLOP/s per precision, memory, bandwidths, and where they come from.

    ``peak`` maps a precision (``"fp32"``, ``"tf32"``, ``"bf16"``, ``"fp16"``, ``"fp8"``) to
    dense FLOP/s (no 2:4 sparsity). ``memory`` and ``bandwidth`` are the device memory in
    bytes and its bandwidth in bytes/s; ``link_bandwidth`` the chip-to-chip link (NVLink,
    Infinity Fabric, ICI, or PCIe when there is none), bytes/s in one direction.
    """

    name: str
    vendor: str
    year: int
    peak: dict
    memory: float
    bandwidth: float
    link_bandwidth: float
    source: str

    def peak_flops(self, precision: str = "bf16") -> float:
        """Dense peak FLOP/s in ``precision`` ("mixed" means 16-bit matmuls; chips without
        bf16, such as the V100 and T4, use their fp16 peak for it)."""
        key = "bf16" if precision == "mixed" else precision
        if key == "bf16" and key not in self.peak:
            key = "fp16"
        if key not in self.peak:
            raise ValueError(
                f"{self.name} has no datasheet peak for precision={precision!r}; "
                f"it lists {sorted(self.peak)}"
            )
        return self.peak[key]


def _nvidia(key: str, name: str, year: int, memory_gb: float, link_gb: float, source: str,
            **extra: float) -> Accelerator:
    """An NVIDIA entry whose peaks and bandwidth come from :data:`lmlab.device.GPU_PEAKS`."""
    table = dict(GPU_PEAKS[key])
    bandwidth = table.pop("bandwidth")
    return Accelerator(name, "NVIDIA", year, {**table, **extra}, memory_gb * 1e9, bandwidth,
                       link_gb * 1e9, source)


#: Accelerators with datasheet numbers. NVIDIA peaks and memory bandwidths are those of
#: :data:`lmlab.device.GPU_PEAKS` (one source of truth); this table adds memory size,
#: chip-to-chip bandwidth (one direction: NVLink 4 = 900 GB/s both ways = 450 GB/s each
#: way), fp8 and other vendors.
ACCELERATORS: dict[str, Accelerator] = {
    "V100": _nvidia("V100", "NVIDIA V100 SXM2 32GB", 2017, 32, 150,
                    "NVIDIA Tesla V100 datasheet (2017): 125 TFLOP/s fp16 tensor, 32 GB HBM2, "
                    "900 GB/s, NVLink 2 300 GB/s"),
    "T4": _nvidia("T4", "NVIDIA T4", 2018, 16, 16,
                  "NVIDIA T4 datasheet (2018): 65 TFLOP/s fp16, 16 GB GDDR6, 320 GB/s, PCIe 3 x16"),
    "A100": _nvidia("A100", "NVIDIA A100 SXM 80GB", 2020, 80, 300,
                    "NVIDIA A100 datasheet (2021): 312 TFLOP/s bf16, 80 GB HBM2e, 2.0 TB/s, "
                    "NVLink 3 600 GB/s"),
    "RTX 4090": _nvidia("4090", "NVIDIA GeForce RTX 4090", 2022, 24, 32,
                        "NVIDIA Ada Lovelace architecture whitepaper (2022): 165 TFLOP/s fp16 "
                        "(fp32 accumulate), 24 GB GDDR6X, 1.0 TB/s, PCIe 4 x16"),
    "H100": _nvidia("H100", "NVIDIA H100 SXM5 80GB", 2022, 80, 450,
                    "NVIDIA H100 datasheet (2023): 989 TFLOP/s bf16, 1979 fp8 (dense), 80 GB "
                    "HBM3, 3.35 TB/s, NVLink 4 900 GB/s", fp8=1979e12),
    "L4": _nvidia("L4", "NVIDIA L4", 2023, 24, 32,
                  "NVIDIA L4 datasheet (2023): 121 TFLOP/s bf16 (dense), 24 GB GDDR6, 300 GB/s, "
                  "PCIe 4 x16", fp8=242.5e12),
    "H200": _nvidia("H200", "NVIDIA H200 SXM 141GB", 2024, 141, 450,
                    "NVIDIA H200 datasheet (2024): H100's compute, 141 GB HBM3e, 4.8 TB/s, "
                    "NVLink 4 900 GB/s", fp8=1979e12),
    "MI300X": Accelerator(
        "AMD Instinct MI300X", "AMD", 2023,
        {"fp32": 163.4e12, "tf32": 653.7e12, "bf16": 1307.4e12, "fp16": 1307.4e12,
         "fp8": 2614.9e12},
        192e9, 5.3e12, 448e9,
        "AMD Instinct MI300X data sheet (2023): 1307.4 TFLOP/s bf16 dense, 192 GB HBM3, "
        "5.3 TB/s, Infinity Fabric 896 GB/s aggregate",
    ),
    "TPU v5p": Accelerator(
        "Google TPU v5p", "Google", 2023, {"bf16": 459e12, "int8": 918e12},
        95e9, 2.765e12, 300e9,
        "Google Cloud TPU v5p documentation (2023): 459 TFLOP/s bf16, 95 GB HBM2e, 2765 GB/s, "
        "ICI 4800 Gbit/s per chip (half each way)",
    ),
}

#: Bytes/s one GPU can send to another node: eight 400 Gbit/s InfiniBand NDR adapters per
#: eight-GPU server (NVIDIA DGX H100 user guide), 400 Gbit/s = 50 GB/s per GPU.
NETWORK_BANDWIDTH = 50e9


def get_accelerator(device: str | Accelerator) -> Accelerator:
    """Look ``device`` up in :data:`ACCELERATORS` (exact key, or a unique substring)."""
    if isinstance(device, Accelerator):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be a name like 'H100' or an Accelerator, got {device!r}")
    if device in ACCELERATORS:
        return ACCELERATORS[device]
    hits = [key for key in ACCELERATORS if device.lower() in key.lower()]
    if len(hits) == 1:
        return ACCELERATORS[hits[0]]
    raise ValueError(f"device={device!r} is not in the accelerator table; known: {sorted(ACCELERATORS)}")


# --------------------------------------------------------------------------- known runs


@dataclass(frozen=True)
class Run:
    """A published training run: parameters, tokens, and what its authors reported."""

    name: str
    params: float
    tokens: float
    device: str | None = None
    gpu_hours: float | None = None
    reported_flops: float | None = None
    source: str = ""


KNOWN_RUNS: dict[str, Run] = {
    "GPT-3 175B": Run("GPT-3 175B", 175e9, 300e9, "V100", None, 3.14e23,
                      "Brown et al. 2020, Language Models are Few-Shot Learners, table 2.2 and D.1"),
    "Chinchilla 70B": Run("Chinchilla 70B", 70e9, 1.4e12, "TPU v4", None, 5.76e23,
                          "Hoffmann et al. 2022, Training Compute-Optimal LLMs, tables 1 and 3"),
    "Llama 2 7B": Run("Llama 2 7B", 7e9, 2e12, "A100", 184_320, None,
                      "Touvron et al. 2023, Llama 2, table 2 (A100-80GB GPU-hours)"),
    "Llama 2 70B": Run("Llama 2 70B", 70e9, 2e12, "A100", 1_720_320, None,
                       "Touvron et al. 2023, Llama 2, table 2 (A100-80GB GPU-hours)"),
    "Llama 3 8B": Run("Llama 3 8B", 8e9, 15e12, "H100", 1.3e6, None,
                      "Meta Llama 3 model card (2024): over 15T tokens, 1.3M H100-80GB GPU-hours"),
    "Llama 3 70B": Run("Llama 3 70B", 70e9, 15e12, "H100", 6.4e6, None,
                       "Meta Llama 3 model card (2024): over 15T tokens, 6.4M H100-80GB GPU-hours"),
    "Llama 3.1 405B": Run("Llama 3.1 405B", 405e9, 15.6e12, "H100", 30.84e6, 3.8e25,
                          "Llama Team 2024, The Llama 3 Herd of Models (3.8e25 FLOPs, 15.6T "
                          "tokens); Llama 3.1 model card (30.84M H100 GPU-hours)"),
}


# --------------------------------------------------------------------------- compute


def training_flops(
    params: float | str | GPTConfig,
    tokens: float,
    *,
    n_layer: int | None = None,
    seq_len: int | None = None,
    d_model: int | None = None,
) -> float:
    """FLOPs to train a dense Transformer with ``params`` weights on ``tokens`` tokens.

    ``6·N·D``: per token, the forward pass does one multiply and one add per weight
    (2·N), the backward pass twice as much (2·N for the gradient with respect to the
    activations, 2·N for the weights). With ``n_layer``, ``seq_len`` and ``d_model`` the
    attention scores and weighted sums are added too: forward ``4·T·d`` per layer and
    token (q·kᵀ and weights·v over the full T×T matrix, as dense kernels compute it), so
    ``12·L·T·d·D`` for training (PaLM's "model FLOPs", Chowdhery et al. 2022, app. B).
    ``params`` should count the weights that multiply activations (see :func:`matmul_params`).

    ``params`` may also be a model: a preset name (:data:`lmlab.presets.PRESETS`) or a
    :class:`~lmlab.transformer.GPTConfig`. Then ``N`` is the matmul weights one token
    *uses* (for a mixture of experts only its k experts: Mixtral-8x7B trains like a 13 B
    model, not a 47 B one), and with ``seq_len`` the attention term comes from the
    config's shape (:func:`lmlab.transformer.flops_per_token`, times 3).
    """
    if isinstance(params, (str, GPTConfig)):
        return _training_flops_of_model(preset(params), tokens, n_layer, seq_len, d_model)
    _positive("params", params, allow_zero=True)
    _positive("tokens", tokens, allow_zero=True)
    attention = (n_layer, seq_len, d_model)
    flops = 6 * params * tokens
    if all(a is None for a in attention):
        return flops
    if any(a is None for a in attention):
        raise ValueError(
            f"the attention term needs n_layer, seq_len and d_model together, got "
            f"n_layer={n_layer}, seq_len={seq_len}, d_model={d_model}"
        )
    for name, value in zip(("n_layer", "seq_len", "d_model"), attention, strict=True):
        _count(name, value)
    return flops + 12 * n_layer * seq_len * d_model * tokens


def _training_flops_of_model(config: GPTConfig, tokens: float, n_layer, seq_len, d_model) -> float:
    if n_layer is not None or d_model is not None:
        raise ValueError("n_layer and d_model come from the model's config: pass only seq_len")
    _positive("tokens", tokens, allow_zero=True)
    if seq_len is not None:
        _count("seq_len", seq_len)
        return 3 * flops_per_token(config, seq_len) * tokens
    attention_at_one = 4 * config.n_layer * config.n_embd  # the T = 1 attention term
    return 3 * (flops_per_token(config, 1) - attention_at_one) * tokens


def matmul_params(model: nn.Module) -> int:
    """Weights that multiply activations: every ``nn.Linear`` weight, a shared one once.

    This is the ``N`` of ``6·N·D`` as a FLOP counter sees it: embedding lookups, biases
    and norm gains cost no matmul FLOPs. A tied output head (GPT-2) does multiply, so its
    matrix counts (once) even though it is also the token embedding.
    """
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return total


def model_shape(n_params: float, *, aspect_ratio: int = 128, head_dim: int = 128) -> dict[str, int]:
    """A plausible GPT shape for ``n_params`` parameters: ``n_layer``, ``d_model``, ``n_heads``.

    A GPT block holds about ``12·d²`` weights, so ``N ≈ 12·L·d²``. Real models keep the
    width about 100-130 times the depth (GPT-3 175B: d = 12288, L = 96; Llama 2 70B: d =
    8192, L = 80), which Kaplan et al. 2020 found costs little loss. With ``d = r·L``:
    ``L = (N / (12·r²))^(1/3)``; ``d`` is rounded to a multiple of ``head_dim``.
    """
    _positive("n_params", n_params)
    n_layer = max(1, round((n_params / (12 * aspect_ratio**2)) ** (1 / 3)))
    d_model = max(head_dim, head_dim * round(math.sqrt(n_params / (12 * n_layer)) / head_dim))
    return {"n_layer": n_layer, "d_model": d_model, "n_heads": d_model // head_dim}


def measure_training_flops(step: Callable[[], object]) -> int:
    """FLOPs that ``step()`` (forward and backward) runs, counted by PyTorch's
    ``FlopCounterMode`` (matmuls and attention kernels; elementwise ops count 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- scaling laws


@dataclass(frozen=True)
class ChinchillaFit:
    """The parametric loss ``L(N, D) = E + A/N^alpha + B/D^beta``."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str


CHINCHILLA_FITS: dict[str, ChinchillaFit] = {
    # Hoffmann et al. 2022, section 3.3 (approach 3), equation 10.
    "hoffmann": ChinchillaFit(1.69, 406.4, 410.7, 0.34, 0.28,
                              "Hoffmann et al. 2022, eq. 10 (approach 3)"),
    # Besiroglu et al. 2024 refit the same data: the published constants do not agree with
    # the paper's own approaches 1 and 2; the refit does (about 20 tokens per parameter).
    "besiroglu": ChinchillaFit(1.8172, 482.01, 2085.43, 0.3478, 0.3658,
                               "Besiroglu et al. 2024, Chinchilla Scaling: A replication attempt"),
}


def _fit(fit: str | ChinchillaFit) -> ChinchillaFit:
    if isinstance(fit, ChinchillaFit):
        return fit
    if fit not in CHINCHILLA_FITS:
        raise ValueError(f"fit={fit!r} is not known; choose one of {sorted(CHINCHILLA_FITS)}")
    return CHINCHILLA_FITS[fit]


def chinchilla_loss(params: float, tokens: float, fit: str | ChinchillaFit = "hoffmann") -> float:
    """Predicted pre-training loss (nats/token) of ``params`` weights after ``tokens`` tokens."""
    _positive("params", params)
    _positive("tokens", tokens)
    f = _fit(fit)
    return f.E + f.A / params**f.alpha + f.B / tokens**f.beta


def chinchilla_optimal(
    compute: float, *, method: str = "rule", tokens_per_param: float = 20.0
) -> tuple[float, float]:
    """Compute-optimal ``(params, tokens)`` for a budget of ``compute`` FLOPs.

    ``method="rule"``: Chinchilla's rule of thumb, ``D = 20·N`` (Hoffmann et al. 2022,
    table 3: 70B parameters, 1.4T tokens). With ``C = 6·N·D = 6·r·N²``:
    ``N = sqrt(C / (6·r))``, ``D = r·N``.

    ``method="hoffmann"`` or ``"besiroglu"``: minimize the fitted loss
    ``E + A/N^α + B/D^β`` on the line ``6·N·D = C``. Setting the derivative to zero gives
    ``N = G·(C/6)^(β/(α+β))`` with ``G = (α·A / (β·B))^(1/(α+β))`` and ``D = C/(6·N)``.
    """
    _positive("compute", compute)
    _positive("tokens_per_param", tokens_per_param)
    if method == "rule":
        n = math.sqrt(compute / (6 * tokens_per_param))
        return n, tokens_per_param * n
    if method not in CHINCHILLA_FITS:
        raise ValueError(f"method={method!r}: expected 'rule' or one of {sorted(CHINCHILLA_FITS)}")
    f = CHINCHILLA_FITS[method]
    g = (f.alpha * f.A / (f.beta * f.B)) ** (1 / (f.alpha + f.beta))
    n = g * (compute / 6) ** (f.beta / (f.alpha + f.beta))
    return n, compute / (6 * n)


# --------------------------------------------------------------------------- memory

BYTES_PER_VALUE = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}

#: Values the optimizer keeps per parameter: Adam's two moments, momentum's one buffer.
OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}

PRECISIONS = ("fp32", "bf16", "fp16", "mixed")


def _bytes_per_param(optimizer: str, precision: str) -> tuple[int, int, int]:
    """(weights, gradients, optimizer states) bytes per parameter.

    ``"mixed"`` is mixed-precision training as in Micikevicius et al. 2018 and ZeRO
    (Rajbhandari et al. 2020): 16-bit weights and gradients for the matmuls, plus an fp32
    master copy of the weights and fp32 optimizer states: 2 + 2 + (4 + 4·k) bytes, 16 for
    Adam. (PyTorch autocast keeps fp32 weights and gradients instead: 4 + 4 + 4·k, also 16
    for Adam.) ``"bf16"``/``"fp16"``: everything in 16 bits, 2 + 2 + 2·k.
    """
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer={optimizer!r}: expected one of {sorted(OPTIMIZER_STATES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    k = OPTIMIZER_STATES[optimizer]
    if precision == "mixed":
        return 2, 2, 4 + 4 * k  # the fp32 master copy, then the states
    size = BYTES_PER_VALUE[precision]
    return size, size, size * k


@dataclass(frozen=True)
class ActivationProfile:
    """Values a Transformer keeps for the backward pass, per token, as ``a·d + b·H·T``.

    Per layer: ``layer_d`` values per token per model dimension, ``layer_ht`` per head per
    key position (the T×T attention matrices). Outside the layers (final norm, output
    head, loss): ``head_d·d + head_v·V`` per token. ``checkpoint_d``: what a checkpointed
    layer keeps (its input). Each profile is derived operation by operation in
    :data:`ACTIVATION_PROFILES`' comments and checked by measurement in the tests.
    """

    name: str
    layer_d: float
    layer_ht: float
    head_d: float
    head_v: float
    checkpoint_d: float = 1.0
    note: str = ""


ACTIVATION_PROFILES: dict[str, ActivationProfile] = {
    # Production kernels, no dropout: fused LayerNorm keeps its input (1 each, 2 per layer),
    # the QKV matmul its input (1), flash attention q, k, v and its output (4, no T×T
    # matrix), the output projection its input (1), the MLP its input (1), the GELU its
    # input (4) and the second matmul the GELU's output (4): 17·d. Korthikanti et al. 2022
    # count 34·d bytes in 16 bits with dropout masks and without flash attention.
    "fused": ActivationProfile("fused", 17, 0, 2, 1,
                               note="fused LayerNorm, flash attention, no dropout"),
    # The same model with attention written out (softmax(q kᵀ) v) keeps the T×T softmax
    # output once (Korthikanti et al. 2022 without dropout): 16·d + 1·H·T.
    "unfused-attention": ActivationProfile("unfused-attention", 16, 1, 2, 1,
                                           note="fused LayerNorm, softmax(q kᵀ) v written out"),
    # lmlab.transformer.GPT, written for reading: each hand-written LayerNorm keeps x - mean
    # twice (once for the variance, once to divide) and its normalized output (3 each, 6
    # per layer); batched matmuls copy q, k and v into contiguous (B·H, T, D) blocks (3);
    # the hand-written softmax keeps the masked scores (for max), exp's output and the
    # weights (3·H·T); the linear inputs and the MLP as in "fused" (1 + 1 + 1 + 4 + 4).
    # Total 20·d + 3·H·T per layer; the head keeps the final norm (3), the head's input (1)
    # and the log-softmax output (V).
    "lmlab": ActivationProfile("lmlab", 20, 3, 4, 1,
                               note="lmlab.transformer.GPT as written (unfused, readable)"),
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Training memory in bytes: weights, gradients, optimizer states, activations."""

    weights: float
    gradients: float
    optimizer: float
    activations: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "total": self.total}

    def scaled(self, **factors: float) -> MemoryEstimate:
        """A copy with fields divided by ``factors`` (e.g. ``weights=8`` for 8 shards)."""
        return replace(self, **{k: getattr(self, k) / v for k, v in factors.items()})


def activation_bytes(
    *,
    batch: int,
    seq_len: int,
    n_layer: int,
    d_model: int,
    n_heads: int = 1,
    vocab_size: int = 0,
    bytes_per_value: int = 4,
    activation_checkpointing: bool = False,
    profile: str | ActivationProfile = "fused",
) -> float:
    """Bytes the forward pass keeps for the backward pass, at its peak.

    Per token, each layer keeps ``a·d + b·H·T`` values (``profile``), the head
    ``h·d + V``. With activation checkpointing (Chen et al. 2016) a layer keeps only its
    input (``d`` per token) and recomputes the rest during backward, one layer at a time:
    the peak is every layer's input plus one layer's full activations (or the head's,
    whichever is larger: the head's are freed before the last layer is recomputed).
    """
    for name, value in (("batch", batch), ("seq_len", seq_len), ("n_layer", n_layer),
                        ("d_model", d_model), ("n_heads", n_heads)):
        _count(name, value)
    _count("vocab_size", vocab_size, minimum=0)
    if isinstance(profile, str) and profile not in ACTIVATION_PROFILES:
        raise ValueError(f"profile={profile!r}: expected one of {sorted(ACTIVATION_PROFILES)}")
    p = ACTIVATION_PROFILES[profile] if isinstance(profile, str) else profile
    tokens = batch * seq_len
    layer = p.layer_d * d_model + p.layer_ht * n_heads * seq_len  # values per token
    head = p.head_d * d_model + p.head_v * vocab_size
    if activation_checkpointing:
        # the head's tensors are freed before the last layer is recomputed: peak is the larger
        per_token = n_layer * p.checkpoint_d * d_model + max(layer, head)
    else:
        per_token = n_layer * layer + head
    return tokens * per_token * bytes_per_value


def memory_estimate(
    params: float | str | GPTConfig,
    *,
    optimizer: str = "adamw",
    precision: str = "fp32",
    batch: int = 0,
    seq_len: int = 0,
    n_layer: int = 0,
    d_model: int = 0,
    n_heads: int = 1,
    vocab_size: int = 0,
    activation_checkpointing: bool = False,
    profile: str | ActivationProfile = "fused",
) -> MemoryEstimate:
    """Bytes to train a model of ``params`` parameters: a :class:`MemoryEstimate`.

    Weights, gradients and optimizer states are bytes-per-parameter × ``params`` (see
    ``_bytes_per_param``: Adam costs 16 bytes per parameter in fp32 and in mixed
    precision). Activations need the shape of the run (``batch``, ``seq_len``,
    ``n_layer``, ``d_model``; ``n_heads``, ``vocab_size`` refine it); leave ``batch=0``
    for the model-state memory alone. Activations are stored in 4 bytes for fp32, 2 for
    bf16, fp16 and mixed.

    ``params`` may also be a preset name or a :class:`~lmlab.transformer.GPTConfig`: then
    ``N`` is its *total* parameter count (every expert of a mixture is stored, trained
    and has optimizer states) and ``n_layer``, ``d_model``, ``n_heads``, ``vocab_size``
    default to the config's. The activation profiles were derived for GPT-2's block; for
    a SwiGLU block they are an approximation.
    """
    if isinstance(params, (str, GPTConfig)):
        config = preset(params)
        params = param_count(config)
        n_layer, d_model = n_layer or config.n_layer, d_model or config.n_embd
        n_heads = n_heads if n_heads != 1 else config.n_head
        vocab_size = vocab_size or config.vocab_size
    _positive("params", params, allow_zero=True)
    w, g, o = _bytes_per_param(optimizer, precision)
    act = 0.0
    if batch:
        size = 4 if precision == "fp32" else 2
        act = activation_bytes(
            batch=batch, seq_len=seq_len, n_layer=n_layer, d_model=d_model, n_heads=n_heads,
            vocab_size=vocab_size, bytes_per_value=size,
            activation_checkpointing=activation_checkpointing, profile=profile,
        )
    return MemoryEstimate(w * params, g * params, o * params, act)


def inference_memory(
    model: str | GPTConfig,
    *,
    batch: int = 1,
    seq_len: int | None = None,
    bytes_per_param: float = 2,
    kv_bytes_per_element: int = 2,
) -> dict[str, float]:
    """Bytes to serve ``model`` (a preset name or config): weights plus the KV cache.

    Weights: every parameter (all experts), ``bytes_per_param`` each (2 for bf16, 1 for
    int8, 0.5 for int4). KV cache: ``batch · seq_len`` tokens of context (default the
    config's ``block_size``), :func:`lmlab.transformer.kv_cache_bytes_per_token` each,
    which grouped-query attention divides by ``n_head // n_kv_head``. Returns
    ``{"weights", "kv_cache", "total"}``.
    """
    config = preset(model)
    T = config.block_size if seq_len is None else seq_len
    _count("batch", batch)
    _count("seq_len", T)
    _positive("bytes_per_param", bytes_per_param)
    weights = param_count(config) * bytes_per_param
    kv = batch * T * kv_cache_bytes_per_token(config, kv_bytes_per_element)
    return {"weights": weights, "kv_cache": kv, "total": weights + kv}


def adam_memory_bytes(n_params: float, precision: str = "fp32") -> float:
    """Bytes of weights + gradients + Adam states: 16·N in fp32 or mixed, 8·N in bf16."""
    return memory_estimate(n_params, optimizer="adam", precision=precision).total


# --------------------------------------------------------------------------- measuring memory


class SavedTensorMeter:
    """Measure the bytes autograd keeps for the backward pass, live, over time.

    Inside ``with meter:`` every tensor saved for backward goes through a pack hook
    (``torch.autograd.graph.saved_tensors_hooks``) that wraps it in a small holder. Bytes
    are counted per storage, once, however many views of it are saved; storages in
    ``exclude`` (the parameters) are not activations and are skipped. When autograd frees
    a saved tensor (after its node ran in backward) the holder is freed and its bytes leave
    the count. ``peak`` is the most bytes held at once, ``current`` what is held now.
    Run the backward pass inside the ``with`` too to see recomputation (checkpointing).
    """

    def __init__(self, exclude: nn.Module | None = None) -> None:
        self._skip = set()
        if exclude is not None:
            self._skip = {p.untyped_storage().data_ptr() for p in exclude.parameters()}
        self._refs: dict[int, int] = {}
        self._sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self._skip or tensor.device.type == "meta":
            return tensor
        if self._refs.get(key, 0) == 0:
            self._sizes[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self._refs[key] = self._refs.get(key, 0) + 1
        holder = _Holder(tensor)
        weakref.finalize(holder, self._release, key)
        return holder

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.current -= self._sizes.pop(key)
            del self._refs[key]

    @staticmethod
    def _unpack(packed):
        return packed.tensor if isinstance(packed, _Holder) else packed

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


class _Holder:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def _nbytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def measure_training_memory(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    optimizer: torch.optim.Optimizer,
) -> MemoryEstimate:
    """Run one training step and measure its memory, by component, in bytes.

    Weights: the parameters' storage. Gradients: the ``.grad`` tensors after backward.
    Optimizer: every tensor in ``optimizer.state`` after the step (Adam's moments and its
    step counters). Activations: the peak of what autograd holds for backward, measured
    by :class:`SavedTensorMeter` over the forward and backward passes. ``loss_fn(model)``
    returns a scalar loss. Temporary buffers of the backward pass are not included.
    """
    optimizer.zero_grad(set_to_none=True)
    meter = SavedTensorMeter(exclude=model)
    with meter:
        loss = loss_fn(model)
        loss.backward()
    optimizer.step()
    params = list(model.parameters())
    states = [t for s in optimizer.state.values() for t in s.values()]
    return MemoryEstimate(
        weights=_nbytes(params),
        gradients=_nbytes(p.grad for p in params),
        optimizer=_nbytes(states),
        activations=meter.peak,
    )


# --------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class Cost:
    """What ``flops`` of training cost on ``n_gpus`` chips: GPU-hours, days, dollars."""

    flops: float
    gpu_hours: float
    n_gpus: int
    dollars: float

    @property
    def days(self) -> float:
        """Wall-clock days when the ``n_gpus`` work in parallel."""
        return self.gpu_hours / self.n_gpus / 24


def gpu_hours(flops: float, peak_flops: float, mfu: float) -> float:
    """Hours one chip of ``peak_flops`` FLOP/s needs for ``flops`` at utilization ``mfu``:
    ``flops / (peak_flops · mfu) / 3600``."""
    _positive("flops", flops, allow_zero=True)
    _positive("peak_flops", peak_flops)
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu!r}: it is a fraction of the peak")
    return flops / (peak_flops * mfu) / 3600


def training_cost(
    flops: float,
    *,
    device: str | Accelerator = "H100",
    precision: str = "bf16",
    mfu: float = 0.4,
    price_per_hour: float = 2.0,
    n_gpus: int = 1,
) -> Cost:
    """GPU-hours and dollars to run ``flops`` FLOPs.

    ``GPU-seconds = flops / (peak × mfu)``: MFU, the model FLOPs utilization, is the
    fraction of the datasheet peak a real run sustains (PaLM reports 46 %, Llama 3 405B
    38-43 %). ``price_per_hour`` is dollars per GPU-hour: an assumption (rental prices
    vary by provider, volume and year); the default $2 is illustrative only.
    """
    _positive("flops", flops, allow_zero=True)
    _positive("price_per_hour", price_per_hour, allow_zero=True)
    _count("n_gpus", n_gpus)
    hours = gpu_hours(flops, get_accelerator(device).peak_flops(precision), mfu)
    return Cost(flops, hours, n_gpus, hours * price_per_hour)


# --------------------------------------------------------------------------- parallelism


def pipeline_bubble(p: int, m: int) -> float:
    """Fraction of a pipeline-parallel step that the stages sit idle.

    With ``p`` stages and ``m`` micro-batches (GPipe, Huang et al. 2019; 1F1B, Narayanan
    et al. 2021), the step takes ``m + p - 1`` micro-batch slots, of which each stage
    works ``m``: the idle fraction is ``(p - 1) / (m + p - 1)``. (Narayanan et al. quote
    ``(p - 1) / m``, the idle time relative to the *ideal* time, not to the total.)
    """
    _count("p", p)
    _count("m", m)
    return (p - 1) / (m + p - 1)


def ring_allreduce_time(nbytes: float, n: int, bandwidth: float) -> float:
    """Seconds to all-reduce ``nbytes`` over ``n`` devices with a ring.

    Each device sends (and receives) ``2·(n-1)/n · nbytes``: a reduce-scatter then an
    all-gather, ``n-1`` steps each moving ``nbytes/n`` (Patarasuk & Yuan 2009). Latency
    is ignored: this is the bandwidth term.
    """
    _positive("nbytes", nbytes, allow_zero=True)
    _count("n", n)
    _positive("bandwidth", bandwidth)
    return 2 * (n - 1) / n * nbytes / bandwidth


@dataclass(frozen=True)
class Layout:
    """How a run is split: ``dp`` data-parallel replicas × ``tp`` tensor-parallel shards ×
    ``pp`` pipeline stages; ``microbatches`` per step for the pipeline; ``zero`` the ZeRO
    stage (0: replicate everything, 1: shard optimizer states, 2: and gradients, 3: and
    weights, across the ``dp`` replicas; Rajbhandari et al. 2020)."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    microbatches: int = 1
    zero: int = 0

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp", "microbatches"):
            _count(f"Layout.{name}", getattr(self, name))
        if self.zero not in (0, 1, 2, 3):
            raise ValueError(f"Layout.zero must be 0, 1, 2 or 3, got {self.zero!r}")

    @property
    def n_gpus(self) -> int:
        return self.dp * self.tp * self.pp

    def __str__(self) -> str:
        zero = f", ZeRO-{self.zero}" if self.zero else ""
        return f"DP{self.dp}×TP{self.tp}×PP{self.pp} (m={self.microbatches}{zero})"


@dataclass(frozen=True)
class StepTime:
    """Seconds of one training step, by cause (see :func:`simulate_step`)."""

    compute: float
    bubble: float
    tp_comm: float
    pp_comm: float
    dp_comm: float
    details: dict = field(default_factory=dict, compare=False)

    @property
    def total(self) -> float:
        return self.compute + self.bubble + self.tp_comm + self.pp_comm + self.dp_comm

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("compute", "bubble", "tp_comm", "pp_comm", "dp_comm", "total")}


def simulate_step(
    params: float,
    *,
    batch_tokens: int,
    n_layer: int,
    d_model: int,
    seq_len: int,
    layout: Layout = Layout(),
    device: str | Accelerator = "H100",
    precision: str = "bf16",
    efficiency: float = 0.6,
    network_bandwidth: float = NETWORK_BANDWIDTH,
    gpus_per_node: int = 8,
) -> StepTime:
    """A first-order model of one data/tensor/pipeline-parallel training step.

    * compute: ``training_flops(params, batch_tokens, ...)`` split evenly over the GPUs,
      at ``efficiency`` × the chip's peak (the matmul efficiency, before communication);
    * bubble: a pipeline of ``p`` stages and ``m`` micro-batches idles ``(p-1)`` slots of
      ``m + p - 1``, so compute / (1 - bubble) is the time the pipeline takes;
    * tensor parallel (Megatron-LM, Shoeybi et al. 2019): each layer all-reduces its
      (tokens, d) activations twice forward and twice backward among the ``tp`` GPUs, over
      the chip's link (``tp`` fits in a node);
    * pipeline parallel: each stage boundary sends the activations forward and their
      gradients back, ``2·tokens·d`` values per replica;
    * data parallel: each replica all-reduces its gradients (its ``params/(tp·pp)``
      shard) with a ring, over the link inside a node or the network across nodes, not
      overlapped with compute (an upper bound).

    Latencies and overlap are ignored: the model shows which term grows, not the exact time.
    """
    _positive("params", params)
    _count("batch_tokens", batch_tokens)
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency!r}")
    chip = get_accelerator(device)
    size = 4 if precision == "fp32" else 2
    lay = layout
    flops = training_flops(params, batch_tokens, n_layer=n_layer, seq_len=seq_len, d_model=d_model)
    compute = flops / lay.n_gpus / (chip.peak_flops(precision) * efficiency)
    bubble_frac = pipeline_bubble(lay.pp, lay.microbatches)
    bubble = compute * bubble_frac / (1 - bubble_frac)
    replica_tokens = batch_tokens / lay.dp
    tp_comm = 0.0
    if lay.tp > 1:
        per_layer = 4 * ring_allreduce_time(replica_tokens * d_model * size, lay.tp, chip.link_bandwidth)
        tp_comm = per_layer * n_layer / lay.pp
    pp_comm = 0.0
    if lay.pp > 1:
        link = chip.link_bandwidth if lay.tp * lay.pp <= gpus_per_node else network_bandwidth
        pp_comm = 2 * replica_tokens * d_model * size / lay.tp / link
    dp_comm = 0.0
    if lay.dp > 1:
        link = chip.link_bandwidth if lay.n_gpus <= gpus_per_node else network_bandwidth
        dp_comm = ring_allreduce_time(params / (lay.tp * lay.pp) * size, lay.dp, link)
    return StepTime(compute, bubble, tp_comm, pp_comm, dp_comm,
                    {"flops": flops, "bubble_fraction": bubble_frac, "layout": str(lay)})


def memory_per_gpu(
    params: float,
    *,
    layout: Layout = Layout(),
    optimizer: str = "adamw",
    precision: str = "mixed",
    micro_batch: int = 1,
    seq_len: int = 0,
    n_layer: int = 0,
    d_model: int = 0,
    n_heads: int = 1,
    vocab_size: int = 0,
    activation_checkpointing: bool = False,
    profile: str | ActivationProfile = "fused",
) -> MemoryEstimate:
    """Bytes on one GPU under ``layout``: a :class:`MemoryEstimate`.

    Model states are split ``tp·pp`` ways, then ZeRO shards optimizer states (stage ≥ 1),
    gradients (≥ 2) and weights (3) across the ``dp`` replicas. Activations: each GPU runs
    ``n_layer/pp`` layers on ``micro_batch`` sequences, split ``tp`` ways (with sequence
    parallelism, Korthikanti et al. 2022); under 1F1B the first stage holds
    ``min(m, pp)`` micro-batches in flight.
    """
    lay = layout
    full = memory_estimate(params, optimizer=optimizer, precision=precision)
    shard = lay.tp * lay.pp
    weights = full.weights / shard / (lay.dp if lay.zero >= 3 else 1)
    grads = full.gradients / shard / (lay.dp if lay.zero >= 2 else 1)
    states = full.optimizer / shard / (lay.dp if lay.zero >= 1 else 1)
    act = 0.0
    if seq_len:
        layers = max(1, math.ceil(n_layer / lay.pp))
        size = 4 if precision == "fp32" else 2
        act = activation_bytes(
            batch=micro_batch, seq_len=seq_len, n_layer=layers, d_model=d_model,
            n_heads=n_heads, vocab_size=vocab_size, bytes_per_value=size,
            activation_checkpointing=activation_checkpointing, profile=profile,
        ) * min(lay.microbatches, lay.pp) / lay.tp
    return MemoryEstimate(weights, grads, states, act)
