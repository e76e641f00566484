"""Checks for exercise ch03_rnn: the RNN cell, the LSTM cell, a whole LSTM layer, clipping.

Inputs are float64 so that every correct order of operations (``@``, ``einsum``, one
matmul on concatenated weights, loops) agrees to ~1e-12, far below the smallest catalogued
mistake. Weights are scaled so that no gate saturates: a σ stuck at 0 or 1 would hide
swapped gates.
"""

from __future__ import annotations

import random

import torch

from lmlab import rnn
from lmlab.checks.core import Case, Mistake, Part, close, make_check

__all__ = [
    "check_rnn_cell",
    "check_lstm_cell",
    "check_lstm_forward",
    "check_clip_grad_norm",
    "random_lstm_params",
]

CHAPTER = "ch03_rnn"
F64 = torch.float64
TOL = close(rtol=1e-7, atol=1e-9)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(rows, cols, generator=g, dtype=F64) / cols**0.5


def random_lstm_params(input_size: int, hidden_size: int, seed: int = 0) -> tuple:
    """(weight_ih (4H, I), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,)) in float64."""
    g = _gen(seed)
    H4 = 4 * hidden_size
    return (_weights(H4, input_size, g), _weights(H4, hidden_size, g),
            0.5 * torch.randn(H4, generator=g, dtype=F64), 0.5 * torch.randn(H4, generator=g, dtype=F64))


def _sizes(rng: random.Random) -> tuple[int, int, int]:
    B, n_in, H = rng.randint(1, 4), rng.randint(2, 6), rng.randint(2, 6)
    return B, n_in, H + 1 if H == n_in else H  # I ≠ H: a transposed weight fails loudly


# --------------------------------------------------------------------------- rnn_cell


def _rnn_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    for _ in range(6):
        B, n_in, H = _sizes(rng)
        x, h = torch.randn(B, n_in, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64)
        params = (_weights(H, n_in, g), _weights(H, H, g),
                  0.5 * torch.randn(H, generator=g, dtype=F64), 0.5 * torch.randn(H, generator=g, dtype=F64))
        cases.append(Case((x, h, *params), label="random"))
    x, h = torch.randn(1, 3, generator=g, dtype=F64), torch.zeros(1, 1, dtype=F64)
    cases.append(Case((x, h, _weights(1, 3, g), _weights(1, 1, g), torch.zeros(1, dtype=F64),
                       torch.full((1,), 0.3, dtype=F64)), label="edge: one unit, zero state"))
    x, h = torch.randn(2, 3, generator=g, dtype=F64) * 4, torch.randn(2, 4, generator=g, dtype=F64) * 4
    cases.append(Case((x, h, _weights(4, 3, g) * 3, _weights(4, 4, g) * 3,
                       torch.randn(4, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)),
                      label="edge: large pre-activations (tanh saturates)"))
    return cases


def _rnn_wrong(x, h, w_ih, w_hh, b_ih, b_hh, *, act=torch.tanh, use_h=True, use_b_hh=True):
    pre = x @ w_ih.T + b_ih + (h @ w_hh.T if use_h else 0) + (b_hh if use_b_hh else 0)
    return act(pre)


check_rnn_cell = make_check(
    Part(
        name="rnn_cell",
        chapter=CHAPTER,
        reference=rnn.rnn_cell,
        cases=_rnn_cases,
        compare=TOL,
        guard=["lmlab.rnn.rnn_cell", "lmlab.rnn.RNNCell", "lmlab.rnn.RNN", "lmlab.rnn.rnn_forward",
               "torch.nn.RNNCell", "torch.nn.RNN", "torch.rnn_tanh_cell", "torch._VF.rnn_tanh_cell",
               "torch._VF.rnn_tanh"],
        mistakes=[
            Mistake("no-tanh",
                    "you returned the pre-activation without the tanh. Without a nonlinearity "
                    "the recurrence is linear and the state can grow without bound: "
                    "h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh).",
                    lambda *a: _rnn_wrong(*a, act=lambda z: z)),
            Mistake("sigmoid",
                    "you squashed with a sigmoid; the plain RNN uses tanh, which is centred on 0 "
                    "and lets the state be negative.",
                    lambda *a: _rnn_wrong(*a, act=torch.sigmoid)),
            Mistake("relu",
                    "you used ReLU; this exercise (and torch.nn.RNNCell's default) uses tanh.",
                    lambda *a: _rnn_wrong(*a, act=torch.relu)),
            Mistake("no-recurrence",
                    "the previous state h is not used: add h @ W_hhᵀ. Without it the cell has no "
                    "memory at all.",
                    lambda *a: _rnn_wrong(*a, use_h=False)),
            Mistake("one-bias",
                    "you left out b_hh. torch's layout has two biases, b_ih and b_hh, and both are "
                    "added (their sum acts as one bias).",
                    lambda *a: _rnn_wrong(*a, use_b_hh=False)),
        ],
    )
)


