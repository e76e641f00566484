"""Figures for chapter 6: loss curves, learning-rate schedules, optimizer paths on a surface."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from lmlab.viz.core import new_figure

__all__ = ["loss_curves", "schedule_plot", "surface_paths_plot", "LiveLossPlot"]


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    x = np.asarray(values, dtype=float)
    if window <= 1 or len(x) == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.arange(1, len(x) + 1)
    lo = np.maximum(0, n - window)
    return (c[n] - c[lo]) / (n - lo)


def loss_curves(history, ax=None, *, smooth: int = 20, label: str = ""):
    """Training loss (faint: per step; solid: moving average) and validation loss (dots).

    ``history``: a :class:`lmlab.train.History`. Returns the figure.
    """
    if ax is None:
        fig, ax = new_figure(6.5, 3.5)
    else:
        fig = ax.figure
    prefix = f"{label} " if label else ""
    line = ax.plot(history.step, history.loss, alpha=0.25, lw=0.8)[0]
    ax.plot(history.step, _smooth(history.loss, smooth), color=line.get_color(),
            label=f"{prefix}train (avg of {smooth})")
    if history.val_loss:
        ax.plot(history.val_step, history.val_loss, "o--", ms=4,
                color="#d62728" if not label else line.get_color(), label=f"{prefix}validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend(loc="upper right")
    return fig


def schedule_plot(schedules: dict[str, Callable[[int], float]], steps: int, ax=None):
    """Learning rate against step for each named ``step -> lr`` function."""
    if ax is None:
        fig, ax = new_figure(6.5, 3.0)
    else:
        fig = ax.figure
    s = np.arange(steps)
    for name, fn in schedules.items():
        ax.plot(s, [fn(int(i)) for i in s], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend()
    return fig


def surface_paths_plot(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    paths: dict[str, np.ndarray],
    *,
    xlim: tuple[float, float] = (-2.0, 2.0),
    ylim: tuple[float, float] = (-1.0, 3.0),
    minimum: tuple[float, float] | None = None,
    title: str = "",
    ax=None,
):
    """Contours of a 2-D loss and the path (K, 2) each optimizer took across it."""
    if ax is None:
        fig, ax = new_figure(5.5, 4.2)
    else:
        fig = ax.figure
    xs = torch.linspace(*xlim, 200, dtype=torch.float64)
    ys = torch.linspace(*ylim, 200, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    Z = loss_fn(torch.stack([X, Y], dim=-1)).numpy()  # (200, 200)
    levels = np.quantile(Z, np.linspace(0.0, 0.95, 18) ** 2)
    ax.contour(X.numpy(), Y.numpy(), np.log1p(Z), levels=np.log1p(np.unique(levels)),
               colors="0.6", linewidths=0.6)
    for name, path in paths.items():
        p = np.clip(np.asarray(path), [xlim[0] - 1, ylim[0] - 1], [xlim[1] + 1, ylim[1] + 1])
        ax.plot(p[:, 0], p[:, 1], ".-", ms=2.5, lw=1.2, label=name)
    if minimum is not None:
        ax.plot(*minimum, "k*", ms=12, label="minimum")
    if paths:
        start = np.asarray(next(iter(paths.values())))[0]
        ax.plot(*start, "ko", ms=5)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.grid(False)
    ax.legend(loc="best", fontsize=9)  # "best" keeps it off the paths and the start
    if title:
        ax.set_title(title, fontsize=10)
    return fig


class LiveLossPlot:
    """A ``train(callback=...)`` that redraws the loss curves in place after each evaluation.

    In Jupyter the figure updates while training runs; the last drawing stays in the
    notebook (and in the rendered book).
    """

    def __init__(self, smooth: int = 20) -> None:
        self.smooth = smooth
        self.handle = None

    def __call__(self, history) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = loss_curves(history, smooth=self.smooth)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
