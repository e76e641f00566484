"""The modern block (RMSNorm, RoPE, SwiGLU, grouped-query attention, mixture of experts)
against torch built-ins, Hugging Face's functions, float64 derivations and its invariants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.moe import MoEFeedForward, load_balancing_loss, moe_route
from lmlab.rope import (
    apply_rope,
    half_to_interleaved_permutation,
    rope_cos_sin,
    rope_frequencies,
    rotate,
)
from lmlab.transformer import (
    GPT,
    CausalSelfAttention,
    GPTConfig,
    RMSNorm,
    SwiGLU,
    llama_hidden_size,
    repeat_kv,
    rms_norm,
    swiglu,
)

FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def llama_tiny(**overrides) -> GPTConfig:
    fields = dict(vocab_size=29, block_size=24, n_layer=2, n_head=4, n_embd=32, n_kv_head=2,
                  norm="rmsnorm", positions="rope", mlp="swiglu", ffn_hidden=40, bias=False,
                  tie_weights=False)
    fields.update(overrides)
    return GPTConfig(**fields)


# --------------------------------------------------------------------------- RMSNorm


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 4), st.integers(1, 40), st.sampled_from([1e-6, 1e-5, 0.1]))
def test_rms_norm_matches_torch(rows, C, eps):
    g = torch.Generator().manual_seed(rows * 100 + C)
    x = torch.randn(rows, 3, C, generator=g) * 3
    ref = torch.nn.RMSNorm(C, eps=eps)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=g)
    ours = RMSNorm(C, eps=eps)
    ours.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(rms_norm(x, ref.weight, eps), ref(x), rtol=0, atol=1e-6)
    fused = RMSNorm(C, eps=eps, fused=True)
    fused.load_state_dict(ref.state_dict())
    torch.testing.assert_close(fused(x), ref(x), rtol=0, atol=1e-6)


def test_rms_norm_eps_inside_the_root_and_no_mean():
    x = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    eps = 0.5
    expected = x / math.sqrt((1 + 4 + 16) / 3 + eps)
    torch.testing.assert_close(rms_norm(x, eps=eps), expected)
    # the mean is not subtracted: a constant vector stays constant, not zero
    assert torch.allclose(rms_norm(torch.full((1, 4), 3.0), eps=0.0), torch.ones(1, 4))
    assert RMSNorm(3, weight=False).weight is None
    with pytest.raises(ValueError, match="last dimension"):
        RMSNorm(4)(torch.ones(2, 3))


# --------------------------------------------------------------------------- RoPE


def test_rope_frequencies_and_errors():
    f = rope_frequencies(8, theta=10000.0)
    expected = torch.tensor([10000.0 ** (-2 * i / 8) for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(f.double(), expected, rtol=1e-6, atol=0)
    assert f[0] == 1 and (f.diff() < 0).all()  # decreasing: the first pair turns fastest
    with pytest.raises(ValueError, match="even"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="style"):
        apply_rope(torch.zeros(1, 1, 2, 4), style="pairs")
    with pytest.raises(ValueError, match="even"):
        apply_rope(torch.zeros(1, 1, 2, 5))
    with pytest.raises(ValueError, match="offset"):
        apply_rope(torch.zeros(2, 1, 3, 4), offset=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="offset"):
        apply_rope(torch.zeros(2, 1, 3, 4), offset=-1)


def test_rope_rotates_pairs_by_position_times_frequency_float64():
    D, theta = 6, 100.0
    x = torch.randn(1, 1, 5, D, dtype=torch.float64)
    for style, pairs in (("half", [(i, i + D // 2) for i in range(D // 2)]),
                         ("interleaved", [(2 * i, 2 * i + 1) for i in range(D // 2)])):
        y = apply_rope(x, offset=3, theta=theta, style=style)
        for t in range(5):
            for i, (a, b) in enumerate(pairs):
                angle = (3 + t) * theta ** (-2 * i / D)
                c, s = math.cos(angle), math.sin(angle)
                xa, xb = x[0, 0, t, a].item(), x[0, 0, t, b].item()
                assert y[0, 0, t, a].item() == pytest.approx(xa * c - xb * s, abs=1e-6)
                assert y[0, 0, t, b].item() == pytest.approx(xb * c + xa * s, abs=1e-6)


@FAST
@given(st.integers(0, 200), st.integers(0, 200), st.integers(-30, 30),
       st.sampled_from(["half", "interleaved"]))
def test_rope_dot_product_depends_only_on_the_distance(m, n, shift, style):
    g = torch.Generator().manual_seed(m + 1000 * n)
    q = torch.randn(1, 1, 1, 16, dtype=torch.float64, generator=g)
    k = torch.randn(1, 1, 1, 16, dtype=torch.float64, generator=g)
    shift = max(shift, -min(m, n))
    dot = lambda a, b: (apply_rope(q, offset=a, style=style) * apply_rope(k, offset=b, style=style)).sum()  # noqa: E731
    assert dot(m, n).item() == pytest.approx(dot(m + shift, n + shift).item(), abs=1e-4)


@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.sampled_from([2, 4, 8, 12]),
       st.integers(0, 50))
def test_interleaved_equals_half_after_the_permutation(B, H, T, D, offset):
    x = torch.randn(B, H, T, D)
    perm = half_to_interleaved_permutation(D)
    assert sorted(perm.tolist()) == list(range(D))
    torch.testing.assert_close(apply_rope(x[..., perm], offset=offset, style="interleaved"),
                               apply_rope(x, offset=offset, style="half")[..., perm])
    # q·k is unchanged when q and k get the same permutation
    k = torch.randn(B, H, T, D)
    half = apply_rope(x, style="half") @ apply_rope(k, style="half").transpose(-1, -2)
    inter = apply_rope(x[..., perm], style="interleaved") @ apply_rope(
        k[..., perm], style="interleaved").transpose(-1, -2)
    torch.testing.assert_close(half, inter, rtol=1e-5, atol=1e-5)
    if D > 2:  # the two pairings are different rotations
        assert not torch.allclose(apply_rope(x, offset=1, style="half"),
                                  apply_rope(x, offset=1, style="interleaved"), atol=1e-4)


def test_rope_at_an_offset_is_a_slice_of_the_full_sequence():
    x = torch.randn(2, 3, 10, 8)
    full = apply_rope(x, theta=500.0)
    torch.testing.assert_close(apply_rope(x[:, :, 6:], offset=6, theta=500.0), full[:, :, 6:])
    # per-row starts and explicit positions
    starts = torch.tensor([0, 4])
    rows = torch.stack([x[0, :, 0:3], x[1, :, 4:7]])
    expected = torch.stack([full[0, :, 0:3], full[1, :, 4:7]])
    torch.testing.assert_close(apply_rope(rows, offset=starts, theta=500.0), expected)
    pos = torch.tensor([[0, 1, 2], [4, 5, 6]])
    torch.testing.assert_close(apply_rope(rows, offset=pos, theta=500.0), expected)
    # position 0 is the identity
    torch.testing.assert_close(full[:, :, 0], x[:, :, 0])


def test_rotate_preserves_norms_and_cos_sin_shapes():
    cos, sin = rope_cos_sin(torch.arange(7), 10)
    assert cos.shape == sin.shape == (7, 5)
    x = torch.randn(2, 7, 10)
    for style in ("half", "interleaved"):
        torch.testing.assert_close(rotate(x, cos, sin, style).norm(dim=-1), x.norm(dim=-1))


@pytest.mark.parametrize("head_dim", [0, -2, 4.0, True, 3])
def test_rope_rejects_a_head_dim_that_is_not_a_positive_even_int(head_dim):
    """head_dim must be an int (not a bool or a float) that is >= 2 and even."""
    with pytest.raises(ValueError, match="head_dim"):
        rope_frequencies(head_dim)


@pytest.mark.parametrize("theta", [0.5, 1.0, -10.0])
def test_rope_rejects_theta_not_above_one(theta):
    """theta must be > 1 (theta = 1 would turn every pair at the same speed)."""
    with pytest.raises(ValueError, match="theta"):
        rope_frequencies(8, theta)


@pytest.mark.parametrize("theta", [1.5, 2.0, 1e6])
def test_rope_accepts_any_theta_above_one(theta):
    """Any theta > 1 gives theta^(-2i/D), including ones between 1 and 2."""
    expected = torch.tensor([theta ** (-2 * i / 8) for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(rope_frequencies(8, theta).double(), expected, rtol=1e-6, atol=0)


def test_rope_default_theta_is_ten_thousand():
    """rope_frequencies, rope_cos_sin and apply_rope default to theta = 10000 (Llama)."""
    assert torch.equal(rope_frequencies(8), rope_frequencies(8, 10000.0))
    pos = torch.arange(0, 4000, 97)
    for got, want in zip(rope_cos_sin(pos, 8), rope_cos_sin(pos, 8, 10000.0)):
        assert torch.equal(got, want)
    x = torch.randn(1, 2, 4, 8)
    assert torch.equal(apply_rope(x, offset=3000), apply_rope(x, offset=3000, theta=10000.0))
    # and the value itself, in float64: pair i at position 3000 turns by 3000 * 10000^(-2i/8)
    cos, _ = rope_cos_sin(torch.tensor([3000]), 8)
    angles = torch.tensor([3000 * 10000.0 ** (-2 * i / 8) for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(cos[0].double(), angles.cos(), rtol=0, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("style", ["half", "interleaved"])
def test_rope_keeps_the_dtype_of_x(dtype, style):
    """rotate and apply_rope return x's dtype; the values are the float32 rotation rounded."""
    x = torch.randn(2, 3, 5, 8).to(dtype)
    y = apply_rope(x, offset=2, style=style)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), apply_rope(x.float(), offset=2, style=style),
                               rtol=1e-2, atol=1e-2)
    cos, sin = rope_cos_sin(torch.arange(5), 8)
    assert rotate(x, cos, sin, style).dtype == dtype


