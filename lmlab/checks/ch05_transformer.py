"""Checks for exercise ch05_transformer: LayerNorm, the FFN, a pre-LN block, counting parameters,
and the pieces of a Llama-style block (RMSNorm, RoPE, SwiGLU, grouped-query heads, MoE routing).

Inputs are float64 so that any correct order of operations agrees to ~1e-12, and the
tolerances (1e-6) stay far below the smallest catalogued mistake (an ``eps`` in the wrong
place, GELU's tanh approximation: ~1e-4).
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from lmlab import moe, rope, transformer
from lmlab.checks.core import Case, Mistake, Part, close, exact, make_check

__all__ = [
    "check_layer_norm",
    "check_feed_forward",
    "check_block_forward",
    "check_gpt_param_count",
    "check_rms_norm",
    "check_apply_rope",
    "check_swiglu",
    "check_repeat_kv",
    "check_moe_route",
    "random_block_params",
]

CHAPTER = "ch05_transformer"
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- layer_norm


def _layer_norm_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    for _ in range(5):
        B, T, C = rng.randint(2, 4), rng.randint(2, 5), rng.randint(3, 16)
        x = torch.randn(B, T, C, generator=g, dtype=F64) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)
        w = 1 + 0.5 * torch.randn(C, generator=g, dtype=F64)
        b = 0.5 * torch.randn(C, generator=g, dtype=F64)
        cases.append(Case((x, w, b), label="random (B, T, C)"))
    C = 6
    w, b = 1 + 0.3 * torch.randn(C, generator=g, dtype=F64), 0.3 * torch.randn(C, generator=g, dtype=F64)
    cases += [
        Case((torch.randn(3, 5, C, generator=g, dtype=F64) * 1e-3, w, b),
             label="edge: tiny variance, where eps matters"),
        Case((torch.randn(4, C, generator=g, dtype=F64) * 2, w, b), {"eps": 0.1}, label="edge: (B, C) input, eps=0.1"),
        Case((torch.randn(2, 3, C, generator=g, dtype=F64) + 100.0, w, b), label="edge: large mean"),
        Case((torch.ones(2, 2, C, dtype=F64) * 5.0, w, b), label="edge: constant rows (variance 0)"),
    ]
    return cases


def _ln(x, w, b, eps=1e-5, *, dim=-1, unbiased=False, eps_outside=False, sqrt=True, use_eps=True):
    mean = x.mean(dim=dim, keepdim=True)
    var = x.var(dim=dim, keepdim=True, unbiased=unbiased) if x.shape[dim] > 1 else (x - mean) ** 2
    eps = eps if use_eps else 0.0
    if eps_outside:
        denom = torch.sqrt(var) + eps
    else:
        denom = torch.sqrt(var + eps) if sqrt else var + eps
    return (x - mean) / denom * w + b


check_layer_norm = make_check(
    Part(
        name="layer_norm",
        chapter=CHAPTER,
        reference=transformer.layer_norm,
        cases=_layer_norm_cases,
        compare=close(rtol=1e-6, atol=1e-6),
        guard=["lmlab.transformer.layer_norm", "lmlab.transformer.LayerNorm",
               "torch.nn.functional.layer_norm", "torch.layer_norm"],
        mistakes=[
            Mistake(
                "batch-axis",
                "you normalized over the batch axis (dim=0), as BatchNorm does. LayerNorm "
                "normalizes each token's vector on its own: mean and variance over the last "
                "axis (dim=-1, keepdim=True).",
                lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, dim=0),
            ),
            Mistake(
                "all-axes",
                "you took one mean and variance over the whole tensor. LayerNorm uses the "
                "statistics of each vector along the last axis (dim=-1, keepdim=True).",
                lambda x, w, b, eps=1e-5: (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * w + b,
            ),
            Mistake(
                "unbiased",
                "you used the unbiased variance (dividing by C − 1; torch.var's default). "
                "LayerNorm divides by C: x.var(dim=-1, unbiased=False) or "
                "((x - mean)**2).mean(dim=-1).",
                lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, unbiased=True),
            ),
            Mistake(
                "eps-outside",
                "you added eps outside the square root: (x − mean) / (sqrt(var) + eps). "
                "The formula is (x − mean) / sqrt(var + eps).",
                lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, eps_outside=True),
            ),
            Mistake(
                "no-eps",
                "you left eps out. It keeps the division finite when a vector is constant "
                "(variance 0): divide by sqrt(var + eps).",
                lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, use_eps=False),
            ),
            Mistake(
                "no-sqrt",
                "you divided by the variance, not the standard deviation: take "
                "sqrt(var + eps).",
                lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, sqrt=False),
            ),
            Mistake(
                "eps-ignored",
                "your result ignores the eps argument (it always uses 1e-5): a caller who "
                "passes eps=0.1 must get sqrt(var + 0.1) in the denominator.",
                lambda x, w, b, eps=1e-5: _ln(x, w, b, 1e-5),
            ),
            Mistake(
                "swapped-affine",
                "you swapped weight and bias: the normalized x is multiplied by weight (the "
                "gain, initialised to 1) and then bias is added.",
                lambda x, w, b, eps=1e-5: _ln(x, b, w, eps),
            ),
            Mistake(
                "no-affine",
                "you returned the normalized x without the learned scale and shift: "
                "multiply by weight, then add bias.",
                lambda x, w, b, eps=1e-5: _ln(x, 1.0, 0.0, eps),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- feed_forward


def _ff_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed + 1)
    cases = []

    def make(shape, C, H, label):
        x = torch.randn(*shape, C, generator=g, dtype=F64) * 1.5
        W1 = torch.randn(C, H, generator=g, dtype=F64) / math.sqrt(C)
        W2 = torch.randn(H, C, generator=g, dtype=F64) / math.sqrt(H)
        b1 = torch.randn(H, generator=g, dtype=F64) * 0.5
        b2 = torch.randn(C, generator=g, dtype=F64) * 0.5
        cases.append(Case((x, W1, b1, W2, b2), label=label))

    for _ in range(5):
        C = rng.randint(2, 12)
        make((rng.randint(1, 3), rng.randint(1, 5)), C, 4 * C, "random (B, T, C), hidden 4C")
    make((5,), 3, 12, "edge: (T, C) input")
    make((2, 2), 4, 7, "edge: hidden width not 4C")
    return cases


def _gelu_tanh(h):
    return F.gelu(h, approximate="tanh")


check_feed_forward = make_check(
    Part(
        name="feed_forward",
        chapter=CHAPTER,
        reference=transformer.feed_forward,
        cases=_ff_cases,
        compare=close(rtol=1e-6, atol=1e-6),
        guard=["lmlab.transformer.feed_forward", "lmlab.transformer.FeedForward"],
        mistakes=[
            Mistake(
                "relu",
                "you used ReLU where the spec says GELU. GELU(h) = h·Φ(h), with Φ the normal "
                "CDF: torch.nn.functional.gelu(h), or 0.5·h·(1 + erf(h/√2)).",
                lambda x, W1, b1, W2, b2: F.relu(x @ W1 + b1) @ W2 + b2,
            ),
            Mistake(
                "gelu-tanh",
                "you used the tanh approximation of GELU (GPT-2's original code does). The "
                "spec asks for the exact GELU, h·Φ(h) = 0.5·h·(1 + erf(h/√2)), "
                "F.gelu(h) with its default approximate='none'.",
                lambda x, W1, b1, W2, b2: _gelu_tanh(x @ W1 + b1) @ W2 + b2,
            ),
            Mistake(
                "bias-after-activation",
                "you added b1 after the activation: GELU(x W1) + b1. The first bias goes "
                "inside: GELU(x W1 + b1).",
                lambda x, W1, b1, W2, b2: (F.gelu(x @ W1) + b1) @ W2 + b2,
            ),
            Mistake(
                "activation-on-output",
                "you applied GELU after the second linear map too. Only the hidden layer has "
                "an activation: GELU(x W1 + b1) W2 + b2.",
                lambda x, W1, b1, W2, b2: F.gelu(F.gelu(x @ W1 + b1) @ W2 + b2),
            ),
            Mistake(
                "no-activation",
                "there is no activation: two linear maps in a row are one linear map. Apply "
                "GELU to the hidden layer: GELU(x W1 + b1) W2 + b2.",
                lambda x, W1, b1, W2, b2: (x @ W1 + b1) @ W2 + b2,
            ),
            Mistake(
                "no-b2",
                "you left out the second bias b2: GELU(x W1 + b1) W2 + b2.",
                lambda x, W1, b1, W2, b2: F.gelu(x @ W1 + b1) @ W2,
            ),
            Mistake(
                "no-b1",
                "you left out the first bias b1: GELU(x W1 + b1) W2 + b2.",
                lambda x, W1, b1, W2, b2: F.gelu(x @ W1) @ W2 + b2,
            ),
            Mistake(
                "residual",
                "you added x to the output. The residual connection belongs to the block, "
                "not to the feed-forward function: return GELU(x W1 + b1) W2 + b2.",
                lambda x, W1, b1, W2, b2: x + F.gelu(x @ W1 + b1) @ W2 + b2,
            ),
        ],
    )
)


# --------------------------------------------------------------------------- block_forward


class BlockParams(dict):
    """The weights of one block (a plain dict) that prints short in a check's message."""

    def __repr__(self) -> str:
        width = self["ln1_weight"].shape[0] if "ln1_weight" in self else "?"
        return f"<block weights, C={width}: {', '.join(self)}>"


