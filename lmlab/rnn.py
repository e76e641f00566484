"""Recurrent networks: a state carried from one step to the next (chapter 3).

A recurrent network reads a sequence one step at a time and folds each input into a
state vector, the network's memory. Read top to bottom:

* :func:`rnn_cell`: the plain (Elman) recurrence ``h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``;
* :func:`lstm_gates` and :func:`lstm_cell`: the LSTM's four gates and its two-part state
  (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000)::

      i = σ(W_ii x + b_ii + W_hi h + b_hi)      input gate      (how much to write)
      f = σ(W_if x + b_if + W_hf h + b_hf)      forget gate     (how much to keep)
      g = tanh(W_ig x + b_ig + W_hg h + b_hg)   candidate       (what to write; tanh!)
      o = σ(W_io x + b_io + W_ho h + b_ho)      output gate     (how much to show)
      c' = f ⊙ c + i ⊙ g                        the cell: an additive memory
      h' = o ⊙ tanh(c')                         the output squashes the cell (tanh!)

* :func:`lstm_forward`: one layer over a whole sequence, through autograd (readable);
  :func:`lstm_layer`: the same with back-propagation through time written by hand
  (:class:`_LSTMLayer`, several times faster on a CPU);
* :class:`RNNCell`, :class:`LSTMCell`, :class:`RNN`, :class:`LSTM`: the same maths as
  ``nn.Module``s with ``torch.nn``'s parameter names and layouts, so state dicts load both
  ways (``weight_ih`` is ``(4H, I)``, its rows the gates in the order i, f, g, o);
* :func:`clip_grad_norm`: global-norm gradient clipping (Pascanu et al. 2013);
* :func:`gradient_norms_through_time`: the measurement behind "vanishing gradients";
* :func:`recall_task`, :class:`RecallNet`, :func:`train_recall`, :func:`trace_gates`: a task
  that needs memory, and the gates of a trained LSTM step by step;
* :class:`LSTMLanguageModel`: a character-level language model for ``lmlab.train``.

Shapes: ``B`` batch, ``T`` time steps, ``I`` input width, ``H`` hidden width, ``L`` layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "Gates",
    "rnn_cell",
    "lstm_gates",
    "lstm_cell",
    "lstm_forward",
    "lstm_layer",
    "rnn_forward",
    "clip_grad_norm",
    "RNNCell",
    "LSTMCell",
    "RNN",
    "LSTM",
    "gradient_norms_through_time",
    "recall_task",
    "RecallNet",
    "train_recall",
    "trace_gates",
    "LSTMLMConfig",
    "LSTMLanguageModel",
]


# --------------------------------------------------------------------------- checking inputs


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _expect(name: str, x: object, shape: tuple, meaning: str) -> None:
    """Raise a readable error unless ``x`` is a tensor of ``shape`` (None = any size)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {meaning}, got {type(x).__name__}")
    ok = x.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape, strict=True))
    if not ok:
        raise ValueError(f"{name} has shape {_shape(x)}, expected {meaning}")


def _check_cell(x, h, weight_ih, weight_hh, gates: int) -> None:
    if not isinstance(weight_ih, Tensor) or weight_ih.dim() != 2:
        raise ValueError(f"weight_ih has shape {_shape(weight_ih)}, expected ({gates}·H, I)")
    rows, width = weight_ih.shape
    if rows % gates:
        raise ValueError(f"weight_ih has {rows} rows, expected a multiple of {gates} ({gates}·H)")
    hidden = rows // gates
    _expect("weight_hh", weight_hh, (rows, hidden), f"({rows}, {hidden}) = ({gates}·H, H)")
    _expect("x", x, (None, width), f"(B, {width}): the input width I={width} comes from weight_ih")
    _expect("h", h, (x.shape[0], hidden), f"(B, H) = ({x.shape[0]}, {hidden})")


# --------------------------------------------------------------------------- functional cells


def rnn_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> Tensor:
    """One step of a plain RNN: ``h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``.

    x: (B, I), h: (B, H), weight_ih: (H, I), weight_hh: (H, H), biases: (H,) -> h': (B, H).
    """
    _check_cell(x, h, weight_ih, weight_hh, gates=1)
    return torch.tanh(F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh))


class Gates(NamedTuple):
    """The LSTM's four gates at one step, each (B, H): input, forget, candidate, output."""

    i: Tensor
    f: Tensor
    g: Tensor
    o: Tensor


