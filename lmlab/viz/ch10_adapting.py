"""Figures for chapter 10 (from a language model to an assistant) and chapter 8's section on
distillation and pruning. Each function takes plain numbers (lists, dicts of lists) so the
book can draw stored results without re-running anything."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lmlab.viz.core import new_figure

__all__ = [
    "family_masks_plot",
    "mlm_rates_plot",
    "curve_plot",
    "finetune_curves_plot",
    "lora_frame_plot",
    "dpo_frame_plot",
    "accuracy_ci_plot",
    "ci_width_plot",
    "overlap_hist_plot",
    "sparsity_loss_plot",
    "sparse_matmul_plot",
]

_COLORS = {"probe": "#7f7f7f", "full": "#1f77b4", "lora": "#d62728", "majority": "#bcbd22",
           "bag_of_words": "#2ca02c"}


# --------------------------------------------------------------------------- families


def _mask_panel(ax, allowed: np.ndarray, title: str, labels: Sequence[str], split: int | None):
    ax.imshow(allowed, cmap="Blues", vmin=0, vmax=1.4)
    n = len(labels)
    ax.set_xticks(range(n), labels, fontsize=7, rotation=90)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("key (attended to)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(False)
    if split is not None:
        for pos in (split - 0.5,):
            ax.axhline(pos, color="black", lw=0.8)
            ax.axvline(pos, color="black", lw=0.8)


def family_masks_plot(n_source: int = 5, n_target: int = 4):
    """Which position may attend to which, for an encoder (all to all), a decoder (each to
    itself and the past) and an encoder-decoder (source all to all, target causal over
    itself plus cross-attention to the whole source; drawn as one combined matrix)."""
    n = n_source + n_target
    src = [f"x{i}" for i in range(1, n_source + 1)]
    tgt = [f"y{i}" for i in range(1, n_target + 1)]
    fig, axes = new_figure(9.0, 3.4, ncols=3)
    _mask_panel(axes[0], np.ones((n, n)), "encoder (BERT)\nbidirectional", src + tgt, None)
    _mask_panel(axes[1], np.tril(np.ones((n, n))), "decoder (GPT)\ncausal", src + tgt, None)
    combined = np.zeros((n, n))
    combined[:n_source, :n_source] = 1  # encoder self-attention
    combined[n_source:, :n_source] = 0.6  # decoder cross-attention to the source
    combined[n_source:, n_source:] = np.tril(np.ones((n_target, n_target)))  # causal self
    _mask_panel(axes[2], combined, "encoder-decoder (T5)\nsource ↔ source, target → past + source",
                src + tgt, n_source)
    axes[0].set_ylabel("query (attending)", fontsize=8)
    fig.tight_layout()
    return fig


def mlm_rates_plot(measured: Mapping[str, float], expected: Mapping[str, float]):
    """Bars of measured rates (e.g. selected, [MASK], random, kept) beside the expected."""
    names = list(expected)
    x = np.arange(len(names))
    fig, ax = new_figure(6.0, 3.0)
    ax.bar(x - 0.2, [expected[k] for k in names], 0.4, label="BERT's recipe", color="#bbbbbb")
    ax.bar(x + 0.2, [measured[k] for k in names], 0.4, label="measured", color="#1f77b4")
    for xi, k in zip(x, names):
        ax.text(xi + 0.2, measured[k] + 0.01, f"{measured[k]:.1%}", ha="center", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curve_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
               xlabel: str = "step", ylabel: str = "loss", hlines: Mapping[str, float] | None = None,
               logy: bool = False, title: str = ""):
    """One line per named ``(x, y)`` curve, optional dashed horizontal reference lines."""
    fig, ax = new_figure(6.5, 3.4)
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=name, color=_COLORS.get(name), lw=1.6)
    for name, value in (hlines or {}).items():
        ax.axhline(value, ls="--", lw=1, color=_COLORS.get(name, "black"), label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- fine-tuning


def finetune_curves_plot(runs: Mapping[str, Mapping], baselines: Mapping[str, float]):
    """Validation accuracy against step for each run (``run["val_step"]``, ``run["val"]``),
    with the baselines' test accuracies as dashed lines."""
    curves = {name: (run["val_step"], run["val"]) for name, run in runs.items()}
    fig = curve_plot(curves, ylabel="validation accuracy", hlines=dict(baselines))
    ax = fig.axes[0]
    ax.set_ylim(0, 1)
    return fig