# --------------------------------------------------------------------------- lstm_cell


def _lstm_cell_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    for k in range(6):
        B, n_in, H = _sizes(rng)
        x = torch.randn(B, n_in, generator=g, dtype=F64)
        h, c = torch.randn(B, H, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64)
        cases.append(Case((x, h, c, *random_lstm_params(n_in, H, seed * 31 + k)), label="random"))
    z = torch.zeros(2, 3, dtype=F64)
    cases.append(Case((torch.randn(2, 4, generator=g, dtype=F64), z, z, *random_lstm_params(4, 3, seed + 7)),
                      label="edge: zero state (h = c = 0)"))
    cases.append(Case((torch.randn(1, 2, generator=g, dtype=F64), torch.randn(1, 1, generator=g, dtype=F64),
                       3 * torch.randn(1, 1, generator=g, dtype=F64), *random_lstm_params(2, 1, seed + 8)),
                      label="edge: one unit, large cell"))
    return cases


def _lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh, *, order="ifgo", cand=torch.tanh, out_act=torch.tanh,
               cell="right", old_c_in_h=False, use_b_hh=True):
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + (b_hh if use_b_hh else 0)
    blocks = dict(zip(order, pre.chunk(4, dim=1), strict=True))
    i, f, o = (torch.sigmoid(blocks[k]) for k in "ifo")
    g = cand(blocks["g"])
    if cell == "right":
        c_new = f * c + i * g
    else:  # "forget-everything": the forget gate also scales what is written
        c_new = f * (c + i * g)
    h_new = o * out_act(c if old_c_in_h else c_new)
    return h_new, c_new


check_lstm_cell = make_check(
    Part(
        name="lstm_cell",
        chapter=CHAPTER,
        reference=rnn.lstm_cell,
        cases=_lstm_cell_cases,
        compare=TOL,
        guard=["lmlab.rnn.lstm_cell", "lmlab.rnn.lstm_gates", "lmlab.rnn.LSTMCell", "lmlab.rnn.LSTM",
               "lmlab.rnn.lstm_forward", "lmlab.rnn.lstm_layer", "torch.nn.LSTMCell", "torch.nn.LSTM",
               "torch.lstm_cell", "torch.lstm", "torch._VF.lstm_cell", "torch._VF.lstm"],
        mistakes=[
            Mistake("sigmoid-candidate",
                    "your candidate g uses a sigmoid. g is what gets written into the cell and must "
                    "be able to be negative: g = tanh(...). Only i, f and o are sigmoids (many "
                    "popular diagrams print σ for g: they are wrong).",
                    lambda *a: _lstm_step(*a, cand=torch.sigmoid)),
            Mistake("sigmoid-everywhere",
                    "you used a sigmoid for the candidate g and for the output squashing. Both are "
                    "tanh: g = tanh(...), h = o ⊙ tanh(c').",
                    lambda *a: _lstm_step(*a, cand=torch.sigmoid, out_act=torch.sigmoid)),
            Mistake("no-tanh-output",
                    "you returned h = o ⊙ c'. The cell can grow beyond ±1; the output squashes it "
                    "first: h = o ⊙ tanh(c').",
                    lambda *a: _lstm_step(*a, out_act=lambda z: z)),
            Mistake("sigmoid-output",
                    "your output uses σ(c'); it is h = o ⊙ tanh(c') (a sigmoid would make every "
                    "output positive).",
                    lambda *a: _lstm_step(*a, out_act=torch.sigmoid)),
            Mistake("i-f-swapped",
                    "the input and forget gates are swapped: either you read the row blocks as "
                    "f, i, g, o (torch's order is i, f, g, o), or the forget gate multiplies the "
                    "new candidate and the input gate the old cell. It is c' = f ⊙ c + i ⊙ g.",
                    lambda *a: _lstm_step(*a, order="figo")),
            Mistake("forget-multiplies-input",
                    "the forget gate multiplies the input too: you wrote c' = f ⊙ (c + i ⊙ g). "
                    "The forget gate only decides how much of the OLD cell to keep; the new "
                    "part is added afterwards: c' = f ⊙ c + i ⊙ g.",
                    lambda *a: _lstm_step(*a, cell="forget-everything")),
            Mistake("ifog-order",
                    "you read the row blocks in the order i, f, o, g (as in some blog posts and "
                    "char-rnn); torch's layout is i, f, g, o: the candidate is the third block, "
                    "the output gate the fourth.",
                    lambda *a: _lstm_step(*a, order="ifog")),
            Mistake("tensorflow-order",
                    "you read the row blocks in TensorFlow's order i, g, f, o; torch's is "
                    "i, f, g, o.",
                    lambda *a: _lstm_step(*a, order="igfo")),
            Mistake("old-cell-in-output",
                    "h uses the old cell: h' = o ⊙ tanh(c'), with the NEW cell c' you just computed.",
                    lambda *a: _lstm_step(*a, old_c_in_h=True)),
            Mistake("returned-c-h",
                    "you returned (c', h'); return (h', c') in that order, like torch.nn.LSTMCell.",
                    lambda *a: _lstm_step(*a)[::-1]),
            Mistake("one-bias",
                    "you left out b_hh: torch's layout adds both biases, b_ih and b_hh.",
                    lambda *a: _lstm_step(*a, use_b_hh=False)),
        ],
    )
)