def _gates_from(pre: Tensor) -> Gates:
    """Split pre-activations (B, 4H) in torch's order i, f, g, o and squash them.

    Three gates are σ (a fraction in (0, 1): how much to let through); the candidate g is
    tanh (a value in (-1, 1): what to write, which must be able to be negative).
    """
    i, f, g, o = pre.chunk(4, dim=-1)
    return Gates(torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o))


def lstm_gates(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> Gates:
    """The four gates for input ``x`` (B, I) and previous output ``h`` (B, H).

    weight_ih: (4H, I) and weight_hh: (4H, H), rows stacked i, f, g, o (torch's layout).
    """
    _check_cell(x, h, weight_ih, weight_hh, gates=4)
    return _gates_from(F.linear(x, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh))


def _update(gates: Gates, c: Tensor) -> tuple[Tensor, Tensor]:
    """The new state from the gates: the cell adds, the output squashes."""
    c = gates.f * c + gates.i * gates.g  # forget part of the old memory, write the new
    h = gates.o * torch.tanh(c)
    return h, c


def lstm_cell(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step in torch's layout: x (B, I), h and c (B, H) -> (h', c'), each (B, H)."""
    gates = lstm_gates(x, h, weight_ih, weight_hh, bias_ih, bias_hh)
    _expect("c", c, tuple(h.shape), f"(B, H) = {tuple(h.shape)}, the shape of h")
    return _update(gates, c)


# --------------------------------------------------------------------------- whole sequences


def _unpack(params: Sequence[Tensor | None], name: str = "params") -> tuple:
    if isinstance(params, Tensor) or len(params) not in (2, 4):
        raise ValueError(
            f"{name} must be (weight_ih, weight_hh, bias_ih, bias_hh) or (weight_ih, weight_hh), "
            f"got {type(params).__name__} of length {len(params) if hasattr(params, '__len__') else '?'}"
        )
    return tuple(params) if len(params) == 4 else (*params, None, None)


def _bias(bias_ih: Tensor | None, bias_hh: Tensor | None) -> Tensor | None:
    if bias_ih is None or bias_hh is None:
        return bias_ih if bias_hh is None else bias_hh
    return bias_ih + bias_hh


def _check_sequence(xs, h0, c0, weight_ih, weight_hh) -> None:
    """Shapes for a batch-first layer; ``c0`` None means a plain RNN (one gate block)."""
    _expect("xs", xs, (None, None, None), "(B, T, I), batch first")
    _check_cell(xs[:, 0] if xs.shape[1] else xs.new_empty(xs.shape[0], xs.shape[2]), h0,
                weight_ih, weight_hh, gates=1 if c0 is None else 4)
    if c0 is not None:
        _expect("c0", c0, tuple(h0.shape), f"(B, H) = {tuple(h0.shape)}, the shape of h0")


def lstm_forward(
    xs: Tensor, h0: Tensor, c0: Tensor, params: Sequence[Tensor | None]
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run one LSTM layer over a batch-first sequence.

    xs: (B, T, I); h0, c0: (B, H); params: (weight_ih (4H, I), weight_hh (4H, H),
    bias_ih (4H,), bias_hh (4H,)) -> outputs (B, T, H) (h at every step), (h_T, c_T).

    The input's contribution to the gates does not depend on the state, so it is computed
    for all T steps in one large matmul; each step is left with one (B, H) @ (H, 4H) matmul.
    """
    weight_ih, weight_hh, bias_ih, bias_hh = _unpack(params)
    _check_sequence(xs, h0, c0, weight_ih, weight_hh)
    x_part = F.linear(xs, weight_ih, _bias(bias_ih, bias_hh))  # (B, T, 4H)
    w_hh = weight_hh.t()  # (H, 4H)
    h, c, outputs = h0, c0, []
    for t in range(xs.shape[1]):
        h, c = _update(_gates_from(torch.addmm(x_part[:, t], h, w_hh)), c)
        outputs.append(h)
    out = torch.stack(outputs, dim=1) if outputs else xs.new_zeros(xs.shape[0], 0, h0.shape[1])
    return out, (h, c)


def _linear_for(x: Tensor):
    """``linear(a, w) = a @ wᵀ`` (``F.linear`` without bias), done the fastest way available
    for tensors like ``x``.

    For float32 on a CPU that is oneDNN, the library torch.nn.LSTM runs on, reached through
    the operator torch.compile emits for linear layers: oneDNN generates kernels for the CPU
    at hand, AVX-512 included, while ``@`` calls MKL, which on the AMD EPYC of our benchmarks
    runs at about half that speed. A call to oneDNN costs ~10 µs more, so ``a`` of one or two
    rows (one step of a batch of one or two) stays with ``@``, as does everything else
    (float64, GPUs, empty tensors).
    """
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() > 0
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return lambda a, w: a @ w.t()
    onednn_linear = torch.ops.mkldnn._linear_pointwise

    def linear(a: Tensor, w: Tensor) -> Tensor:
        return a @ w.t() if a.shape[0] <= 2 else onednn_linear(a, w, None, "none", [], "")

    return linear


class _LSTMLayer(torch.autograd.Function):
    """One LSTM layer with back-propagation through time (BPTT) written out by hand.

    Same maths as :func:`lstm_forward`, faster: autograd would record about ten small
    operations per step and replay them one by one. Here the forward stores the gates and
    cells time-first, the backward walks the steps in reverse doing only the work that
    depends on the step after it, and the gradients of the input and of the weights for
    all T steps come out of three large matmuls at the end. Each step is left with one
    matmul forward and one backward.
    """

    @staticmethod
    def forward(ctx, xs, h0, c0, weight_ih, weight_hh, bias):  # xs: (B, T, I)
        (B, T, n_in), H = xs.shape, h0.shape[1]
        linear = _linear_for(xs)
        xs_t = xs.transpose(0, 1).contiguous()  # (T, B, I): each step's slice is contiguous
        # The input's share of every step's pre-activations, overwritten step by step with the
        # gates i, f, g, o after σ/tanh: one (T, B, 4H) buffer serves both.
        gates = linear(xs_t.view(T * B, n_in), weight_ih).add_(bias).view(T, B, 4 * H)
        hs, cs = xs.new_empty(T + 1, B, H), xs.new_empty(T + 1, B, H)  # hs[t] = h_{t-1}
        tanh_cs = xs.new_empty(T, B, H)
        hs[0], cs[0] = h0, c0
        for t in range(T):
            pre = linear(hs[t], weight_hh).add_(gates[t])  # (B, 4H)
            # tanh(z) = 2σ(2z) - 1, and on the CPU of our benchmarks torch.tanh is ~9× slower
            # than torch.sigmoid: one σ over all four gates, g's pre-activation doubled first.
            pre[:, 2 * H : 3 * H].mul_(2)
            i, f, g, o = torch.sigmoid(pre, out=gates[t]).chunk(4, dim=-1)
            g.mul_(2).sub_(1)
            torch.mul(f, cs[t], out=cs[t + 1]).addcmul_(i, g)  # c_t = f ⊙ c_{t-1} + i ⊙ g
            torch.mul(cs[t + 1], 2, out=tanh_cs[t]).sigmoid_().mul_(2).sub_(1)  # tanh(c_t)
            torch.mul(o, tanh_cs[t], out=hs[t + 1])
        ctx.save_for_backward(xs_t, weight_ih, weight_hh, gates, hs, cs, tanh_cs)
        return hs[1:].transpose(0, 1).contiguous(), hs[T].clone(), cs[T].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, d_cT):  # d_out: (B, T, H); d_hT, d_cT: (B, H)
        xs_t, weight_ih, weight_hh, gates, hs, cs, tanh_cs = ctx.saved_tensors
        (T, B, n_in), H = xs_t.shape, hs.shape[2]
        if T == 0:  # no steps: h_T, c_T are h0, c0
            return None, d_hT.clone(), d_cT.clone(), None, None, None
        linear = _linear_for(xs_t)
        i, f, g, o = gates.chunk(4, dim=-1)
        # d_pre, the gradient w.r.t. the gates' pre-activations, starts as the slopes of σ and
        # tanh at every step, computed at once: σ' = σ(1-σ) for i, f, o and tanh' = 1-g² for g.
        d_pre = torch.addcmul(gates, gates, gates, value=-1)
        torch.mul(g, g, out=d_pre[..., 2 * H : 3 * H]).neg_().add_(1)
        c_from_h = torch.addcmul(o, o * tanh_cs, tanh_cs, value=-1)  # ∂h_t/∂c_t = o(1-tanh²c_t)
        d_h, d_c = d_out[:, T - 1] + d_hT, d_cT.clone()  # h_T is also the last output
        for t in reversed(range(T)):
            d_c.addcmul_(d_h, c_from_h[t])  # the cell feeds h_t = o ⊙ tanh(c_t)
            d_i, d_f, d_g, d_o = d_pre[t].chunk(4, dim=-1)
            d_i.mul_(d_c).mul_(g[t])  # c_t = f ⊙ c_{t-1} + i ⊙ g
            d_f.mul_(d_c).mul_(cs[t])
            d_g.mul_(d_c).mul_(i[t])
            d_o.mul_(d_h).mul_(tanh_cs[t])  # h_t = o ⊙ tanh(c_t)
            d_h = linear(d_pre[t], weight_hh.t())  # to h_{t-1}: (B, 4H) @ (4H, H)
            if t:
                d_h += d_out[:, t - 1]  # h_{t-1} is also an output
            d_c.mul_(f[t])  # to c_{t-1}: the forget gate is the only factor on this path
        flat = d_pre.view(T * B, 4 * H)
        need = ctx.needs_input_grad
        d_xs = linear(flat, weight_ih.t()).view(T, B, n_in).transpose(0, 1) if need[0] else None
        # The weight gradients d_preᵀ @ inputs, written (inputsᵀ @ d_pre)ᵀ: oneDNN's faster order.
        d_w_ih = linear(xs_t.view(T * B, n_in).t(), flat.t()).t() if need[3] else None
        d_w_hh = linear(hs[:-1].reshape(T * B, H).t(), flat.t()).t() if need[4] else None
        d_bias = flat.sum(dim=0) if need[5] else None
        return d_xs, d_h, d_c, d_w_ih, d_w_hh, d_bias


def lstm_layer(
    xs: Tensor, h0: Tensor, c0: Tensor, params: Sequence[Tensor | None]
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """:func:`lstm_forward` with hand-written BPTT (:class:`_LSTMLayer`): same arguments,
    same results and gradients, several times faster on a CPU. :class:`LSTM` uses it."""
    weight_ih, weight_hh, bias_ih, bias_hh = _unpack(params)
    _check_sequence(xs, h0, c0, weight_ih, weight_hh)
    bias = _bias(bias_ih, bias_hh)
    if bias is None:
        bias = xs.new_zeros(weight_ih.shape[0])
    out, h, c = _LSTMLayer.apply(xs, h0, c0, weight_ih, weight_hh, bias)
    return out, (h, c)


def rnn_forward(
    xs: Tensor, h0: Tensor, params: Sequence[Tensor | None], nonlinearity: str = "tanh"
) -> tuple[Tensor, Tensor]:
    """Run one plain-RNN layer over a batch-first sequence.

    xs: (B, T, I); h0: (B, H); params: (weight_ih (H, I), weight_hh (H, H), bias_ih, bias_hh)
    -> outputs (B, T, H), h_T (B, H).
    """
    weight_ih, weight_hh, bias_ih, bias_hh = _unpack(params)
    act = _activation(nonlinearity)
    _check_sequence(xs, h0, None, weight_ih, weight_hh)
    x_part = F.linear(xs, weight_ih, _bias(bias_ih, bias_hh))  # (B, T, H)
    w_hh = weight_hh.t()
    h, outputs = h0, []
    for t in range(xs.shape[1]):
        h = act(torch.addmm(x_part[:, t], h, w_hh))
        outputs.append(h)
    out = torch.stack(outputs, dim=1) if outputs else xs.new_zeros(xs.shape[0], 0, h0.shape[1])
    return out, h


def _activation(name: str):
    if name not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {name!r}")
    return torch.tanh if name == "tanh" else torch.relu


# --------------------------------------------------------------------------- clipping


def clip_grad_norm(grads: Sequence[Tensor], max_norm: float, eps: float = 1e-6) -> list[Tensor]:
    """Scale all gradients by one factor so that their *global* L2 norm is at most ``max_norm``.

    The global norm treats every gradient as one long vector:
    ``‖g‖ = sqrt(Σ_tensors Σ_elements g²)``. When it exceeds ``max_norm`` every tensor is
    multiplied by ``max_norm / (‖g‖ + eps)``, so the update keeps its direction and only its
    length shrinks; below the threshold nothing changes. Same rule as
    ``torch.nn.utils.clip_grad_norm_``, but returns new tensors instead of editing in place.
    """
    if not isinstance(max_norm, (int, float)) or isinstance(max_norm, bool) or max_norm <= 0:
        raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
    grads = list(grads)
    for k, g in enumerate(grads):
        if not isinstance(g, Tensor):
            raise TypeError(f"grads[{k}] must be a torch.Tensor, got {type(g).__name__}")
    if not grads:
        return []
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scale = torch.clamp(max_norm / (total + eps), max=1.0)
    return [g * scale.to(g.dtype) for g in grads]


# --------------------------------------------------------------------------- modules


def _uniform_init(module: nn.Module, hidden_size: int) -> None:
    # torch's init: every parameter ~ U(-1/√H, 1/√H), in registration order, so the same
    # seed gives the same weights as torch.nn.LSTM/LSTMCell.
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class _Cell(nn.Module):
    gates_per_unit = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        _check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = self.gates_per_unit * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(rows)) if bias else None
        _uniform_init(self, hidden_size)

    def _params(self) -> tuple:
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def _zeros(self, x: Tensor) -> Tensor:
        _expect("x", x, (None, self.input_size), f"(B, {self.input_size}) = (B, input_size)")
        return x.new_zeros(x.shape[0], self.hidden_size)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCell(_Cell):
    """A plain RNN cell with ``torch.nn.RNNCell``'s parameters: weight_ih (H, I), weight_hh (H, H)."""

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """x: (B, I), h: (B, H) or None (zeros) -> h': (B, H)."""
        h = self._zeros(x) if h is None else h
        return rnn_cell(x, h, *self._params())


class LSTMCell(_Cell):
    """An LSTM cell with ``torch.nn.LSTMCell``'s parameters: weight_ih (4H, I), weight_hh (4H, H),
    bias_ih and bias_hh (4H,), rows in gate order i, f, g, o."""

    gates_per_unit = 4

    def _state(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if state is None:
            zeros = self._zeros(x)
            return zeros, zeros
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"state must be a tuple (h, c) or None, got {type(state).__name__}")
        return state[0], state[1]

    def gates(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> Gates:
        """The named gates (i, f, g, o), each (B, H), for x: (B, I) and state (h, c)."""
        h, _ = self._state(x, state)
        return lstm_gates(x, h, *self._params())

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """x: (B, I), state (h, c) each (B, H) or None (zeros) -> (h', c')."""
        h, c = self._state(x, state)
        return lstm_cell(x, h, c, *self._params())


class _Stack(nn.Module):
    """Layers of recurrent cells with ``torch.nn.RNN``/``LSTM``'s parameter names (``weight_ih_l0``...)."""

    gates_per_unit = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        _check_sizes(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        rows = self.gates_per_unit * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(rows, width)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(rows, hidden_size)))
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(rows)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(rows)))
        _uniform_init(self, hidden_size)

    def layer_params(self, layer: int) -> tuple:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of ``layer`` (biases None without bias)."""
        get = lambda name: getattr(self, f"{name}_l{layer}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _batch_first_input(self, x: Tensor) -> Tensor:
        layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(
                f"x has shape {_shape(x)}, expected {layout} with batch_first={self.batch_first}"
                f"{' (for one sequence use x.unsqueeze(0))' if x.dim() == 2 else ''}"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"x has shape {_shape(x)}: its last dimension must be input_size={self.input_size}"
            )
        return x if self.batch_first else x.transpose(0, 1)

    def _initial(self, name: str, s: Tensor | None, x: Tensor) -> Tensor:
        """Check one initial state (L, B, H); ``x`` is batch first here."""
        batch = x.shape[0]
        expected = (self.num_layers, batch, self.hidden_size)
        if s is None:
            return x.new_zeros(expected)
        if not isinstance(s, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {expected}, got {type(s).__name__}")
        if tuple(s.shape) != expected:
            hint = ""
            if s.dim() == 3 and s.shape[1] == x.shape[1] and s.shape[1] != batch:
                hint = (
                    f"; its batch size matches x's dimension 1, so x looks "
                    f"{'time-first: pass batch_first=False' if self.batch_first else 'batch-first: pass batch_first=True'}"
                    f" or transpose x"
                )
            raise ValueError(f"{name} has shape {_shape(s)}, expected (L, B, H) = {expected}{hint}")
        return s

    def _output(self, out: Tensor) -> Tensor:
        return out if self.batch_first else out.transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}")


class RNN(_Stack):
    """A stack of plain tanh RNN layers, parameters named like ``torch.nn.RNN``."""

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, T, I) (or (T, B, I) if not batch_first), h0: (L, B, H) or None
        -> outputs (B, T, H) of the last layer, h_n (L, B, H)."""
        x = self._batch_first_input(x)
        h0 = self._initial("h0", h0, x)
        finals = []
        for layer in range(self.num_layers):
            x, h = rnn_forward(x, h0[layer], self.layer_params(layer))
            finals.append(h)
        return self._output(x), torch.stack(finals)


class LSTM(_Stack):
    """A stack of LSTM layers, parameters named and laid out like ``torch.nn.LSTM``, so
    ``LSTM(...).load_state_dict(torch.nn.LSTM(...).state_dict())`` works (and back).

    ``batch_first`` defaults to True (torch's default is False).
    """

    gates_per_unit = 4

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (B, T, I) (or (T, B, I) if not batch_first); state (h0, c0) each (L, B, H) or
        None (zeros) -> outputs (B, T, H) of the last layer, (h_n, c_n) each (L, B, H)."""
        x = self._batch_first_input(x)
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != 2):
            raise TypeError(f"state must be a tuple (h0, c0) or None, got {type(state).__name__}")
        h0 = self._initial("h0", None if state is None else state[0], x)
        c0 = self._initial("c0", None if state is None else state[1], x)
        hs, cs = [], []
        for layer in range(self.num_layers):
            x, (h, c) = lstm_layer(x, h0[layer], c0[layer], self.layer_params(layer))
            hs.append(h)
            cs.append(c)
        return self._output(x), (torch.stack(hs), torch.stack(cs))


# --------------------------------------------------------------------------- measuring


def gradient_norms_through_time(model: nn.Module, x: Tensor) -> Tensor:
    """How much the last output still depends on each earlier input.

    Runs ``model(x)`` (x: (B, T, I), batch first; the model returns ``(outputs, state)``),
    back-propagates ``outputs[:, -1].sum()`` and returns ``‖∂/∂x_t‖`` for every step t,
    averaged over the batch: a (T,) tensor whose entry ``T-1-k`` is the gradient that
    survives a trip of ``k`` steps back in time.
    """
    _expect("x", x, (None, None, None), "(B, T, I), batch first")
    x = x.detach().clone().requires_grad_(True)
    outputs, _ = model(x)
    (grad,) = torch.autograd.grad(outputs[:, -1].sum(), x)
    return grad.norm(dim=-1).mean(dim=0)  # (T,)


# --------------------------------------------------------------------------- a task that needs memory


def recall_task(
    batch_size: int, gap: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Remember one marked bit across ``gap`` distracting steps, then say it.

    Each sequence has ``T = gap + 2`` steps of 3 channels ``[value, marker, query]``: at
    step 0 ``value`` is the bit to remember (±1) and ``marker`` is 1; the next ``gap`` steps
    carry random ±1 distractor values; the last step has ``query`` = 1 and value 0. The
    answer is the marked bit: 1 if it was +1, else 0.

    Returns x: (B, T, 3) float and y: (B,) long.
    """
    _check_sizes(batch_size=batch_size)
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
        raise ValueError(f"gap must be a non-negative int, got {gap!r}")
    T = gap + 2
    values = torch.randint(0, 2, (batch_size, T), generator=generator).float() * 2 - 1
    values[:, -1] = 0.0
    x = torch.zeros(batch_size, T, 3)
    x[:, :, 0] = values
    x[:, 0, 1] = 1.0
    x[:, -1, 2] = 1.0
    return x, (values[:, 0] > 0).long()


class RecallNet(nn.Module):
    """A recurrent layer (``"rnn"`` or ``"lstm"``) and a linear read-out of its last output."""

    def __init__(self, kind: str = "lstm", hidden_size: int = 32, forget_bias: float = 2.0) -> None:
        super().__init__()
        if kind not in ("rnn", "lstm"):
            raise ValueError(f"kind must be 'rnn' or 'lstm', got {kind!r}")
        self.kind = kind
        self.recurrent = LSTM(3, hidden_size) if kind == "lstm" else RNN(3, hidden_size)
        self.head = nn.Linear(hidden_size, 2)
        if kind == "lstm":
            # Start with the forget gate mostly open (σ(2) ≈ 0.88), so memories survive long
            # enough for training to find out they are useful (Jozefowicz et al. 2015).
            with torch.no_grad():
                self.recurrent.bias_hh_l0[hidden_size : 2 * hidden_size] += forget_bias

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, T, 3) -> logits (B, 2) read from the last step's output."""
        outputs, _ = self.recurrent(x)
        return self.head(outputs[:, -1])


