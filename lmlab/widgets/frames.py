"""Explorers made of precomputed frames, linked in the browser so they work without a kernel."""

from __future__ import annotations

import base64
import html
import itertools
from collections.abc import Callable, Sequence

import ipywidgets as widgets

from lmlab.viz.core import figure_to_png, png_size

__all__ = ["frame_explorer"]

COLUMN_PX = 680  # the book's text column is 688 CSS px wide


def _control(name: str, values: Sequence, kind: str) -> widgets.Widget:
    labels = [str(v) for v in values]
    # "initial": the label takes the width it needs (the default 80 px cuts "temperat...")
    if kind == "dropdown":
        return widgets.Dropdown(options=labels, value=labels[0], description=name,
                                style={"description_width": "initial"})
    if kind == "toggle":
        return widgets.ToggleButtons(options=labels, value=labels[0], description=name,
                                     style={"description_width": "initial",
                                            "button_width": "auto"})
    return widgets.SelectionSlider(
        options=labels, value=labels[0], description=name, continuous_update=True,
        style={"description_width": "initial"},
        layout=widgets.Layout(width="100%", max_width="480px"),
    )


def _describe(title: str, chosen: tuple) -> str:
    """The frame's text alternative: the explorer's title and the values shown."""
    values = ", ".join(f"{name} = {value}" for name, value in chosen)
    return f"{title or 'Explorer frame'}: {values}"


def _column_dpi(fig) -> float:
    """The display dpi at which ``fig`` (cropped as savefig's bbox_inches="tight" crops it)
    fills the text column, kept within 60-110 so small figures are not blown up."""
    width_in = fig.get_tightbbox(fig.canvas.get_renderer()).width + 0.2  # pad_inches=0.1
    return max(60.0, min(110.0, COLUMN_PX / width_in))


def _frame(png: bytes, description: str) -> widgets.HTML:
    """A frame as an ``<img>`` with its alt text, stored at 2x and shown at half its pixel
    size (sharp on dense screens). An HTML widget rather than ``widgets.Image``: the image
    keeps a real ``alt`` attribute, and the static page's widget manager cannot render an
    Image view with a tooltip. ``.png`` keeps the bytes for Python callers."""
    width, _ = png_size(png)
    data = base64.b64encode(png).decode("ascii")
    frame = widgets.HTML(
        f'<img src="data:image/png;base64,{data}" width="{width // 2}" '
        f'alt="{html.escape(description)}" style="max-width: 100%; height: auto">'
    )
    frame.png = png
    return frame


def _stack(
    render: Callable[..., object],
    axes: list[tuple[str, Sequence]],
    controls: list[widgets.Widget],
    chosen: tuple,
    dpi: list,
    title: str,
) -> widgets.Widget:
    """A Stack over the first axis whose children are stacks over the remaining axes.

    ``dpi`` is a one-item list: None until the first frame fixes it for all frames."""
    if not axes:
        fig = render(**dict(chosen))
        if dpi[0] is None:
            dpi[0] = _column_dpi(fig)
        png = figure_to_png(fig, dpi=2 * dpi[0])
        return _frame(png, _describe(title, chosen))
    (name, values), rest = axes[0], axes[1:]
    children = [_stack(render, rest, controls[1:], chosen + ((name, v),), dpi, title)
                for v in values]
    stack = widgets.Stack(children=children, selected_index=0)
    widgets.jslink((controls[0], "index"), (stack, "selected_index"))
    return stack


def frame_explorer(
    render: Callable[..., object],
    axes: dict[str, Sequence],
    *,
    kinds: dict[str, str] | None = None,
    title: str = "",
    dpi: float | None = None,
    max_frames: int = 64,
) -> widgets.VBox:
    """Build an explorer from ``render(**values) -> matplotlib Figure``.

    ``axes`` maps each control's name to its values, e.g.
    ``{"operation": ["matmul", "matvec"], "n": [64, 256, 1024]}``; one frame is rendered
    for every combination (keep the product small: frames are stored in the page).
    ``kinds`` picks a control per axis: ``"slider"`` (default), ``"dropdown"`` or
    ``"toggle"``. ``dpi`` is the display resolution (default: the one at which the first
    frame fills the book's column): frames are stored at ``2 * dpi`` and shown at half
    their pixel size. Each frame's tooltip (and alt text in the book) names
    the explorer and the values it shows. The returned VBox has ``.controls`` (by name)
    and ``.frames`` (count).
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
    frames = _stack(render, items, controls, (), [dpi], title)
    children = ([widgets.HTML(f"<b>{title}</b>")] if title else []) + controls + [frames]
    box = widgets.VBox(children)
    box.add_class("lmlab-explorer")  # the browser tests find every explorer by this class
    box.controls = {name: c for (name, _), c in zip(items, controls)}
    box.frames = total
    box.combinations = list(itertools.product(*axes.values()))
    return box