# --------------------------------------------------------------------------- lstm_forward


def _lstm_forward_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    for k in range(5):
        B, n_in, H = _sizes(rng)
        T = rng.randint(2, 8)
        B = B + 1 if B == T else B
        xs = torch.randn(B, T, n_in, generator=g, dtype=F64)
        h0, c0 = torch.randn(B, H, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64)
        cases.append(Case((xs, h0, c0, random_lstm_params(n_in, H, seed * 17 + k)), label="random"))
    z = torch.zeros(3, 2, dtype=F64)
    cases.append(Case((torch.randn(3, 12, 4, generator=g, dtype=F64), z, z, random_lstm_params(4, 2, seed + 5)),
                      label="edge: zero initial state, 12 steps"))
    cases.append(Case((torch.randn(2, 1, 3, generator=g, dtype=F64), torch.randn(2, 4, generator=g, dtype=F64),
                       torch.randn(2, 4, generator=g, dtype=F64), random_lstm_params(3, 4, seed + 6)),
                      label="edge: one time step"))
    return cases


def _forward_wrong(xs, h0, c0, params, *, carry_h=True, carry_c=True, emit="h", reverse=False,
                   shift=False, final="last", stack_dim=1):
    h, c, outs = h0, c0, []
    steps = range(xs.shape[1])
    for t in reversed(steps) if reverse else steps:
        if shift:
            outs.append(h)
        h_new, c_new = rnn.lstm_cell(xs[:, t], h if carry_h else h0, c if carry_c else c0, *params)
        h, c = h_new, c_new
        if not shift:
            outs.append(h if emit == "h" else c)
    state = (h, c) if final == "last" else (h0, c0)
    return torch.stack(outs, dim=stack_dim), state


check_lstm_forward = make_check(
    Part(
        name="lstm_forward",
        chapter=CHAPTER,
        reference=rnn.lstm_forward,
        cases=_lstm_forward_cases,
        compare=TOL,
        guard=["lmlab.rnn.lstm_forward", "lmlab.rnn.lstm_layer", "lmlab.rnn.lstm_cell",
               "lmlab.rnn.lstm_gates", "lmlab.rnn.LSTM", "lmlab.rnn.LSTMCell", "torch.nn.LSTM",
               "torch.nn.LSTMCell", "torch.lstm", "torch.lstm_cell", "torch._VF.lstm",
               "torch._VF.lstm_cell"],
        helpers=["lstm_cell"],
        mistakes=[
            Mistake("state-reset",
                    "every step starts again from (h0, c0): carry the state, feeding step t the "
                    "(h, c) that step t-1 returned. Otherwise the network remembers nothing.",
                    lambda *a: _forward_wrong(*a, carry_h=False, carry_c=False)),
            Mistake("cell-not-carried",
                    "you carry h from step to step but restart the cell from c0 every step: the "
                    "cell c is the long-term memory and must be carried too.",
                    lambda *a: _forward_wrong(*a, carry_c=False)),
            Mistake("hidden-not-carried",
                    "you carry the cell but feed h0 into every step: the gates at step t read "
                    "h_{t-1}, the previous step's output.",
                    lambda *a: _forward_wrong(*a, carry_h=False)),
            Mistake("outputs-are-cells",
                    "your outputs are the cells c_t; an LSTM outputs h_t at every step (the cell "
                    "stays inside).",
                    lambda *a: _forward_wrong(*a, emit="c")),
            Mistake("shifted-outputs",
                    "your outputs are shifted by one step: you stored h before updating it, so "
                    "outputs[:, 0] is h0. Store the new h_t after each step.",
                    lambda *a: _forward_wrong(*a, shift=True)),
            Mistake("final-is-initial",
                    "the returned state is (h0, c0); return the state after the last step.",
                    lambda *a: _forward_wrong(*a, final="initial")),
            Mistake("reversed-time",
                    "you walked the sequence backwards (t = T-1 ... 0); a forward LSTM reads "
                    "xs[:, 0] first.",
                    lambda *a: _forward_wrong(*a, reverse=True)),
            Mistake("time-first-output",
                    "your outputs have shape (T, B, H): torch.stack(outputs) stacks along dim 0. "
                    "This exercise is batch first: stack along dim=1 to get (B, T, H).",
                    lambda *a: _forward_wrong(*a, stack_dim=0)),
        ],
    )
)


