"""lmlab.attention against PyTorch: softmax, SDPA, masks, multi-head, flash attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.attention import (
    MultiHeadAttention,
    causal_mask,
    flash_attention,
    merge_heads,
    multi_head_attention,
    online_softmax_step,
    padding_mask,
    peak_memory,
    scaled_dot_product_attention,
    softmax,
    split_heads,
)

D64 = torch.float64


def qkv(*batch, T_q=5, T_k=None, d=8, d_v=None, seed=0, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    T_k = T_q if T_k is None else T_k
    d_v = d if d_v is None else d_v
    return (
        torch.randn(*batch, T_q, d, generator=g, dtype=dtype),
        torch.randn(*batch, T_k, d, generator=g, dtype=dtype),
        torch.randn(*batch, T_k, d_v, generator=g, dtype=dtype),
    )


# --------------------------------------------------------------------------- softmax


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    scale=st.sampled_from([1.0, 30.0, 1e4]),
    seed=st.integers(0, 2**16),
)
def test_softmax_matches_torch(shape, scale, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64) * scale
    for dim in range(-len(shape), len(shape)):
        torch.testing.assert_close(softmax(x, dim=dim), torch.softmax(x, dim=dim), rtol=1e-12, atol=1e-12)


def test_softmax_is_stable_on_large_inputs():
    x = torch.tensor([1e4, 1e4 - 1.0, -1e4])
    y = softmax(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, torch.softmax(x, -1))
    naive = torch.exp(x) / torch.exp(x).sum()
    assert torch.isnan(naive).any()  # the reason for subtracting the max


def test_softmax_of_fully_masked_row_is_zero():
    x = torch.tensor([[0.0, -math.inf, 1.0], [-math.inf, -math.inf, -math.inf]])
    y = softmax(x)
    torch.testing.assert_close(y[0], torch.softmax(x[0], -1))
    assert torch.equal(y[1], torch.zeros(3))


def test_softmax_bad_input():
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        softmax(torch.arange(3))
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        softmax(torch.zeros(2, 2), dim=2)


# --------------------------------------------------------------------------- masks


def test_causal_mask_square_and_bottom_right():
    assert torch.equal(causal_mask(4), torch.ones(4, 4, dtype=torch.bool).tril())
    m = causal_mask(2, 5)
    assert torch.equal(m, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="T=3 queries but only T_k=2"):
        causal_mask(3, 2)
    with pytest.raises(ValueError, match="T must be a positive int"):
        causal_mask(0)


def test_padding_mask():
    m = padding_mask([3, 1], 4)
    assert m.shape == (2, 1, 4) and m.dtype == torch.bool
    assert m[:, 0].tolist() == [[True, True, True, False], [True, False, False, False]]
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=4\]"):
        padding_mask([5], 4)
    with pytest.raises(ValueError, match="1-D sequence of ints"):
        padding_mask(torch.tensor([1.5]), 4)


# --------------------------------------------------------------------------- SDPA


@settings(max_examples=40, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    T_q=st.integers(1, 9),
    extra_keys=st.integers(0, 6),
    d=st.integers(1, 12),
    d_v=st.integers(1, 7),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sdpa_matches_torch(batch, T_q, extra_keys, d, d_v, causal, seed):
    q, k, v = qkv(*batch, T_q=T_q, T_k=T_q + extra_keys, d=d, d_v=d_v, seed=seed)
    mask = causal_mask(T_q, T_q + extra_keys) if causal else None  # torch's is_causal is top-left
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = scaled_dot_product_attention(q, k, v, causal=causal)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    got2 = flash_attention(q, k, v, causal=causal, block_size=3)
    torch.testing.assert_close(got2, expected, rtol=1e-10, atol=1e-10)


def test_sdpa_boolean_and_additive_masks_agree_with_torch():
    q, k, v = qkv(2, 3, T_q=6, T_k=6, seed=1, dtype=torch.float32)
    g = torch.Generator().manual_seed(2)
    bool_mask = torch.rand(2, 1, 6, 6, generator=g) > 0.3
    bool_mask[..., 0] = True  # every row keeps one key
    additive = torch.randn(6, 6, generator=g)
    for mask in (bool_mask, additive):
        torch.testing.assert_close(
            scaled_dot_product_attention(q, k, v, mask),
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
            rtol=1e-5, atol=1e-6,
        )
    # a -inf additive mask is the same as the boolean mask
    as_float = torch.zeros(bool_mask.shape).masked_fill(~bool_mask, -math.inf)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, as_float), scaled_dot_product_attention(q, k, v, bool_mask)
    )


def test_sdpa_weights_rows_sum_to_one_and_causal_is_zero_above_diagonal():
    q, k, v = qkv(2, T_q=5, seed=3)
    out, w = scaled_dot_product_attention(q, k, v, causal=True, return_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5, dtype=D64))
    assert (w.triu(1) == 0).all()
    torch.testing.assert_close(out, w @ v)


def test_sdpa_fully_masked_row_gives_zero_like_torch():
    q, k, v = qkv(1, T_q=3, seed=4, dtype=torch.float32)
    mask = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])
    got = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert torch.equal(got[0, 2], torch.zeros(8))


def test_sdpa_padding_mask_hides_padded_keys():
    q, k, v = qkv(2, T_q=4, seed=5)
    mask = padding_mask([2, 4], 4)
    out = scaled_dot_product_attention(q, k, v, mask)
    # sequence 0 must not depend on its padded keys 2, 3
    k2, v2 = k.clone(), v.clone()
    k2[0, 2:] += 100.0
    v2[0, 2:] -= 50.0
    torch.testing.assert_close(scaled_dot_product_attention(q, k2, v2, mask)[0], out[0])


def test_sdpa_scale_and_dropout():
    q, k, v = qkv(T_q=4, seed=6)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, scale=0.5),
        F.scaled_dot_product_attention(q, k, v, scale=0.5),
    )
    torch.manual_seed(0)
    _, w = scaled_dot_product_attention(q, k, v, dropout_p=0.5, return_weights=True)
    assert (w == 0).any()


def test_sdpa_bad_input_messages():
    q, k, v = qkv(2, T_q=5, d=8)
    with pytest.raises(ValueError, match=r"q has shape \(2, 5, 8\) but k has shape \(2, 5, 4\)"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="same number of positions"):
        scaled_dot_product_attention(q, k, v[:, :3])
    with pytest.raises(ValueError, match=r"mask has shape \(3, 3\), which does not broadcast"):
        scaled_dot_product_attention(q, k, v, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="q has dtype torch.int64"):
        scaled_dot_product_attention(q.long(), k, v)
    with pytest.raises(TypeError, match="mask has dtype torch.int64"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="do not broadcast"):
        scaled_dot_product_attention(q, k[:1].expand(3, 5, 8), v[:1].expand(3, 5, 8))
    with pytest.raises(ValueError, match="causal=True needs T_q <= T_k"):
        scaled_dot_product_attention(q, k[:, :3], v[:, :3], causal=True)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        scaled_dot_product_attention([1.0], k, v)


def test_sdpa_gradients_match_torch():
    q, k, v = (t.requires_grad_() for t in qkv(2, T_q=5, seed=7))
    scaled_dot_product_attention(q, k, v, causal=True).square().sum().backward()
    ours = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    F.scaled_dot_product_attention(q, k, v, is_causal=True).square().sum().backward()
    for a, t in zip(ours, (q, k, v)):
        torch.testing.assert_close(a, t.grad)


# --------------------------------------------------------------------------- heads


def test_split_merge_heads_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).reshape(2, 3, 8)
    h = split_heads(x, 4)
    assert h.shape == (2, 4, 3, 2)
    assert torch.equal(h[1, 2, 0], x[1, 0, 4:6])  # head 2 owns channels 4, 5
    assert torch.equal(merge_heads(h), x)
    with pytest.raises(ValueError, match="C=8 channels, not divisible by n_heads=3"):
        split_heads(x, 3)


def test_multi_head_attention_function_matches_torch_mha():
    torch.manual_seed(0)
    C, H = 12, 3
    mha = torch.nn.MultiheadAttention(C, H, bias=False, batch_first=True).double()
    x = torch.randn(2, 5, C, dtype=D64)
    W_q, W_k, W_v = (W.T for W in mha.in_proj_weight.detach().chunk(3))
    W_o = mha.out_proj.weight.detach().T
    mask = causal_mask(5)
    expected, _ = mha(x, x, x, attn_mask=~mask, need_weights=False)
    got = multi_head_attention(x, W_q, W_k, W_v, W_o, H, mask)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(multi_head_attention(x, W_q, W_k, W_v, W_o, H, causal=True), expected)
    with pytest.raises(ValueError, match=r"W_k has shape \(12, 6\), expected \(C, C\)"):
        multi_head_attention(x, W_q, W_k[:, :6], W_v, W_o, H)


@pytest.mark.parametrize("bias", [True, False])
def test_multi_head_attention_module_matches_torch(bias):
    torch.manual_seed(1)
    mha = torch.nn.MultiheadAttention(16, 4, bias=bias, batch_first=True)
    ours = MultiHeadAttention.from_torch(mha)
    x = torch.randn(3, 7, 16)
    lengths = [7, 4, 2]
    pad = padding_mask(lengths, 7)  # (B, 1, T)
    expected, w_expected = mha(x, x, x, key_padding_mask=~pad[:, 0], average_attn_weights=False)
    got, w = ours(x, pad, return_weights=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w, w_expected, rtol=1e-5, atol=1e-5)
    expected_causal, _ = mha(x, x, x, attn_mask=~causal_mask(7), need_weights=False)
    torch.testing.assert_close(ours(x, causal=True), expected_causal, rtol=1e-5, atol=1e-5)


def test_multi_head_attention_module_cross_attention_and_cache():
    torch.manual_seed(2)
    attn = MultiHeadAttention(8, 2).eval()
    x = torch.randn(1, 6, 8)
    full = attn(x, causal=True)

    class Cache:  # the KV-cache protocol: update(k, v) -> all keys and values so far
        k = v = None

        def update(self, k, v):
            self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
            return self.k, self.v

    cache = Cache()
    steps = [attn(x[:, :4], causal=True, cache=cache)]
    steps += [attn(x[:, t : t + 1], causal=True, cache=cache) for t in range(4, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-6)
    ctx = torch.randn(1, 3, 8)
    assert attn(x, context=ctx).shape == (1, 6, 8)


def test_multi_head_attention_module_bad_input():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_heads=4"):
        MultiHeadAttention(10, 4)
    attn = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x has shape \(1, 3, 6\), expected \(B, T, d_model=8\)"):
        attn(torch.randn(1, 3, 6))


# --------------------------------------------------------------------------- flash


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T_q,T_k", [(1, 1), (7, 7), (64, 64), (65, 130), (1, 100), (100, 100)])
@pytest.mark.parametrize("block,q_block", [(16, None), (64, 16), (7, 33), (256, None)])
def test_flash_attention_matches_torch_fp32(causal, T_q, T_k, block, q_block):
    q, k, v = qkv(2, 3, T_q=T_q, T_k=T_k, d=16, seed=T_q + T_k, dtype=torch.float32)
    mask = causal_mask(T_q, T_k) if causal else None
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = flash_attention(q, k, v, causal=causal, block_size=block, query_block_size=q_block)
    assert (got - expected).abs().max() <= 1e-5


def test_online_softmax_steps_add_up_to_softmax():
    g = torch.Generator().manual_seed(11)
    s = torch.randn(3, 4, 10, generator=g, dtype=D64) * 5
    v = torch.randn(3, 10, 2, generator=g, dtype=D64)
    m = torch.full((3, 4, 1), -math.inf, dtype=D64)
    l = torch.zeros(3, 4, 1, dtype=D64)
    acc = torch.zeros(3, 4, 2, dtype=D64)
    for start, stop in [(0, 3), (3, 4), (4, 10)]:
        m, l, acc = online_softmax_step(m, l, acc, s[..., start:stop], v[..., start:stop, :])
    torch.testing.assert_close(m, s.amax(-1, keepdim=True))
    torch.testing.assert_close(l, torch.exp(s - m).sum(-1, keepdim=True))
    torch.testing.assert_close(acc / l, torch.softmax(s, -1) @ v)


def test_flash_attention_is_stable_on_large_scores():
    q, k, v = qkv(1, T_q=40, d=4, seed=9)
    q = q * 300.0  # scores of order 1e4
    torch.testing.assert_close(
        flash_attention(q, k, v, causal=True, block_size=8),
        scaled_dot_product_attention(q, k, v, causal=True),
    )


def test_flash_attention_bad_input():
    q, k, v = qkv(1, T_q=5)
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        flash_attention(q, k, v, block_size=0)
    with pytest.raises(ValueError, match="causal=True needs T_q <= T_k"):
        flash_attention(q, k[:, :2], v[:, :2], causal=True)


# --------------------------------------------------------------------------- memory


def test_peak_memory_counts_live_tensors():
    assert peak_memory(lambda: torch.empty(1000)) == 4000

    def two_then_one():
        a = torch.ones(1000)
        b = torch.ones(2000)
        del a
        c = torch.ones(500)
        return b.sum() + c.sum()

    assert 12000 <= peak_memory(two_then_one) <= 12100
    x = torch.randn(1000)
    assert peak_memory(lambda t: t[:10] + 0, x) == 40  # inputs and views of them are free


def test_flash_attention_uses_much_less_memory_than_naive():
    T, d, block = 1024, 16, 32
    q, k, v = qkv(1, 4, T_q=T, d=d, seed=10, dtype=torch.float32)
    naive = peak_memory(scaled_dot_product_attention, q, k, v, causal=True)
    flash = peak_memory(flash_attention, q, k, v, causal=True, block_size=block)
    scores_bytes = 4 * T * T * 4
    assert naive >= 2 * scores_bytes  # the (T, T) scores and weights both exist
    assert flash < 12 * (4 * T * block * 4)  # a few (T, block) tiles and (T, d) accumulators
    assert flash < scores_bytes / 4  # no (T, T) matrix ever exists


# --------------------------------------------------------------------------- figures and explorer


def test_attention_heatmap_checks_labels():
    from lmlab.viz import attention_heatmap

    fig = attention_heatmap(torch.softmax(torch.randn(3, 3), -1), ["a", "b", "c"], title="t")
    assert fig.axes[0].get_title() == "t"
    with pytest.raises(ValueError, match="2 query and 2 key labels"):
        attention_heatmap(torch.ones(3, 3), ["a", "b"])


def test_attention_explorer_has_distinct_frames():

    from lmlab.widgets import TinyAttentionModel, attention_explorer

    torch.manual_seed(0)
    explorer = attention_explorer(TinyAttentionModel(), temperatures=(1.0,))
    assert explorer.frames == 4 * 2
    assert set(explorer.controls) == {"head", "mask", "temperature"}
    images = []

    def walk(widget):
        if hasattr(widget, "png"):
            images.append(widget.png)
        for child in getattr(widget, "children", ()):
            walk(child)

    walk(explorer)
    assert len(images) == 8 and len(set(images)) == 8


def test_train_induction_model_lowers_the_loss():
    from lmlab.widgets import attention_scores, train_induction_model

    model = train_induction_model(steps=40, progress=False)
    assert sum(model.losses[-5:]) < sum(model.losses[:5])
    scores = attention_scores(model, "a big dog saw the red bird")
    assert set(scores) == {"layer 1, head 1", "layer 1, head 2", "layer 2, head 1", "layer 2, head 2"}
    assert scores["layer 1, head 1"].shape == (7, 7)
    with pytest.raises(ValueError, match="outside WORDS"):
        attention_scores(model, "a zebra")


# --------------------------------------------------------------------------- edges found by
# mutation testing (make mutants): defaults, boundaries and arguments no test pinned down


def test_defaults_are_not_causal():
    q, k, v = qkv(2, T_q=6, d=4)
    full = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(flash_attention(q, k, v), full)
    x = torch.randn(2, 6, 8, dtype=D64)
    W = [torch.randn(8, 8, dtype=D64) for _ in range(4)]
    ours = multi_head_attention(x, *W, 2)
    causal = multi_head_attention(x, *W, 2, causal=True)
    assert not torch.allclose(ours, causal)  # the default lets early tokens see later ones
    torch.testing.assert_close(ours, multi_head_attention(x, *W, 2, causal=False))


def test_flash_attention_scale_argument_is_used():
    q, k, v = qkv(1, T_q=5, T_k=7, d=4)
    expected = scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(flash_attention(q, k, v, scale=0.3), expected)
    torch.testing.assert_close(flash_attention(q, k, v, scale=0.3, query_block_size=2, block_size=3),
                               expected)


def test_sizes_of_one_are_valid():
    assert causal_mask(1).tolist() == [[True]]
    assert padding_mask([0, 1], 1).tolist() == [[[False]], [[True]]]  # length 0 is allowed
    x = torch.randn(3, 4)  # unbatched (T, C)
    assert torch.equal(split_heads(x, 1), x.unsqueeze(0))
    heads = split_heads(x, 2)
    assert heads.shape == (2, 3, 2) and torch.equal(heads[1], x[:, 2:])
    assert torch.equal(merge_heads(heads), x)
    mha = MultiHeadAttention(1, 1)
    assert mha(torch.randn(1, 2, 1)).shape == (1, 2, 1)
    q, k, v = qkv(1, T_q=3, d=2)
    torch.testing.assert_close(flash_attention(q, k, v, block_size=1, query_block_size=1),
                               scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_sizes_must_be_positive_ints(bad):
    with pytest.raises(ValueError):
        causal_mask(bad)
    with pytest.raises(ValueError):
        padding_mask([1], bad)
    with pytest.raises(ValueError):
        split_heads(torch.randn(2, 4), bad)
    with pytest.raises((ValueError, TypeError)):
        MultiHeadAttention(bad, 1)
    with pytest.raises((ValueError, TypeError)):
        MultiHeadAttention(4, bad)
    q, k, v = qkv(1)
    with pytest.raises(ValueError):
        flash_attention(q, k, v, block_size=bad)
    with pytest.raises(ValueError):
        flash_attention(q, k, v, query_block_size=bad)


def test_multi_head_attention_module_dropout_only_in_training():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, dropout=0.5)
    x = torch.randn(2, 5, 8)
    mha.eval()
    first, again = mha(x), mha(x)
    torch.testing.assert_close(first, again)  # eval: deterministic
    mha.train()
    torch.manual_seed(1)
    _, weights = mha(x, return_weights=True)
    dropped = (weights == 0).float().mean().item()
    assert 0.3 < dropped < 0.7  # training: about half of the attention weights dropped


def test_from_torch_copies_dropout_and_bias_setting():
    for bias in (True, False):
        torch_mha = torch.nn.MultiheadAttention(8, 2, dropout=0.25, bias=bias, batch_first=True)
        ours = MultiHeadAttention.from_torch(torch_mha)
        assert ours.dropout == 0.25
        assert (ours.q_proj.bias is not None) == bias
    torch_mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
    assert MultiHeadAttention.from_torch(torch_mha).q_proj.weight.dtype == torch.float64


def test_peak_memory_passes_keyword_arguments():
    q, k, v = qkv(1, T_q=64, d=8, dtype=torch.float32)
    small = peak_memory(flash_attention, q, k, v, block_size=8, query_block_size=8)
    large = peak_memory(flash_attention, q, k, v, block_size=64, query_block_size=64)
    assert small < large


# --------------------------------------------------------------------------- more edges found
# by mutation testing: broadcasting, devices, dtypes, dropout, module options, memory


def test_batch_dimensions_of_k_or_v_alone_broadcast():
    """A batch dimension carried by k alone or by v alone broadcasts like an expanded input."""
    q, k, v = qkv(T_q=4, T_k=6, d=4, d_v=3, seed=12)
    kb = torch.stack([k, 2 * k])  # (2, T_k, d)
    vb = torch.stack([v, -v])
    for kk, vv in ((kb, v), (k, vb)):
        expected = scaled_dot_product_attention(q.expand(2, 4, 4), kk.expand(2, 6, 4), vv.expand(2, 6, 3))
        got = scaled_dot_product_attention(q, kk, vv)
        assert got.shape == (2, 4, 3)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(flash_attention(q, kk, vv, block_size=4), expected)
        with pytest.raises(ValueError, match="mask has shape"):  # batch 3 does not broadcast to 2
            scaled_dot_product_attention(q, kk, vv, torch.ones(3, 4, 6, dtype=torch.bool))


def test_sdpa_rejects_one_dimensional_inputs():
    """q, k and v need at least (T, d): a 1-D tensor is a ValueError naming it."""
    q, k, v = qkv(T_q=3, d=4)
    for name, args in (("q", (q[0], k, v)), ("k", (q, k[0], v)), ("v", (q, k, v[0]))):
        with pytest.raises(ValueError, match=f"^{name} has shape"):
            scaled_dot_product_attention(*args)
        with pytest.raises(ValueError, match=f"^{name} has shape"):
            flash_attention(*args)


def test_attention_keeps_every_intermediate_on_the_inputs_device():
    """On the meta device (a stand-in for an accelerator) masks and tiles are made there too."""
    meta = torch.device("meta")
    assert causal_mask(3, 5, device=meta).device == meta
    q, k, v = (torch.empty(2, T, 4, device=meta) for T in (5, 7, 7))
    for out in (
        scaled_dot_product_attention(q, k, v, causal=True),
        scaled_dot_product_attention(q, k, v, torch.ones(5, 7, dtype=torch.bool, device=meta)),
        flash_attention(q, k, v, causal=True, block_size=3, query_block_size=2),
    ):
        assert out.device == meta and out.shape == (2, 5, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sdpa_masks_follow_the_dtype_of_the_scores(dtype):
    """Boolean and float32 additive masks are converted to the scores' dtype (no upcast)."""
    q, k, v = qkv(2, T_q=4, T_k=5, d=8, seed=13, dtype=torch.float32)
    g = torch.Generator().manual_seed(14)
    bool_mask = torch.rand(4, 5, generator=g) > 0.4
    bool_mask[:, 0] = True
    additive = torch.randn(4, 5, generator=g)  # float32, inputs in low precision
    low = [t.to(dtype) for t in (q, k, v)]
    for mask in (bool_mask, additive):
        out, w = scaled_dot_product_attention(*low, mask, return_weights=True)
        assert out.dtype == w.dtype == dtype
        reference = scaled_dot_product_attention(*(t.float() for t in low), mask)
        torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)