@pytest.mark.parametrize("offset", [True, 1.5, "2"])
def test_apply_rope_rejects_an_offset_that_is_not_an_int(offset):
    """offset must be an int (not a bool, float or str) or a position tensor."""
    with pytest.raises(ValueError, match="offset"):
        apply_rope(torch.zeros(2, 1, 3, 4), offset=offset)


@pytest.mark.parametrize("shape", [(1, 3), (2, 4), (2, 1), (3, 3), (2, 3, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_apply_rope_rejects_a_position_tensor_of_the_wrong_shape(shape):
    """A tensor offset must be (B,) or exactly (B, T); (1, T) is not broadcast over rows."""
    with pytest.raises(ValueError, match="offset"):
        apply_rope(torch.zeros(2, 1, 3, 4), offset=torch.zeros(shape, dtype=torch.long))


def test_apply_rope_rejects_x_that_is_not_4d_and_says_what_it_got():
    """x must be a (B, H, T, D) tensor; the error names the shape or the type received."""
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        apply_rope(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 4, 4\)"):
        apply_rope(torch.zeros(1, 2, 3, 4, 4))
    with pytest.raises(ValueError, match="list"):
        apply_rope([[[[0.0, 1.0]]]])


def test_rope_stays_on_the_device_of_x_and_of_the_positions():
    """Everything is built on x's device (positions given on the CPU are moved there):
    checked on the meta device, where mixing devices is an error as on a GPU."""
    x = torch.empty(2, 3, 5, 8, device="meta")
    for offset in (4, torch.tensor([0, 3]), torch.arange(10).view(2, 5)):
        y = apply_rope(x, offset=offset)
        assert y.device.type == "meta" and y.shape == x.shape
    cos, sin = rope_cos_sin(torch.arange(5, device="meta"), 8)
    assert cos.device.type == sin.device.type == "meta" and cos.shape == (5, 4)


# --------------------------------------------------------------------------- SwiGLU


def test_swiglu_function_and_module_by_hand():
    torch.manual_seed(0)
    ffn = SwiGLU(6, 10)
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    w1, w2, w3 = (getattr(ffn, n).weight.double() for n in ("w1", "w2", "w3"))
    a = x @ w1.T
    expected = ((a / (1 + torch.exp(-a))) * (x @ w3.T)) @ w2.T  # silu(z) = z·σ(z)
    torch.testing.assert_close(swiglu(x, w1, w2, w3), expected)
    torch.testing.assert_close(ffn(x.float()).double(), expected, rtol=1e-5, atol=1e-6)
    # SiLU on the W3 branch instead is a different function
    wrong = (a * F.silu(x @ w3.T)) @ w2.T
    assert not torch.allclose(wrong, expected, atol=1e-3)


def test_llama_hidden_size_rule_on_real_models():
    assert llama_hidden_size(4096) == 11008  # Llama-2-7B
    assert llama_hidden_size(4096, multiple_of=1024, ffn_dim_multiplier=1.3) == 14336  # Llama-3-8B
    assert llama_hidden_size(5120) == 13824  # Llama-2-13B
    assert llama_hidden_size(8192, multiple_of=4096, ffn_dim_multiplier=1.3) == 28672  # Llama-2-70B
    assert llama_hidden_size(8192, multiple_of=4096, ffn_dim_multiplier=1.3) % 4096 == 0
    assert GPTConfig(mlp="swiglu", n_embd=768).ffn_dim == 2048
    assert GPTConfig(n_embd=768).ffn_dim == 3072


# --------------------------------------------------------------------------- grouped-query attention


@FAST
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5))
def test_repeat_kv_matches_hugging_face(B, H_kv, n_rep, T):
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    x = torch.randn(B, H_kv, T, 3)
    out = repeat_kv(x, n_rep)
    assert torch.equal(out, hf_repeat_kv(x, n_rep))
    assert torch.equal(out, x.repeat_interleave(n_rep, dim=1))
    if H_kv > 1 and n_rep > 1:  # `repeat` matches query heads to the wrong groups
        assert not torch.equal(out, x.repeat(1, n_rep, 1, 1))


def test_repeat_kv_rejects_bad_input():
    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(torch.zeros(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match="B, H_kv, T, D"):
        repeat_kv(torch.zeros(2, 3, 4), 2)


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_gqa_equals_mha_with_each_kv_head_copied_to_its_group(n_kv_head):
    torch.manual_seed(0)
    C, H, D = 32, 4, 8
    gqa = CausalSelfAttention(llama_tiny(n_kv_head=n_kv_head))
    mha = CausalSelfAttention(llama_tiny(n_kv_head=None))
    q_w, k_w, v_w = gqa.c_attn.weight.split([H * D, n_kv_head * D, n_kv_head * D])
    grow = lambda w: w.view(n_kv_head, D, C).repeat_interleave(H // n_kv_head, 0).reshape(H * D, C)  # noqa: E731
    with torch.no_grad():
        mha.c_attn.weight.copy_(torch.cat([q_w, grow(k_w), grow(v_w)]))
        mha.c_proj.weight.copy_(gqa.c_proj.weight)
    x = torch.randn(2, 7, C)
    rope = rope_cos_sin(torch.arange(7), D)
    torch.testing.assert_close(gqa(x, rope=rope), mha(x, rope=rope))
    fused = CausalSelfAttention(llama_tiny(n_kv_head=n_kv_head, fused=True))
    fused.load_state_dict(gqa.state_dict())
    torch.testing.assert_close(fused(x, rope=rope), gqa(x, rope=rope), rtol=1e-5, atol=1e-6)
    assert gqa.c_attn.weight.shape == ((H + 2 * n_kv_head) * D, C)


def test_config_rejects_bad_modern_fields():
    with pytest.raises(ValueError, match="n_kv_head=3"):
        GPTConfig(n_head=4, n_embd=32, n_kv_head=3)
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="mlp"):
        GPTConfig(mlp="relu")
    with pytest.raises(ValueError, match="positions"):
        GPTConfig(positions="alibi")
    with pytest.raises(ValueError, match="swiglu"):
        GPTConfig(n_expert=4)
    with pytest.raises(ValueError, match="n_expert_per_token"):
        GPTConfig(mlp="swiglu", n_expert=2, n_expert_per_token=3)
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(n_head=2, n_embd=6, positions="rope")


# --------------------------------------------------------------------------- mixture of experts


@FAST
@given(st.integers(1, 20), st.integers(2, 8), st.data())
def test_moe_route_top_k_softmax(N, E, data):
    k = data.draw(st.integers(1, E))
    logits = torch.randn(N, E, generator=torch.Generator().manual_seed(N * E + k))
    weights, indices = moe_route(logits, k)
    probs = torch.softmax(logits, dim=-1)
    top = probs.topk(k, dim=-1)
    assert torch.equal(indices, top.indices)
    # softmax over the top-k logits == renormalized top-k of the full softmax (Mixtral)
    torch.testing.assert_close(weights, top.values / top.values.sum(-1, keepdim=True))
    torch.testing.assert_close(weights.sum(-1), torch.ones(N))
    raw, raw_idx = moe_route(logits, k, renormalize=False)
    assert torch.equal(raw_idx, indices)
    torch.testing.assert_close(raw, top.values)
    if k < E:  # softmax over all experts is not the same as over the top-k
        assert (raw.sum(-1) < 1).all()


def test_moe_route_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        moe_route(torch.zeros(3, 4), 5)
    with pytest.raises(ValueError, match="router_logits"):
        moe_route(torch.zeros(3), 1)


def test_load_balancing_loss_by_hand_and_against_hugging_face():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0], [0.5, 0.2, 0.1]])
    _, idx = moe_route(logits, 2)
    P = torch.softmax(logits.double(), -1).mean(0)
    # top-2 of each row: {0,1}, {1,2}, {2,0}, {0,1} -> counts 3, 3, 2 out of 4 tokens
    f = torch.tensor([3, 3, 2], dtype=torch.float64) / 4
    expected = 3 * (f * P).sum()
    got = load_balancing_loss(logits, idx, 3)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    hf = load_balancing_loss_func((logits,), num_experts=3, top_k=2)
    assert got.item() == pytest.approx(hf.item(), rel=1e-6)
    # uniform routing gives k; the loss has a gradient through P
    uniform = torch.zeros(6, 3, requires_grad=True)
    _, idx = moe_route(uniform, 1)
    loss = load_balancing_loss(uniform, torch.tensor([[0], [1], [2], [0], [1], [2]]), 3)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert uniform.grad is not None