# --------------------------------------------------------------------------- clip_grad_norm


def _clip_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    for _ in range(6):
        shapes = [tuple(rng.randint(1, 4) for _ in range(rng.randint(1, 2))) for _ in range(rng.randint(2, 4))]
        grads = [torch.randn(s, generator=g, dtype=F64) * rng.uniform(0.3, 3) for s in shapes]
        grads[0] = grads[0] * 10  # one tensor dominates: per-tensor clipping differs clearly
        cases.append(Case((grads, rng.uniform(0.5, 3.0)), label="random, global norm above max_norm"))
    small = [torch.randn(3, generator=g, dtype=F64) * 0.1, torch.randn(2, 2, generator=g, dtype=F64) * 0.1]
    cases.append(Case((small, 5.0), label="edge: norm below max_norm (nothing changes)"))
    cases.append(Case(([torch.tensor([30.0, -40.0], dtype=F64)], 1.0), label="edge: one tensor, norm 50"))
    cases.append(Case(([torch.tensor([[3.0]], dtype=F64), torch.tensor([4.0, 0.0], dtype=F64)], 2.5),
                      label="edge: global norm 5, max_norm 2.5"))
    return cases


def _norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum((t**2).sum() for t in tensors))


def _clip_wrong(grads, max_norm, *, how):
    if how == "per-tensor":
        return [g * torch.clamp(max_norm / (g.norm() + 1e-6), max=1.0) for g in grads]
    if how == "value":
        return [g.clamp(-max_norm, max_norm) for g in grads]
    total = {"always": _norm(grads), "inverted": _norm(grads),
             "no-sqrt": sum((g**2).sum() for g in grads),
             "sum-of-norms": sum(g.norm() for g in grads)}[how]
    if how == "inverted":  # grows the gradients it should shrink
        return [g * (total / max_norm if total > max_norm else 1.0) for g in grads]
    scale = max_norm / (total + 1e-6)
    return [g * (scale if how == "always" else torch.clamp(scale, max=1.0)) for g in grads]


check_clip_grad_norm = make_check(
    Part(
        name="clip_grad_norm",
        chapter=CHAPTER,
        reference=rnn.clip_grad_norm,
        cases=_clip_cases,
        compare=close(rtol=1e-5, atol=1e-9),  # with or without the +1e-6 guard
        guard=["lmlab.rnn.clip_grad_norm", "lmlab.optim.clip_grad_norm_",
               "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_norm",
               "torch.nn.utils.clip_grad.clip_grad_norm_", "torch.nn.utils.get_total_norm"],
        mistakes=[
            Mistake("per-tensor",
                    "you clipped each tensor by its own norm. Clipping is global: compute ONE norm "
                    "over all gradients together, sqrt(Σ_tensors Σ g²), and scale every tensor by "
                    "the same factor, so the update keeps its direction.",
                    lambda g, m: _clip_wrong(g, m, how="per-tensor")),
            Mistake("always-rescale",
                    "you rescale even when the norm is already below max_norm (which makes small "
                    "gradients bigger). The factor is min(1, max_norm / norm).",
                    lambda g, m: _clip_wrong(g, m, how="always")),
            Mistake("clip-by-value",
                    "you clamped each element to [-max_norm, max_norm]: that is clipping by value "
                    "and changes the direction. Clip by norm: multiply everything by "
                    "min(1, max_norm / ‖g‖).",
                    lambda g, m: _clip_wrong(g, m, how="value")),
            Mistake("no-sqrt",
                    "your norm is the sum of squares without the square root: ‖g‖ = sqrt(Σ g²).",
                    lambda g, m: _clip_wrong(g, m, how="no-sqrt")),
            Mistake("sum-of-norms",
                    "you added the tensors' norms. The global norm is sqrt of the sum of SQUARED "
                    "norms: sqrt(Σ_k ‖g_k‖²), as if all gradients were one long vector.",
                    lambda g, m: _clip_wrong(g, m, how="sum-of-norms")),
            Mistake("inverted",
                    "your scale factor is upside down: multiply by max_norm / ‖g‖ (< 1 when "
                    "clipping), not ‖g‖ / max_norm.",
                    lambda g, m: _clip_wrong(g, m, how="inverted")),
        ],
    )
)