def lora_frame_plot(run: Mapping, full: Mapping, baselines: Mapping[str, float],
                    memory: Mapping[str, Mapping[str, int]]):
    """One frame of the LoRA explorer.

    Left: training memory (``memory["full"]`` and ``memory["lora"]``, each a dict of
    ``weights``, ``gradients`` and ``optimizer`` bytes) as stacked bars, labelled with the
    trainable parameter counts. Right: validation accuracy of the LoRA run and of full
    fine-tuning during training, with the baselines dashed."""
    fig, (left, right) = new_figure(9.0, 3.4, ncols=2)
    label_lora = f"LoRA r={run['r']}, α={run['alpha']:g}"
    parts = [("weights", "#9ecae1"), ("gradients", "#fdae6b"), ("optimizer", "#e6550d")]
    for y, (key, r) in enumerate((("full", full), ("lora", run))):
        start = 0.0
        for name, color in parts:
            mib = memory[key][name] / 2**20
            left.barh(y, mib, left=start, color=color, label=name if y == 0 else None)
            start += mib
        left.text(start * 1.02, y, f"{start:.1f} MiB\n{r['trainable']:,} trainable "
                  f"({r['trainable'] / r['total']:.1%})", va="center", fontsize=8)
    left.set_yticks([0, 1], ["full FT", label_lora], fontsize=8)
    left.set_xlim(0, max(sum(memory[k][n] for n, _ in parts) for k in ("full", "lora"))
                  / 2**20 * 1.9)
    left.set_xlabel("training memory, float32 + AdamW (MiB)")
    left.set_title("weights, gradients, Adam moments", fontsize=10)
    left.legend(fontsize=7, loc="upper right")
    right.plot(full["val_step"], full["val"], color=_COLORS["full"], label="full FT")
    right.plot(run["val_step"], run["val"], color=_COLORS["lora"], label="LoRA")
    for k, v in baselines.items():
        right.axhline(v, ls="--", lw=1, color=_COLORS.get(k, "black"), label=k.replace("_", " "))
    right.set_ylim(0, 1)
    right.set_xlabel("step")
    right.set_ylabel("validation accuracy")
    right.set_title(f"test accuracy: LoRA {run['test_acc']:.1%}, full {full['test_acc']:.1%}",
                    fontsize=10)
    right.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- preferences


def dpo_frame_plot(run: Mapping, runs: Sequence[Mapping]):
    """One frame of the DPO explorer for the run with ``run["beta"]``.

    Left: the held-out reward margin during training (``val_step``, ``val``), the other
    betas faint. Right, against beta for all ``runs``: how far the policy moved from the
    reference (``kl_proxy``, mean log-ratio of the held-out chosen answers, nats) and the
    held-out win rate (``win_rate["dpo"]``), the chosen beta marked."""
    fig, (left, right) = new_figure(9.0, 3.4, ncols=2)
    for other in runs:
        if other is not run:
            left.plot(other["val_step"], other["val"], color="#cccccc", lw=1)
    left.plot(run["val_step"], run["val"], color="#d62728", lw=2, label=f"β = {run['beta']:g}")
    left.axhline(0, color="black", lw=0.6)
    left.set_xlabel("step")
    left.set_ylabel("held-out reward margin\nβ·[(log π − log π_ref)_w − (…)_l]")
    left.set_title("the implicit reward separates the pairs", fontsize=10)
    left.legend(fontsize=8, loc="upper left")
    betas = [r["beta"] for r in runs]
    moved = [r["kl_proxy"] for r in runs]
    right.plot(betas, moved, marker="o", color="#d62728", label="log π − log π_ref (chosen)")
    right.plot([run["beta"]], [run["kl_proxy"]], marker="o", ms=12, mfc="none", color="black")
    right.set_xscale("log")
    right.set_xlabel("β")
    right.set_ylabel("mean log-ratio to the reference (nats)", color="#d62728")
    twin = right.twinx()
    twin.plot(betas, [r["win_rate"]["dpo"] for r in runs], marker="s", color="#1f77b4",
              label="win rate (DPO)")
    twin.axhline(run["win_rate"]["sft"], ls="--", color="#1f77b4", lw=1, label="win rate (SFT)")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("held-out win rate", color="#1f77b4")
    twin.grid(False)
    right.set_title(f"β = {run['beta']:g}: moved {run['kl_proxy']:+.1f} nats, "
                    f"win rate {run['win_rate']['dpo']:.0%}", fontsize=10)
    lines = right.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    right.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- evaluation


