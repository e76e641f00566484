"""The ch05_transformer checks accept different correct solutions and name the mistakes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.checks import ch05_transformer as ch05
from lmlab.checks.core import PARTS

CHECKS = {
    "layer_norm": ch05.check_layer_norm,
    "feed_forward": ch05.check_feed_forward,
    "block_forward": ch05.check_block_forward,
    "gpt_param_count": ch05.check_gpt_param_count,
    "rms_norm": ch05.check_rms_norm,
    "apply_rope": ch05.check_apply_rope,
    "swiglu": ch05.check_swiglu,
    "repeat_kv": ch05.check_repeat_kv,
    "moe_route": ch05.check_moe_route,
}



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread beats two that wait for each other (10× on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# --------------------------------------------------------------------------- correct solutions


def layer_norm_loops(x, weight, bias, eps=1e-5):
    flat = x.reshape(-1, x.shape[-1])
    out = torch.empty_like(flat)
    for r, row in enumerate(flat):
        n = len(row)
        mean = sum(row.tolist()) / n
        var = sum((v - mean) ** 2 for v in row.tolist()) / n
        for c in range(n):
            out[r, c] = (row[c] - mean) / math.sqrt(var + eps) * weight[c] + bias[c]
    return out.reshape(x.shape)


def layer_norm_vectorized(x, weight, bias, eps=1e-5):
    centered = x - x.mean(-1, keepdim=True)
    return centered * torch.rsqrt(centered.pow(2).mean(-1, keepdim=True) + eps) * weight + bias


def layer_norm_var_mean(x, weight, bias, eps=1e-5):
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return torch.addcmul(bias, (x - mean) / (var + eps).sqrt(), weight)


def feed_forward_einsum(x, W1, b1, W2, b2):
    h = torch.einsum("...c,ch->...h", x, W1) + b1
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return torch.einsum("...h,hc->...c", h, W2) + b2


def feed_forward_linear(x, W1, b1, W2, b2):
    return F.linear(F.gelu(F.linear(x, W1.T, b1)), W2.T, b2)


def feed_forward_cdf(x, W1, b1, W2, b2):
    h = x @ W1 + b1
    phi = torch.distributions.Normal(0.0, 1.0).cdf(h)
    return (h * phi) @ W2 + b2


def block_forward_loops(x, p, n_heads):
    """Per head, per query, with explicit softmax."""
    B, T, C = x.shape
    D = C // n_heads
    h = layer_norm_vectorized(x, p["ln1_weight"], p["ln1_bias"])
    qkv = h @ p["W_qkv"] + p["b_qkv"]
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    heads = []
    for i in range(n_heads):
        sl = slice(i * D, (i + 1) * D)
        out = torch.zeros(B, T, D, dtype=x.dtype)
        for t in range(T):
            scores = torch.einsum("bd,bsd->bs", q[:, t, sl], k[:, : t + 1, sl]) / math.sqrt(D)
            w = torch.exp(scores - scores.max(-1, keepdim=True).values)
            w = w / w.sum(-1, keepdim=True)
            out[:, t] = torch.einsum("bs,bsd->bd", w, v[:, : t + 1, sl])
        heads.append(out)
    x = x + torch.cat(heads, dim=-1) @ p["W_o"] + p["b_o"]
    h2 = layer_norm_vectorized(x, p["ln2_weight"], p["ln2_bias"])
    return x + feed_forward_einsum(h2, p["W1"], p["b1"], p["W2"], p["b2"])


def block_forward_sdpa(x, p, n_heads):
    """Batched heads with torch's fused attention."""
    B, T, C = x.shape
    h = F.layer_norm(x, (C,), p["ln1_weight"], p["ln1_bias"])
    q, k, v = (h @ p["W_qkv"] + p["b_qkv"]).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (n_heads, C // n_heads)).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + y.transpose(1, 2).flatten(2) @ p["W_o"] + p["b_o"]
    h = F.layer_norm(x, (C,), p["ln2_weight"], p["ln2_bias"])
    return x + F.gelu(h @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]


def gpt_param_count_by_parts(vocab_size, block_size, n_layer, n_embd, tied=True):
    C = n_embd
    embeddings = vocab_size * C + block_size * C
    attention = (C * 3 * C + 3 * C) + (C * C + C)
    mlp = (C * 4 * C + 4 * C) + (4 * C * C + C)
    norms = 2 * (2 * C)
    head = 0 if tied else vocab_size * C
    return embeddings + n_layer * (attention + mlp + norms) + 2 * C + head


def gpt_param_count_closed_form(vocab_size, block_size, n_layer, n_embd, tied=True):
    C = n_embd
    return (1 if tied else 2) * vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def gpt_param_count_torch(vocab_size, block_size, n_layer, n_embd, tied=True):
    """Build GPT-2 from torch.nn pieces on the meta device and count."""
    C = n_embd
    with torch.device("meta"):
        layer = torch.nn.TransformerEncoderLayer(C, 1, 4 * C, batch_first=True, norm_first=True)
        per_layer = sum(p.numel() for p in layer.parameters())
        emb = torch.nn.Embedding(vocab_size, C).weight.numel() + torch.nn.Embedding(block_size, C).weight.numel()
        final = sum(p.numel() for p in torch.nn.LayerNorm(C).parameters())
    return emb + n_layer * per_layer + final + (0 if tied else vocab_size * C)


def rms_norm_rsqrt(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_norm_loops(x, weight, eps=1e-6):
    flat = x.reshape(-1, x.shape[-1])
    out = torch.empty_like(flat)
    for r, row in enumerate(flat.tolist()):
        rms = math.sqrt(sum(v * v for v in row) / len(row) + eps)
        for c, v in enumerate(row):
            out[r, c] = v / rms * weight[c]
    return out.reshape(x.shape)


def rms_norm_vector_norm(x, weight, eps=1e-6):
    C = x.shape[-1]
    ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) ** 2 / C
    return weight * x / (ms + eps).sqrt()


def apply_rope_complex(x, offset=0, theta=10000.0):
    """Pairs (i, i + D/2) as complex numbers, multiplied by e^{i·angle}."""
    B, H, T, D = x.shape
    half = D // 2
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = torch.outer(torch.arange(offset, offset + T, dtype=torch.float64), inv_freq)
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def apply_rope_rotate_half(x, offset=0, theta=10000.0):
    """Hugging Face's form: x·cos + rotate_half(x)·sin with the angles repeated twice."""
    D, T = x.shape[-1], x.shape[-2]
    inv_freq = theta ** (-torch.arange(D // 2, dtype=x.dtype) * 2 / D)
    pos = torch.arange(T, dtype=x.dtype) + offset
    emb = torch.cat([pos[:, None] * inv_freq] * 2, dim=-1)  # (T, D)
    x1, x2 = x.chunk(2, dim=-1)
    return x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()


def apply_rope_loops(x, offset=0, theta=10000.0):
    out = x.clone()
    D = x.shape[-1]
    for t in range(x.shape[-2]):
        for i in range(D // 2):
            a = (offset + t) / theta ** (2 * i / D)
            c, s = math.cos(a), math.sin(a)
            u, v = x[..., t, i], x[..., t, i + D // 2]
            out[..., t, i] = u * c - v * s
            out[..., t, i + D // 2] = u * s + v * c
    return out


def swiglu_linear(x, w1, w2, w3):
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


def swiglu_einsum(x, w1, w2, w3):
    a = torch.einsum("...c,hc->...h", x, w1)
    b = torch.einsum("...c,hc->...h", x, w3)
    return torch.einsum("...h,ch->...c", a * torch.sigmoid(a) * b, w2)


def repeat_kv_expand(x, n_rep):
    B, H, T, D = x.shape
    return x[:, :, None].expand(B, H, n_rep, T, D).reshape(B, H * n_rep, T, D)


def repeat_kv_interleave(x, n_rep):
    return x.repeat_interleave(n_rep, dim=1)


def repeat_kv_index(x, n_rep):
    heads = torch.arange(x.shape[1] * n_rep) // n_rep
    return x[:, heads]


def moe_route_topk_softmax(router_logits, k, renormalize=True):
    top, idx = router_logits.topk(k, dim=-1)
    if renormalize:
        return top.softmax(-1), idx
    return router_logits.softmax(-1).gather(-1, idx), idx


def moe_route_renormalize(router_logits, k, renormalize=True):
    probs = torch.softmax(router_logits, dim=-1)
    weights, idx = probs.sort(dim=-1, descending=True)
    weights, idx = weights[:, :k], idx[:, :k]
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, idx


CORRECT = {
    "rms_norm": [rms_norm_rsqrt, rms_norm_loops, rms_norm_vector_norm],
    "apply_rope": [apply_rope_complex, apply_rope_rotate_half, apply_rope_loops],
    "swiglu": [swiglu_linear, swiglu_einsum],
    "repeat_kv": [repeat_kv_expand, repeat_kv_interleave, repeat_kv_index],
    "moe_route": [moe_route_topk_softmax, moe_route_renormalize],
    "layer_norm": [layer_norm_loops, layer_norm_vectorized, layer_norm_var_mean],
    "feed_forward": [feed_forward_einsum, feed_forward_linear, feed_forward_cdf],
    "block_forward": [block_forward_loops, block_forward_sdpa],
    "gpt_param_count": [gpt_param_count_by_parts, gpt_param_count_closed_form, gpt_param_count_torch],
}


@pytest.mark.parametrize(
    "part,fn", [(part, fn) for part, fns in CORRECT.items() for fn in fns],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
@pytest.mark.parametrize("seed", [0, 7])
def test_correct_implementations_pass(part, fn, seed):
    CHECKS[part](fn, seed=seed)


# --------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    "part,mistake",
    [(name, m) for name in CHECKS for m in PARTS[name].mistakes],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_every_mistake_is_named(part, mistake):
    with pytest.raises(AssertionError) as info:
        CHECKS[part](mistake.fn)
    assert "Likely mistake: " + mistake.hint in str(info.value)


def test_unbiased_variance_diagnosis_in_plain_words():
    def student(x, weight, bias, eps=1e-5):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias

    with pytest.raises(AssertionError, match="unbiased variance"):
        ch05.check_layer_norm(student)


def test_post_ln_diagnosis():
    def student(x, p, n_heads):
        C = x.shape[-1]
        ln = lambda t, i: F.layer_norm(t, (C,), p[f"ln{i}_weight"], p[f"ln{i}_bias"])  # noqa: E731
        q, k, v = (x @ p["W_qkv"] + p["b_qkv"]).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (n_heads, C // n_heads)).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)
        x = ln(x + y @ p["W_o"] + p["b_o"], 1)
        return ln(x + F.gelu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"], 2)

    with pytest.raises(AssertionError, match="post-LN"):
        ch05.check_block_forward(student)


def test_counting_tied_weights_twice_is_named():
    def student(vocab_size, block_size, n_layer, n_embd, tied=True):
        return gpt_param_count_by_parts(vocab_size, block_size, n_layer, n_embd, tied=False)

    with pytest.raises(AssertionError, match="tied weights twice"):
        ch05.check_gpt_param_count(student)


def test_delegating_to_lmlab_is_refused():
    from lmlab import transformer

    def ln(x, weight, bias, eps=1e-5):
        return transformer.layer_norm(x, weight, bias, eps)

    def ln_torch(x, weight, bias, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)

    def count(vocab_size, block_size, n_layer, n_embd, tied=True):
        return transformer.param_count(transformer.GPTConfig(vocab_size, block_size, n_layer, 1, n_embd,
                                                             tie_weights=tied))

    def block(x, p, n_heads):
        return transformer.block_forward(x, p, n_heads)

    for check, fn in [(ch05.check_layer_norm, ln), (ch05.check_layer_norm, ln_torch),
                      (ch05.check_gpt_param_count, count), (ch05.check_block_forward, block)]:
        with pytest.raises(AssertionError, match="write yourself"):
            check(fn)


def test_delegating_modern_parts_is_refused():
    from lmlab import moe, rope, transformer

    def rms_torch(x, weight, eps=1e-6):
        return F.rms_norm(x, x.shape[-1:], weight, eps)

    def rms_module(x, weight, eps=1e-6):
        norm = torch.nn.RMSNorm(x.shape[-1], eps=eps, dtype=x.dtype)
        with torch.no_grad():
            norm.weight.copy_(weight)
        return norm(x)

    delegations = [
        (ch05.check_rms_norm, rms_torch),
        (ch05.check_rms_norm, rms_module),
        (ch05.check_rms_norm, lambda x, weight, eps=1e-6: transformer.rms_norm(x, weight, eps)),
        (ch05.check_apply_rope,
         lambda x, offset=0, theta=10000.0: rope.apply_rope(x, offset=offset, theta=theta)),
        (ch05.check_swiglu, lambda x, w1, w2, w3: transformer.swiglu(x, w1, w2, w3)),
        (ch05.check_repeat_kv, lambda x, n_rep: transformer.repeat_kv(x, n_rep)),
        (ch05.check_moe_route,
         lambda logits, k, renormalize=True: moe.moe_route(logits, k, renormalize=renormalize)),
    ]
    for check, fn in delegations:
        with pytest.raises(AssertionError, match="write yourself"):
            check(fn)


def test_layer_norm_ignoring_eps_is_named():
    def student(x, weight, bias, eps=1e-5):
        return layer_norm_vectorized(x, weight, bias).to(torch.float32)

    with pytest.raises(AssertionError, match="ignores the eps argument"):
        ch05.check_layer_norm(student)


def test_rope_interleaved_written_differently_is_still_named():
    def student(x, offset=0, theta=10000.0):
        D = x.shape[-1]
        out = apply_rope_complex(x[..., torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)])],
                                 offset, theta)
        back = torch.empty_like(out)
        back[..., 0::2], back[..., 1::2] = out[..., : D // 2], out[..., D // 2:]
        return back.float()

    with pytest.raises(AssertionError, match="interleaved pairs"):
        ch05.check_apply_rope(student)


def test_hidden_cases_differ_from_the_visible_ones(monkeypatch):
    from lmlab.checks.core import hidden_seed

    monkeypatch.setenv("LMLAB_HIDDEN_SEED", "77")
    for name in ("rms_norm", "apply_rope", "swiglu", "repeat_kv", "moe_route"):
        seed = hidden_seed(name)
        assert seed != 0
        CHECKS[name](PARTS[name].reference, hidden=True)


def test_references_pass_and_cases_are_seeded():
    for name, check in CHECKS.items():
        check(PARTS[name].reference, seed=3)
        a, b = PARTS[name].cases(5), PARTS[name].cases(5)
        assert [c.label for c in a] == [c.label for c in b]
