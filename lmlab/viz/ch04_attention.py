"""Figures for chapter 4: attention heatmaps, softmax saturation, memory of naive vs tiled."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmlab.viz.core import new_figure

__all__ = ["attention_heatmap", "saturation_plot", "memory_plot"]


def attention_heatmap(
    weights: torch.Tensor,
    tokens: Sequence[str],
    keys: Sequence[str] | None = None,
    *,
    title: str = "",
    ax=None,
    vmax: float = 1.0,
    size: float | None = None,
):
    """Heatmap of attention weights (T_q, T_k): row i is where query token i looks.

    ``tokens`` label the queries (rows), ``keys`` the columns (default: the same tokens).
    ``size`` is the height in inches (default: grows with the number of tokens).
    Returns the figure.
    """
    w = weights.detach().cpu().float()
    if w.dim() != 2:
        raise ValueError(f"weights has shape {tuple(w.shape)}, expected (T_q, T_k)")
    keys = tokens if keys is None else keys
    if w.shape != (len(tokens), len(keys)):
        raise ValueError(
            f"weights has shape {tuple(w.shape)} but there are {len(tokens)} query and "
            f"{len(keys)} key labels"
        )
    if ax is None:
        size = size or min(7.0, 2.0 + 0.28 * max(len(tokens), len(keys)))
        fig, ax = new_figure(size + 0.8, size)
    else:
        fig = ax.figure
    image = ax.imshow(w.numpy(), cmap="viridis", vmin=0.0, vmax=vmax, aspect="equal")
    ax.grid(False)
    ax.set_xticks(range(len(keys)), list(keys), rotation=90, fontsize=8)
    ax.set_yticks(range(len(tokens)), list(tokens), fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return fig


def saturation_plot(dims: Sequence[int], scaled: Sequence[float], unscaled: Sequence[float], *,
                    ylabel: str = "largest attention weight (mean over queries)"):
    """Largest softmax weight against the head dimension d, with and without 1/√d."""
    fig, ax = new_figure(6.5, 3.6)
    ax.plot(dims, unscaled, "o-", label=r"softmax($q k^\top$)  (no scaling)")
    ax.plot(dims, scaled, "s-", label=r"softmax($q k^\top / \sqrt{d}$)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("head dimension d")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.legend(loc="center right")
    return fig


def memory_plot(lengths: Sequence[int], curves: dict[str, Sequence[float]], *, unit: str = "MiB"):
    """Peak extra memory (log-log) against sequence length, one line per method."""
    fig, ax = new_figure(6.5, 3.6)
    for (label, values), marker in zip(curves.items(), "os^dv"):
        ax.plot(lengths, values, marker + "-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(f"peak extra memory ({unit})")
    ax.legend()
    return fig
