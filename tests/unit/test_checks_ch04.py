"""The ch04_attention checks: different correct solutions pass, known mistakes are named."""

from __future__ import annotations

import math

import pytest
import torch

import lmlab.attention
from lmlab.checks import ch04_attention as C
from lmlab.checks.core import PARTS

PART_NAMES = [
    "softmax", "attention", "causal_mask", "split_heads", "merge_heads",
    "multi_head_attention", "online_softmax_step",
]


def passes(check, fn, seeds=(0, 7)) -> None:
    for seed in seeds:
        check(fn, seed=seed)


def fails_with(check, fn, text: str) -> str:
    with pytest.raises(AssertionError) as info:
        check(fn)
    assert text in str(info.value), str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- the catalogue


@pytest.mark.parametrize("name", PART_NAMES)
def test_reference_passes_and_every_mistake_is_named(name):
    part = PARTS[name]
    assert part.chapter == "ch04_attention"
    check = getattr(C, f"check_{name}")
    check(part.reference, seed=3)
    for mistake in part.mistakes:
        fails_with(check, mistake.fn, mistake.hint)


# --------------------------------------------------------------------------- softmax


def softmax_loops(x, dim=-1):
    moved = x.movedim(dim, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    out = torch.empty_like(rows)
    for i, row in enumerate(rows):
        m = max(row.tolist())
        e = [math.exp(v - m) for v in row.tolist()]
        total = sum(e)
        out[i] = torch.tensor([v / total for v in e])
    return out.reshape(moved.shape).movedim(-1, dim)


def softmax_logsumexp(x, dim=-1):
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))


def test_softmax_accepts_loops_and_logsumexp():
    passes(C.check_softmax, softmax_loops)
    passes(C.check_softmax, softmax_logsumexp)


def test_softmax_refuses_torch_and_lmlab_shortcuts():
    fails_with(C.check_softmax, lambda x, dim=-1: torch.softmax(x, dim), "calls torch.softmax")
    fails_with(C.check_softmax, lambda x, dim=-1: x.softmax(dim), "torch.Tensor.softmax")
    fails_with(C.check_softmax, lambda x, dim=-1: lmlab.attention.softmax(x, dim), "calls lmlab.attention.softmax")


# --------------------------------------------------------------------------- attention


def attention_matmul(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)  # a big negative number works too
    return softmax_logsumexp(scores) @ v


