"""Figures for chapter 3: the unrolled recurrence, gradients through time, gate heatmaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from lmlab.viz.core import new_figure, style

__all__ = ["unrolled_figure", "gradient_norms_plot", "accuracy_curves", "gate_frame", "gate_frames",
           "cell_trace_plot", "timing_bars"]


def _box(ax, xy, text, color):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - 0.4, y - 0.24), 0.8, 0.48, boxstyle="round,pad=0.03",
                                fc=color, ec="black", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=10)


def _arrow(ax, a, b, color="black", label=None, label_at=None):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, lw=1.2, color=color))
    if label:
        ax.text(*(label_at or ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.12)), label,
                ha="center", va="bottom", fontsize=8, color=color)


def unrolled_figure(steps: int = 4, *, cell: str = "RNN"):
    """The recurrence unrolled in time: one copy of the same cell per step, sharing weights."""
    fig, ax = new_figure(min(8.0, 1.7 * steps + 1.6), 2.6)
    ax.set_axis_off()
    ax.grid(False)
    state = "(h, c)" if cell.upper() == "LSTM" else "h"
    for t in range(steps):
        x = 1.0 + 1.6 * t
        _box(ax, (x, 1.0), f"{cell}\n$W_{{ih}}, W_{{hh}}$", "#dbe9f6")
        ax.text(x, 0.05, f"$x_{{{t + 1}}}$", ha="center", va="center", fontsize=11)
        _arrow(ax, (x, 0.17), (x, 0.76))
        ax.text(x, 1.95, f"$h_{{{t + 1}}}$", ha="center", va="center", fontsize=11)
        _arrow(ax, (x, 1.24), (x, 1.83))
        _arrow(ax, (x - 1.6 + 0.44, 1.0), (x - 0.44, 1.0), "#d62728",
               label=f"{state}$_{{{t}}}$" if t else f"{state}$_0$")
    x_end = 1.0 + 1.6 * steps
    _arrow(ax, (x_end - 1.6 + 0.44, 1.0), (x_end - 0.6, 1.0), "#d62728", label="…")
    ax.set_xlim(-0.7, x_end - 0.4)
    ax.set_ylim(-0.2, 2.2)
    ax.set_title("the same cell (same weights) at every step; the state carries the past", fontsize=10)
    return fig


def gradient_norms_plot(curves: Mapping[str, Sequence[float]], ax=None, *, title: str = ""):
    """Gradient norm vs distance: ``curves[label]`` is a (T,) sequence whose entry t is
    ``‖∂ output_T / ∂ x_t‖``; plotted against k = T-1-t steps back, log scale."""
    if ax is None:
        fig, ax = new_figure(6.5, 3.6)
    else:
        style()
        fig = ax.figure
    for label, values in curves.items():
        values = np.asarray([float(v) for v in values])
        k = np.arange(len(values))[::-1]
        ax.semilogy(k, np.maximum(values, 1e-30), label=label, lw=1.6)
    ax.set_xlabel("k: steps between the input and the output")
    ax.set_ylabel("‖∂ h_T / ∂ x_{T-k}‖")
    ax.set_title(title or "how much of a gradient survives k steps back in time", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def accuracy_curves(curves: Mapping[str, Sequence[float]], *, smooth: int = 10, ax=None,
                    title: str = ""):
    """Accuracy per training step for several models, smoothed over ``smooth`` steps."""
    if ax is None:
        fig, ax = new_figure(6.5, 3.4)
    else:
        style()
        fig = ax.figure
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        kernel = np.ones(smooth) / smooth
        smoothed = np.convolve(values, kernel, mode="valid")
        ax.plot(np.arange(smooth, len(values) + 1), smoothed, label=label, lw=1.6)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.set_ylim(0.3, 1.05)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"accuracy (mean of {smooth} steps)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


_PANELS = [
    ("i", "input gate i = σ(…)", "viridis", (0, 1)),
    ("f", "forget gate f = σ(…)", "viridis", (0, 1)),
    ("g", "candidate g = tanh(…)", "RdBu_r", (-1, 1)),
    ("o", "output gate o = σ(…)", "viridis", (0, 1)),
    ("c", "cell c = f⊙c + i⊙g", "RdBu_r", (-2, 2)),
    ("h", "output h = o⊙tanh(c)", "RdBu_r", (-1, 1)),
]


def gate_frame(trace: Mapping[str, object], step: int, *, labels: Sequence[str] | None = None,
               units: int | None = None):
    """Six heatmaps (units × steps) of i, f, g, o, c, h, filled up to ``step`` (0-based).

    ``trace``: from :func:`lmlab.rnn.trace_gates`, (T, H) arrays. ``labels``: one short
    string per step (the input), shown in the title. ``units``: show the first ``units``.
    """
    return gate_frames(trace, labels=labels, units=units)(step)


def gate_frames(trace: Mapping[str, object], *, labels: Sequence[str] | None = None,
                units: int | None = None):
    """``render(step) -> Figure`` for :func:`gate_frame`, drawing the axes once and only
    updating the images between steps (an explorer renders one frame per step)."""
    data = {key: np.asarray(trace[key], dtype=float)[:, :units].T for key, *_ in _PANELS}  # (H, T)
    T = data["i"].shape[1]
    style()
    fig, axes = plt.subplots(2, 3, figsize=(7.2, 4.8), sharex=True, sharey=True,
                             layout="constrained")
    images = {}
    for ax, (key, title, cmap, (lo, hi)) in zip(axes.flat, _PANELS, strict=True):
        images[key] = ax.imshow(data[key], aspect="auto", cmap=cmap, vmin=lo, vmax=hi,
                                interpolation="nearest")
        ax.grid(False)
        ax.set_title(f"{title}\n[{lo:g}, {hi:g}]", fontsize=10)
        ax.tick_params(labelsize=9)
    for ax in axes[1]:
        ax.set_xlabel("step", fontsize=10)
    for ax in axes[:, 0]:
        ax.set_ylabel("unit", fontsize=10)
    fig.colorbar(images["f"], ax=axes[:, 2], fraction=0.05, label="σ gates: 0 … 1 (viridis)")
    lines = [ax.axvline(0, color="black", lw=0.8) for ax in axes.flat]
    heading = fig.suptitle("step 0", fontsize=11)
    fig.canvas.draw()  # lay out once, then freeze: frames differ only in their pixels
    fig.set_layout_engine("none")

    def render(step: int):
        if not 0 <= step < T:
            raise ValueError(f"step must be in [0, {T}), got {step}")
        for key, image in images.items():
            shown = data[key].copy()
            shown[:, step + 1:] = np.nan  # the future is not computed yet
            image.set_data(shown)
        for line in lines:
            line.set_xdata([step, step])
        label = f": input {labels[step]}" if labels is not None else ""
        heading.set_text(f"step {step}{label}")
        # figure_to_png closes the figure after saving; a closed figure still renders
        # with the Agg canvas, so the same one serves every frame.
        return fig

    return render


def cell_trace_plot(traces: Mapping[str, Sequence[float]], ax=None, *, title: str = ""):
    """Cell values over time for several variants (e.g. the right and the wrong candidate)."""
    if ax is None:
        fig, ax = new_figure(6.5, 3.2)
    else:
        style()
        fig = ax.figure
    for label, values in traces.items():
        ax.plot(np.asarray(values, dtype=float), label=label, lw=1.4)
    ax.set_xlabel("step")
    ax.set_ylabel("cell value c")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def timing_bars(times: Mapping[str, float], ax=None, *, title: str = "", unit: str = "ms"):
    """Horizontal bars of median times (seconds in, shown in ``unit``), fastest at the top."""
    if ax is None:
        fig, ax = new_figure(6.5, 0.5 + 0.45 * len(times))
    else:
        style()
        fig = ax.figure
    scale = {"s": 1.0, "ms": 1e3, "µs": 1e6}[unit]
    names = list(times)[::-1]
    values = [times[n] * scale for n in names]
    ax.barh(names, values, color=["#1f77b4"] * len(names))
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.3g} {unit}", va="center", fontsize=8)
    ax.set_xlabel(f"median time per forward + backward ({unit})")
    ax.set_xlim(0, max(values) * 1.3)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", visible=False)
    return fig