def random_block_params(C: int, generator: torch.Generator | None = None, dtype=F64) -> dict:
    """Random weights for :func:`lmlab.transformer.block_forward` with ``C`` features."""
    g = generator if generator is not None else _gen(0)
    r = lambda *shape, s=1.0: torch.randn(*shape, generator=g, dtype=dtype) * s  # noqa: E731
    return BlockParams({
        "ln1_weight": 1 + r(C, s=0.2), "ln1_bias": r(C, s=0.2),
        "W_qkv": r(C, 3 * C, s=1.0 / math.sqrt(C)), "b_qkv": r(3 * C, s=0.2),
        "W_o": r(C, C, s=1.0 / math.sqrt(C)), "b_o": r(C, s=0.2),
        "ln2_weight": 1 + r(C, s=0.2), "ln2_bias": r(C, s=0.2),
        "W1": r(C, 4 * C, s=1.0 / math.sqrt(C)), "b1": r(4 * C, s=0.2),
        "W2": r(4 * C, C, s=1.0 / math.sqrt(4 * C)), "b2": r(C, s=0.2),
    })


def _block_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed + 2)
    cases = []
    for C, H in [(8, 2), (12, 3), (16, 4), (12, 2)]:
        B, T = rng.randint(1, 3), rng.randint(3, 7)
        x = torch.randn(B, T, C, generator=g, dtype=F64)
        cases.append(Case((x, random_block_params(C, g), H), label="random"))
    cases.append(Case((torch.randn(2, 1, 8, generator=g, dtype=F64), random_block_params(8, g), 2),
                      label="edge: one token"))
    cases.append(Case((torch.randn(1, 5, 6, generator=g, dtype=F64), random_block_params(6, g), 1),
                      label="edge: one head"))
    return cases