def attention_einsum(q, k, v, mask=None):
    scores = torch.einsum("...id,...jd->...ij", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores + torch.where(mask, 0.0, float("-inf"))
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("...ij,...jd->...id", weights, v)


def test_attention_accepts_matmul_and_einsum():
    passes(C.check_attention, attention_matmul)
    passes(C.check_attention, attention_einsum)


def test_attention_diagnoses():
    def no_scale(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v

    fails_with(C.check_attention, no_scale, "divide q @ kᵀ by √d")
    fails_with(
        C.check_attention,
        lambda q, k, v, mask=None: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "calls torch.nn.functional.scaled_dot_product_attention",
    )
    msg = fails_with(C.check_attention, lambda q, k, v, mask=None: q, "attention is wrong on")
    assert "First wrong input" in msg


# --------------------------------------------------------------------------- causal mask


def causal_loops(T):
    return torch.tensor([[j <= i for j in range(T)] for i in range(T)], dtype=torch.bool)


def causal_arange(T):
    idx = torch.arange(T)
    return idx[None, :] <= idx[:, None]


def test_causal_mask_accepts_loops_and_arange():
    passes(C.check_causal_mask, causal_loops)
    passes(C.check_causal_mask, causal_arange)


def test_causal_mask_diagnoses_inverted_and_float():
    fails_with(C.check_causal_mask, lambda T: ~causal_arange(T), "your mask is True where attention is forbidden")
    fails_with(C.check_causal_mask, lambda T: causal_arange(T).float(), "dtype is float")


# --------------------------------------------------------------------------- heads


def split_view(x, n_heads):
    B, T, Cm = x.shape
    return x.view(B, T, n_heads, Cm // n_heads).permute(0, 2, 1, 3)


def split_loops(x, n_heads):
    d = x.shape[-1] // n_heads
    return torch.stack([x[..., h * d:(h + 1) * d] for h in range(n_heads)], dim=1)


def merge_transpose(x):
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)


def merge_cat(x):
    return torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1)


def test_heads_accept_view_loops_and_cat():
    passes(C.check_split_heads, split_view)
    passes(C.check_split_heads, split_loops)
    passes(C.check_merge_heads, merge_transpose)
    passes(C.check_merge_heads, merge_cat)


def test_split_heads_diagnoses_reshape_only():
    def reshape_only(x, n_heads):
        B, T, Cm = x.shape
        return x.reshape(B, n_heads, T, Cm // n_heads)

    fails_with(C.check_split_heads, reshape_only, "mixes time steps into heads")


# --------------------------------------------------------------------------- multi-head


def mha_with_parts(x, W_q, W_k, W_v, W_o, n_heads, mask=None):
    q, k, v = (split_view(x @ W, n_heads) for W in (W_q, W_k, W_v))
    return merge_transpose(attention_matmul(q, k, v, mask)) @ W_o


def mha_head_loop(x, W_q, W_k, W_v, W_o, n_heads, mask=None):
    d = x.shape[-1] // n_heads
    outs = []
    for h in range(n_heads):
        cols = slice(h * d, (h + 1) * d)
        q, k, v = x @ W_q[:, cols], x @ W_k[:, cols], x @ W_v[:, cols]
        m = None if mask is None else mask[..., 0, :, :] if mask.dim() == 4 else mask
        outs.append(attention_einsum(q, k, v, m))
    return torch.cat(outs, dim=-1) @ W_o


def test_multi_head_attention_accepts_two_implementations():
    passes(C.check_multi_head_attention, mha_with_parts)
    passes(C.check_multi_head_attention, mha_head_loop)


def test_multi_head_attention_diagnoses_scale_by_model_dim():
    def scale_by_c(x, W_q, W_k, W_v, W_o, n_heads, mask=None):
        q, k, v = (split_view(x @ W, n_heads) for W in (W_q, W_k, W_v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return merge_transpose(torch.softmax(scores, -1) @ v) @ W_o

    fails_with(C.check_multi_head_attention, scale_by_c, "scale by 1/√d_head")


# --------------------------------------------------------------------------- online softmax


def online_direct(m, l, acc, s, v):
    m_new = torch.maximum(m, s.max(dim=-1, keepdim=True).values)
    p = torch.exp(s - m_new)
    r = torch.exp(m - m_new)
    return m_new, r * l + p.sum(-1, keepdim=True), r * acc + p @ v


def online_einsum_where(m, l, acc, s, v):
    m_new = torch.where(s.amax(-1, keepdim=True) > m, s.amax(-1, keepdim=True), m)
    p = (s - m_new).exp()
    r = (m - m_new).exp()
    return m_new, l * r + p.sum(-1, keepdim=True), acc * r + torch.einsum("...nb,...bd->...nd", p, v)


def test_online_softmax_step_accepts_two_implementations():
    passes(C.check_online_softmax_step, online_direct)
    passes(C.check_online_softmax_step, online_einsum_where)


def test_online_softmax_step_diagnoses_missing_rescale():
    def no_rescale(m, l, acc, s, v):
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p = torch.exp(s - m_new)
        return m_new, l * torch.exp(m - m_new) + p.sum(-1, keepdim=True), acc + p @ v

    fails_with(C.check_online_softmax_step, no_rescale, "acc is not rescaled")


def test_checks_survive_bad_return_values():
    fails_with(C.check_causal_mask, lambda T: None, "causal_mask is wrong")
    fails_with(C.check_merge_heads, lambda x: "oops", "merge_heads is wrong")
    fails_with(C.check_online_softmax_step, lambda *a: a[0], "online_softmax_step is wrong")
