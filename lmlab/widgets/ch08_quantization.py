"""The quantization explorer: a weight histogram with its grid, for each bit width and grouping."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmlab.viz.ch08_quantization import quantization_grid_plot
from lmlab.widgets.frames import frame_explorer

__all__ = ["quantization_explorer"]


def quantization_explorer(
    w: torch.Tensor | None = None,
    *,
    bits: Sequence[int] = (2, 3, 4, 6, 8),
    groups: Sequence[str | int] = ("tensor", "channel", 128, 32, 8),
    title: str = "Quantization explorer: bits and group size",
    dpi: float | None = None,
):
    """Sliders for bits and group size over a weight matrix ``w`` (rows, cols).

    Each frame shows ``w``'s histogram with the quantization grid and the histogram of the
    error. Without ``w``, a heavy-tailed random (64, 512) matrix stands in for real weights.
    Group sizes that do not divide ``w``'s columns are left out.
    """
    if w is None:
        gen = torch.Generator().manual_seed(0)
        w = 0.02 * torch.randn(64, 512, generator=gen) * torch.exp(0.7 * torch.randn(64, 512, generator=gen))
    if w.dim() != 2:
        raise ValueError(f"w has shape {tuple(w.shape)}, expected a 2-d weight matrix (rows, cols)")
    w = w.detach().float().cpu()
    usable = [g for g in groups if not isinstance(g, int) or (g < w.shape[1] and w.shape[1] % g == 0)]
    lookup = {str(g): g for g in usable}

    def render(bits: int, group: str):
        return quantization_grid_plot(w, int(bits), lookup[str(group)])

    return frame_explorer(render, {"bits": list(bits), "group": [str(g) for g in usable]},
                          title=title, dpi=dpi)
