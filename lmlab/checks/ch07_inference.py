"""Checks for exercise ch07_inference: temperature, top-k, top-p, attention with a KV cache,
the memory a KV cache takes, and the accept/reject step of speculative decoding."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from lmlab import generate, speculative
from lmlab.checks.core import Case, Mistake, Part, close, make_check

__all__ = [
    "check_apply_temperature",
    "check_top_k_filter",
    "check_top_p_filter",
    "check_attend_with_cache",
    "check_kv_cache_bytes",
    "check_speculative_accept",
]

CHAPTER = "ch07_inference"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- temperature


def _temperature_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    for _ in range(6):
        shape = rng.choice([(rng.randint(2, 12),), (rng.randint(2, 4), rng.randint(2, 12))])
        logits = torch.randn(shape, generator=g) * rng.uniform(0.5, 4)
        cases.append(Case((logits, rng.choice([0.3, 0.7, 1.5, 2.0, 4.0])), label="random"))
    cases += [
        Case((torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), 0.5), label="edge: a batch of 2 rows"),
        Case((torch.tensor([3.0, 1.0, -1.0]), 1.0), label="edge: temperature 1 is the plain softmax"),
        Case((torch.tensor([900.0, 899.0, -50.0]), 0.1), label="edge: huge logits, cold temperature"),
    ]
    return cases


def _stable(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim=dim)


def _naive_softmax(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


check_apply_temperature = make_check(
    Part(
        name="apply_temperature",
        chapter=CHAPTER,
        reference=generate.apply_temperature,
        cases=_temperature_cases,
        compare=close(rtol=1e-5, atol=1e-7),
        guard=["lmlab.generate.apply_temperature"],
        mistakes=[
            Mistake(
                "after-softmax",
                "you divided the probabilities by the temperature, after the softmax. The "
                "result no longer sums to 1 and every token is scaled alike; divide the "
                "logits first, then take the softmax: softmax(logits / t).",
                lambda x, t: _stable(x) / t,
            ),
            Mistake(
                "ignored",
                "your output does not depend on the temperature (did you renormalize after "
                "dividing the probabilities, or forget to use t?). Divide the logits by t "
                "before the softmax.",
                lambda x, t: _stable(x),
            ),
            Mistake(
                "multiplied",
                "you multiplied the logits by the temperature. A higher temperature must "
                "flatten the distribution: divide, softmax(logits / t).",
                lambda x, t: _stable(x * t),
            ),
            Mistake(
                "no-softmax",
                "you returned logits / t. The function returns probabilities: apply the "
                "softmax over the last axis.",
                lambda x, t: x / t,
            ),
            Mistake(
                "wrong-axis",
                "on a batch of rows your probabilities sum to 1 down the batch (dim=0). "
                "Each row is a distribution over the vocabulary: softmax over dim=-1.",
                lambda x, t: _stable(x / t, dim=0),
            ),
            Mistake(
                "unstable",
                "exp overflows for large logits / small temperatures and gives NaN (inf/inf). "
                "Subtract the row's maximum before exp (or use torch.softmax).",
                lambda x, t: _naive_softmax(x / t),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- filters


#: a filtered logit at or below this counts as removed, like -inf
REMOVED = -1e9


def filtered_compare(rtol: float = 1e-5, atol: float = 1e-6):
    """Compare filtered logits, accepting any choice among tokens tied at the boundary.

    Each row must hold the same values (as a multiset: same number of kept tokens, kept
    logits unchanged), and where the two outputs differ position by position they may
    only have swapped a kept logit with a removed one of the *same* value: a tie, which
    torch.topk breaks in no promised order.
    """

    def compare(expected, got, path: str = "result") -> str | None:
        if not isinstance(got, torch.Tensor):
            return f"{path} is a {type(got).__name__}, expected a tensor of shape {tuple(expected.shape)}"
        if got.shape != expected.shape:
            return f"{path} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        if not got.is_floating_point():
            return f"{path} has dtype {got.dtype}, expected floating point logits"
        V = expected.shape[-1]
        e, g = expected.detach().double().reshape(-1, V), got.detach().double().reshape(-1, V)
        if torch.isnan(g).any() or (g == math.inf).any():
            return f"{path} contains NaN or +inf; removed tokens must be -inf, kept ones unchanged"
        # -1e9 or finfo.min instead of -inf removes a token just as well (its probability
        # underflows to exactly 0): accept it as removed.
        g = g.masked_fill(g <= REMOVED, -math.inf)
        for row in range(e.shape[0]):
            where = f"{path}[{row}]" if expected.dim() > 1 else path
            n_e, n_g = int(torch.isfinite(e[row]).sum()), int(torch.isfinite(g[row]).sum())
            if n_e != n_g:
                return f"{where} keeps {n_g} tokens (finite logits), expected {n_e}"
            if not torch.allclose(g[row].sort().values, e[row].sort().values, rtol=rtol, atol=atol):
                return f"{where}: the kept logits changed value; keep them exactly as they were"
            differ = ~torch.isclose(g[row], e[row], rtol=rtol, atol=atol)
            values = torch.cat([e[row][differ], g[row][differ]])
            if torch.unique(torch.round(values * 1e4)).numel() > 2:  # more than a tie swap
                kept = torch.isfinite(g[row]).nonzero().flatten().tolist()
                wanted = torch.isfinite(e[row]).nonzero().flatten().tolist()
                return f"{where} keeps tokens {kept[:12]}, expected {wanted[:12]}"
        return None

    return compare


def _ties(shape, g) -> torch.Tensor:
    return torch.randint(-3, 4, shape, generator=g).float()


def _top_k_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    for _ in range(6):
        V = rng.randint(4, 16)
        shape = rng.choice([(V,), (rng.randint(2, 4), V)])
        cases.append(Case((torch.randn(shape, generator=g) * 2, rng.randint(2, V - 1)), label="random"))
    cases += [
        Case((_ties((3, 10), g), 3), label="edge: many tied logits"),
        Case((torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5]), 2), label="edge: three-way tie at the boundary"),
        Case((torch.tensor([0.3, -1.0, 2.5, 0.0]), 1), label="edge: k = 1 is greedy"),
        Case((torch.tensor([0.3, -1.0, 2.5, 0.0]), 4), label="edge: k = V keeps everything"),
        Case((torch.tensor([[0.3, -1.0, 2.5], [1.0, 1.5, -0.5]]), 5), label="edge: k > V"),
    ]
    return cases


def _keep_sorted(logits, count_fn, *, descending=True, scatter=True):
    """Keep the first count_fn(V) tokens of a stable sort (the building block of the variants)."""
    s, order = torch.sort(logits, dim=-1, descending=descending, stable=True)
    n = max(0, min(count_fn(logits.shape[-1]), logits.shape[-1]))
    keep_sorted = torch.zeros_like(s, dtype=torch.bool)
    keep_sorted[..., :n] = True
    if not scatter:
        return s.masked_fill(~keep_sorted, -math.inf)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -math.inf)


def _top_k_threshold(logits, k):
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


check_top_k_filter = make_check(
    Part(
        name="top_k_filter",
        chapter=CHAPTER,
        reference=generate.top_k_filter,
        cases=_top_k_cases,
        compare=filtered_compare(),
        guard=["lmlab.generate.top_k_filter"],
        mistakes=[
            Mistake(
                "ties-kept",
                "on tied logits you keep more than k tokens: masking `logits < kth_value` keeps "
                "every token equal to the k-th value. Keep exactly k, e.g. the indices of a "
                "(stable) sort or of torch.topk, scattered into a mask.",
                _top_k_threshold,
            ),
            Mistake(
                "k-plus-one",
                "you keep k + 1 tokens (an off-by-one in the slice); keep exactly k.",
                lambda x, k: _keep_sorted(x, lambda V: k + 1),
            ),
            Mistake(
                "k-minus-one",
                "you keep k - 1 tokens (an off-by-one in the slice); keep exactly k.",
                lambda x, k: _keep_sorted(x, lambda V: k - 1),
            ),
            Mistake(
                "smallest",
                "you kept the k smallest logits: sort in descending order (or use "
                "torch.topk, which returns the largest).",
                lambda x, k: _keep_sorted(x, lambda V: k, descending=False),
            ),
            Mistake(
                "zero-not-inf",
                "you set the removed logits to 0. A logit of 0 still has probability "
                "exp(0)/Z > 0 after the softmax; use -inf (float('-inf')) to remove a token.",
                lambda x, k: torch.where(torch.isfinite(_keep_sorted(x, lambda V: k)), x, torch.zeros_like(x)),
            ),
            Mistake(
                "sorted-order",
                "your output is in sorted order: each kept logit must stay at its token's "
                "position (scatter the kept mask back with the sort's indices).",
                lambda x, k: _keep_sorted(x, lambda V: k, scatter=False),
            ),
        ],
    )
)


def _far_from_boundary(logits: torch.Tensor, p: float, margin: float = 1e-3) -> bool:
    cumulative = logits.softmax(-1).sort(-1, descending=True).values.cumsum(-1)
    return bool(((cumulative - p).abs() > margin).all())


def _top_p_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    while len(cases) < 7:
        V = rng.randint(4, 16)
        shape = rng.choice([(V,), (rng.randint(2, 4), V)])
        logits = torch.randn(shape, generator=g) * rng.uniform(1, 3)
        p = round(rng.uniform(0.3, 0.95), 2)
        if _far_from_boundary(logits, p):  # a float rounding must not decide the answer
            cases.append(Case((logits, p), label="random"))
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    cases += [
        Case((probs.log(), 0.75), label="edge: 0.5 + 0.3 crosses 0.75, keep both"),
        Case((probs.log(), 0.4), label="edge: the top token alone has more than p"),
        Case((torch.tensor([[4.0, 0.0, 0.0, 0.0], [1.0, 1.1, 0.9, 1.0]]), 0.5), label="edge: peaked and flat rows"),
        Case((torch.tensor([0.2, -0.4, 1.3, 0.8, 0.0]), 1.0), label="edge: p = 1 keeps everything"),
    ]
    return cases


def _top_p_variant(x, p, *, shift=True, sort=True, fallback=False, use_logits=False, scatter=True,
                   descending=True):
    if sort:
        s, order = torch.sort(x, dim=-1, descending=descending, stable=True)
    else:
        s, order = x, torch.arange(x.shape[-1]).expand_as(x)
    weights = s if use_logits else torch.softmax(s, dim=-1)
    cumulative = torch.cumsum(weights, dim=-1)
    keep_sorted = (cumulative - weights < p) if shift else (cumulative <= p)
    if fallback:
        keep_sorted[..., 0] = True
    if p >= 1.0:
        keep_sorted = torch.ones_like(keep_sorted)
    if not scatter:
        return s.masked_fill(~keep_sorted, -math.inf)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return x.masked_fill(~keep, -math.inf)


_CROSSING_HINT = (
    "you dropped the token whose probability crosses p (keeping only tokens with "
    "cumulative probability <= p). Keep a token while the mass *before* it is below p: "
    "keep = (cumsum - probs) < p. The kept mass must reach p, and the top token always "
    "survives."
)

check_top_p_filter = make_check(
    Part(
        name="top_p_filter",
        chapter=CHAPTER,
        reference=generate.top_p_filter,
        cases=_top_p_cases,
        compare=filtered_compare(),
        guard=["lmlab.generate.top_p_filter"],
        mistakes=[
            Mistake("drops-crossing", _CROSSING_HINT, lambda x, p: _top_p_variant(x, p, shift=False)),
            Mistake("drops-crossing-fallback", _CROSSING_HINT,
                    lambda x, p: _top_p_variant(x, p, shift=False, fallback=True)),
            Mistake(
                "unsorted",
                "you accumulated the probabilities in vocabulary order. The nucleus is the "
                "most likely tokens: sort the probabilities in decreasing order first, then "
                "take the cumulative sum.",
                lambda x, p: _top_p_variant(x, p, sort=False),
            ),
            Mistake(
                "ascending",
                "you sorted in increasing order, so you kept the least likely tokens: sort "
                "with descending=True.",
                lambda x, p: _top_p_variant(x, p, descending=False),
            ),
            Mistake(
                "logits-not-probs",
                "you summed logits, not probabilities: take the softmax of the sorted logits "
                "before the cumulative sum.",
                lambda x, p: _top_p_variant(x, p, use_logits=True),
            ),
            Mistake(
                "sorted-order",
                "your output is in sorted order: each kept logit must stay at its token's "
                "position (scatter the kept mask back with the sort's indices).",
                lambda x, p: _top_p_variant(x, p, scatter=False),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- attention + cache


@dataclass(eq=False)
class ShapeMismatch:
    """What a call returns in the check when ``torch.cat`` refused mismatched shapes, so that
    appending on the wrong axis is diagnosed rather than only reported as an error."""

    message: str

    def __eq__(self, other) -> bool:
        return isinstance(other, ShapeMismatch)

    def __repr__(self) -> str:
        return f"RuntimeError({self.message!r})"


class _CatCase(Case):
    def call(self, fn):
        try:
            return super().call(fn)
        except RuntimeError as err:
            if "Sizes of tensors must match" in str(err):
                return ShapeMismatch(str(err))
            raise


def _attend_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = []
    # T_old != T_new everywhere: appending on a wrong axis then always fails in torch.cat
    shapes = [(rng.randint(1, 3), rng.randint(1, 3), t_old, t_new, rng.choice([2, 4, 8]))
              for t_old, t_new in [(5, 1), (3, 1), (6, 2), (2, 3), (4, 2), (7, 1)]]
    shapes += [(1, 2, 0, 3, 4), (2, 1, 1, 2, 4)]
    for B, H, T_old, T_new, D in shapes:
        q, k, v = (torch.randn(B, H, T_new, D, generator=g) for _ in range(3))
        kc, vc = (torch.randn(B, H, T_old, D, generator=g) for _ in range(2))
        label = "edge: empty cache (prefill)" if T_old == 0 else ("decode tick" if T_new == 1 else "chunk of new tokens")
        cases.append(_CatCase((q, kc, vc, k, v), label=label))
    return cases


def _attend_compare(expected, got, path: str = "result") -> str | None:
    if isinstance(got, ShapeMismatch) or isinstance(expected, ShapeMismatch):
        if isinstance(got, ShapeMismatch) and isinstance(expected, ShapeMismatch):
            return None
        if isinstance(got, ShapeMismatch):
            return f"torch.cat raised: {got.message}"
        return f"{path} is a result, expected torch.cat to fail"
    return close(rtol=1e-5, atol=1e-6)(expected, got, path)


def _attend_variant(q, kc, vc, k, v, *, order="old-new", mask="offset", scale=True, axis=2, softmax_dim=-1):
    first, second = ((kc, k), (vc, v)) if order == "old-new" else ((k, kc), (v, vc))
    k_all, v_all = torch.cat(first, dim=axis), torch.cat(second, dim=axis)
    T_new, T_all, D = q.shape[2], k_all.shape[2], q.shape[-1]
    scores = q @ k_all.transpose(-2, -1)
    if scale:
        scores = scores / math.sqrt(D)
    if mask == "offset":
        visible = torch.ones(T_new, T_all, dtype=torch.bool).tril(T_all - T_new)
    elif mask == "top-left":
        visible = torch.ones(T_new, T_all, dtype=torch.bool).tril(0)
    else:
        visible = torch.ones(T_new, T_all, dtype=torch.bool)
    scores = scores.masked_fill(~visible, -math.inf)
    return torch.softmax(scores, dim=softmax_dim).nan_to_num(0.0) @ v_all, k_all, v_all


check_attend_with_cache = make_check(
    Part(
        name="attend_with_cache",
        chapter=CHAPTER,
        reference=generate.attend_with_cache,
        cases=_attend_cases,
        compare=_attend_compare,
        guard=["lmlab.generate.attend_with_cache"],
        mistakes=[
            Mistake(
                "wrong-axis",
                "torch.cat failed: you appended the new keys/values on the wrong axis. The "
                "tensors are (B, H, T, D); positions are the time axis, dim=2 (or -2).",
                lambda *a: _attend_variant(*a, axis=1),
            ),
            Mistake(
                "new-first",
                "you put the new keys/values before the cached ones. The cache holds the "
                "earlier positions: torch.cat([k_cache, k_new], dim=2).",
                lambda *a: _attend_variant(*a, order="new-old"),
            ),
            Mistake(
                "top-left-mask",
                "your causal mask is aligned top-left (tril without an offset, or torch's "
                "is_causal=True), so new token i only sees keys 0..i. It sits at position "
                "T_old + i: it sees every cached key and the new ones up to itself "
                "(tril(diagonal=T_old)).",
                lambda *a: _attend_variant(*a, mask="top-left"),
            ),
            Mistake(
                "no-mask",
                "new tokens attend to new tokens after them: with more than one new token "
                "you need the causal mask (new token i sees positions up to T_old + i).",
                lambda *a: _attend_variant(*a, mask="none"),
            ),
            Mistake(
                "no-scale",
                "the scores are not scaled: divide q kᵀ by √D (D = the head size, q.shape[-1]).",
                lambda *a: _attend_variant(*a, scale=False),
            ),
            Mistake(
                "softmax-wrong-axis",
                "the softmax runs over the queries (dim=-2); each query's weights must sum "
                "to 1 over the keys: softmax over dim=-1.",
                lambda *a: _attend_variant(*a, softmax_dim=-2),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- cache memory


def _bytes_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = [
        Case((rng.randint(2, 48), rng.randint(2, 64), rng.randint(2, 32), rng.randint(2, 8192),
              rng.choice([64, 80, 128]), rng.choice([1, 2, 4])), label="random")
        for _ in range(6)
    ]
    cases += [
        Case((12, 1, 12, 1024, 64, 2), label="edge: GPT-2 small, one 1024-token sequence, fp16"),
        Case((3, 5, 7, 11, 13, 4), label="edge: every size different"),
    ]
    return cases


check_kv_cache_bytes = make_check(
    Part(
        name="kv_cache_bytes",
        chapter=CHAPTER,
        reference=generate.kv_cache_bytes,
        cases=_bytes_cases,
        compare=close(rtol=0, atol=0),
        guard=["lmlab.generate.kv_cache_bytes"],
        mistakes=[
            Mistake(
                "keys-only",
                "you counted only the keys: the cache holds a key and a value vector for "
                "every layer, head and position (the factor 2).",
                lambda L, B, H, T, D, b: L * B * H * T * D * b,
            ),
            Mistake(
                "one-layer",
                "you counted one layer: every layer has its own keys and values (× n_layer).",
                lambda L, B, H, T, D, b: 2 * B * H * T * D * b,
            ),
            Mistake(
                "one-sequence",
                "you counted one sequence: each sequence of the batch has its own cache "
                "(× batch_size).",
                lambda L, B, H, T, D, b: 2 * L * H * T * D * b,
            ),
            Mistake(
                "bits",
                "you multiplied by bits (8× too much): bytes_per_element is already in bytes.",
                lambda L, B, H, T, D, b: 2 * L * B * H * T * D * b * 8,
            ),
            Mistake(
                "elements",
                "you counted elements, not bytes: multiply by bytes_per_element.",
                lambda L, B, H, T, D, b: 2 * L * B * H * T * D,
            ),
            Mistake(
                "no-heads",
                "you left out the number of heads: every head caches its own key and value "
                "vector of head_dim numbers per position (× n_head; with grouped-query "
                "attention, × the number of KV heads).",
                lambda L, B, H, T, D, b: 2 * L * B * T * D * b,
            ),
        ],
    )
)


# --------------------------------------------------------------------------- speculative decoding


def _accept_reference(draft_probs, target_probs, draft_tokens, uniforms):
    return speculative.speculative_accept(draft_probs, target_probs, draft_tokens,
                                          uniforms=uniforms)


def _inverse_cdf(weights: torch.Tensor, u) -> int:
    """The first token whose cumulative weight exceeds u (clamped to the last token)."""
    cdf = torch.cumsum(weights.double(), dim=-1)
    return min(int((cdf <= float(u)).sum()), weights.shape[-1] - 1)


def _accept_variant(q, p, x, u, *, test="ratio", residual="p-q", normalise=True, bonus=True,
                    stop=True, count_rejected=False):
    """The accept/reject step with one thing changed (the building block of the mistakes)."""
    q, p, u = q.double(), p.double(), u.double()
    k = q.shape[0]
    rows = torch.arange(k)
    px, qx = p[rows, x], q[rows, x]
    if test == "ratio":
        kept = u[:k] < px / qx
    elif test == "inverted":
        kept = u[:k] < qx / px
    else:  # "reversed": u > p/q
        kept = u[:k] > px / qx
    n = int(kept.sum()) if not stop else int(kept.long().cumprod(0).sum())
    if n >= k:
        if not bonus:
            return k, None
        return k, _inverse_cdf(p[k if bonus is True else k - 1], u[k])
    i = n if stop else int((~kept).nonzero()[0])
    if residual == "p":
        weights = p[i]
    else:
        weights = (p[i] - q[i] if residual == "p-q" else q[i] - p[i]).clamp(min=0)
    if normalise:
        weights = weights / weights.sum()
    return (n + 1 if count_rejected else n), _inverse_cdf(weights, u[k])


def _u_boundaries(q, p, x):
    """Values of u at which some variant's decision flips: cases keep u away from them."""
    q, p = q.double(), p.double()
    k = q.shape[0]
    rows = torch.arange(k)
    tests = torch.cat([p[rows, x] / q[rows, x], q[rows, x] / p[rows, x]])
    cdfs = []
    for i in range(k + 1):
        cdfs.append(p[i].cumsum(-1))
        if i < k:
            for r in ((p[i] - q[i]).clamp(min=0), (q[i] - p[i]).clamp(min=0)):
                cdfs += [r.cumsum(-1), (r / r.sum()).cumsum(-1)]
    return tests, torch.cat(cdfs)