@pytest.mark.parametrize("k", [True, 1.0, 0, -1, "2"])
def test_moe_route_rejects_a_k_that_is_not_an_int_in_range(k):
    """k must be an int (not a bool, float or str) in [1, E]."""
    with pytest.raises(ValueError, match="k must"):
        moe_route(torch.zeros(3, 4), k)


def test_moe_route_rejects_logits_that_are_not_2d_and_says_what_it_got():
    """router_logits must be an (N, E) tensor; the error names the shape or type received."""
    with pytest.raises(ValueError, match=r"router_logits.*\(2, 3, 4\)"):
        moe_route(torch.zeros(2, 3, 4), 1)
    with pytest.raises(ValueError, match=r"router_logits.*list"):
        moe_route([[0.0, 1.0]], 1)
    with pytest.raises(ValueError, match=r"router_logits.*\(5,\)"):
        load_balancing_loss(torch.zeros(5), torch.zeros(5, 1, dtype=torch.long), 5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("renormalize", [True, False])
def test_moe_route_weights_have_the_dtype_of_the_logits(dtype, renormalize):
    """The weights come back in the logits' dtype (computed in float32 inside)."""
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)).to(dtype)
    weights, indices = moe_route(logits, 2, renormalize=renormalize)
    assert weights.dtype == dtype and indices.dtype == torch.long
    reference, ref_idx = moe_route(logits.float(), 2, renormalize=renormalize)
    assert torch.equal(indices, ref_idx)
    torch.testing.assert_close(weights.float(), reference, rtol=1e-2, atol=1e-3)


