"""lmlab's LSTM against ``torch.nn.LSTM`` on the CPU: forward + backward over a sequence.

Both models hold the very same weights (``load_state_dict``), so they compute the same
function (checked: outputs agree to 1e-5) and the ratio measures only the implementation.
torch's CPU LSTM calls oneDNN's fused RNN kernels; lmlab's is a Python loop over time
steps, with the input projection done for all steps in one matmul and back-propagation
through time written by hand (``lmlab.rnn._LSTMLayer``). Cases from the issue: T=100,
I=H=256 at batch 32 (goal ≤ 1.3×) and at batch 1 (goal ≤ 6×), plus the readable autograd
version (``lmlab.rnn.lstm_forward``) at batch 32, reported without a goal.
"""

from __future__ import annotations

import torch

from benchmarks.harness import Result, compare
from lmlab import rnn

NAME = "lstm"


def _step(forward, x):
    def step():
        out, (h, c) = forward(x)
        (out.sum() + c.sum()).backward()

    return step


def _case(T: int, B: int, size: int, *, readable: bool, quick: bool) -> Result:
    torch.manual_seed(0)
    peer = torch.nn.LSTM(size, size, batch_first=True)
    ours = rnn.LSTM(size, size)
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(B, T, size, generator=torch.Generator().manual_seed(1))
    zeros = torch.zeros(B, size)

    def readable_forward(inputs):
        out, (h, c) = rnn.lstm_forward(inputs, zeros, zeros, ours.layer_params(0))
        return out, (h, c)

    forward = readable_forward if readable else ours
    with torch.no_grad():
        gap = (forward(x)[0] - peer(x)[0]).abs().max().item()
    ratio, iqr, t_ours, t_peer = compare(
        _step(forward, x), _step(peer, x),
        rounds=2 if quick else 5, warmup=1 if quick else 2, repeat=2 if quick else 3,
        desc=f"LSTM B={B}{' readable' if readable else ''}",
    )
    if readable:
        goal, met = "reported (readable autograd loop)", None
    else:
        limit = 6.0 if B == 1 else 1.3
        goal, met = f"≤ {limit:g}×", ratio <= limit and gap < 1e-5
    what = "lstm_forward + autograd" if readable else "LSTM (hand-written BPTT)"
    return Result(
        benchmark=NAME,
        case=f"forward+backward, T={T} B={B} I=H={size}: lmlab {what} vs torch.nn.LSTM",
        metric="time ratio lmlab/torch",
        value=ratio,
        iqr=iqr,
        goal=goal,
        met=met,
        details={
            "ms_lmlab": 1e3 * min(t.median for t in t_ours),
            "ms_torch": 1e3 * min(t.median for t in t_peer),
            "max_output_gap": gap,
            "threads": torch.get_num_threads(),
        },
    )


def run(quick: bool = False) -> list[Result]:
    T, size = (10, 16) if quick else (100, 256)
    big = 4 if quick else 32
    return [
        _case(T, big, size, readable=False, quick=quick),
        _case(T, 1, size, readable=False, quick=quick),
        _case(T, big, size, readable=True, quick=quick),
    ]


if __name__ == "__main__":
    for result in run(quick="--quick" in __import__("sys").argv):
        print(result)
