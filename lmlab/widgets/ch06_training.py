"""The optimizer explorer: SGD, momentum and Adam paths across a 2-D loss surface."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from lmlab.optim import SGD, Adam
from lmlab.viz.ch06_training import surface_paths_plot
from lmlab.widgets.frames import frame_explorer

__all__ = ["optimizer_explorer", "optimizer_paths", "SURFACES"]


def _ravine(w: torch.Tensor) -> torch.Tensor:
    """An ill-conditioned bowl: 25× steeper across (w2) than along (w1). w: (..., 2)."""
    return 0.5 * (w[..., 0] ** 2 + 25.0 * w[..., 1] ** 2)


def _banana(w: torch.Tensor) -> torch.Tensor:
    """A gentle Rosenbrock valley, curved, minimum at (1, 1). w: (..., 2)."""
    return 0.5 * ((1 - w[..., 0]) ** 2 + 10.0 * (w[..., 1] - w[..., 0] ** 2) ** 2)


# name -> (loss, start, minimum, xlim, ylim)
SURFACES: dict[str, tuple[Callable, tuple, tuple, tuple, tuple]] = {
    "ravine": (_ravine, (-1.8, 0.7), (0.0, 0.0), (-2.0, 2.0), (-1.0, 1.0)),
    "banana": (_banana, (-1.5, 2.0), (1.0, 1.0), (-2.0, 2.0), (-1.0, 3.0)),
}

OPTIMIZERS = {
    "SGD": lambda p, lr: SGD([p], lr=lr),
    "momentum 0.9": lambda p, lr: SGD([p], lr=lr, momentum=0.9),
    "Adam": lambda p, lr: Adam([p], lr=lr),
}


def optimizer_paths(surface: str, lr: float, steps: int = 100) -> dict[str, np.ndarray]:
    """Run each optimizer in ``OPTIMIZERS`` from the surface's start; paths (steps + 1, 2).

    A path that diverges stops at its last finite point.
    """
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {sorted(SURFACES)}, got {surface!r}")
    loss_fn, start = SURFACES[surface][:2]
    paths = {}
    for name, make in OPTIMIZERS.items():
        w = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        opt = make(w, lr)
        points = [w.detach().clone()]
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(w).backward()
            opt.step()
            if not torch.isfinite(w).all() or w.detach().abs().max() > 1e3:
                break
            points.append(w.detach().clone())
        paths[name] = torch.stack(points).numpy()
    return paths


def _render(surface: str, lr: str, steps: int):
    loss_fn, _, minimum, xlim, ylim = SURFACES[surface]
    labelled = {}
    for name, path in optimizer_paths(surface, float(lr), steps).items():
        if len(path) <= steps:
            labelled[f"{name}: diverged at step {len(path)}"] = path
        else:
            labelled[f"{name}: loss {float(loss_fn(torch.tensor(path[-1]))):.2g}"] = path
    return surface_paths_plot(loss_fn, labelled, xlim=xlim, ylim=ylim, minimum=minimum,
                              title=f"{surface}, lr = {lr}, {steps} steps")


def optimizer_explorer(
    lrs: Sequence[float] = (0.003, 0.01, 0.03, 0.1, 0.3),
    surfaces: Sequence[str] = ("ravine", "banana"),
    *,
    steps: int = 100,
    dpi: float | None = None,
):
    """An explorer of SGD, momentum and Adam on 2-D surfaces, one frame per (surface, lr).

    Works without a kernel (precomputed frames, see :func:`lmlab.widgets.frame_explorer`).
    """
    for s in surfaces:
        if s not in SURFACES:
            raise ValueError(f"surfaces must be among {sorted(SURFACES)}, got {s!r}")
    return frame_explorer(
        lambda surface, lr: _render(surface, lr, steps),
        {"surface": list(surfaces), "lr": [f"{lr:g}" for lr in lrs]},
        kinds={"surface": "toggle"},
        title="Optimizer paths on a 2-D loss surface",
        dpi=dpi,
    )