def test_sdpa_dropout_drops_at_rate_p_and_rescales_the_rest():
    """dropout_p: about a fraction p of the weights become 0, the others are divided by 1 - p."""
    q, k, v = qkv(4, T_q=64, T_k=64, d=4, seed=15)
    _, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    torch.manual_seed(3)
    _, dropped = scaled_dot_product_attention(q, k, v, dropout_p=0.2, return_weights=True)
    zero = dropped == 0
    rate = zero.double().mean().item()
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / zero.numel())
    torch.testing.assert_close(dropped[~zero], w[~zero] / 0.8)


def test_multi_head_attention_function_unbatched_and_argument_names():
    """An unbatched (T, C) x is a batch of one; type errors name the offending argument."""
    torch.manual_seed(3)
    x = torch.randn(5, 8, dtype=D64)
    W = [torch.randn(8, 8, dtype=D64) for _ in range(4)]
    torch.testing.assert_close(multi_head_attention(x, *W, 2, causal=True),
                               multi_head_attention(x[None], *W, 2, causal=True)[0])
    with pytest.raises(TypeError, match="^x has dtype"):
        multi_head_attention(x.long(), *W, 2)
    with pytest.raises(TypeError, match="^W_v has dtype"):
        multi_head_attention(x, W[0], W[1], W[2].long(), W[3], 2)


