"""Checks for exercise ch04_attention: softmax, attention, masks, heads, online softmax."""

from __future__ import annotations

import math

import torch

from lmlab import attention as A
from lmlab.checks.core import Case, Mistake, Part, close, exact, make_check

__all__ = [
    "check_softmax",
    "check_attention",
    "check_causal_mask",
    "check_split_heads",
    "check_merge_heads",
    "check_multi_head_attention",
    "check_online_softmax_step",
]

CHAPTER = "ch04_attention"
NEG_INF = -math.inf


def _gen(seed: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 * seed + salt)


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


# --------------------------------------------------------------------------- softmax


def _softmax_cases(seed: int) -> list[Case]:
    g = _gen(seed, 1)
    with_inf = _randn(g, 4, 6, scale=2.0)
    with_inf[torch.rand(4, 6, generator=g) < 0.4] = NEG_INF
    with_inf[:, 0] = _randn(g, 4)  # masked entries, but never a whole row
    far_apart = torch.stack([_randn(g, 5) + 100.0, _randn(g, 5) - 100.0])
    return [
        Case((_randn(g, 4, 7, scale=3.0),), label="random (4, 7)"),
        Case((_randn(g, 2, 3, 5, scale=2.0),), label="random (2, 3, 5)"),
        Case((_randn(g, 6),), label="a single vector"),
        Case((_randn(g, 3, 4),), {"dim": 0}, label="dim=0"),
        Case((_randn(g, 2, 3, 4, scale=2.0),), {"dim": 1}, label="dim=1 of three"),
        Case((_randn(g, 2, 2, 3, 3, scale=4.0),), label="attention scores (B, H, T, T)"),
        Case((_randn(g, 3, 5, scale=3.0) + 95.0,), label="edge: large inputs (exp overflows float32)"),
        Case((far_apart,), label="edge: rows around +100 and -100"),
        Case((with_inf,), label="edge: -inf entries (masked), no row fully masked"),
        Case((torch.zeros(2, 3),), label="edge: all equal"),
    ]


