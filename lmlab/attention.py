"""Attention: a soft dictionary lookup, from softmax to a tiled, memory-frugal kernel.

Read top to bottom, this module is chapter 4 of the book:

1. :func:`softmax`, numerically stable (subtract the row max; fully masked rows give 0).
2. :func:`scaled_dot_product_attention`: ``softmax(q kᵀ / √d + mask) v`` for any leading
   batch dimensions, with boolean or additive masks and bottom-right aligned causality.
3. :func:`causal_mask` and :func:`padding_mask`: the two masks a language model needs.
4. :func:`split_heads`, :func:`merge_heads`, :func:`multi_head_attention` and the module
   :class:`MultiHeadAttention`: many small attentions side by side on slices of the model
   dimension, each with its own projections W_Q, W_K, W_V.
5. :func:`online_softmax_step` and :func:`flash_attention`: the same result computed
   tile by tile with an *online* softmax (running max and rescaled running sum), so the
   (T_q, T_k) score matrix never exists in memory; fully masked causal tiles are skipped.
6. :func:`peak_memory`: the most tensor memory a function held at once beyond its
   inputs, counted operator by operator, used to measure 5 against 2.

Mask convention everywhere: a **boolean** mask is ``True`` where a query *may* attend
(as in ``torch.nn.functional.scaled_dot_product_attention``); a **float** mask is added to
the scores (0 to keep, ``-inf`` to remove).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "softmax",
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "split_heads",
    "merge_heads",
    "multi_head_attention",
    "MultiHeadAttention",
    "online_softmax_step",
    "flash_attention",
    "peak_memory",
]


# --------------------------------------------------------------------------- validation


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _require_float(name: str, x: Any, min_dim: int = 1) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}, expected a floating-point tensor "
            f"(float32, float64, bfloat16 or float16): convert it with {name}.float()"
        )
    if x.dim() < min_dim:
        raise ValueError(f"{name} has shape {_shape(x)}, expected at least {min_dim} dimensions")


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, ...]:
    """Validate (..., T_q, d), (..., T_k, d), (..., T_k, d_v); return the batch shape."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        _require_float(name, x, min_dim=2)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q has shape {_shape(q)} but k has shape {_shape(k)}: the last dimensions "
            f"(the head dimension d) must match"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k has shape {_shape(k)} but v has shape {_shape(v)}: k and v need the same "
            f"number of positions T_k (dimension -2)"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v have dtypes {q.dtype}, {k.dtype}, {v.dtype}: they must match")
    try:
        return tuple(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
    except RuntimeError:
        raise ValueError(
            f"the batch dimensions of q {_shape(q)[:-2]}, k {_shape(k)[:-2]} and "
            f"v {_shape(v)[:-2]} do not broadcast together"
        ) from None


# --------------------------------------------------------------------------- softmax


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable softmax of ``x`` along ``dim``.

    ``exp(x - max) / sum(exp(x - max))``: subtracting the max changes nothing
    mathematically (it cancels) but keeps ``exp`` from overflowing on inputs like 1e4.
    A slice that is entirely ``-inf`` (a fully masked row) returns zeros rather than NaN,
    which is also what ``torch.nn.functional.scaled_dot_product_attention`` does.
    """
    _require_float("x", x)
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim} is out of range for x of shape {_shape(x)}")
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # all -inf rows: avoid -inf - -inf
    e = torch.exp(x - m)
    s = e.sum(dim=dim, keepdim=True)
    # s >= 1 whenever the row has a finite max, so the clamp only acts on empty rows (0/0).
    return e / s.clamp_min(torch.finfo(s.dtype).tiny)


# --------------------------------------------------------------------------- masks


def causal_mask(T: int, T_k: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """Boolean (T, T_k) mask, ``True`` where query i may attend to key j.

    Bottom-right aligned: with T queries and T_k ≥ T keys (a KV cache holding T_k − T
    earlier tokens), query i sits at absolute position ``T_k − T + i`` and sees keys
    ``j ≤ T_k − T + i``. With ``T_k = T`` (the default) this is the lower triangle.
    """
    T_k = T if T_k is None else T_k
    for name, value in (("T", T), ("T_k", T_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if T > T_k:
        raise ValueError(
            f"causal_mask got T={T} queries but only T_k={T_k} keys: with bottom-right "
            f"alignment the first {T - T_k} queries would see nothing"
        )
    return torch.ones(T, T_k, dtype=torch.bool, device=device).tril(diagonal=T_k - T)


def padding_mask(lengths: Tensor | list[int], T: int) -> Tensor:
    """Boolean (B, 1, T) key mask, ``True`` at the real tokens of each sequence.

    Sequence b holds ``lengths[b]`` real tokens followed by padding. The middle dimension
    of size 1 broadcasts over the queries of scores shaped (B, T_q, T_k); for scores with
    a head dimension (B, H, T_q, T_k) use ``padding_mask(...).unsqueeze(1)``.
    Combine with a causal mask by ``&``.
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths must be a 1-D sequence of ints (one per batch element), got "
            f"shape {_shape(lengths)} dtype {lengths.dtype}"
        )
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    if len(lengths) and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(f"lengths must lie in [0, T={T}], got {lengths.tolist()}")
    positions = torch.arange(T, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).unsqueeze(1)