def test_multi_head_attention_module_options():
    """Defaults (bias in all four projections, int head size) and the checks of d_model, dropout, x."""
    mha = MultiHeadAttention(8, 2)
    projections = (mha.q_proj, mha.k_proj, mha.v_proj, mha.out_proj)
    assert all(p.bias is not None for p in projections)
    assert mha.d_head == 4 and isinstance(mha.d_head, int)
    no_bias = MultiHeadAttention(8, 2, bias=False)
    assert all(p.bias is None for p in (no_bias.q_proj, no_bias.k_proj, no_bias.v_proj, no_bias.out_proj))
    with pytest.raises(ValueError, match="d_model"):
        MultiHeadAttention(True, 1)
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="dropout"):
            MultiHeadAttention(8, 2, dropout=bad)
    with pytest.raises(TypeError, match="^x has dtype"):
        mha(torch.zeros(1, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="^x has shape"):
        mha(torch.randn(3, 8))  # (T, d_model) without the batch dimension


def test_multi_head_attention_module_cross_attention_matches_torch():
    """context supplies keys and values: ours(x, context=c) equals torch's mha(x, c, c)."""
    torch.manual_seed(4)
    torch_mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
    ours = MultiHeadAttention.from_torch(torch_mha)
    x, ctx = torch.randn(2, 4, 8, dtype=D64), torch.randn(2, 6, 8, dtype=D64)
    expected, w_expected = torch_mha(x, ctx, ctx, average_attn_weights=False)
    got, w = ours(x, context=ctx, return_weights=True)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(w, w_expected)


def test_multi_head_attention_module_three_dimensional_mask_is_per_batch_element():
    """A (B, T_q, T_k) mask applies to every head of its batch element, as (B, 1, T_q, T_k)."""
    torch.manual_seed(5)
    mha = MultiHeadAttention(8, 2).double()
    x = torch.randn(2, 2, 8, dtype=D64)  # T = n_heads: a wrong axis would still broadcast
    mask = torch.tensor([[[True, False], [True, True]], [[True, True], [False, True]]])
    torch.testing.assert_close(mha(x, mask), mha(x, mask[:, None]))
    for b in range(2):
        torch.testing.assert_close(mha(x, mask)[b], mha(x[b:b + 1], mask[b])[0])


def test_multi_head_attention_module_in_eval_mode_matches_torch_with_dropout_set():
    """eval() turns attention dropout off: the output equals torch's module in eval mode."""
    torch.manual_seed(6)
    torch_mha = torch.nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True).eval()
    ours = MultiHeadAttention.from_torch(torch_mha).eval()
    x = torch.randn(2, 5, 8)
    expected, _ = torch_mha(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)


