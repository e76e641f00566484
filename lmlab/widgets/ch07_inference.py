"""The sampling explorer: which tokens survive temperature, top-k and top-p."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmlab.viz.ch07_inference import sampling_bars
from lmlab.widgets.frames import frame_explorer

__all__ = ["sampling_explorer"]


def sampling_explorer(
    logits: torch.Tensor,
    labels: Sequence[str],
    *,
    temperatures: Sequence[float] = (0.5, 1.0, 2.0),
    top_ks: Sequence[int | None] = (None, 10, 3),
    top_ps: Sequence[float] = (1.0, 0.9, 0.6),
    show: int = 20,
    dpi: float | None = None,
):
    """Sliders for temperature, top-k and top-p over the bars of one next-token distribution.

    logits: (V,), labels: one string per token. Every combination is drawn in advance
    (``len(temperatures) · len(top_ks) · len(top_ps)`` frames, at most 40), so the
    sliders also work in the static book without a kernel. ``None`` in ``top_ks`` is
    shown as "all" (no top-k).
    """
    logits = logits.detach().cpu()
    k_values = {("all" if k is None else str(k)): k for k in top_ks}

    def render(temperature, top_k, top_p):
        return sampling_bars(logits, labels, temperature=float(temperature), top_k=k_values[top_k],
                             top_p=None if float(top_p) >= 1 else float(top_p), show=show)

    axes = {"temperature": list(temperatures), "top_k": list(k_values), "top_p": list(top_ps)}
    return frame_explorer(render, axes, title="Next-token distribution: who survives sampling?",
                          dpi=dpi, max_frames=40)
