"""Chapter 1 explorer: move an operation along the roofline."""

from __future__ import annotations

from collections.abc import Sequence

from lmlab.device import roofline_time
from lmlab.viz.ch01_chips import roofline_plot
from lmlab.widgets.frames import frame_explorer

__all__ = ["roofline_explorer", "OPERATIONS", "operation_cost"]

# FLOPs and minimum bytes (fp32) of three operations on n×n inputs.
OPERATIONS = {
    "matmul n×n @ n×n": lambda n: (2 * n**3, 3 * n * n * 4),
    "matvec n×n @ n": lambda n: (2 * n * n, (n * n + 2 * n) * 4),
    "add n×n + n×n": lambda n: (n * n, 3 * n * n * 4),
}



def _duration(seconds: float) -> str:
    """A time with a unit that keeps three significant digits (ns, µs, ms or s)."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:,.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"

def operation_cost(operation: str, n: int) -> tuple[int, int]:
    """(FLOPs, bytes) of ``operation`` at size ``n``."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation={operation!r}: expected one of {list(OPERATIONS)}")
    return OPERATIONS[operation](n)


def roofline_explorer(
    peak_flops: float,
    bandwidth: float,
    measured: Sequence[tuple[str, float, float]] = (),
    sizes: Sequence[int] = (16, 64, 256, 1024, 4096),
):
    """Pick an operation and a size; see where it sits on this machine's roofline.

    ``measured`` are the reader's own points ``(label, intensity, FLOP/s)`` drawn in the
    background of every frame. The big red dot is the roofline's prediction for the chosen
    operation; the title gives the predicted time and whether it is compute or memory bound.
    """

    def render(operation: str, n: int):
        flops, nbytes = operation_cost(operation, n)
        seconds = roofline_time(flops, nbytes, peak_flops, bandwidth)
        bound = "compute" if flops / peak_flops >= nbytes / bandwidth else "memory"
        intensity = flops / nbytes
        title = f"{operation}, n={n}: ≥ {_duration(seconds)}, {bound} bound"
        return roofline_plot(peak_flops, bandwidth, measured,
                             highlight=(f"{intensity:.2f} FLOP/B", intensity, flops / seconds),
                             title=title)

    return frame_explorer(
        render,
        {"operation": list(OPERATIONS), "n": list(sizes)},
        kinds={"operation": "dropdown"},
        title="Roofline explorer",
    )
