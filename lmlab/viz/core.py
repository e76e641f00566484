"""Matplotlib helpers every figure shares: one style, figures to PNG bytes."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt

__all__ = ["style", "new_figure", "figure_to_png", "png_size", "table"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]


def _retina_inline() -> None:
    """In a notebook, store inline figures at twice their display size (sharp on
    high-density screens; the output's width/height metadata keep the display size)."""
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


_retina_inline()  # also for figures drawn with plain pyplot in a notebook importing lmlab.viz


def style() -> None:
    """The course's plot style: readable fonts, light grid, no top/right spines, and
    inline figures stored at 2x for high-density screens."""
    _retina_inline()
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
            "font.size": 10,
            "svg.hashsalt": "lmlab",  # deterministic SVG ids
        }
    )


def new_figure(width: float = 6.0, height: float = 4.0, **kwargs):
    """A (fig, ax) pair in the course style; pass ``nrows``/``ncols`` for a grid."""
    style()
    return plt.subplots(figsize=(width, height), **kwargs)


def figure_to_png(fig, dpi: float = 80) -> bytes:
    """Render ``fig`` to PNG bytes at ``dpi`` and close it (explorer frames are PNGs)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels of PNG bytes, read from the IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("png does not start with the PNG signature")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def table(rows: Sequence[Sequence], headers: Sequence[str], *, caption: str = ""):
    """Show results as an HTML table (numbers right-aligned), not as printed lines.

    ``rows`` holds one sequence of cells per row; floats are shown with 4 significant
    digits unless they are already strings. Returns an ``IPython.display.HTML`` object,
    so a notebook cell ending in ``table(...)`` renders it.
    """
    from IPython.display import HTML

    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"rows[{i}] has {len(row)} cells but there are {len(headers)} headers")

    def cell(value, tag: str) -> str:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        align = ' style="text-align:right"' if numeric else ""
        return f"<{tag}{align}>{html.escape(text)}</{tag}>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return HTML(f'<table class="lmlab-table">{cap}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")