def _combine_mask(mask: Tensor | None, scores_shape: tuple[int, ...], dtype) -> Tensor | None:
    """Turn a boolean or additive mask into an additive one, checking it broadcasts."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    try:
        torch.broadcast_shapes(mask.shape, scores_shape)
    except RuntimeError:
        raise ValueError(
            f"mask has shape {_shape(mask)}, which does not broadcast to the scores' shape "
            f"{scores_shape} (batch..., T_q, T_k)"
        ) from None
    if mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(mask, zero, torch.tensor(-math.inf, dtype=dtype, device=mask.device))
    if mask.is_floating_point():
        return mask.to(dtype)
    raise TypeError(
        f"mask has dtype {mask.dtype}: use a bool mask (True = may attend) or a float "
        f"mask added to the scores (0 = keep, -inf = drop)"
    )


# --------------------------------------------------------------------------- attention


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
    return_weights: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor | tuple[Tensor, Tensor]:
    """``softmax(q kᵀ · scale + mask) v``, the attention of Vaswani et al. (2017), eq. 1.

    Shapes: q (..., T_q, d), k (..., T_k, d), v (..., T_k, d_v); the leading batch
    dimensions broadcast. Returns out (..., T_q, d_v), and the weights (..., T_q, T_k)
    too when ``return_weights``. ``scale`` defaults to 1/√d. ``mask`` is boolean
    (True = may attend) or additive and must broadcast to (..., T_q, T_k); ``causal``
    adds :func:`causal_mask` (bottom-right aligned, needs T_q ≤ T_k). Fully masked rows
    give zero output. ``dropout_p`` drops attention weights (use only while training).
    """
    batch = _check_qkv(q, k, v)
    T_q, T_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale

    scores = q @ k.transpose(-2, -1) * scale  # (..., T_q, T_k)
    additive = _combine_mask(mask, batch + (T_q, T_k), scores.dtype)
    if additive is not None:
        scores = scores + additive
    if causal:
        if T_q > T_k:
            raise ValueError(
                f"causal=True needs T_q <= T_k (queries are the last T_q of the T_k "
                f"positions), got q with T_q={T_q} and k with T_k={T_k}"
            )
        scores = scores.masked_fill(~causal_mask(T_q, T_k, device=q.device), -math.inf)
    weights = softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v  # (..., T_q, d_v)
    return (out, weights) if return_weights else out


# --------------------------------------------------------------------------- heads


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, T, C) → (B, n_heads, T, C / n_heads): head h owns channels [h·d, (h+1)·d)."""
    if x.dim() < 2:
        raise ValueError(f"x has shape {_shape(x)}, expected (..., T, C)")
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    *lead, T, C = x.shape
    if C % n_heads:
        raise ValueError(f"x has C={C} channels, not divisible by n_heads={n_heads}")
    # Split the channel axis, *then* move heads before time; reshaping straight to
    # (B, H, T, d) would mix time steps into heads.
    return x.reshape(*lead, T, n_heads, C // n_heads).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, n_heads, T, d) → (B, T, n_heads·d), the inverse of :func:`split_heads`."""
    if x.dim() < 3:
        raise ValueError(f"x has shape {_shape(x)}, expected (..., H, T, d)")
    *lead, H, T, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, T, H * d)