def _block(x, p, H, *, post=False, causal=True, scale="head", split="ok", residual="ok",
           act=F.gelu, softmax_dim=-1, order=(0, 1, 2)):
    """A configurable block, for the catalogue of wrong variants."""
    B, T, C = x.shape
    D = C // H
    ln = lambda t, i: _ln(t, p[f"ln{i}_weight"], p[f"ln{i}_bias"])  # noqa: E731
    ffn = lambda t: act(t @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]  # noqa: E731

    def attn(t):
        qkv = (t @ p["W_qkv"] + p["b_qkv"]).split(C, dim=-1)
        q, k, v = (qkv[i] for i in order)
        if split == "ok":
            q, k, v = (u.view(B, T, H, D).transpose(1, 2) for u in (q, k, v))
        else:  # reshaped straight to (B, H, T, D): mixes tokens and heads
            q, k, v = (u.reshape(B, H, T, D) for u in (q, k, v))
        s = q @ k.transpose(-2, -1)
        s = s / {"head": math.sqrt(D), "width": math.sqrt(C), "none": 1.0}[scale]
        if causal:
            s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf)
        y = torch.softmax(s, dim=softmax_dim) @ v
        return y.transpose(1, 2).reshape(B, T, C) @ p["W_o"] + p["b_o"]

    if post:
        x = ln(x + attn(x), 1)
        return ln(x + ffn(x), 2)
    if residual == "none":
        x = attn(ln(x, 1))
        return x + ffn(ln(x, 2))
    if residual == "normed":
        h = ln(x, 1)
        x = h + attn(h)
        h = ln(x, 2)
        return h + ffn(h)
    x = x + attn(ln(x, 1))
    return x + ffn(ln(x, 2))