def test_flash_attention_causal_for_every_offset_and_tiling():
    """Causal flash attention equals SDPA for every query offset, key block and query block."""
    for T_q in range(1, 6):
        for extra in range(0, 5):
            q, k, v = qkv(T_q=T_q, T_k=T_q + extra, d=3, seed=T_q * 10 + extra)
            expected = scaled_dot_product_attention(q, k, v, causal=True)
            for block in (1, 2, 3, 4):
                for q_block in (None, 1, 2, 3):
                    got = flash_attention(q, k, v, causal=True, block_size=block, query_block_size=q_block)
                    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_flash_attention_default_tiles_and_query_blocks_bound_memory():
    """Defaults are 64-key by 128-query tiles; smaller query blocks mean smaller peak memory."""
    q, k, v = qkv(1, T_q=256, d=8, dtype=torch.float32)
    default = peak_memory(flash_attention, q, k, v)
    assert default == peak_memory(flash_attention, q, k, v, block_size=64, query_block_size=128)
    assert default != peak_memory(flash_attention, q, k, v, block_size=65, query_block_size=128)
    assert default != peak_memory(flash_attention, q, k, v, block_size=64, query_block_size=129)
    small = peak_memory(flash_attention, q, k, v, block_size=16, query_block_size=16)
    whole = peak_memory(flash_attention, q, k, v, block_size=16, query_block_size=None)
    assert small < whole


def test_peak_memory_after_a_free_and_with_python_scalars():
    """Freeing a tensor lowers the live count by its size; ops returning Python numbers are fine."""

    def free_big_then_allocate():
        a = torch.ones(1000)  # 4000 bytes
        b = torch.ones(2000)  # 8000
        del b
        c = torch.ones(3000)  # 12000: live 16000 at most
        return a, c

    assert peak_memory(free_big_then_allocate) == 16000
    assert peak_memory(lambda: torch.ones(10).sum().item()) == 4 * 10 + 4