def multi_head_attention(
    x: Tensor,
    W_q: Tensor,
    W_k: Tensor,
    W_v: Tensor,
    W_o: Tensor,
    n_heads: int,
    mask: Tensor | None = None,
    *,
    causal: bool = False,
) -> Tensor:
    """Multi-head self-attention with bias-free weights, written as matrix algebra.

    x (B, T, C); W_q, W_k, W_v, W_o (C, C), used as ``x @ W`` (the math convention
    Q = X W_Q, not ``nn.Linear``'s ``x @ W.T``). Each projection is split into
    ``n_heads`` heads of size C / n_heads, attended separately, merged and projected by
    W_o. ``mask`` broadcasts to (B, n_heads, T, T). Returns (B, T, C).
    """
    _require_float("x", x, min_dim=2)
    C = x.shape[-1]
    for name, W in (("W_q", W_q), ("W_k", W_k), ("W_v", W_v), ("W_o", W_o)):
        _require_float(name, W, min_dim=2)
        if W.shape != (C, C):
            raise ValueError(f"{name} has shape {_shape(W)}, expected (C, C) = ({C}, {C})")
    q = split_heads(x @ W_q, n_heads)  # (B, H, T, d)
    k = split_heads(x @ W_k, n_heads)
    v = split_heads(x @ W_v, n_heads)
    out = scaled_dot_product_attention(q, k, v, mask, causal=causal)
    return merge_heads(out) @ W_o