def test_load_balancing_loss_rejects_mismatched_inputs():
    """n_expert must equal the logits' columns; indices must be (N, k) for the same N."""
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="n_expert"):
        load_balancing_loss(logits, torch.zeros(4, 1, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="indices"):
        load_balancing_loss(logits, torch.zeros(5, 1, dtype=torch.long), 3)  # N + 1 rows
    with pytest.raises(ValueError, match="indices"):
        load_balancing_loss(logits, torch.zeros(4, dtype=torch.long), 3)  # (N,), not (N, k)


def test_load_balancing_loss_stays_on_the_device_of_its_inputs():
    """The counts are built on the indices' device: checked on the meta device, where
    mixing devices is an error as on a GPU."""
    logits = torch.empty(4, 3, device="meta")
    idx = torch.empty(4, 2, dtype=torch.long, device="meta")
    loss = load_balancing_loss(logits, idx, 3)
    assert loss.device.type == "meta" and loss.dim() == 0


def test_moe_feed_forward_defaults_no_bias_and_no_aux_loss_before_a_call():
    """By default no linear map has a bias; bias=True adds them to the experts only (the
    router never has one); aux_loss is None until the first forward pass."""
    moe = MoEFeedForward(6, 10, 3, 2)
    assert moe.aux_loss is None
    assert moe.gate.bias is None
    assert all(lin.bias is None for e in moe.experts for lin in (e.w1, e.w2, e.w3))
    assert sum(p.numel() for p in moe.parameters()) == 6 * 3 + 3 * 3 * 6 * 10
    biased = MoEFeedForward(6, 10, 3, 2, bias=True)
    assert biased.gate.bias is None
    assert all(lin.bias is not None for e in biased.experts for lin in (e.w1, e.w2, e.w3))
    biased(torch.randn(4, 6))
    assert biased.aux_loss is not None and biased.aux_loss.dim() == 0


@pytest.mark.parametrize("E, k", [(4, 2), (3, 3)])
def test_moe_feed_forward_passes_renormalize_on_to_the_router(E, k):
    """renormalize=False weights each chosen expert by its full-softmax probability."""
    torch.manual_seed(E * k)
    moe = MoEFeedForward(12, 20, E, k, renormalize=False)
    x = torch.randn(3, 5, 12)
    torch.testing.assert_close(moe(x), dense_moe_reference(moe, x, renormalize=False),
                               rtol=1e-5, atol=1e-6)
    if k < E:  # the weights sum to less than 1, so the output differs from Mixtral's
        assert not torch.allclose(moe(x), dense_moe_reference(moe, x), atol=1e-4)


def dense_moe_reference(moe: MoEFeedForward, x: torch.Tensor, renormalize: bool = True) -> torch.Tensor:
    """Every expert on every token, the chosen ones weighted: slow but obviously right."""
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(moe.gate(flat), dim=-1)
    out = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        top = probs[n].topk(moe.top_k)
        weights = top.values / top.values.sum() if renormalize else top.values
        for w, e in zip(weights, top.indices.tolist()):
            out[n] += w * moe.experts[e](flat[n])
    return out.view(x.shape)


@pytest.mark.parametrize("E, k", [(4, 2), (5, 1), (3, 3)])
def test_moe_equals_the_loop_over_experts_and_runs_only_routed_tokens(E, k):
    torch.manual_seed(E + k)
    moe = MoEFeedForward(12, 20, E, k)
    x = torch.randn(2, 9, 12)
    calls = []
    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda mod, inp, out, e=e: calls.append((e, inp[0].shape[0])))
    out = moe(x)
    counts = dict(calls)  # before the reference below calls the experts again
    torch.testing.assert_close(out, dense_moe_reference(moe, x), rtol=1e-5, atol=1e-6)
    _, idx = moe_route(moe.gate(x.reshape(-1, 12)), k)
    expected_counts = torch.bincount(idx.flatten(), minlength=E).tolist()
    for e in range(E):
        assert counts.get(e, 0) == expected_counts[e]  # each expert saw only its tokens
    assert sum(expected_counts) == 18 * k
    assert moe.aux_loss.dim() == 0 and torch.isfinite(moe.aux_loss)


