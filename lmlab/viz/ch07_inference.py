"""Figures for chapter 7: the next-token distribution under sampling settings, and the
clock of generation (time per tick, latency against throughput)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmlab.generate import apply_temperature, entropy, top_k_filter, top_p_filter
from lmlab.viz.core import new_figure

__all__ = ["token_label", "sampling_bars", "tick_time_plot", "latency_throughput_plot"]

KEPT, REMOVED = "#1f77b4", "#c7c7c7"


def token_label(text: str) -> str:
    """A printable label for a token: spaces, newlines and tabs made visible."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


def sampling_bars(
    logits: torch.Tensor,
    labels: Sequence[str],
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    show: int = 20,
    ax=None,
):
    """Bars of the next-token distribution after temperature, top-k and top-p.

    logits: (V,). Grey bars: the probabilities at this temperature before filtering;
    blue bars: the probabilities actually sampled from (the survivors, renormalized).
    The ``show`` most likely tokens (at temperature 1) are drawn. Returns the figure.
    """
    if logits.dim() != 1 or len(labels) != logits.shape[0]:
        raise ValueError(
            f"logits must be (V,) with one label per token, got shape {tuple(logits.shape)} "
            f"and {len(labels)} labels"
        )
    if ax is None:
        fig, ax = new_figure(7, 3)
    else:
        fig = ax.figure
    scaled = logits.double() / temperature
    filtered = scaled if top_k is None else top_k_filter(scaled, top_k)
    filtered = filtered if top_p is None else top_p_filter(filtered, top_p)
    before = apply_temperature(logits.double(), temperature)
    after = torch.softmax(filtered, dim=-1)
    order = torch.argsort(logits, descending=True, stable=True)[:show]
    x = list(range(len(order)))
    ax.bar(x, before[order].tolist(), color=REMOVED, width=0.8, label="before filtering")
    ax.bar(x, after[order].tolist(), color=KEPT, width=0.5, label="sampled from")
    ax.set_xticks(x, [token_label(labels[i]) for i in order.tolist()], fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    survivors = int(torch.isfinite(filtered).sum())
    k_text = "all" if top_k is None else str(top_k)
    p_text = "1.0" if top_p is None else f"{top_p:g}"
    ax.set_title(
        f"T={temperature:g}, top-k={k_text}, top-p={p_text}: {survivors} token"
        f"{'s' if survivors != 1 else ''} survive, entropy {float(entropy(filtered)):.2f} nats",
        fontsize=10,
    )
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return fig


def tick_time_plot(contexts: Sequence[int], with_cache: Sequence[float], without_cache: Sequence[float],
                   prefill: Sequence[float] | None = None, ax=None):
    """Milliseconds per decode tick against the context length, with and without the KV
    cache (and, optionally, the prefill per prompt token)."""
    if ax is None:
        fig, ax = new_figure(6.5, 3.5)
    else:
        fig = ax.figure
    ms = lambda xs: [1e3 * v for v in xs]  # noqa: E731
    ax.plot(contexts, ms(without_cache), "o-", label="decode tick, no cache (reruns the context)")
    ax.plot(contexts, ms(with_cache), "o-", label="decode tick, KV cache (one token)")
    if prefill is not None:
        ax.plot(contexts, [1e3 * t / c for t, c in zip(prefill, contexts)], "s--",
                label="prefill, per prompt token")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("ms")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return fig


def latency_throughput_plot(batch_sizes: Sequence[int], latency: Sequence[float],
                            throughput: Sequence[float]):
    """Per-tick latency (ms) and throughput (tokens/s) against the batch size, side by side."""
    fig, (left, right) = new_figure(8, 3.2, ncols=2)
    left.plot(batch_sizes, [1e3 * v for v in latency], "o-")
    left.set_xscale("log", base=2)
    left.set_xlabel("batch size")
    left.set_ylabel("ms per decode tick")
    left.set_title("latency: each user waits", fontsize=10)
    right.plot(batch_sizes, throughput, "o-", color="#d62728")
    right.set_xscale("log", base=2)
    right.set_xlabel("batch size")
    right.set_ylabel("tokens / s (all rows)")
    right.set_title("throughput: the machine's output", fontsize=10)
    fig.tight_layout()
    return fig