check_block_forward = make_check(
    Part(
        name="block_forward",
        chapter=CHAPTER,
        reference=transformer.block_forward,
        cases=_block_cases,
        compare=close(rtol=1e-6, atol=1e-6),
        guard=["lmlab.transformer.block_forward", "lmlab.transformer.Block", "lmlab.transformer.GPT",
               "lmlab.transformer.CausalSelfAttention"],
        mistakes=[
            Mistake(
                "post-ln",
                "you normalized after adding the residual (post-LN: x = LN(x + attn(x))). "
                "The spec asks for pre-LN: x = x + attn(LN1(x)), then x = x + ffn(LN2(x)); "
                "the residual stream itself is never normalized.",
                lambda x, p, H: _block(x, p, H, post=True),
            ),
            Mistake(
                "residual-from-normed",
                "your residual adds the normalized x: LN(x) + attn(LN(x)). The residual "
                "carries the raw stream: x + attn(LN1(x)).",
                lambda x, p, H: _block(x, p, H, residual="normed"),
            ),
            Mistake(
                "no-attention-residual",
                "you dropped the residual around attention: x = x + attn(LN1(x)), not "
                "x = attn(LN1(x)).",
                lambda x, p, H: _block(x, p, H, residual="none"),
            ),
            Mistake(
                "not-causal",
                "no causal mask: each token also attended to later tokens. Set the scores "
                "with key j > query i to -inf before the softmax.",
                lambda x, p, H: _block(x, p, H, causal=False),
            ),
            Mistake(
                "scale-by-width",
                "you scaled the scores by 1/sqrt(C), the model width. Each head's scores "
                "are scaled by 1/sqrt(D) with D = C / n_heads, its own size.",
                lambda x, p, H: _block(x, p, H, scale="width"),
            ),
            Mistake(
                "no-scale",
                "you forgot to divide the scores q·kᵀ by sqrt(D) (D = C / n_heads).",
                lambda x, p, H: _block(x, p, H, scale="none"),
            ),
            Mistake(
                "heads-reshaped",
                "you reshaped (B, T, C) straight into (B, H, T, D), which mixes positions and "
                "heads. Split the features first, then swap axes: "
                ".view(B, T, H, D).transpose(1, 2) (and back the same way).",
                lambda x, p, H: _block(x, p, H, split="reshape"),
            ),
            Mistake(
                "softmax-queries",
                "you took the softmax over the queries axis (dim=-2). Each query's weights "
                "over the keys must sum to 1: softmax over dim=-1.",
                lambda x, p, H: _block(x, p, H, softmax_dim=-2),
            ),
            Mistake(
                "kqv-order",
                "you split W_qkv's output in the wrong order. Its columns are [q | k | v], "
                "each C wide.",
                lambda x, p, H: _block(x, p, H, order=(1, 0, 2)),
            ),
            Mistake(
                "relu",
                "you used ReLU in the feed-forward network; the spec says GELU (exact, "
                "F.gelu).",
                lambda x, p, H: _block(x, p, H, act=F.relu),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- gpt_param_count


def _count_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for _ in range(6):
        cases.append(Case((rng.randint(50, 60000), rng.choice([64, 128, 256, 1024]), rng.randint(1, 24),
                           64 * rng.randint(1, 16)), {"tied": rng.random() < 0.5}, label="random"))
    cases += [
        Case((50257, 1024, 12, 768), label="GPT-2 small (tied)"),
        Case((50257, 1024, 48, 1600), {"tied": False}, label="GPT-2 XL, untied"),
        Case((65, 256, 6, 384), {"tied": True}, label="nanoGPT's Shakespeare model"),
    ]
    return cases


def _count(V, T, L, C, tied=True, *, pos=True, biases=True, untie=False, norms=True, final=True,
           ln_vectors=2, hidden=4):
    b = 1 if biases else 0
    per_layer = (3 * C * C + b * 3 * C) + (C * C + b * C) + (hidden * C * C + b * hidden * C) \
        + (hidden * C * C + b * C)
    if norms:
        per_layer += 2 * ln_vectors * C
    total = V * C + (T * C if pos else 0) + L * per_layer
    if final and norms:
        total += ln_vectors * C
    if untie or not tied:
        total += V * C
    return total


check_gpt_param_count = make_check(
    Part(
        name="gpt_param_count",
        chapter=CHAPTER,
        reference=transformer.gpt_param_count,
        cases=_count_cases,
        compare=exact(),
        guard=["lmlab.transformer.gpt_param_count", "lmlab.transformer.param_count",
               "lmlab.transformer.param_breakdown", "lmlab.transformer.GPT",
               "lmlab.transformer.count_parameters"],
        mistakes=[
            Mistake(
                "tied-twice",
                "you counted the tied weights twice. With tied=True the output head reuses "
                "the token embedding matrix: count V·C once.",
                lambda V, T, L, C, tied=True: _count(V, T, L, C, tied, untie=True),
            ),
            Mistake(
                "no-positions",
                "you forgot the learned position embeddings: block_size · n_embd parameters.",
                lambda V, T, L, C, tied=True: _count(V, T, L, C, tied, pos=False),
            ),
            Mistake(
                "no-biases",
                "you forgot the biases of the linear layers: 3C (qkv) + C (attention output) "
                "+ 4C (first FFN layer) + C (second) per block.",
                lambda V, T, L, C, tied=True: _count(V, T, L, C, tied, biases=False),
            ),
            Mistake(
                "no-norms",
                "you forgot the LayerNorms: each has a weight and a bias of C numbers; there "
                "are two per block and a final one.",
                lambda V, T, L, C, tied=True: _count(V, T, L, C, tied, norms=False),
            ),
            Mistake(
                "no-final-norm",
                "you forgot the final LayerNorm (ln_f, 2C parameters) after the last block.",
                lambda V, T, L, C, tied=True: _count(V, T, L, C, tied, final=False),
            ),
            Mistake(
                "norm-weight-only",
                "each LayerNorm has two vectors of C parameters: the gain (weight) and the "
                "shift (bias).",
                lambda V, T, L, C, tied=True: _count(V, T, L, C, tied, ln_vectors=1),
            ),
            Mistake(
                "ffn-width",
                "the feed-forward hidden layer is 4·n_embd wide: W1 is C×4C and W2 is 4C×C.",
                lambda V, T, L, C, tied=True: _count(V, T, L, C, tied, hidden=1),
            ),
            Mistake(
                "approximation",
                "you returned the approximation 12·L·C² (+ embeddings). The exercise asks for "
                "the exact count, biases and LayerNorms included.",
                lambda V, T, L, C, tied=True: 12 * L * C * C + V * C + T * C + (0 if tied else V * C),
            ),
        ],
    )
)


# =========================================================================== modern blocks
# The pieces of a Llama-style block (chapter 5, "From GPT-2 to Llama"). References live in
# lmlab.transformer (rms_norm, swiglu, repeat_kv), lmlab.rope and lmlab.moe.

# --------------------------------------------------------------------------- rms_norm


def _rms_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed + 11)
    cases = []
    for _ in range(5):
        B, T, C = rng.randint(2, 4), rng.randint(2, 5), rng.randint(3, 16)
        x = torch.randn(B, T, C, generator=g, dtype=F64) * rng.uniform(0.5, 3) + rng.uniform(-1, 1)
        w = 1 + 0.5 * torch.randn(C, generator=g, dtype=F64)
        cases.append(Case((x, w), label="random (B, T, C)"))
    C = 7
    w = 1 + 0.3 * torch.randn(C, generator=g, dtype=F64)
    cases += [
        Case((torch.randn(3, 4, C, generator=g, dtype=F64) * 1e-3, w),
             label="edge: tiny values, where eps matters"),
        Case((torch.randn(5, C, generator=g, dtype=F64) * 0.3, w), {"eps": 0.1},
             label="edge: (T, C) input, eps=0.1"),
        Case((torch.randn(2, 3, C, generator=g, dtype=F64) + 10.0, w), label="edge: large mean"),
        Case((torch.zeros(1, 2, C, dtype=F64), w), label="edge: zero rows"),
    ]
    return cases


def _rms(x, w, eps=1e-6, *, center=False, eps_outside=False, mean=True, weight=True):
    if center:
        x = x - x.mean(-1, keepdim=True)
    ms = x.pow(2).mean(-1, keepdim=True) if mean else x.pow(2).sum(-1, keepdim=True)
    denom = ms.sqrt() + eps if eps_outside else (ms + eps).sqrt()
    return x / denom * (w if weight else 1.0)


def _rms_reference(x, weight, eps=1e-6):
    return transformer.rms_norm(x, weight, eps)


check_rms_norm = make_check(
    Part(
        name="rms_norm",
        chapter=CHAPTER,
        reference=_rms_reference,
        cases=_rms_cases,
        compare=close(rtol=1e-6, atol=1e-6),
        guard=["lmlab.transformer.rms_norm", "lmlab.transformer.RMSNorm",
               "torch.nn.RMSNorm", "torch.nn.functional.rms_norm", "torch.rms_norm"],
        mistakes=[
            Mistake(
                "subtract-mean",
                "you subtracted the mean, as LayerNorm does. RMSNorm drops the centring: "
                "y = x / sqrt(mean(x²) + eps) · weight, with the mean of the squares of x "
                "itself.",
                lambda x, w, eps=1e-6: _rms(x, w, eps, center=True),
            ),
            Mistake(
                "eps-outside",
                "you added eps outside the square root: x / (sqrt(mean(x²)) + eps). The "
                "formula is x / sqrt(mean(x²) + eps).",
                lambda x, w, eps=1e-6: _rms(x, w, eps, eps_outside=True),
            ),
            Mistake(
                "eps-ignored",
                "your result ignores the eps argument (it always uses 1e-6): a caller who "
                "passes eps=0.1 must get sqrt(mean(x²) + 0.1) in the denominator.",
                lambda x, w, eps=1e-6: _rms(x, w, 1e-6),
            ),
            Mistake(
                "no-eps",
                "you left eps out. It keeps the division finite when a vector is all zeros: "
                "divide by sqrt(mean(x²) + eps).",
                lambda x, w, eps=1e-6: _rms(x, w, 0.0),
            ),
            Mistake(
                "l2-norm",
                "you divided by the vector's length sqrt(sum(x²)), not its root mean square "
                "sqrt(mean(x²)): the output is too small by a factor sqrt(C).",
                lambda x, w, eps=1e-6: _rms(x, w, eps, mean=False),
            ),
            Mistake(
                "std",
                "you divided by the standard deviation sqrt(var(x) + eps), which measures "
                "the spread around the mean. RMSNorm divides by sqrt(mean(x²) + eps).",
                lambda x, w, eps=1e-6: x / torch.sqrt(x.var(-1, unbiased=False, keepdim=True)
                                                      + eps) * w,
            ),
            Mistake(
                "no-weight",
                "you returned the normalized x without the learned gain: multiply by weight.",
                lambda x, w, eps=1e-6: _rms(x, w, eps, weight=False),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- apply_rope


def _rope_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed + 12)
    cases = []
    for D in (4, 6, 8, 12, 16):
        B, H, T = rng.randint(1, 2), rng.randint(1, 3), rng.randint(2, 7)
        x = torch.randn(B, H, T, D, generator=g, dtype=F64)
        offset, theta = rng.choice([0, 3, 17, 100]), rng.choice([10000.0, 500000.0, 100.0])
        cases.append(Case((x,), {"offset": offset, "theta": theta}, label="random (B, H, T, D)"))
    cases += [
        Case((torch.randn(2, 3, 5, 10, generator=g, dtype=F64),), {"offset": 7},
             label="offset=7, default theta"),
        Case((torch.randn(1, 2, 1, 8, generator=g, dtype=F64),), {"offset": 41, "theta": 10000.0},
             label="edge: one new token at cache position 41"),
        Case((torch.randn(1, 1, 4, 6, generator=g, dtype=F64),), {"offset": 0, "theta": 10.0},
             label="edge: small theta"),
    ]
    return cases


def _rope(x, offset=0, theta=10000.0, *, style="half", sign=-1.0, exponent=2.0,
          use_offset=True, clockwise=False):
    D, T = x.shape[-1], x.shape[-2]
    i = torch.arange(D // 2, dtype=F64)
    inv_freq = theta ** (sign * exponent * i / D)
    pos = torch.arange(T, dtype=F64) + (offset if use_offset else 0)
    angle = pos[:, None] * inv_freq[None, :]  # (T, D/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if clockwise:
        sin = -sin
    if style == "half":
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def _rope_reference(x, offset=0, theta=10000.0):
    return rope.apply_rope(x, offset=offset, theta=theta, style="half")


check_apply_rope = make_check(
    Part(
        name="apply_rope",
        chapter=CHAPTER,
        reference=_rope_reference,
        cases=_rope_cases,
        # lmlab computes the angles in float32 (as Hugging Face does): at position ~100 they
        # carry ~1e-5 of rounding, so a float64 solution differs by that much. Every
        # catalogued mistake moves the output by far more than 1e-4.
        compare=close(rtol=1e-4, atol=1e-4),
        guard=["lmlab.rope.apply_rope", "lmlab.rope.rope_frequencies"],
        mistakes=[
            Mistake(
                "interleaved",
                "you rotated the interleaved pairs (x[0], x[1]), (x[2], x[3]), ... (the "
                "RoFormer / Meta convention). The spec is the half-split convention (Hugging "
                "Face Llama): feature i pairs with feature i + D/2.",
                lambda x, offset=0, theta=10000.0: _rope(x, offset, theta, style="interleaved"),
            ),
            Mistake(
                "no-offset",
                "your positions start at 0 whatever the offset: with a KV cache the new "
                "tokens sit at positions offset, offset + 1, ...; the angle is "
                "(offset + t)·θ_i.",
                lambda x, offset=0, theta=10000.0: _rope(x, offset, theta, use_offset=False),
            ),
            Mistake(
                "exponent-sign",
                "your frequencies grow with i: θ_i = theta^(+2i/D). They must fall from 1 "
                "to about 1/theta: θ_i = theta^(-2i/D) = 1 / theta^(2i/D).",
                lambda x, offset=0, theta=10000.0: _rope(x, offset, theta, sign=1.0),
            ),
            Mistake(
                "exponent-i-over-d",
                "your frequencies use theta^(-i/D); with D/2 pairs the exponent is -2i/D "
                "(i = 0 … D/2 − 1), so the slowest pair turns at about 1/theta.",
                lambda x, offset=0, theta=10000.0: _rope(x, offset, theta, exponent=1.0),
            ),
            Mistake(
                "clockwise",
                "you rotated the wrong way (the sin terms have the opposite signs). Rotate "
                "by +angle: (x1·cos − x2·sin, x1·sin + x2·cos).",
                lambda x, offset=0, theta=10000.0: _rope(x, offset, theta, clockwise=True),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- swiglu


def _swiglu_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed + 13)
    cases = []

    def make(shape, C, H, label, scale=1.0):
        x = torch.randn(*shape, C, generator=g, dtype=F64) * scale
        w1 = torch.randn(H, C, generator=g, dtype=F64) / math.sqrt(C)
        w3 = torch.randn(H, C, generator=g, dtype=F64) / math.sqrt(C)
        w2 = torch.randn(C, H, generator=g, dtype=F64) / math.sqrt(H)
        cases.append(Case((x, w1, w2, w3), label=label))

    for _ in range(4):
        C = rng.randint(3, 12)
        make((rng.randint(1, 3), rng.randint(1, 5)), C, rng.randint(C + 1, 3 * C),
             "random (B, T, C)", scale=1.5)
    make((5,), 4, 11, "edge: (T, C) input")
    make((2, 3), 8, 5, "edge: hidden narrower than C")
    make((1, 4), 6, 16, "edge: large inputs", scale=4.0)
    return cases


def _swiglu(x, w1, w2, w3, *, gate=F.silu, where="w1"):
    a, b = x @ w1.T, x @ w3.T
    if where == "w1":
        h = gate(a) * b
    elif where == "w3":
        h = a * gate(b)
    elif where == "both":
        h = gate(a) * gate(b)
    elif where == "product":
        h = gate(a * b)
    else:  # no second branch
        h = gate(a)
    return h @ w2.T


def _swiglu_reference(x, w1, w2, w3):
    return transformer.swiglu(x, w1, w2, w3)


check_swiglu = make_check(
    Part(
        name="swiglu",
        chapter=CHAPTER,
        reference=_swiglu_reference,
        cases=_swiglu_cases,
        compare=close(rtol=1e-6, atol=1e-6),
        guard=["lmlab.transformer.swiglu", "lmlab.transformer.SwiGLU"],
        mistakes=[
            Mistake(
                "silu-wrong-branch",
                "you applied SiLU to the w3 branch. The gate is the w1 branch: "
                "(SiLU(x w1ᵀ) ⊙ x w3ᵀ) w2ᵀ.",
                lambda x, w1, w2, w3: _swiglu(x, w1, w2, w3, where="w3"),
            ),
            Mistake(
                "silu-both",
                "you applied SiLU to both branches. Only the w1 branch goes through SiLU; "
                "the w3 branch stays linear: (SiLU(x w1ᵀ) ⊙ x w3ᵀ) w2ᵀ.",
                lambda x, w1, w2, w3: _swiglu(x, w1, w2, w3, where="both"),
            ),
            Mistake(
                "silu-after-product",
                "you applied SiLU after multiplying the branches. SiLU acts on x w1ᵀ alone, "
                "then the result is multiplied by x w3ᵀ.",
                lambda x, w1, w2, w3: _swiglu(x, w1, w2, w3, where="product"),
            ),
            Mistake(
                "no-gate",
                "the w3 branch is missing: SwiGLU multiplies SiLU(x w1ᵀ) elementwise by "
                "x w3ᵀ before w2.",
                lambda x, w1, w2, w3: _swiglu(x, w1, w2, w3, where="none"),
            ),
            Mistake(
                "sigmoid-gate",
                "you gated with sigmoid(x w1ᵀ) (the original GLU). SwiGLU's gate is "
                "SiLU(z) = z·sigmoid(z).",
                lambda x, w1, w2, w3: _swiglu(x, w1, w2, w3, gate=torch.sigmoid),
            ),
            Mistake(
                "gelu",
                "you used GELU (that is GeGLU). SwiGLU uses SiLU: F.silu(z) = z·sigmoid(z).",
                lambda x, w1, w2, w3: _swiglu(x, w1, w2, w3, gate=F.gelu),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- repeat_kv


def _repeat_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed + 14)
    cases = []
    for _ in range(4):
        B, H_kv, T, D = rng.randint(1, 2), rng.randint(2, 4), rng.randint(3, 6), rng.randint(2, 5)
        x = torch.randn(B, H_kv, T, D, generator=g, dtype=F64)
        cases.append(Case((x, rng.randint(2, 4)), label="random (B, H_kv, T, D)"))
    cases += [
        Case((torch.randn(2, 3, 4, 5, generator=g, dtype=F64), 1), label="edge: n_rep=1 (MHA)"),
        Case((torch.randn(1, 1, 5, 3, generator=g, dtype=F64), 4), label="edge: one KV head (MQA)"),
        Case((torch.randn(1, 2, 2, 2, generator=g, dtype=F64), 3), label="edge: T = D"),
    ]
    return cases


def _repeat_kv_reference(x, n_rep):
    return transformer.repeat_kv(x, n_rep)


def _repeat_mixed_time(x, n_rep):
    B, H, T, D = x.shape
    return x[:, :, :, None].expand(B, H, T, n_rep, D).reshape(B, H * n_rep, T, D)


check_repeat_kv = make_check(
    Part(
        name="repeat_kv",
        chapter=CHAPTER,
        reference=_repeat_kv_reference,
        cases=_repeat_cases,
        compare=exact(),
        guard=["lmlab.transformer.repeat_kv"],
        mistakes=[
            Mistake(
                "tiled",
                "you tiled the heads (x.repeat(1, n_rep, 1, 1) gives kv0, kv1, kv0, kv1, ...), "
                "so query head h reads the wrong group. Each KV head serves n_rep "
                "consecutive query heads: kv0, kv0, kv1, kv1, ... "
                "(x.repeat_interleave(n_rep, dim=1)).",
                lambda x, n_rep: x.repeat(1, n_rep, 1, 1),
            ),
            Mistake(
                "mixed-time",
                "you inserted the copies next to the time axis and reshaped: that mixes "
                "positions into the head axis. Insert them right after the head axis: "
                "x[:, :, None].expand(B, H_kv, n_rep, T, D).reshape(B, H_kv·n_rep, T, D).",
                _repeat_mixed_time,
            ),
        ],
    )
)


# --------------------------------------------------------------------------- moe_route


def _moe_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed + 15)
    cases = []
    for renormalize in (True, True, True, False, False):
        N, E = rng.randint(3, 9), rng.randint(4, 10)
        logits = torch.randn(N, E, generator=g, dtype=F64) * rng.uniform(0.5, 3)
        cases.append(Case((logits, rng.randint(2, min(3, E - 1))), {"renormalize": renormalize},
                          label="random (N, E)"))
    cases += [
        Case((torch.randn(6, 8, generator=g, dtype=F64), 2), label="Mixtral: 8 experts, top-2"),
        Case((torch.randn(5, 4, generator=g, dtype=F64), 1), {"renormalize": True},
             label="edge: k=1"),
        Case((torch.randn(1, 6, generator=g, dtype=F64) * 20, 3), {"renormalize": False},
             label="edge: one token, large logits"),
    ]
    return cases


def _route(logits, k, renormalize=True, *, mode="ok", largest=True, dim=-1):
    top, idx = torch.topk(logits, k, dim=-1, largest=largest)
    if mode == "all":
        renormalize = False
    elif mode == "always":
        renormalize = True
    if mode == "raw":
        return top, idx
    if renormalize:
        return torch.softmax(top, dim=dim), idx
    return torch.softmax(logits, dim=-1).gather(-1, idx), idx


def _moe_reference(router_logits, k, renormalize=True):
    return moe.moe_route(router_logits, k, renormalize=renormalize)


check_moe_route = make_check(
    Part(
        name="moe_route",
        chapter=CHAPTER,
        reference=_moe_reference,
        cases=_moe_cases,
        compare=close(rtol=1e-6, atol=1e-6),
        guard=["lmlab.moe.moe_route", "lmlab.moe.MoEFeedForward"],
        mistakes=[
            Mistake(
                "softmax-all-experts",
                "your weights are the softmax over all E experts, restricted to the top k: "
                "they sum to less than 1. With renormalize=True (Mixtral) take the softmax "
                "over the k chosen logits only, which is the same as renormalizing the "
                "chosen probabilities to sum to 1.",
                lambda logits, k, renormalize=True: _route(logits, k, mode="all"),
            ),
            Mistake(
                "renormalize-ignored",
                "you renormalized the top-k weights even with renormalize=False. Then the "
                "weights are the full softmax's probabilities of the chosen experts "
                "(softmax over all E, gathered at the top-k indices).",
                lambda logits, k, renormalize=True: _route(logits, k, mode="always"),
            ),
            Mistake(
                "no-softmax",
                "you returned the raw top-k logits as weights. The weights are "
                "probabilities: a softmax (over the top-k logits when renormalize=True).",
                lambda logits, k, renormalize=True: _route(logits, k, mode="raw"),
            ),
            Mistake(
                "smallest-k",
                "you picked the k experts with the smallest logits. The router sends each "
                "token to its k largest: torch.topk(logits, k, dim=-1).",
                lambda logits, k, renormalize=True: _route(logits, k, renormalize,
                                                           largest=False),
            ),
            Mistake(
                "softmax-over-tokens",
                "you took the softmax over the tokens axis (dim=0). Each token's k weights "
                "are normalized on their own: softmax over the last axis.",
                lambda logits, k, renormalize=True: _route(logits, k, renormalize, dim=0),
            ),
            Mistake(
                "swapped-outputs",
                "you returned (indices, weights). Return (weights, indices), both (N, k).",
                lambda logits, k, renormalize=True: _route(logits, k, renormalize)[::-1],
            ),
        ],
    )
)