def test_moe_gpt_trains_the_router_through_the_aux_loss():
    torch.manual_seed(0)
    model = GPT(llama_tiny(n_expert=4, n_expert_per_token=2))
    idx = torch.randint(0, 29, (2, 8))
    _, loss = model(idx, idx)
    ce = F.cross_entropy(model(idx)[0].view(-1, 29), idx.view(-1))
    torch.testing.assert_close(loss, ce + 0.01 * model.aux_loss())
    loss.backward()
    assert model.transformer.h[0].mlp.gate.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- counting


@FAST
@given(st.sampled_from(["layernorm", "rmsnorm"]), st.sampled_from(["gelu", "gelu_tanh", "swiglu"]),
       st.sampled_from([None, 1, 2, 4]), st.sampled_from([0, 2, 3]), st.booleans(),
       st.sampled_from([None, True, False]), st.booleans(),
       st.sampled_from(["learned", "sinusoidal", "rope"]))
def test_param_count_equals_built_model_for_any_family(norm, mlp, n_kv_head, n_expert, bias,
                                                       qkv_bias, tie, positions):
    from lmlab.transformer import active_param_count, count_parameters, param_count

    if n_expert and mlp != "swiglu":
        mlp = "swiglu"
    config = GPTConfig(vocab_size=19, block_size=8, n_layer=2, n_head=4, n_embd=16, norm=norm,
                       mlp=mlp, n_kv_head=n_kv_head, n_expert=n_expert, n_expert_per_token=2,
                       bias=bias, qkv_bias=qkv_bias, tie_weights=tie, positions=positions)
    with torch.device("meta"):
        model = GPT(config)
    assert count_parameters(model) == param_count(config)
    if n_expert:
        per_expert = count_parameters(model.transformer.h[0].mlp.experts[0])
        assert active_param_count(config) == param_count(config) - 2 * (n_expert - 2) * per_expert


