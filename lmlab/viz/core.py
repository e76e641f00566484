"""Matplotlib helpers every figure shares: one style, figures to PNG bytes."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.pyplot as plt

__all__ = ["style", "new_figure", "figure_to_png"]

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]


def style() -> None:
    """The course's plot style: readable fonts, light grid, no top/right spines."""
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


def figure_to_png(fig, dpi: int = 80) -> bytes:
    """Render ``fig`` to PNG bytes and close it (explorer frames are stored as PNGs)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()