def _plain_softmax(x, dim=-1):
    # what torch.softmax does: NaN on fully masked rows, like a student's version
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_no_max(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_global_max(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_global_sum(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum()


check_softmax = make_check(
    Part(
        name="softmax",
        chapter=CHAPTER,
        reference=A.softmax,
        cases=_softmax_cases,
        compare=close(rtol=1e-4, atol=1e-6),
        guard=[
            "lmlab.attention.softmax",
            "torch.softmax",
            "torch.nn.functional.softmax",
            "torch.Tensor.softmax",
            "torch.special.softmax",
            "torch.nn.Softmax",
            "torch._softmax",
            "torch.log_softmax",
            "torch.Tensor.log_softmax",
            "torch.nn.functional.log_softmax",
        ],
        pure=True,
        mistakes=[
            Mistake(
                "no-max",
                "exp overflows: exp(100) is inf in float32 and inf/inf is NaN. Subtract the "
                "maximum along dim before exp (x - x.amax(dim, keepdim=True)); it cancels in "
                "the ratio, so the result is unchanged, but every exp is now <= 1.",
                _softmax_no_max,
            ),
            Mistake(
                "global-max",
                "you subtracted the maximum of the whole tensor, not of each slice along dim. A "
                "row far below the global max underflows to exp(...) = 0 everywhere and gives "
                "0/0 = NaN: use x.amax(dim=dim, keepdim=True).",
                _softmax_global_max,
            ),
            Mistake(
                "global-sum",
                "you divided by the sum of the whole tensor; each slice along dim must be "
                "normalised by its own sum: e.sum(dim=dim, keepdim=True).",
                _softmax_global_sum,
            ),
            Mistake(
                "wrong-axis-0",
                "you normalised along dim 0 whatever dim was asked for. Use the dim argument: "
                "x.amax(dim=dim, keepdim=True) and e.sum(dim=dim, keepdim=True).",
                lambda x, dim=-1: _plain_softmax(x, dim=0),
            ),
            Mistake(
                "ignores-dim",
                "you always normalised along the last axis; the cases with dim=0 or dim=1 "
                "need the dim argument passed to both amax and sum.",
                lambda x, dim=-1: _plain_softmax(x, dim=-1),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- attention


def _random_mask(g: torch.Generator, *shape: int) -> torch.Tensor:
    mask = torch.rand(*shape, generator=g) < 0.6
    mask[..., 0] = True  # every query keeps at least one key
    return mask


def _attention_cases(seed: int) -> list[Case]:
    # The first cases have T_k == d, so that a q @ k without transpose runs and is named
    # instead of crashing; the later ones make T_q, T_k, d and d_v all different, so that
    # scaling by √T_k or √d_v instead of √d is caught.
    g = _gen(seed, 2)

    def qkv(*batch, T_q, d, d_v, T_k=None, scale=1.0):
        T_k = d if T_k is None else T_k
        return (_randn(g, *batch, T_q, d, scale=scale), _randn(g, *batch, T_k, d, scale=scale),
                _randn(g, *batch, T_k, d_v))

    return [
        Case(qkv(2, T_q=5, d=6, d_v=3), label="batch 2, T_q=5, T_k=d=6, d_v=3"),
        Case(qkv(T_q=4, d=8, d_v=5), label="no batch dimension"),
        Case(qkv(2, 2, T_q=4, d=4, d_v=4) + (A.causal_mask(4),), label="(B, H, T, d), causal mask"),
        Case(qkv(1, T_q=3, d=5, d_v=2) + (A.causal_mask(3, 5),),
             label="3 new queries after 2 cached keys, causal (bottom-right)"),
        Case(qkv(3, T_q=6, d=6, d_v=4) + (_random_mask(g, 3, 6, 6),), label="random boolean mask"),
        Case(qkv(2, T_q=5, d=5, d_v=3) + (A.padding_mask([5, 2], 5),), label="padding mask (B, 1, T_k)"),
        Case(qkv(2, T_q=4, d=7, d_v=3, scale=6.0), label="edge: large scores"),
        Case(qkv(1, T_q=1, d=3, d_v=2), label="edge: a single query"),
        Case(qkv(2, T_q=3, T_k=9, d=4, d_v=6), label="T_q=3, T_k=9, d=4, d_v=6 (all different)"),
        Case(qkv(1, T_q=2, T_k=7, d=16, d_v=3) + (A.causal_mask(2, 7),),
             label="T_q=2, T_k=7, d=16, d_v=3, causal (bottom-right)"),
        Case(qkv(2, T_q=4, T_k=2, d=9, d_v=25, scale=2.0) + (_random_mask(g, 2, 4, 2),),
             label="T_q=4, T_k=2, d=9, d_v=25, random mask"),
    ]


def _scores(q, k, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return q @ k.transpose(-2, -1) * scale


def _finish(scores, v, mask, *, fill=NEG_INF, dim=-1):
    if mask is not None:
        scores = scores.masked_fill(~mask, fill)
    return torch.softmax(scores, dim=dim) @ v


check_attention = make_check(
    Part(
        name="attention",
        chapter=CHAPTER,
        reference=A.scaled_dot_product_attention,
        cases=_attention_cases,
        compare=close(rtol=1e-4, atol=1e-5),
        guard=[
            "lmlab.attention.scaled_dot_product_attention",
            "lmlab.attention.flash_attention",
            "lmlab.attention._flash_rows",
            "lmlab.attention.multi_head_attention",
            "lmlab.attention.MultiHeadAttention",
            "torch.nn.functional.scaled_dot_product_attention",
            "torch._C._nn.scaled_dot_product_attention",
            "torch.nn.MultiheadAttention",
            "torch.nn.functional.multi_head_attention_forward",
        ],
        pure=True,
        helpers=["softmax"],
        mistakes=[
            Mistake(
                "no-scale",
                "the scores are not scaled: divide q @ kᵀ by √d (d = q.shape[-1]). Without it "
                "the scores grow like √d and the softmax saturates to one-hot weights.",
                lambda q, k, v, mask=None: _finish(_scores(q, k, 1.0), v, mask),
            ),
            Mistake(
                "scale-by-d",
                "you divided the scores by d; the scale is 1/√d (math.sqrt(q.shape[-1])): "
                "a dot product of d unit-variance terms has standard deviation √d.",
                lambda q, k, v, mask=None: _finish(_scores(q, k, 1.0 / q.shape[-1]), v, mask),
            ),
            Mistake(
                "scale-by-T_k",
                "you scaled the scores by 1/√T_k (the number of keys); the scale is 1/√d, "
                "with d = q.shape[-1] the width of a query and key vector.",
                lambda q, k, v, mask=None: _finish(_scores(q, k, k.shape[-2] ** -0.5), v, mask),
            ),
            Mistake(
                "scale-by-d_v",
                "you scaled the scores by 1/√d_v (the width of the values); the scale is "
                "1/√d with d = q.shape[-1], the width the dot products q · k are summed over.",
                lambda q, k, v, mask=None: _finish(_scores(q, k, v.shape[-1] ** -0.5), v, mask),
            ),
            Mistake(
                "softmax-over-queries",
                "you took the softmax over the queries axis (dim=-2); each query's weights "
                "must sum to 1 over the keys: softmax(..., dim=-1).",
                lambda q, k, v, mask=None: _finish(_scores(q, k), v, mask, dim=-2),
            ),
            Mistake(
                "no-transpose",
                "you multiplied q @ k without transposing k. It only runs when T_k == d (it "
                "fails on the other inputs); the scores are q @ k.transpose(-2, -1) "
                "(query i · key j).",
                lambda q, k, v, mask=None: _finish(q @ k / math.sqrt(q.shape[-1]), v, mask),
            ),
            Mistake(
                "mask-ignored",
                "the mask is ignored: where mask is False the score must become -inf before "
                "the softmax (scores.masked_fill(~mask, float('-inf'))).",
                lambda q, k, v, mask=None: _finish(_scores(q, k), v, None),
            ),
            Mistake(
                "mask-zero",
                "you filled masked scores with 0. A score of 0 still gets weight exp(0 - max) "
                "> 0; fill with -inf so that its weight is exactly 0.",
                lambda q, k, v, mask=None: _finish(_scores(q, k), v, mask, fill=0.0),
            ),
            Mistake(
                "mask-inverted",
                "your mask is inverted: here True means 'may attend' (as in "
                "torch.nn.functional.scaled_dot_product_attention), so fill where the mask is "
                "False: scores.masked_fill(~mask, float('-inf')).",
                lambda q, k, v, mask=None: _finish(_scores(q, k), v, None if mask is None else ~mask),
            ),
            Mistake(
                "mask-after-softmax",
                "you applied the mask to the weights after the softmax, so the remaining "
                "weights no longer sum to 1. Mask the scores (with -inf) before the softmax.",
                lambda q, k, v, mask=None: (
                    torch.softmax(_scores(q, k), dim=-1) * (1.0 if mask is None else mask.float())
                ) @ v,
            ),
        ],
    )
)


# --------------------------------------------------------------------------- causal mask


def _causal_cases(seed: int) -> list[Case]:
    g = _gen(seed, 3)
    sizes = torch.randint(2, 12, (5,), generator=g).tolist()
    return [Case((T,), label="random") for T in sizes] + [
        Case((1,), label="edge: T=1"),
        Case((2,), label="edge: T=2"),
        Case((16,), label="edge: T=16"),
    ]


check_causal_mask = make_check(
    Part(
        name="causal_mask",
        chapter=CHAPTER,
        reference=A.causal_mask,
        cases=_causal_cases,
        compare=exact(),
        guard=["lmlab.attention.causal_mask"],
        mistakes=[
            Mistake(
                "future",
                "your mask lets each token see the future (upper triangle): query i may "
                "attend to keys j <= i, the lower triangle, torch.tril.",
                lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
            ),
            Mistake(
                "one-ahead",
                "your mask lets each token see one step into the future (torch.tril(..., "
                "diagonal=1)): query i may attend to keys j <= i only, torch.tril with the "
                "default diagonal=0.",
                lambda T: torch.ones(T, T, dtype=torch.bool).tril(1),
            ),
            Mistake(
                "no-self",
                "you left out the diagonal: a token may attend to itself (j <= i, not j < i), "
                "else the first token sees nothing at all.",
                lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1),
            ),
            Mistake(
                "inverted",
                "your mask is True where attention is forbidden (the convention of "
                "nn.MultiheadAttention's attn_mask). Here True means 'may attend': "
                "return the lower triangle, torch.ones(T, T, dtype=torch.bool).tril().",
                lambda T: ~torch.ones(T, T, dtype=torch.bool).tril(),
            ),
            Mistake(
                "float",
                "the pattern is right but the dtype is float; return a boolean mask "
                "(dtype=torch.bool), True where query i may attend to key j.",
                lambda T: torch.ones(T, T).tril(),
            ),
            Mistake(
                "additive",
                "you returned an additive mask (0 and -inf); this exercise wants the boolean "
                "form, True where query i may attend to key j.",
                lambda T: torch.zeros(T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), NEG_INF),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- heads


def _split_cases(seed: int) -> list[Case]:
    g = _gen(seed, 4)
    cases = []
    for B, T, H, d in [(2, 5, 3, 4), (1, 7, 2, 3), (3, 4, 4, 2), (2, 6, 8, 1)]:
        cases.append(Case((_randn(g, B, T, H * d), H), label=f"B={B}, T={T}, C={H * d}, n_heads={H}"))
    cases.append(Case((torch.arange(2 * 3 * 6, dtype=torch.float32).reshape(2, 3, 6), 2),
                      label="edge: x = arange, easy to read"))
    cases.append(Case((_randn(g, 2, 1, 6), 3), label="edge: T=1"))
    return cases


def _merge_cases(seed: int) -> list[Case]:
    g = _gen(seed, 5)
    cases = []
    for B, H, T, d in [(2, 3, 5, 4), (1, 2, 7, 3), (3, 4, 4, 2), (2, 8, 6, 1)]:
        cases.append(Case((_randn(g, B, H, T, d),), label=f"B={B}, n_heads={H}, T={T}, d_head={d}"))
    cases.append(Case((torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).reshape(2, 2, 3, 3),),
                      label="edge: x = arange, easy to read"))
    return cases


def _split_interleaved(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)


check_split_heads = make_check(
    Part(
        name="split_heads",
        chapter=CHAPTER,
        reference=A.split_heads,
        cases=_split_cases,
        compare=exact(),
        guard=["lmlab.attention.split_heads"],
        mistakes=[
            Mistake(
                "reshape-only",
                "you reshaped (B, T, C) straight to (B, n_heads, T, d): that cuts the flat "
                "memory in the wrong place and mixes time steps into heads. Reshape to "
                "(B, T, n_heads, d) first, then transpose(1, 2).",
                lambda x, n_heads: x.reshape(x.shape[0], n_heads, x.shape[1], x.shape[2] // n_heads),
            ),
            Mistake(
                "interleaved",
                "you split the channels along the wrong axis: head h must own the contiguous "
                "channels [h·d, (h+1)·d), i.e. reshape to (B, T, n_heads, d), not (B, T, d, n_heads).",
                _split_interleaved,
            ),
            Mistake(
                "no-transpose",
                "the heads are split but not moved in front of time: the result must be "
                "(B, n_heads, T, d), so transpose(1, 2) after the reshape.",
                lambda x, n_heads: x.reshape(x.shape[0], x.shape[1], n_heads, x.shape[2] // n_heads),
            ),
        ],
    )
)


check_merge_heads = make_check(
    Part(
        name="merge_heads",
        chapter=CHAPTER,
        reference=A.merge_heads,
        cases=_merge_cases,
        compare=exact(),
        guard=["lmlab.attention.merge_heads"],
        mistakes=[
            Mistake(
                "reshape-only",
                "you reshaped (B, n_heads, T, d) straight to (B, T, n_heads·d): time steps and "
                "heads get mixed. Transpose to (B, T, n_heads, d) first, then reshape.",
                lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
            ),
            Mistake(
                "interleaved",
                "the channels come out interleaved (head 0 channel 0, head 1 channel 0, ...): "
                "the inverse of split_heads puts head h at channels [h·d, (h+1)·d). Transpose "
                "to (B, T, n_heads, d), then reshape.",
                lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1),
            ),
            Mistake(
                "summed-heads",
                "you added (or averaged) the heads together; merging concatenates them side "
                "by side, giving n_heads·d channels.",
                lambda x: x.sum(dim=1),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- multi-head


def _mha_cases(seed: int) -> list[Case]:
    g = _gen(seed, 6)

    def weights(C):
        return tuple(_randn(g, C, C, scale=C**-0.5) for _ in range(4))

    cases = []
    for B, T, C, H, mask, label in [
        (2, 5, 12, 3, None, "no mask"),
        (1, 6, 8, 2, A.causal_mask(6), "causal mask"),
        (3, 4, 16, 4, A.padding_mask([4, 2, 3], 4).unsqueeze(1), "padding mask (B, 1, 1, T)"),
        (2, 7, 6, 1, A.causal_mask(7), "one head"),
        (1, 3, 8, 8, None, "d_head = 1"),
    ]:
        args = (_randn(g, B, T, C),) + weights(C) + (H,)
        cases.append(Case(args, {"mask": mask} if mask is not None else {}, label=f"{label}, B={B} T={T} C={C} H={H}"))
    return cases


def _mha_variant(x, W_q, W_k, W_v, W_o, n_heads, mask=None, *, split=A.split_heads, scale_dim=None,
                 project=True, out=True, use_mask=True, linear=False):
    if linear:
        W_q, W_k, W_v, W_o = W_q.T, W_k.T, W_v.T, W_o.T
    if project:
        q, k, v = x @ W_q, x @ W_k, x @ W_v
    else:
        q = k = v = x
    q, k, v = (split(t, n_heads) for t in (q, k, v))
    d = q.shape[-1] if scale_dim is None else scale_dim
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if mask is not None and use_mask:
        scores = scores.masked_fill(~mask, NEG_INF)
    y = A.merge_heads(torch.softmax(scores, dim=-1) @ v)
    return y @ W_o if out else y


def _split_reshape_only(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, n_heads, T, C // n_heads)


check_multi_head_attention = make_check(
    Part(
        name="multi_head_attention",
        chapter=CHAPTER,
        reference=A.multi_head_attention,
        cases=_mha_cases,
        compare=close(rtol=1e-4, atol=1e-5),
        guard=[
            "lmlab.attention.multi_head_attention",
            "lmlab.attention.MultiHeadAttention",
            "torch.nn.functional.multi_head_attention_forward",
            "torch.nn.MultiheadAttention",
        ],
        helpers=["attention", "split_heads", "merge_heads", "softmax"],
        mistakes=[
            Mistake(
                "no-output-projection",
                "the heads are merged but not projected: finish with merged @ W_o, which "
                "mixes the heads' outputs.",
                lambda *a, **kw: _mha_variant(*a, **kw, out=False),
            ),
            Mistake(
                "scale-by-C",
                "you scaled the scores by 1/√C (the model dimension); each head works in "
                "d_head = C / n_heads dimensions, so scale by 1/√d_head.",
                lambda x, *a, **kw: _mha_variant(x, *a, **kw, scale_dim=x.shape[-1]),
            ),
            Mistake(
                "heads-wrong-axis",
                "the heads are split along the wrong axis: reshaping (B, T, C) straight to "
                "(B, n_heads, T, d) mixes time steps into heads. Reshape to (B, T, n_heads, d), "
                "then transpose(1, 2) (your split_heads).",
                lambda *a, **kw: _mha_variant(*a, **kw, split=_split_reshape_only),
            ),
            Mistake(
                "one-head",
                "you attended once over all C channels, ignoring n_heads: split the "
                "projected q, k, v into n_heads heads of C / n_heads channels each.",
                lambda x, W_q, W_k, W_v, W_o, n_heads, mask=None: _mha_variant(
                    x, W_q, W_k, W_v, W_o, 1, mask
                ),
            ),
            Mistake(
                "no-projections",
                "you used x itself as queries, keys and values (Q = K = V = x). Each has its "
                "own learned projection: Q = x @ W_q, K = x @ W_k, V = x @ W_v.",
                lambda *a, **kw: _mha_variant(*a, **kw, project=False),
            ),
            Mistake(
                "transposed-weights",
                "you multiplied by the transposed weights (x @ W.T, the nn.Linear "
                "convention). This exercise uses the math convention Q = x @ W_q.",
                lambda *a, **kw: _mha_variant(*a, **kw, linear=True),
            ),
            Mistake(
                "mask-ignored",
                "the mask is ignored: pass it to the attention of every head (it broadcasts "
                "to (B, n_heads, T, T)) and fill the scores where it is False with -inf.",
                lambda *a, **kw: _mha_variant(*a, **kw, use_mask=False),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- online softmax


def _online_cases(seed: int) -> list[Case]:
    g = _gen(seed, 7)

    def state_after_one_block(*batch, n, b, d_v, scale):
        s0 = _randn(g, *batch, n, b, scale=scale)
        v0 = _randn(g, *batch, b, d_v)
        empty = (torch.full((*batch, n, 1), NEG_INF), torch.zeros(*batch, n, 1), torch.zeros(*batch, n, d_v))
        return A.online_softmax_step(*empty, s0, v0)

    cases = []
    for batch, n, b, d_v, scale in [((), 4, 3, 2, 2.0), ((2,), 5, 4, 3, 3.0), ((2, 2), 3, 2, 4, 1.0)]:
        state = state_after_one_block(*batch, n=n, b=b, d_v=d_v, scale=scale)
        s = _randn(g, *batch, n, b, scale=scale * 1.5)  # some rows get a new max, some not
        v = _randn(g, *batch, b, d_v)
        cases.append(Case(state + (s, v), label=f"second block, rows={n}, block={b}"))
    n, b, d_v = 3, 4, 2
    empty = (torch.full((n, 1), NEG_INF), torch.zeros(n, 1), torch.zeros(n, d_v))
    cases.append(Case(empty + (_randn(g, n, b), _randn(g, b, d_v)), label="edge: first block (m = -inf, l = 0)"))
    state = state_after_one_block(n=3, b=2, d_v=2, scale=1.0)
    cases.append(Case(state + (_randn(g, 3, 2) + 50.0, _randn(g, 2, 2)), label="edge: new block far above the old max"))
    return cases


def _online_variant(m, l, acc, s, v, *, rescale_l=True, rescale_acc=True, inverted=False,
                    old_max=False, block_max=False):
    m_new = s.amax(dim=-1, keepdim=True) if block_max else torch.maximum(m, s.amax(dim=-1, keepdim=True))
    p = torch.exp(s - (m if old_max else m_new))
    r = torch.exp(m_new - m) if inverted else torch.exp(m - m_new)
    l_new = (l * r if rescale_l else l) + p.sum(dim=-1, keepdim=True)
    acc_new = (acc * r if rescale_acc else acc) + p @ v
    return m_new, l_new, acc_new


check_online_softmax_step = make_check(
    Part(
        name="online_softmax_step",
        chapter=CHAPTER,
        reference=A.online_softmax_step,
        cases=_online_cases,
        # equal_nan only matters for naming mistakes (the reference never gives NaN)
        compare=close(rtol=1e-4, atol=1e-6, equal_nan=True),
        guard=["lmlab.attention.online_softmax_step", "lmlab.attention.flash_attention"],
        mistakes=[
            Mistake(
                "acc-not-rescaled",
                "the running output acc is not rescaled: its terms were computed relative to "
                "the old max m, so multiply acc by exp(m - m_new) before adding p @ v.",
                lambda *a: _online_variant(*a, rescale_acc=False),
            ),
            Mistake(
                "l-not-rescaled",
                "the running sum l is not rescaled: multiply it by exp(m - m_new) before adding "
                "the new block's p.sum(-1).",
                lambda *a: _online_variant(*a, rescale_l=False),
            ),
            Mistake(
                "nothing-rescaled",
                "neither l nor acc is rescaled: both were summed relative to the old max m; "
                "multiply both by exp(m - m_new) when the max changes.",
                lambda *a: _online_variant(*a, rescale_l=False, rescale_acc=False),
            ),
            Mistake(
                "inverted-rescale",
                "the correction factor is upside down: the old terms exp(s - m) become "
                "exp(s - m_new) when multiplied by exp(m - m_new) (<= 1), not exp(m_new - m).",
                lambda *a: _online_variant(*a, inverted=True),
            ),
            Mistake(
                "old-max",
                "the new block's p = exp(s - m) uses the old max; use the new one, "
                "p = exp(s - m_new), so that all terms share the same reference point.",
                lambda *a: _online_variant(*a, old_max=True),
            ),
            Mistake(
                "block-max",
                "m_new is the block's max only; the running max is max(m, rowmax(s)), else "
                "it can go down and exp(m - m_new) can overflow.",
                lambda *a: _online_variant(*a, block_max=True),
            ),
        ],
    )
)
