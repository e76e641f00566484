"""Chapter 1 figures: the roofline, and throughput against problem size."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.ticker
import numpy as np

from lmlab.viz.core import new_figure

__all__ = ["roofline_plot", "throughput_plot", "timing_samples_plot"]


def roofline_plot(
    peak_flops: float,
    bandwidth: float,
    points: Sequence[tuple[str, float, float]] = (),
    *,
    highlight: tuple[str, float, float] | None = None,
    title: str = "",
    ax=None,
):
    """Log-log roofline: attainable FLOP/s = min(peak, intensity × bandwidth).

    ``points`` are ``(label, intensity [FLOP/byte], achieved FLOP/s)`` drawn as dots;
    ``highlight`` is one more point drawn large (the explorer's current operation).
    """
    if ax is None:
        fig, ax = new_figure(6.4, 4.0)
    else:
        fig = ax.figure
    ridge = peak_flops / bandwidth
    x = np.logspace(-2, 3, 200)
    ax.plot(x, np.minimum(peak_flops, x * bandwidth) / 1e9, color="black", lw=2, label="roofline")
    ax.axvline(ridge, color="grey", ls=":", lw=1)
    ax.text(ridge * 1.1, peak_flops / 1e9 * 0.5, f"ridge\n{ridge:.1f} FLOP/B", fontsize=8, color="grey")
    for label, intensity, achieved in points:
        ax.scatter([intensity], [achieved / 1e9], s=25, zorder=3)
        ax.annotate(label, (intensity, achieved / 1e9), fontsize=7, xytext=(4, -10),
                    textcoords="offset points")
    if highlight is not None:
        label, intensity, attainable = highlight
        ax.scatter([intensity], [attainable / 1e9], s=140, color="#d62728", zorder=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-2, 1e3)
    ax.set_ylim(peak_flops / 1e9 / 1e4, peak_flops / 1e9 * 3)
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(title or "Roofline")
    ax.legend(loc="lower right", fontsize=9)
    return fig


def throughput_plot(sizes, flops_per_s, peak_flops: float, *, label: str = "measured", ax=None):
    """Achieved GFLOP/s against matrix size, with the estimated peak as a line."""
    if ax is None:
        fig, ax = new_figure(6.0, 3.6)
    else:
        fig = ax.figure
    ax.plot(sizes, np.asarray(flops_per_s) / 1e9, marker="o", label=label)
    ax.axhline(peak_flops / 1e9, color="black", ls="--", label="estimated peak")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n (an n×n @ n×n matmul)")
    ax.set_ylabel("GFLOP/s")
    ax.set_ylim(0, peak_flops / 1e9 * 1.15)
    ax.legend()
    return fig


def timing_samples_plot(samples_s: Sequence[float], *, first_call_s: float | None = None, ax=None):
    """Each timed run as a dot, with the mean and the median drawn across."""
    if ax is None:
        fig, ax = new_figure(6.0, 3.2)
    else:
        fig = ax.figure
    ms = np.asarray(samples_s) * 1e3
    ax.plot(range(1, len(ms) + 1), ms, "o", label="one run each")
    ax.axhline(np.mean(ms), color="#d62728", label=f"mean {np.mean(ms):.2f} ms")
    ax.axhline(np.median(ms), color="#2ca02c", label=f"median {np.median(ms):.2f} ms")
    if first_call_s is not None:
        ax.plot([0], [first_call_s * 1e3], "s", color="black", label=f"first (cold) call {first_call_s * 1e3:.2f} ms")
    ax.set_xlabel("run")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    # plain numbers ("3", "0.5") rather than "2.9×10⁰" when the data span under a decade
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False,
                                                                minor_thresholds=(1, 0.4)))
    ax.legend(fontsize=9)
    return fig