def train_recall(
    model: RecallNet,
    gap: int,
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-2,
    max_norm: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` on :func:`recall_task` with Adam and global-norm clipping.

    Returns the accuracy on each step's batch (measured before that step's update), so
    the curve shows what the model knew at each point of training.
    """
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    accuracy = []
    for _ in tqdm(range(steps), desc=f"{model.kind}, gap {gap}", disable=not progress, leave=False):
        x, y = recall_task(batch_size, gap, g)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        for p, clipped in zip(params, clip_grad_norm([p.grad for p in params], max_norm), strict=True):
            p.grad = clipped
        opt.step()
        accuracy.append(float((logits.argmax(-1) == y).float().mean()))
    return accuracy


def trace_gates(lstm: LSTM, x: Tensor, layer: int = 0) -> dict[str, Tensor]:
    """Every gate and state of one sequence, step by step, for plots and the explorer.

    x: (T, I) or (1, T, I), batch first. Returns a dict of (T, H) tensors:
    ``i``, ``f``, ``g``, ``o`` (the gates), ``c`` (cell after the step), ``h`` (output).
    """
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if not 0 <= layer < lstm.num_layers:
        raise ValueError(f"layer must be in [0, {lstm.num_layers}), got {layer}")
    with torch.no_grad():
        x = lstm._batch_first_input(x if lstm.batch_first else x.transpose(0, 1))
        if x.shape[0] != 1:
            raise ValueError(f"x has shape {_shape(x)}: trace one sequence, (T, I) or (1, T, I)")
        for below in range(layer):
            x, _ = lstm_forward(x, *(x.new_zeros(1, lstm.hidden_size),) * 2, lstm.layer_params(below))
        params = lstm.layer_params(layer)
        h = c = x.new_zeros(1, lstm.hidden_size)
        rows: dict[str, list[Tensor]] = {k: [] for k in "ifgoch"}
        for t in range(x.shape[1]):
            gates = lstm_gates(x[:, t], h, *params)
            h, c = _update(gates, c)
            for name, value in (*gates._asdict().items(), ("c", c), ("h", h)):
                rows[name].append(value[0])
    return {k: torch.stack(v) for k, v in rows.items()}


# --------------------------------------------------------------------------- a character language model


@dataclass
class LSTMLMConfig:
    """Sizes of :class:`LSTMLanguageModel`; ``block_size`` is the training window (the
    number of steps gradients flow back through: truncated BPTT)."""

    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 1
    block_size: int = 64


class LSTMLanguageModel(nn.Module):
    """Embedding -> LSTM -> linear head: predicts the next token at every step.

    Same call as the book's GPT, so :func:`lmlab.train.train` trains it:
    ``model(ids (B, T), targets (B, T) or None) -> (logits (B, T, V), loss or None)``.
    """

    def __init__(self, config: LSTMLMConfig) -> None:
        super().__init__()
        _check_sizes(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                     num_layers=config.num_layers, block_size=config.block_size)
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.lstm = LSTM(config.hidden_size, config.hidden_size, config.num_layers)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def step(self, ids: Tensor, state: tuple[Tensor, Tensor] | None = None):
        """ids: (B, T) -> logits (B, T, V) and the state after the last step."""
        if not isinstance(ids, Tensor) or ids.dim() != 2:
            raise ValueError(f"ids has shape {_shape(ids)}, expected (B, T) token ids")
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state

    def forward(self, ids: Tensor, targets: Tensor | None = None):
        logits, _ = self.step(ids)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Continue ``ids`` (B, T) by ``max_new_tokens`` sampled tokens -> (B, T + new).

        The state carries the whole past, so each new token costs one step: no cache of
        the past is needed (compare the Transformer's KV cache in chapter 7).
        """
        from lmlab.generate import sample_next

        logits, state = self.step(ids)
        out = [ids]
        for _ in range(max_new_tokens):
            nxt = sample_next(logits[:, -1], temperature=temperature, top_k=top_k, generator=generator)
            out.append(nxt[:, None])
            logits, state = self.step(nxt[:, None], state)
        return torch.cat(out, dim=1)