def _speculative_case(g, k, V, *, sharp=2.0, margin=2e-3, label="random", same=()):
    """Random draft/target probabilities, proposals drawn from the draft, and uniforms that
    sit at least ``margin`` away from every decision boundary (so float rounding in a
    correct solution never changes the answer). Rows in ``same`` have p = q."""
    p = torch.softmax(torch.randn(k + 1, V, generator=g) * sharp, -1)
    q = torch.softmax(torch.randn(k, V, generator=g) * sharp, -1)
    for i in same:
        q[i] = p[i]
    x = torch.stack([torch.multinomial(q[i], 1, generator=g)[0] for i in range(k)])
    tests, cdfs = _u_boundaries(q, p, x)
    u = torch.rand(k + 1, generator=g)
    for i in range(k):  # two boundaries per draft token: redraw until clear of both
        while ((u[i].double() - tests[[i, k + i]]).abs() <= margin).any():
            u[i] = torch.rand(1, generator=g)[0]
    # the last draw: a random point inside a random gap between the sampling boundaries
    edges = torch.cat([torch.tensor([0.0, 1.0], dtype=torch.float64), cdfs.clamp(0, 1)])
    edges = edges.sort().values
    starts, widths = edges[:-1], edges[1:] - edges[:-1]
    wide = (widths > 4 * margin).nonzero().flatten()
    pick = int(wide[torch.randint(len(wide), (1,), generator=g)])
    lo = float(starts[pick]) + margin
    u[k] = lo + float(torch.rand(1, generator=g)) * (float(widths[pick]) - 2 * margin)
    return Case((q, p, x, u), label=label)


