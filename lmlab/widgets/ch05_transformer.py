"""Chapter 5's explorers: model calculators (parameters, memory, FLOPs, KV cache) and RoPE."""

from __future__ import annotations

from collections.abc import Sequence

from lmlab.viz.ch05_transformer import (
    config_calculator_figure,
    model_calculator_figure,
    rope_pair_figure,
)
from lmlab.widgets.frames import frame_explorer

__all__ = ["model_calculator_explorer", "preset_calculator_explorer", "rope_explorer"]


def model_calculator_explorer(
    layers: Sequence[int] = (2, 6, 12, 24, 48),
    width: Sequence[int] = (256, 768, 1024, 1600),
    heads: Sequence[int] | None = None,
    vocabulary: Sequence[int] = (50257,),
    context: Sequence[int] = (1024,),
    *,
    dpi: float | None = None,
):
    """A GPT-2-family calculator: each frame shows where the parameters live and what the
    model costs (weights, training state, KV cache, FLOPs per token).

    Every argument lists the values of one control; an argument with a single value is
    held fixed instead of getting a control (each control multiplies the number of
    precomputed frames). ``heads=None`` uses GPT-2's head size of 64 (``H = C // 64``);
    otherwise every width must be divisible by every head count.
    """
    if heads is not None:
        for C in width:
            for H in heads:
                if C % H:
                    raise ValueError(f"width {C} is not divisible by heads {H}: pick widths "
                                     f"that all heads divide")
    values = {"layers": list(layers), "width": list(width), "heads": list(heads or [None]),
              "vocabulary": list(vocabulary), "context": list(context)}
    fixed = {name: v[0] for name, v in values.items() if len(v) == 1}
    axes = {name: v for name, v in values.items() if len(v) > 1}
    if not axes:
        raise ValueError("give at least one argument two or more values: nothing to explore")

    def render(**chosen):
        v = {**fixed, **chosen}
        C = int(v["width"])
        H = int(v["heads"]) if v["heads"] is not None else max(1, C // 64)
        return model_calculator_figure(int(v["layers"]), C, H, int(v["vocabulary"]),
                                       int(v["context"]))

    return frame_explorer(render, axes, dpi=dpi, max_frames=64,
                          title="Model calculator: a GPT-2-style model's parameters and costs")


def preset_calculator_explorer(
    presets: dict | None = None,
    context: Sequence[int] | None = None,
    *,
    dpi: float | None = None,
):
    """The calculator for named models (``lmlab.presets.PRESETS`` by default): a dropdown
    for the model (and a slider for the context length if ``context`` lists several; by
    default each model's own ``block_size``). Each frame shows the parameters (total and
    active per token), the KV cache per token and for the whole context, and the FLOPs per
    token at that context."""
    from lmlab.presets import PRESETS

    presets = PRESETS if presets is None else presets
    if not presets:
        raise ValueError("presets is empty: pass a dict of name -> GPTConfig")

    def render(model, context=None):
        config = presets[model]
        T = config.block_size if context is None else int(context)
        return config_calculator_figure(config, title=f"{model} (context {T:,})", context=T)

    axes = {"model": list(presets)}
    if context is not None:
        axes["context"] = list(context)
    return frame_explorer(render, axes,
                          kinds={"model": "dropdown"}, dpi=dpi, max_frames=64,
                          title="Model calculator: published models, dense and mixture of experts")


def rope_explorer(
    positions: Sequence[int] = (0, 8, 24, 48, 96),
    pairs: Sequence[int] = (0, 2, 8, 16),
    *,
    head_dim: int = 64,
    theta: float = 10000.0,
    dpi: float | None = None,
):
    """Rotary embeddings: pick the query's position and a pair of features. Left, the pair
    turning with the position; right, the query's score against keys at every position,
    a curve that slides with the query because it depends on the distance only."""
    for i in pairs:
        if not 0 <= i < head_dim // 2:
            raise ValueError(f"pair {i} is out of range: a head of {head_dim} features has "
                             f"pairs 0 to {head_dim // 2 - 1}")

    def render(position, pair):
        return rope_pair_figure(int(position), int(pair), head_dim=head_dim, theta=theta)

    return frame_explorer(render, {"position": list(positions), "pair": list(pairs)}, dpi=dpi,
                          title="RoPE: turn each pair of features by position × frequency")
