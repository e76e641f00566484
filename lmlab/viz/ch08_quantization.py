"""Figures for chapter 8: quantization grids, errors, number formats, size against quality."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from lmlab.quantize import dequantize, qrange, quantize_absmax, quantize_groupwise
from lmlab.viz.core import new_figure

__all__ = [
    "quantize_for_plot",
    "quantization_grid_plot",
    "format_spacing_plot",
    "size_quality_plot",
    "channel_magnitude_plot",
]


def quantize_for_plot(
    w: torch.Tensor, bits: int, granularity: str | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantized ``w`` (2-d) and the scale of each weight, for one granularity.

    ``granularity``: ``"tensor"``, ``"channel"`` (one scale per row) or a group size.
    Returns (w_hat, scale_per_weight), both of the shape of ``w``.
    """
    if granularity == "tensor":
        q, scale = quantize_absmax(w, bits)
    elif granularity == "channel":
        q, scale = quantize_absmax(w, bits, dim=0)
    elif isinstance(granularity, int):
        q, scale = quantize_groupwise(w, bits, granularity)
        scale = scale.repeat_interleave(granularity, dim=-1)
    else:
        raise ValueError(
            f"granularity must be 'tensor', 'channel' or a group size, got {granularity!r}"
        )
    return dequantize(q, scale), scale.expand_as(w)


def quantization_grid_plot(w: torch.Tensor, bits: int, granularity: str | int = "tensor",
                           *, title: str = ""):
    """Left: histogram of ``w`` with the grid of a typical scale; right: the error histogram.

    w: (rows, cols). For per-channel and group-wise schemes every row or group has its own
    grid; the one drawn is the median scale's.
    """
    w = w.detach().float()
    w_hat, scale = quantize_for_plot(w, bits, granularity)
    err = (w_hat - w).flatten()
    fig, (ax, ax_err) = new_figure(8, 3.2, ncols=2)
    lim = float(w.abs().max())
    ax.hist(w.flatten().numpy(), bins=120, range=(-lim, lim), color="#1f77b4", alpha=0.8)
    s = float(scale.flatten().median())
    _, qmax = qrange(bits)
    levels = torch.arange(-qmax, qmax + 1) * s
    shown = levels[levels.abs() <= lim]
    step = max(1, len(shown) // 40)  # thin a dense 8-bit grid so the lines stay visible
    for level in shown[::step].tolist():
        ax.axvline(level, color="#d62728", lw=0.6, alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count (log)")
    label = {"tensor": "per tensor", "channel": "per row"}.get(granularity, f"groups of {granularity}")
    ax.set_title(title or f"{bits}-bit grid, {label}" + (f" (every {step}th level)" if step > 1 else ""),
                 fontsize=9)
    rel = float(err.pow(2).mean().sqrt() / w.pow(2).mean().sqrt())
    e_lim = float(err.abs().max()) or 1e-12
    ax_err.hist(err.numpy(), bins=80, range=(-e_lim, e_lim), color="#2ca02c")
    ax_err.set_xlabel("error  ŵ − w")
    ax_err.set_title(f"relative RMS error {100 * rel:.2f}%", fontsize=9)
    ax_err.set_yticks([])
    fig.tight_layout()
    return fig


def format_spacing_plot():
    """Gap between neighbouring representable numbers against magnitude: fp32, bf16, fp16, int8."""
    fig, ax = new_figure(7, 3.5)
    x = torch.logspace(-9, 5.5, 400, dtype=torch.float64)
    for dtype, color in [(torch.float32, "#1f77b4"), (torch.bfloat16, "#d62728"), (torch.float16, "#2ca02c")]:
        info = torch.finfo(dtype)
        ok = (x >= info.smallest_normal) & (x <= info.max)
        gap = torch.exp2(torch.floor(torch.log2(x))) * info.eps  # spacing of normal numbers
        ax.loglog(x[ok].numpy(), (gap[ok] / x[ok]).numpy(), color=color, label=str(dtype).split(".")[1])
    for bits, color in [(8, "#ff7f0e"), (4, "#9467bd")]:
        _, qmax = qrange(bits)
        scale = 1.0 / qmax  # a grid whose largest level is 1.0
        ok = (x >= scale / 2) & (x <= 1.0)
        ax.loglog(x[ok].numpy(), (scale / x[ok]).numpy(), color=color, ls="--",
                  label=f"int{bits}, absmax = 1")
    ax.set_xlabel("magnitude |x|")
    ax.set_ylabel("relative gap to the next number")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def size_quality_plot(names: Sequence[str], sizes: Sequence[float], losses: Sequence[float],
                      *, baseline: float | None = None):
    """Validation loss against model size in bytes, one labelled point per scheme."""
    fig, ax = new_figure(6.8, 4.6)
    markers = "osD^vP*Xhp<>d"
    colors = plt.get_cmap("tab20").colors
    for i, (name, size, loss) in enumerate(zip(names, sizes, losses, strict=True)):
        # a legend, not labels next to the points: schemes of equal size overlap.
        # Every scheme gets its own marker and colour (no repeats up to 13 schemes).
        ax.scatter(size / 1e6, loss, marker=markers[i % len(markers)], s=45, zorder=3,
                   color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20], label=name)
    if baseline is not None:
        ax.axhline(baseline, color="black", lw=0.8, ls="--", label="fp32 loss")
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3,
              frameon=False)
    ax.set_xlabel("model size (MB)")
    ax.set_ylabel("validation loss (nats/char)")
    fig.tight_layout()
    return fig


def channel_magnitude_plot(absmax: torch.Tensor, *, title: str = ""):
    """Max |activation| of each hidden channel (in channel order): outlier channels stand out."""
    fig, ax = new_figure(7, 3)
    values = absmax.detach().float()
    ax.bar(range(len(values)), values.numpy(), color="#1f77b4", width=1.0)
    ax.set_xlabel("hidden channel")
    ax.set_ylabel("max |activation|")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
