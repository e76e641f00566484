"""Explorers made of precomputed frames, linked in the browser so they work without a kernel."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import ipywidgets as widgets

from lmlab.viz.core import figure_to_png

__all__ = ["frame_explorer"]


def _control(name: str, values: Sequence, kind: str) -> widgets.Widget:
    labels = [str(v) for v in values]
    if kind == "dropdown":
        return widgets.Dropdown(options=labels, value=labels[0], description=name)
    if kind == "toggle":
        return widgets.ToggleButtons(options=labels, value=labels[0], description=name)
    return widgets.SelectionSlider(
        options=labels, value=labels[0], description=name, continuous_update=True,
        layout=widgets.Layout(width="420px"),
    )


def _stack(
    render: Callable[..., object],
    axes: list[tuple[str, Sequence]],
    controls: list[widgets.Widget],
    chosen: tuple,
    dpi: int,
) -> widgets.Widget:
    """A Stack over the first axis whose children are stacks over the remaining axes."""
    if not axes:
        png = figure_to_png(render(**dict(chosen)), dpi=dpi)
        return widgets.Image(value=png, format="png")
    (name, values), rest = axes[0], axes[1:]
    children = [_stack(render, rest, controls[1:], chosen + ((name, v),), dpi) for v in values]
    stack = widgets.Stack(children=children, selected_index=0)
    widgets.jslink((controls[0], "index"), (stack, "selected_index"))
    return stack


def frame_explorer(
    render: Callable[..., object],
    axes: dict[str, Sequence],
    *,
    kinds: dict[str, str] | None = None,
    title: str = "",
    dpi: int = 80,
    max_frames: int = 64,
) -> widgets.VBox:
    """Build an explorer from ``render(**values) -> matplotlib Figure``.

    ``axes`` maps each control's name to its values, e.g.
    ``{"operation": ["matmul", "matvec"], "n": [64, 256, 1024]}``; one frame is rendered
    for every combination (keep the product small: frames are stored in the page).
    ``kinds`` picks a control per axis: ``"slider"`` (default), ``"dropdown"`` or
    ``"toggle"``. The returned VBox has ``.controls`` (by name) and ``.frames`` (count).
    """
    if not axes:
        raise ValueError("axes must name at least one control, got an empty dict")
    for name, values in axes.items():
        if len(values) == 0:
            raise ValueError(f"axes[{name!r}] is empty: each control needs at least one value")
    total = 1
    for values in axes.values():
        total *= len(values)
    if total > max_frames:
        raise ValueError(
            f"axes give {total} frames, more than max_frames={max_frames}: fewer values per "
            f"control keep the page small"
        )
    kinds = kinds or {}
    items = list(axes.items())
    controls = [_control(name, values, kinds.get(name, "slider")) for name, values in items]
    frames = _stack(render, items, controls, (), dpi)
    children = ([widgets.HTML(f"<b>{title}</b>")] if title else []) + controls + [frames]
    box = widgets.VBox(children)
    box.add_class("lmlab-explorer")  # the browser tests find every explorer by this class
    box.controls = {name: c for (name, _), c in zip(items, controls)}
    box.frames = total
    box.combinations = list(itertools.product(*axes.values()))
    return box