def test_a_half_split_model_equals_an_interleaved_one_after_permuting_q_and_k_rows():
    from dataclasses import replace

    from lmlab.rope import half_to_interleaved_weight

    torch.manual_seed(0)
    config = llama_tiny(qkv_bias=True)
    half = GPT(config).eval()
    with torch.no_grad():  # weights large enough for attention to depend on the positions
        for p in half.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    interleaved = GPT(replace(config, rope_style="interleaved")).eval()
    state = {name: t.clone() for name, t in half.state_dict().items()}
    H, H_kv, D = config.n_head, config.kv_heads, config.head_dim
    for name in list(state):
        if name.endswith(("c_attn.weight", "c_attn.bias")):
            q, k, v = state[name].split([H * D, H_kv * D, H_kv * D])
            q, k = half_to_interleaved_weight(q, H), half_to_interleaved_weight(k, H_kv)
            state[name] = torch.cat([q, k, v])
    interleaved.load_state_dict(state)
    idx = torch.randint(0, 29, (2, 9))
    torch.testing.assert_close(interleaved(idx)[0], half(idx)[0], rtol=1e-5, atol=1e-5)
    # without the permutation the interleaved model is a different function
    interleaved.load_state_dict(half.state_dict())
    assert not torch.allclose(interleaved(idx)[0], half(idx)[0], atol=1e-2)
    with pytest.raises(ValueError, match="n_heads"):
        half_to_interleaved_weight(torch.zeros(10, 3), 4)
