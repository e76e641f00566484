"""Figures for chapter 9: memory breakdowns, step-time breakdowns, the pipeline bubble,
scaling-law curves and training-run compute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lmlab import scaling
from lmlab.viz.core import PALETTE, new_figure

__all__ = [
    "memory_breakdown_plot",
    "step_time_plot",
    "bubble_plot",
    "isoflop_plot",
    "optimal_size_plot",
    "runs_compute_plot",
    "serving_memory_plot",
    "accelerator_plot",
]

_MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations")
_STEP_PARTS = ("compute", "bubble", "tp_comm", "pp_comm", "dp_comm")
_STEP_LABELS = {"compute": "compute", "bubble": "pipeline bubble", "tp_comm": "tensor-parallel comm",
                "pp_comm": "pipeline comm", "dp_comm": "gradient all-reduce"}


def _stacked(ax, labels, rows, parts, names, scale, horizontal=True):
    left = np.zeros(len(labels))
    for i, part in enumerate(parts):
        values = np.array([row[part] for row in rows]) / scale
        if horizontal:
            ax.barh(labels, values, left=left, color=PALETTE[i % len(PALETTE)], label=names.get(part, part))
        else:
            ax.bar(labels, values, bottom=left, color=PALETTE[i % len(PALETTE)], label=names.get(part, part))
        left += values
    return left


def memory_breakdown_plot(
    estimates: Mapping[str, scaling.MemoryEstimate],
    *,
    capacity: float | None = None,
    capacity_label: str = "GPU memory",
    ax=None,
    width: float = 7.0,
    height: float = 3.2,
):
    """Stacked horizontal bars (GB) of weights, gradients, optimizer states, activations.

    ``estimates`` maps a bar label to a :class:`lmlab.scaling.MemoryEstimate`;
    ``capacity`` (bytes) draws a vertical line, e.g. an 80 GB H100.
    """
    if ax is None:
        fig, ax = new_figure(width, height)
    else:
        fig = ax.figure
    labels = list(estimates)
    rows = [estimates[k].as_dict() for k in labels]
    totals = _stacked(ax, labels, rows, _MEMORY_PARTS, {"optimizer": "optimizer states"}, 1e9)
    for y, total in enumerate(totals):
        ax.text(total, y, f" {total:,.3g} GB", va="center", fontsize=9)
    if capacity:
        ax.axvline(capacity / 1e9, color="black", ls="--", lw=1)
        ax.text(capacity / 1e9, 1.0, f" {capacity_label}", fontsize=9, va="bottom",
                transform=ax.get_xaxis_transform())
    ax.set_xlabel("GB")
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(totals), (capacity or 0) / 1e9) * 1.3)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, frameon=False)
    fig.tight_layout()
    return fig


def step_time_plot(steps: Mapping[str, scaling.StepTime], *, ax=None, width=7.0, height=3.2):
    """Stacked horizontal bars of one training step's time by cause, per layout (seconds)."""
    if ax is None:
        fig, ax = new_figure(width, height)
    else:
        fig = ax.figure
    labels = list(steps)
    rows = [steps[k].as_dict() for k in labels]
    totals = _stacked(ax, labels, rows, _STEP_PARTS, _STEP_LABELS, 1.0)
    for y, total in enumerate(totals):
        ax.text(total, y, f" {total:.2f} s", va="center", fontsize=9)
    ax.set_xlabel("seconds per step")
    ax.set_xlim(0, max(totals) * 1.25)
    ax.invert_yaxis()
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def bubble_plot(stages: Sequence[int] = (2, 4, 8, 16), max_microbatches: int = 64, *, ax=None):
    """Bubble fraction ``(p-1)/(m+p-1)`` against the number of micro-batches, one line per p."""
    if ax is None:
        fig, ax = new_figure(6, 3.2)
    else:
        fig = ax.figure
    m = np.arange(1, max_microbatches + 1)
    for p in stages:
        ax.plot(m, [scaling.pipeline_bubble(p, int(k)) for k in m], label=f"p = {p} stages")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("micro-batches per step (m)")
    ax.set_ylabel("idle fraction of the step")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def isoflop_plot(
    budgets: Sequence[float],
    *,
    fit: str = "hoffmann",
    highlight: float | None = None,
    ax=None,
    width: float = 6.0,
    height: float = 3.4,
):
    """Predicted loss against model size at fixed compute (IsoFLOP curves, Hoffmann et al.
    fig. 3), the optimum of each marked."""
    if ax is None:
        fig, ax = new_figure(width, height)
    else:
        fig = ax.figure
    for i, c in enumerate(budgets):
        n_opt, _ = scaling.chinchilla_optimal(c, method=fit)
        n = n_opt * np.logspace(-1.2, 1.2, 60)
        loss = [scaling.chinchilla_loss(x, c / (6 * x), fit) for x in n]
        strong = highlight is None or np.isclose(c, highlight)
        color = PALETTE[i % len(PALETTE)]
        ax.plot(n, loss, color=color, alpha=1.0 if strong else 0.25, lw=2 if strong else 1,
                label=f"C = {c:.0e}" if strong else None)
        ax.plot([n_opt], [scaling.chinchilla_loss(n_opt, c / (6 * n_opt), fit)], "o", color=color,
                alpha=1.0 if strong else 0.25)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("predicted loss (nats/token)")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def optimal_size_plot(budgets: Sequence[float] | None = None, *, runs: Sequence[str] = (), ax=None):
    """Compute-optimal parameters against compute: the 20-tokens rule and both fits,
    with published models as points."""
    if ax is None:
        fig, ax = new_figure(6, 3.4)
    else:
        fig = ax.figure
    c = np.logspace(18, 26, 50) if budgets is None else np.asarray(budgets, dtype=float)
    for method, label in (("rule", "20 tokens per parameter"), ("hoffmann", "Hoffmann et al. fit"),
                          ("besiroglu", "Besiroglu et al. refit")):
        ax.plot(c, [scaling.chinchilla_optimal(x, method=method)[0] for x in c], label=label)
    for name in runs:
        run = scaling.KNOWN_RUNS[name]
        flops = scaling.training_flops(run.params, run.tokens)
        ax.plot([flops], [run.params], "k.", ms=8)
        ax.annotate(name, (flops, run.params), fontsize=9, xytext=(4, -8), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("parameters N")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def runs_compute_plot(names: Sequence[str] | None = None, *, ax=None):
    """Training compute 6·N·D of published runs (log scale)."""
    if ax is None:
        fig, ax = new_figure(6.5, 3.2)
    else:
        fig = ax.figure
    names = list(scaling.KNOWN_RUNS) if names is None else list(names)
    flops = [scaling.training_flops(scaling.KNOWN_RUNS[n].params, scaling.KNOWN_RUNS[n].tokens) for n in names]
    ax.barh(names, flops, color=PALETTE[0])
    for y, f in enumerate(flops):
        ax.text(f, y, f" {f:.1e}", va="center", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(min(flops) / 3, max(flops) * 30)
    ax.set_xlabel("training FLOPs (6·N·D)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def serving_memory_plot(rows: Mapping[str, Mapping[str, float]], *, capacity: float | None = None,
                        capacity_label: str = "GPU memory", ax=None):
    """Stacked bars (GB) of serving memory: ``rows[label] = {"weights": bytes, "KV cache": bytes}``."""
    if ax is None:
        fig, ax = new_figure(7.0, 3.0)
    else:
        fig = ax.figure
    labels = list(rows)
    parts = list(next(iter(rows.values())))
    totals = _stacked(ax, labels, [rows[k] for k in labels], parts, {}, 1e9)
    for y, total in enumerate(totals):
        ax.text(total, y, f" {total:,.3g} GB", va="center", fontsize=9)
    if capacity:
        ax.axvline(capacity / 1e9, color="black", ls="--", lw=1)
        ax.text(capacity / 1e9, 1.0, f" {capacity_label}", fontsize=9, va="bottom",
                transform=ax.get_xaxis_transform())
    ax.set_xlabel("GB")
    ax.set_xlim(0, max(max(totals), (capacity or 0) / 1e9) * 1.3)
    ax.invert_yaxis()
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, frameon=False)
    fig.tight_layout()
    return fig


_VENDOR_COLORS = {"NVIDIA": PALETTE[2], "AMD": PALETTE[1], "Google": PALETTE[0]}


def accelerator_plot(precision: str = "bf16", *, ax=None):
    """Each accelerator of :data:`lmlab.scaling.ACCELERATORS` as a point: memory bandwidth
    against peak FLOP/s (log-log), marker area growing with memory size; dotted lines are
    ridge points (FLOP/byte)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    if ax is None:
        fig, ax = new_figure(6.5, 3.6)
    else:
        fig = ax.figure
    below = {"H200", "L4", "V100"}  # labels that would collide with a neighbour's
    for key, chip in scaling.ACCELERATORS.items():
        x, y = chip.bandwidth / 1e12, chip.peak_flops(precision) / 1e12
        ax.plot([x], [y], "o", color=_VENDOR_COLORS.get(chip.vendor, PALETTE[3]), ms=4 + chip.memory / 25e9)
        ax.annotate(f"{key} ({chip.memory / 1e9:.0f} GB)", (x, y), fontsize=9,
                    xytext=(6, -10 if key in below else 3), textcoords="offset points")
    bw = np.array([0.25, 8.0])
    for ridge, style in ((100, ":"), (300, "--")):
        ax.plot(bw, bw * ridge, color="gray", lw=0.8, ls=style, label=f"ridge point {ridge} FLOP/byte")
    ax.legend(fontsize=9, loc="lower right")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, ticks in ((ax.xaxis, [0.3, 0.5, 1, 2, 3, 5]), (ax.yaxis, [50, 100, 200, 500, 1000, 2000])):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(0.2, 14)
    ax.set_xlabel("memory bandwidth (TB/s)")
    ax.set_ylabel(f"dense {precision} peak (TFLOP/s)")
    fig.tight_layout()
    return fig