def _speculative_cases(seed: int) -> list[Case]:
    rng, g = random.Random(seed), _gen(seed)
    cases = [_speculative_case(g, rng.randint(1, 5), rng.randint(3, 10)) for _ in range(8)]
    cases += [
        _speculative_case(g, 3, 7, same=(0, 1, 2), label="edge: draft = target, all kept, bonus"),
        _speculative_case(g, 4, 5, sharp=0.3, label="edge: flat distributions, most kept"),
        _speculative_case(g, 1, 3, label="edge: one draft token"),
    ]
    # hand-made: token 0 kept (p/q = 0.8 > u = 0.5), token 1 rejected (p/q = 0.25 < 0.6),
    # token 2 would be kept (p = q); residual of row 1 = [0.2, 0, 0.1, 0] -> u = 0.9 is in
    # token 2's share after renormalising (2/3..1), past the unnormalised mass (0.3)
    q = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.2, 0.4, 0.1, 0.3], [0.25, 0.25, 0.25, 0.25]])
    p = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.4, 0.1, 0.2, 0.3], [0.25, 0.25, 0.25, 0.25],
                      [0.1, 0.2, 0.3, 0.4]])
    cases.append(Case((q, p, torch.tensor([0, 1, 3]), torch.tensor([0.5, 0.6, 0.3, 0.9])),
                      label="edge: second token rejected, the third would pass"))
    return cases