class MultiHeadAttention(nn.Module):
    """Multi-head attention (Vaswani et al., 2017, §3.2.2) as a module.

    ``d_model`` channels are split into ``n_heads`` heads of ``d_model // n_heads``. Four
    ``nn.Linear`` layers hold W_Q, W_K, W_V and the output projection W_O.
    :meth:`from_torch` copies the weights of a ``torch.nn.MultiheadAttention`` so the two
    can be compared.
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
            raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        causal: bool = False,
        context: Tensor | None = None,
        cache: Any = None,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, T, d_model) → (B, T, d_model) [, weights (B, H, T, T_k)].

        Queries come from ``x``; keys and values from ``context`` (B, T_k, d_model) when
        given (cross-attention), else from ``x``. ``mask`` broadcasts to
        (B, H, T, T_k); a (B, T_q, T_k) mask or a :func:`padding_mask` gets the head
        dimension added. ``cache``, if given, is any object with
        ``update(k, v) -> (k_all, v_all)`` on (B, H, T, d_head) tensors (a KV cache): the
        new keys and values are appended and attention runs over all of them, with
        ``causal`` aligned bottom-right so the new tokens see every earlier one.
        """
        _require_float("x", x, min_dim=3)
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x has shape {_shape(x)}, expected (B, T, d_model={self.d_model})")
        source = x if context is None else context
        q = split_heads(self.q_proj(x), self.n_heads)  # (B, H, T, d_head)
        k = split_heads(self.k_proj(source), self.n_heads)  # (B, H, T_k, d_head)
        v = split_heads(self.v_proj(source), self.n_heads)
        if cache is not None:
            k, v = cache.update(k, v)
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, T_q, T_k) → (B, 1, T_q, T_k): same for every head
        out, weights = scaled_dot_product_attention(
            q, k, v, mask, causal=causal, return_weights=True,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = self.resid_dropout(self.out_proj(merge_heads(out)))
        return (y, weights) if return_weights else y

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """A copy of ``torch.nn.MultiheadAttention`` (self-attention, batch_first) weights."""
        if not mha._qkv_same_embed_dim:
            raise ValueError("from_torch needs kdim == vdim == embed_dim")
        bias = mha.in_proj_bias is not None
        ours = cls(mha.embed_dim, mha.num_heads, bias=bias, dropout=mha.dropout)
        W_q, W_k, W_v = mha.in_proj_weight.detach().chunk(3)
        with torch.no_grad():
            ours.q_proj.weight.copy_(W_q)
            ours.k_proj.weight.copy_(W_k)
            ours.v_proj.weight.copy_(W_v)
            ours.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                b_q, b_k, b_v = mha.in_proj_bias.detach().chunk(3)
                ours.q_proj.bias.copy_(b_q)
                ours.k_proj.bias.copy_(b_k)
                ours.v_proj.bias.copy_(b_v)
                ours.out_proj.bias.copy_(mha.out_proj.bias)
        return ours.to(mha.in_proj_weight.device, mha.in_proj_weight.dtype)


# --------------------------------------------------------------------------- flash


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    block_size: int = 64,
    query_block_size: int | None = 128,
    scale: float | None = None,
) -> Tensor:
    """Exact attention computed tile by tile with an online softmax (Dao et al., 2022).

    Shapes as :func:`scaled_dot_product_attention` (no mask argument; ``causal`` is
    bottom-right aligned). Keys are streamed in blocks of ``block_size``; for each query
    row we keep a running max ``m``, a running sum ``l`` of ``exp(s - m)`` and a running
    output ``acc``. When a new block raises the max to ``m'``, the old sum and output
    are rescaled by ``exp(m - m')`` before the block's terms are added, so at the end
    ``acc / l`` equals ``softmax(s) v`` exactly. Queries are processed in blocks of
    ``query_block_size`` rows (``None``: all at once); tiles of 128 × 64 stay in the CPU's
    caches, which makes this the fastest setting here. With ``causal``, tiles above the
    diagonal are skipped, and only tiles crossing it are masked.

    The largest intermediates are a few (..., query_block, block_size) tiles of scores and
    the (..., T_q, d_v) output: O(T·block) extra memory instead of O(T²).
    """
    batch = _check_qkv(q, k, v)
    for name, value in (("block_size", block_size), ("query_block_size", query_block_size)):
        if value is None and name == "query_block_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    T_q, T_k, d_v = q.shape[-2], k.shape[-2], v.shape[-1]
    if causal and T_q > T_k:
        raise ValueError(
            f"causal=True needs T_q <= T_k (queries are the last T_q of the T_k positions), "
            f"got q with T_q={T_q} and k with T_k={T_k}"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    offset = T_k - T_q  # query i sits at absolute position offset + i
    q_block = query_block_size or T_q
    out = q.new_empty(*batch, T_q, d_v)
    for qs in range(0, T_q, q_block):
        qe = min(qs + q_block, T_q)
        out[..., qs:qe, :] = _flash_rows(q[..., qs:qe, :] * scale, k, v, qs + offset, causal, block_size, batch)
    return out


def online_softmax_step(m: Tensor, l: Tensor, acc: Tensor, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Fold one block of scores into the running state of an online softmax.

    State for n query rows: running max m (..., n, 1), running sum l (..., n, 1) of
    exp(score − m), running output acc (..., n, d_v) = Σ exp(score − m) · v. The new
    block has scores s (..., n, b) and values v (..., b, d_v). Returns (m', l', acc')
    with m' = max(m, rowmax(s)); the old sums were taken relative to m, so they are
    rescaled by exp(m − m') ≤ 1 before the block's terms are added. The empty state is
    m = −inf, l = 0, acc = 0 (then exp(m − m') = 0). After the last block, acc / l is
    softmax(all scores) @ all values.
    """
    m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
    p = torch.exp(s - m_new)  # (..., n, b), every entry ≤ 1: no overflow
    rescale = torch.exp(m - m_new)  # (..., n, 1)
    return m_new, l * rescale + p.sum(dim=-1, keepdim=True), acc * rescale + p @ v


def _flash_rows(q: Tensor, k: Tensor, v: Tensor, pos0: int, causal: bool, block: int, batch) -> Tensor:
    """Online-softmax attention for one block of (pre-scaled) queries at positions pos0, pos0+1, ..."""
    n, T_k, d_v = q.shape[-2], k.shape[-2], v.shape[-1]
    m = q.new_full((*batch, n, 1), -math.inf)
    l = q.new_zeros((*batch, n, 1))
    acc = q.new_zeros((*batch, n, d_v))
    for ks in range(0, T_k, block):
        ke = min(ks + block, T_k)
        # Rows before `first` cannot see key ks (nor any later key): skip them. If no row
        # can, every later tile is masked too.
        first = max(0, ks - pos0) if causal else 0
        if first >= n:
            break
        s = q[..., first:, :] @ k[..., ks:ke, :].transpose(-2, -1)  # (..., n - first, ke - ks)
        if causal and ke - 1 > pos0 + first:  # the tile crosses the diagonal
            rows = torch.arange(pos0 + first, pos0 + n, device=q.device)[:, None]
            cols = torch.arange(ks, ke, device=q.device)[None, :]
            s = s.masked_fill(cols > rows, -math.inf)
        # Each row's first visible key is key ks itself, so every row's new max is finite.
        if first == 0:  # the usual case: every row takes part, no need to write into slices
            m, l, acc = online_softmax_step(m, l, acc, s, v[..., ks:ke, :])
        else:
            m[..., first:, :], l[..., first:, :], acc[..., first:, :] = online_softmax_step(
                m[..., first:, :], l[..., first:, :], acc[..., first:, :], s, v[..., ks:ke, :]
            )
    return acc / l


# --------------------------------------------------------------------------- memory


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created by PyTorch operators and still alive."""

    def __init__(self, external: set[int]) -> None:
        super().__init__()
        self.external = external  # storages that existed before (the inputs): not counted
        self.refs: dict[int, int] = {}  # storage address -> live tensors using it
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor) and t.device.type == "cpu":
                self._track(t)
        return out

    def _track(self, t: Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self.external or key == 0:
            return
        if key not in self.refs:  # a new allocation (views share their base's storage)
            self.refs[key], self.sizes[key] = 0, storage.nbytes()
            self.live += self.sizes[key]
            self.peak = max(self.peak, self.live)
        self.refs[key] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:  # the last tensor using this storage is gone: memory freed
            self.live -= self.sizes.pop(key)
            del self.refs[key]


def peak_memory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Peak bytes of CPU tensors that ``fn(*args, **kwargs)`` had alive at once.

    Method (like ``tracemalloc``, but for tensors): a ``TorchDispatchMode`` sees every
    PyTorch operator ``fn`` runs and the tensors it returns. Each new storage adds its
    size to a live count; when the last tensor using it is garbage collected, the size is
    subtracted. The maximum of the live count is the peak. Inputs (and anything else
    reachable from the arguments) are not counted; the output is (it is alive at the
    end). Scratch memory used *inside* a single operator and never returned as a tensor
    is invisible to this method, so it measures the intermediates an algorithm keeps,
    which is the quantity O(T²) vs O(T·block) is about. Runs under ``torch.no_grad()``
    so that autograd does not keep intermediates alive.
    """
    external = {
        t.untyped_storage().data_ptr()
        for t in tree_flatten((args, kwargs))[0]
        if isinstance(t, Tensor)
    }
    counter = _LiveBytes(external)
    with torch.no_grad(), counter:
        result = fn(*args, **kwargs)
    del result
    return int(counter.peak)