def accuracy_ci_plot(names: Sequence[str], accs: Sequence[float],
                     cis: Sequence[tuple[float, float]], *, n: int | None = None):
    """Horizontal points with 95 % intervals, one row per model or baseline."""
    fig, ax = new_figure(6.5, 0.5 + 0.45 * len(names))
    y = np.arange(len(names))[::-1]
    lo = [a - c[0] for a, c in zip(accs, cis)]
    hi = [c[1] - a for a, c in zip(accs, cis)]
    ax.errorbar(accs, y, xerr=[lo, hi], fmt="o", color="#1f77b4", capsize=4)
    for yi, a, c in zip(y, accs, cis):
        ax.text(c[1] + 0.01, yi, f"{a:.1%} [{c[0]:.1%}, {c[1]:.1%}]", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("test accuracy, 95 % Wilson interval" + (f" (n = {n})" if n else ""))
    fig.tight_layout()
    return fig


def ci_width_plot(ns: Sequence[int], widths: Mapping[str, Sequence[float]]):
    """Width of the 95 % interval against the test-set size, log-log."""
    fig, ax = new_figure(6.0, 3.2)
    for name, w in widths.items():
        ax.plot(ns, w, marker="o", ms=3, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("test examples n")
    ax.set_ylabel("width of the 95 % interval")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def overlap_hist_plot(groups: Mapping[str, Sequence[float]], *, n: int):
    """Histograms of per-example n-gram overlap with the training text."""
    fig, ax = new_figure(6.0, 3.0)
    bins = np.linspace(0, 1, 21)
    for name, values in groups.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"{name} ({len(values)})")
    ax.set_xlabel(f"fraction of the example's word {n}-grams found in the training text")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- chapter 8


def sparsity_loss_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                       dense: float, points: Mapping[str, tuple[float, float]] | None = None):
    """Validation loss against the fraction of zeroed weights, one curve per method, the
    dense model's loss dashed, single points (e.g. 2:4 at 50 %) as markers."""
    fig, ax = new_figure(6.5, 3.4)
    for name, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    for name, (x, y) in (points or {}).items():
        ax.plot([x], [y], marker="s", ms=8, ls="none", label=name)
    ax.axhline(dense, ls="--", color="black", lw=1, label="dense")
    ax.set_xlabel("sparsity (fraction of weights set to zero)")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sparse_matmul_plot(sparsities: Sequence[float], times: Mapping[str, Sequence[float]],
                       *, dense: float):
    """Time of one matmul against the weight's sparsity, relative to the dense matmul."""
    fig, ax = new_figure(6.5, 3.4)
    for name, ts in times.items():
        ax.plot(sparsities, [t / dense for t in ts], marker="o", ms=3, label=name)
    ax.axhline(1.0, ls="--", color="black", lw=1, label="dense matmul")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity of the weight")
    ax.set_ylabel("time / dense time (log)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
