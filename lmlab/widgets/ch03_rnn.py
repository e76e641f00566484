"""Chapter 3's explorer: step through a sequence and watch an LSTM's gates and cell."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmlab.rnn import LSTM, trace_gates
from lmlab.viz.ch03_rnn import gate_frames
from lmlab.widgets.frames import frame_explorer

__all__ = ["lstm_gate_explorer"]


def lstm_gate_explorer(
    lstm: LSTM,
    x: torch.Tensor,
    *,
    labels: Sequence[str] | None = None,
    layer: int = 0,
    units: int | None = None,
    max_steps: int = 40,
    dpi: float | None = None,
):
    """A slider over the steps of one sequence; each frame shows i, f, g, o, c and h per unit.

    lstm: an :class:`lmlab.rnn.LSTM`; x: (T, I) or (1, T, I), one sequence, T ≤ ``max_steps``
    (every step is a precomputed frame stored in the page). ``labels``: one short string per
    step naming its input. Works without a kernel: the frames are linked to the slider in
    the browser.
    """
    if not isinstance(lstm, LSTM):
        raise TypeError(f"lstm must be an lmlab.rnn.LSTM, got {type(lstm).__name__}")
    trace = trace_gates(lstm, x, layer=layer)
    T = trace["i"].shape[0]
    if not 1 <= T <= max_steps:
        raise ValueError(f"x has {T} steps; the explorer shows 1 to max_steps={max_steps} steps")
    if labels is not None and len(labels) != T:
        raise ValueError(f"labels has {len(labels)} entries, expected one per step ({T})")
    trace = {k: v.numpy() for k, v in trace.items()}

    render = gate_frames(trace, labels=labels, units=units)
    return frame_explorer(render, {"step": list(range(T))}, dpi=dpi,
                          title="LSTM gates, step by step (drag the slider)")
