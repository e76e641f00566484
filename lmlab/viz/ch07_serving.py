"""Figures for chapter 7's serving section: KV-cache memory of real models, and what
speculative decoding does round by round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lmlab.viz.core import new_figure

__all__ = ["kv_memory_figure", "speculative_curves", "speculative_rounds"]

GIB = 2**30


def kv_memory_figure(per_token: Mapping[str, int], lengths: Sequence[int], *,
                     budget_gib: float | None = None, ax=None):
    """KV-cache size (GiB, one sequence) against context length, one line per model.

    ``per_token``: label -> bytes of cache per token of context (see
    :func:`lmlab.transformer.kv_cache_bytes_per_token`). ``budget_gib`` draws a horizontal
    line (for instance the memory left on a GPU after the weights).
    """
    if ax is None:
        fig, ax = new_figure(6.4, 3.8)
    else:
        fig = ax.figure
    for label, nbytes in per_token.items():
        ax.plot(lengths, [nbytes * n / GIB for n in lengths], marker="o", ms=3, label=label)
    if budget_gib is not None:
        ax.axhline(budget_gib, color="0.4", ls="--", lw=1)
        ax.text(lengths[0], budget_gib, f" {budget_gib:g} GiB", va="bottom", color="0.3")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("KV cache of one sequence (GiB)")
    ax.legend(fontsize=8)
    return fig


def speculative_curves(ks: Sequence[int], results: Mapping[str, Mapping[str, Sequence[float]]]):
    """Two panels against k: new tokens per target pass, and the measured speed-up.

    ``results``: draft label -> {"tokens_per_pass": [...], "speedup": [...]} (one value
    per k; "speedup" may be missing). A dashed line at 1 marks plain decoding.
    """
    fig, (left, right) = new_figure(8.0, 3.4, ncols=2)
    for label, r in results.items():
        left.plot(ks, r["tokens_per_pass"], marker="o", label=label)
        if "speedup" in r:
            right.plot(ks, r["speedup"], marker="o", label=label)
    for ax in (left, right):
        ax.axhline(1.0, color="0.5", ls="--", lw=1)
        ax.set_xlabel("draft tokens per round, k")
        ax.set_xticks(list(ks))
    left.set_ylabel("new tokens per target pass")
    right.set_ylabel("speed-up over plain decoding")
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def speculative_rounds(accepted: Sequence[int], proposed: Sequence[int], *, title: str = "",
                       max_rounds: int = 24, ax=None):
    """One row per target pass: accepted draft tokens (green), the rejected one (red),
    the drafts after it that were never checked (grey), and the target's own token (blue).
    """
    if ax is None:
        fig, ax = new_figure(6.4, 3.6)
    else:
        fig = ax.figure
    rounds = list(zip(accepted, proposed))[:max_rounds]
    for row, (n, k) in enumerate(rounds):
        y = len(rounds) - 1 - row
        ax.barh(y, n, left=0, color="tab:green", height=0.8)
        if n < k:
            ax.barh(y, 1, left=n, color="tab:red", height=0.8)
            ax.barh(y, k - n - 1, left=n + 1, color="0.85", height=0.8)
        ax.barh(y, 0.45, left=n, color="tab:blue", height=0.4)
    width = max([k for _, k in rounds] + [1]) + 1
    ax.set_xlim(0, width)
    ax.set_yticks([])
    ax.set_xlabel("position in the round (green: kept, red: rejected, blue: target's token)")
    ax.set_ylabel("target passes, first at the top")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
