"""The ch03_rnn checks accept different correct solutions and name the mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab import rnn
from lmlab.checks import ch03_rnn as ch03
from lmlab.checks.core import PARTS

CHECKS = {
    "rnn_cell": ch03.check_rnn_cell,
    "lstm_cell": ch03.check_lstm_cell,
    "lstm_forward": ch03.check_lstm_forward,
    "clip_grad_norm": ch03.check_clip_grad_norm,
}


# --------------------------------------------------------------------------- correct solutions


def rnn_cell_matmul(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)


def rnn_cell_concat_loops(x, h, W_ih, W_hh, b_ih, b_hh):
    """One weight on [x, h], then per element with math.tanh."""
    W = torch.cat([W_ih, W_hh], dim=1)
    xh = torch.cat([x, h], dim=1)
    out = torch.empty(x.shape[0], W.shape[0], dtype=x.dtype)
    for b in range(x.shape[0]):
        for j in range(W.shape[0]):
            out[b, j] = math.tanh(float((W[j] * xh[b]).sum() + b_ih[j] + b_hh[j]))
    return out


def rnn_cell_einsum_exp(x, h, W_ih, W_hh, b_ih, b_hh):
    z = torch.einsum("bi,hi->bh", x, W_ih) + torch.einsum("bk,hk->bh", h, W_hh) + b_ih + b_hh
    return (1 - torch.exp(-2 * z)) / (1 + torch.exp(-2 * z))  # tanh written out


def lstm_cell_chunk(x, h, c, W_ih, W_hh, b_ih, b_hh):
    i, f, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstm_cell_per_gate(x, h, c, W_ih, W_hh, b_ih, b_hh):
    """Slice the weights per gate, sigmoid written as 1 / (1 + e^-z)."""
    H = h.shape[1]

    def pre(k):
        rows = slice(k * H, (k + 1) * H)
        return x @ W_ih[rows].T + h @ W_hh[rows].T + b_ih[rows] + b_hh[rows]

    sig = lambda z: 1 / (1 + torch.exp(-z))  # noqa: E731
    i, f, g, o = sig(pre(0)), sig(pre(1)), torch.tanh(pre(2)), sig(pre(3))
    c_new = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c_new), c_new


def lstm_forward_with_cell(xs, h0, c0, params):
    h, c, outs = h0, c0, []
    for t in range(xs.shape[1]):
        h, c = lstm_cell_chunk(xs[:, t], h, c, *params)
        outs.append(h)
    return torch.stack(outs, dim=1), (h, c)


def lstm_forward_preallocated(xs, h0, c0, params):
    """Input projection for all steps at once, results written into a preallocated tensor."""
    W_ih, W_hh, b_ih, b_hh = params
    B, T, _ = xs.shape
    xw = torch.einsum("bti,gi->btg", xs, W_ih) + b_ih + b_hh
    out = torch.zeros(B, T, h0.shape[1], dtype=xs.dtype)
    h, c = h0.clone(), c0.clone()
    for t in range(T):
        i, f, g, o = (xw[:, t] + h @ W_hh.T).chunk(4, dim=-1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        out[:, t] = h
    return out, (h, c)


def clip_vectorized(grads, max_norm):
    total = torch.cat([g.flatten() for g in grads]).norm()
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    return [g * scale for g in grads]


def clip_in_place_loops(grads, max_norm):
    """Python floats, no eps, edits the inputs in place and returns them."""
    total = math.sqrt(sum(float(v) ** 2 for g in grads for v in g.flatten()))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / total)
    return grads


def clip_stack_of_norms(grads, max_norm):
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return [g * torch.clamp(max_norm / (total + 1e-6), max=1.0) for g in grads]


CORRECT = {
    "rnn_cell": [rnn_cell_matmul, rnn_cell_concat_loops, rnn_cell_einsum_exp],
    "lstm_cell": [lstm_cell_chunk, lstm_cell_per_gate],
    "lstm_forward": [lstm_forward_with_cell, lstm_forward_preallocated],
    "clip_grad_norm": [clip_vectorized, clip_in_place_loops, clip_stack_of_norms],
}


@pytest.mark.parametrize("part, fn", [(p, f) for p, fns in CORRECT.items() for f in fns],
                         ids=lambda v: getattr(v, "__name__", v))
@pytest.mark.parametrize("seed", [0, 11])
def test_correct_implementations_pass(part, fn, seed, capsys):
    CHECKS[part](fn, seed=seed)
    assert "✔" in capsys.readouterr().out


def test_parts_are_registered_for_the_chapter():
    for name in CHECKS:
        assert PARTS[name].chapter == "ch03_rnn"
        assert len(PARTS[name].mistakes) >= 5


@pytest.mark.parametrize("part", list(CHECKS))
def test_every_catalogued_mistake_is_named(part):
    for mistake in PARTS[part].mistakes:
        with pytest.raises(AssertionError) as err:
            CHECKS[part](mistake.fn)
        assert f"Likely mistake: {mistake.hint}" in str(err.value), mistake.name


# --------------------------------------------------------------------------- specific diagnoses


def test_sigmoid_candidate_is_diagnosed():
    def wrong(x, h, c, W_ih, W_hh, b_ih, b_hh):
        i, f, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).sigmoid().chunk(4, dim=1)
        c = f * c + i * g
        return o * torch.tanh(c), c

    with pytest.raises(AssertionError, match="candidate g uses a sigmoid"):
        ch03.check_lstm_cell(wrong)


def test_h_without_tanh_is_diagnosed():
    def wrong(x, h, c, W_ih, W_hh, b_ih, b_hh):
        i, f, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * c, c

    with pytest.raises(AssertionError, match=r"h = o ⊙ c'"):
        ch03.check_lstm_cell(wrong)


def test_gate_order_i_f_swapped_is_diagnosed():
    def wrong(x, h, c, W_ih, W_hh, b_ih, b_hh):
        f, i, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    with pytest.raises(AssertionError, match="input and forget gates are swapped"):
        ch03.check_lstm_cell(wrong)


def test_per_tensor_clipping_is_diagnosed():
    def wrong(grads, max_norm):
        return [g * min(1.0, max_norm / float(g.norm())) for g in grads]

    with pytest.raises(AssertionError, match="clipped each tensor by its own norm"):
        ch03.check_clip_grad_norm(wrong)


def test_state_not_carried_is_diagnosed():
    def wrong(xs, h0, c0, params):
        outs = [lstm_cell_chunk(xs[:, t], h0, c0, *params) for t in range(xs.shape[1])]
        return torch.stack([h for h, _ in outs], 1), outs[-1]

    with pytest.raises(AssertionError, match="every step starts again"):
        ch03.check_lstm_forward(wrong)


def test_transposed_weight_gives_a_readable_error():
    def wrong(x, h, W_ih, W_hh, b_ih, b_hh):
        return torch.tanh(x @ W_ih + b_ih + h @ W_hh + b_hh)

    with pytest.raises(AssertionError, match="rnn_cell raised RuntimeError"):
        ch03.check_rnn_cell(wrong)


@pytest.mark.parametrize("part, reference", [
    ("rnn_cell", "rnn_cell"), ("lstm_cell", "lstm_cell"), ("lstm_forward", "lstm_forward"),
    ("clip_grad_norm", "clip_grad_norm"),
])
def test_delegating_to_lmlab_is_refused(part, reference):
    def delegate(*args):
        return getattr(rnn, reference)(*args)  # looked up at call time, like a student's import

    with pytest.raises(AssertionError, match="calls lmlab.rnn"):
        CHECKS[part](delegate)


def test_calling_torch_lstm_cell_is_refused():
    def via_torch(x, h, c, W_ih, W_hh, b_ih, b_hh):
        cell = torch.nn.LSTMCell(x.shape[1], h.shape[1]).double()
        return cell(x, (h, c))

    with pytest.raises(AssertionError, match="torch.nn.LSTMCell"):
        ch03.check_lstm_cell(via_torch)


def test_torch_clip_grad_norm_is_refused():
    def via_torch(grads, max_norm):
        params = [torch.zeros_like(g, requires_grad=True) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return [p.grad for p in params]

    with pytest.raises(AssertionError, match="clip_grad_norm_"):
        ch03.check_clip_grad_norm(via_torch)
