"""Chapter 5's explorer: a model calculator (parameters, memory, FLOPs per token)."""

from __future__ import annotations

from collections.abc import Sequence

from lmlab.viz.ch05_transformer import model_calculator_figure
from lmlab.widgets.frames import frame_explorer

__all__ = ["model_calculator_explorer"]


def model_calculator_explorer(
    layers: Sequence[int] = (12, 48),
    width: Sequence[int] = (768, 1536),
    heads: Sequence[int] = (12, 24),
    vocabulary: Sequence[int] = (50257, 128256),
    context: Sequence[int] = (1024, 8192),
    *,
    dpi: int = 60,
):
    """Sliders for layers, width, heads, vocabulary and context; each frame shows where the
    parameters live (a stacked bar) and the parameters, memory and FLOPs per token.

    Two values per control keep the page small (2⁵ = 32 precomputed frames); every width
    must be divisible by every head count.
    """
    for C in width:
        for H in heads:
            if C % H:
                raise ValueError(f"width {C} is not divisible by heads {H}: pick widths that all heads divide")

    def render(layers, width, heads, vocabulary, context):
        return model_calculator_figure(int(layers), int(width), int(heads), int(vocabulary), int(context))

    return frame_explorer(
        render,
        {"layers": list(layers), "width": list(width), "heads": list(heads),
         "vocabulary": list(vocabulary), "context": list(context)},
        title="Model calculator: a GPT's parameters, memory and FLOPs per token",
        dpi=dpi,
        max_frames=40,
    )