_BONUS_HINT = (
    "when all k draft tokens are accepted you must still return one more token: the "
    "target scored position k+1 in the same pass, so sample the bonus token from "
    "target_probs[k] (the last row)."
)

check_speculative_accept = make_check(
    Part(
        name="speculative_accept",
        chapter=CHAPTER,
        reference=_accept_reference,
        cases=_speculative_cases,
        compare=close(rtol=0, atol=0),
        guard=["lmlab.speculative.speculative_accept", "lmlab.speculative.sample_from"],
        mistakes=[
            Mistake(
                "inverted-ratio",
                "you accept draft token x when u < q(x)/p(x): the ratio is upside down. Keep "
                "it with probability min(1, p(x)/q(x)), target over draft: u < p(x)/q(x).",
                lambda *a: _accept_variant(*a, test="inverted"),
            ),
            Mistake(
                "reversed-test",
                "you accept when u > p(x)/q(x): the comparison is reversed. A token the target "
                "likes more than the draft (p/q >= 1) must always be kept: accept when "
                "u < p(x)/q(x).",
                lambda *a: _accept_variant(*a, test="reversed"),
            ),
            Mistake(
                "resample-from-target",
                "after a rejection you sampled from the target's p. Sample from the residual "
                "max(0, p - q), renormalised: p already produced the accepted tokens' share, "
                "and drawing from p again makes tokens the draft likes too frequent.",
                lambda *a: _accept_variant(*a, residual="p"),
            ),
            Mistake(
                "residual-reversed",
                "your residual is max(0, q - p); it is max(0, p - q): the target's "
                "probability the accepted drafts did not cover.",
                lambda *a: _accept_variant(*a, residual="q-p"),
            ),
            Mistake(
                "unnormalised-residual",
                "you sampled from max(0, p - q) without renormalising it: its cumulative sum "
                "ends below 1, so u beyond it picks the last token. Divide the residual by its "
                "sum first.",
                lambda *a: _accept_variant(*a, normalise=False),
            ),
            Mistake("no-bonus", _BONUS_HINT, lambda *a: _accept_variant(*a, bonus=False)),
            Mistake(
                "bonus-wrong-row",
                "when all k are accepted you sampled the bonus token from target_probs[k-1]; "
                "the bonus comes from the next position, target_probs[k].",
                lambda *a: _accept_variant(*a, bonus="k-1"),
            ),
            Mistake(
                "counts-rejected",
                "n_accepted counts the rejected token too (off by one): if token i (from 0) "
                "is the first rejected, tokens 0..i-1 were accepted, so n_accepted = i.",
                lambda *a: _accept_variant(*a, count_rejected=True),
            ),
            Mistake(
                "no-stop",
                "you kept testing after the first rejection and counted every accepted token. "
                "The first rejection ends the round: the drafts after it were conditioned on "
                "a token that is thrown away.",
                lambda *a: _accept_variant(*a, stop=False),
            ),
        ],
    )
)
