"""The ch07_inference checks accept different correct solutions and name the mistakes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmlab.checks.ch07_inference import (
    check_apply_temperature,
    check_attend_with_cache,
    check_kv_cache_bytes,
    check_speculative_accept,
    check_top_k_filter,
    check_top_p_filter,
)
from lmlab.checks.core import PARTS, run_part

CH07 = [name for name, part in PARTS.items() if part.chapter == "ch07_inference"]


def both_seeds(check, fn):
    check(fn)
    check(fn, seed=7)


# --------------------------------------------------------------------------- temperature


def temperature_torch(logits, t):
    return torch.softmax(logits / t, dim=-1)


def temperature_power(logits, t):
    """softmax(x)^(1/t), renormalized, equals softmax(x/t): computed in log space with NumPy."""
    x = logits.double().numpy()
    logp = x - x.max(axis=-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    scaled = logp / t
    scaled -= scaled.max(axis=-1, keepdims=True)
    out = np.exp(scaled)
    return torch.from_numpy(out / out.sum(axis=-1, keepdims=True)).float()


@pytest.mark.parametrize("fn", [temperature_torch, temperature_power])
def test_temperature_accepts_correct_solutions(fn):
    both_seeds(check_apply_temperature, fn)


def test_temperature_names_softmax_before_dividing():
    with pytest.raises(AssertionError, match="after the softmax"):
        check_apply_temperature(lambda x, t: torch.softmax(x, -1) / t)


def test_temperature_names_overflow():
    def naive(x, t):
        e = torch.exp(x / t)
        return e / e.sum(-1, keepdim=True)

    with pytest.raises(AssertionError, match="Subtract the row's maximum"):
        check_apply_temperature(naive)


# --------------------------------------------------------------------------- top-k


def top_k_topk(logits, k):
    """torch.topk: breaks ties in its own order, which the check must accept."""
    k = min(k, logits.shape[-1])
    idx = torch.topk(logits, k, dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_k_loops(logits, k):
    """Row by row in plain Python, ties broken towards the *highest* token id."""
    rows = logits.reshape(-1, logits.shape[-1]).tolist()
    out = []
    for row in rows:
        order = sorted(range(len(row)), key=lambda i: (row[i], i), reverse=True)
        keep = set(order[:k])
        out.append([v if i in keep else -math.inf for i, v in enumerate(row)])
    return torch.tensor(out, dtype=logits.dtype).reshape(logits.shape)


@pytest.mark.parametrize("fn", [top_k_topk, top_k_loops])
def test_top_k_accepts_correct_solutions(fn):
    both_seeds(check_top_k_filter, fn)


def test_top_k_names_ties_kept():
    def nanogpt_style(logits, k):
        v = torch.topk(logits, min(k, logits.shape[-1])).values
        out = logits.clone()
        out[out < v[..., [-1]]] = -float("inf")
        return out

    with pytest.raises(AssertionError, match="keeps every token equal to the k-th value"):
        check_top_k_filter(nanogpt_style)


def test_top_k_names_zero_instead_of_minus_inf():
    def zeros(logits, k):
        kept = torch.isfinite(top_k_topk(logits, k))
        return torch.where(kept, logits, torch.zeros_like(logits))

    with pytest.raises(AssertionError, match="use -inf"):
        check_top_k_filter(zeros)


# --------------------------------------------------------------------------- top-p


def top_p_vectorized(logits, p):
    probs, order = torch.sort(torch.softmax(logits, -1), dim=-1, descending=True)
    keep_sorted = probs.cumsum(-1) - probs < p
    keep = keep_sorted.scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_loops(logits, p):
    """A Python loop per row: add tokens, most likely first, until the mass reaches p."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(flat, float("-inf"))
    for r in range(flat.shape[0]):
        probs = torch.softmax(flat[r].double(), -1).tolist()
        mass = 0.0
        for i in sorted(range(len(probs)), key=lambda i: -probs[i]):
            out[r, i] = flat[r, i]
            mass += probs[i]
            if mass >= p:
                break
    return out.reshape(logits.shape)


@pytest.mark.parametrize("fn", [top_p_vectorized, top_p_loops])
def test_top_p_accepts_correct_solutions(fn):
    both_seeds(check_top_p_filter, fn)


def test_top_p_names_dropping_the_crossing_token():
    def hf_unshifted(logits, p):
        probs, order = torch.sort(torch.softmax(logits, -1), dim=-1, descending=True)
        remove_sorted = probs.cumsum(-1) > p
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        return logits.masked_fill(remove, float("-inf"))

    with pytest.raises(AssertionError, match="crosses p"):
        check_top_p_filter(hf_unshifted)


def test_top_p_names_missing_sort():
    def unsorted(logits, p):
        probs = torch.softmax(logits, -1)
        return logits.masked_fill(~(probs.cumsum(-1) - probs < p), float("-inf"))

    with pytest.raises(AssertionError, match="sort the probabilities"):
        check_top_p_filter(unsorted)


# --------------------------------------------------------------------------- attention with cache


def attend_manual(q, kc, vc, k, v):
    k_all, v_all = torch.cat([kc, k], dim=-2), torch.cat([vc, v], dim=-2)
    T_old, T_new = kc.shape[-2], q.shape[-2]
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k_all) / math.sqrt(q.shape[-1])
    q_pos = torch.arange(T_old, T_old + T_new)[:, None]
    k_pos = torch.arange(T_old + T_new)[None, :]
    scores = scores.masked_fill(k_pos > q_pos, float("-inf"))
    return torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), v_all), k_all, v_all


def attend_torch_sdpa(q, kc, vc, k, v):
    """torch's fused attention with an explicit bottom-right mask (is_causal would be wrong)."""
    k_all, v_all = torch.cat([kc, k], dim=2), torch.cat([vc, v], dim=2)
    T_new, T_all = q.shape[2], k_all.shape[2]
    mask = torch.ones(T_new, T_all, dtype=torch.bool).tril(T_all - T_new)
    return F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask), k_all, v_all


def attend_preallocated(q, kc, vc, k, v):
    """Writes into a preallocated buffer, one query at a time."""
    B, H, T_old, D = kc.shape
    T_new = q.shape[2]
    k_all = torch.empty(B, H, T_old + T_new, D)
    v_all = torch.empty_like(k_all)
    k_all[:, :, :T_old], k_all[:, :, T_old:] = kc, k
    v_all[:, :, :T_old], v_all[:, :, T_old:] = vc, v
    outs = []
    for i in range(T_new):
        seen = T_old + i + 1
        w = torch.softmax(q[:, :, i:i + 1] @ k_all[:, :, :seen].transpose(-1, -2) / D**0.5, -1)
        outs.append(w @ v_all[:, :, :seen])
    return torch.cat(outs, dim=2), k_all, v_all


@pytest.mark.parametrize("fn", [attend_manual, attend_torch_sdpa, attend_preallocated])
def test_attend_accepts_correct_solutions(fn):
    both_seeds(check_attend_with_cache, fn)


def test_attend_names_the_wrong_axis():
    def heads_axis(q, kc, vc, k, v):
        return q, torch.cat([kc, k], dim=1), torch.cat([vc, v], dim=1)

    with pytest.raises(AssertionError, match="time axis, dim=2"):
        check_attend_with_cache(heads_axis)


def test_attend_names_torch_is_causal():
    def is_causal(q, kc, vc, k, v):
        k_all, v_all = torch.cat([kc, k], dim=2), torch.cat([vc, v], dim=2)
        return F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True), k_all, v_all

    with pytest.raises(AssertionError, match="aligned top-left"):
        check_attend_with_cache(is_causal)


def test_attend_reports_other_errors_plainly():
    def broken(q, kc, vc, k, v):
        raise RuntimeError("something else")

    with pytest.raises(AssertionError, match="raised RuntimeError: something else"):
        check_attend_with_cache(broken)


# --------------------------------------------------------------------------- cache bytes


def bytes_formula(n_layer, batch_size, n_head, seq_len, head_dim, bytes_per_element):
    return 2 * n_layer * batch_size * n_head * seq_len * head_dim * bytes_per_element


def bytes_from_tensors(n_layer, batch_size, n_head, seq_len, head_dim, bytes_per_element):
    """Per layer, what torch would allocate, without allocating it (shapes only)."""
    per_tensor = math.prod((batch_size, n_head, seq_len, head_dim)) * bytes_per_element
    return sum(per_tensor for _ in range(n_layer) for _kv in ("k", "v"))


@pytest.mark.parametrize("fn", [bytes_formula, bytes_from_tensors])
def test_bytes_accepts_correct_solutions(fn):
    both_seeds(check_kv_cache_bytes, fn)


def test_bytes_names_missing_values():
    with pytest.raises(AssertionError, match="only the keys"):
        check_kv_cache_bytes(lambda L, B, H, T, D, b: L * B * H * T * D * b)


def test_bytes_names_the_missing_head_count():
    with pytest.raises(AssertionError, match="left out the number of heads"):
        check_kv_cache_bytes(lambda L, B, H, T, D, b: 2 * L * B * T * D * b)


# --------------------------------------------------------------------------- speculative accept


def accept_loop(draft_probs, target_probs, draft_tokens, uniforms):
    """Token by token in plain Python floats, sampling by walking the distribution."""
    k = len(draft_tokens)

    def walk(weights, u):
        total, acc = sum(weights), 0.0
        for token, w in enumerate(weights):
            acc += w / total
            if u < acc:
                return token
        return max(t for t, w in enumerate(weights) if w > 0)

    for i in range(k):
        x = int(draft_tokens[i])
        p, q = float(target_probs[i, x]), float(draft_probs[i, x])
        if float(uniforms[i]) >= min(1.0, p / q):
            residual = [max(0.0, float(a) - float(b))
                        for a, b in zip(target_probs[i], draft_probs[i])]
            return i, walk(residual, float(uniforms[k]))
    return k, walk([float(a) for a in target_probs[k]], float(uniforms[k]))


def accept_vectorized(draft_probs, target_probs, draft_tokens, uniforms):
    """All tests at once; searchsorted on the cumulative sum."""
    k = draft_tokens.shape[0]
    rows = torch.arange(k)
    ratio = target_probs[rows, draft_tokens] / draft_probs[rows, draft_tokens]
    rejected = (uniforms[:k] >= ratio.clamp(max=1)).nonzero()
    n = int(rejected[0]) if len(rejected) else k
    if n == k:
        dist = target_probs[k]
    else:
        dist = (target_probs[n] - draft_probs[n]).clamp(min=0)
        dist = dist / dist.sum()
    cdf = dist.double().cumsum(0)
    token = int(torch.searchsorted(cdf, uniforms[k:].double(), right=True))
    return n, min(token, len(cdf) - 1)


@pytest.mark.parametrize("fn", [accept_loop, accept_vectorized])
def test_speculative_accept_accepts_correct_solutions(fn):
    both_seeds(check_speculative_accept, fn)
    check_speculative_accept(fn, hidden=True)


def _student_accept(q, p, x, u, *, ratio=lambda p, q: p / q, residual=None, bonus=True):
    """A student's loop with one thing changed."""
    k = len(x)
    for i in range(k):
        if not u[i] < ratio(p[i, x[i]], q[i, x[i]]):
            r = (p[i] - q[i]).clamp(min=0) if residual is None else residual(p[i], q[i])
            return i, int((r.cumsum(0) <= u[k]).sum().clamp(max=len(r) - 1))
    if not bonus:
        return k, None
    return k, int((p[k].cumsum(0) <= u[k]).sum().clamp(max=p.shape[1] - 1))


@pytest.mark.parametrize("variant, expected", [
    (dict(ratio=lambda p, q: q / p), "ratio is upside down"),
    (dict(residual=lambda p, q: p), "you sampled from the target's p"),
    (dict(residual=lambda p, q: (q - p).clamp(min=0) / (q - p).clamp(min=0).sum()),
     "max\\(0, q - p\\)"),
    (dict(residual=lambda p, q: (p - q).clamp(min=0) / (p - q).clamp(min=0).sum(),
          bonus=False), "sample the bonus token"),
])
def test_speculative_accept_names_student_mistakes(variant, expected):
    if "residual" not in variant or variant.get("bonus") is False:
        base = dict(residual=lambda p, q: (p - q).clamp(min=0) / (p - q).clamp(min=0).sum())
        variant = {**base, **variant}
    with pytest.raises(AssertionError, match=expected):
        check_speculative_accept(lambda q, p, x, u: _student_accept(q, p, x, u, **variant))


def test_speculative_accept_names_the_unnormalised_residual():
    # the plain loop without dividing by the residual's sum
    with pytest.raises(AssertionError, match="without renormalising"):
        check_speculative_accept(lambda q, p, x, u: _student_accept(q, p, x, u))


def test_speculative_accept_names_counting_the_rejected_token():
    def off_by_one(q, p, x, u):
        n, token = accept_vectorized(q, p, x, u)
        return (n + 1 if n < len(x) else n), token

    with pytest.raises(AssertionError, match="counts the rejected token"):
        check_speculative_accept(off_by_one)


def test_speculative_accept_refuses_lmlab():
    from lmlab import speculative

    with pytest.raises(AssertionError, match="without calling lmlab"):
        check_speculative_accept(
            lambda q, p, x, u: speculative.speculative_accept(q, p, x, uniforms=u))


# --------------------------------------------------------------------------- the catalogue


def test_all_six_parts_are_registered():
    assert sorted(CH07) == sorted(
        ["apply_temperature", "top_k_filter", "top_p_filter", "attend_with_cache", "kv_cache_bytes",
         "speculative_accept"]
    )


@pytest.mark.parametrize("name", sorted(CH07))
def test_every_mistake_is_named_and_the_reference_passes(name):
    part = PARTS[name]
    run_part(part, part.reference, quiet=True)
    for mistake in part.mistakes:
        with pytest.raises(AssertionError) as err:
            run_part(part, mistake.fn, quiet=True)
        assert f"Likely mistake: {mistake.hint}" in str(err.value), (mistake.name, str(err.value))


@pytest.mark.parametrize("name", sorted(set(CH07) - {"speculative_accept"}))
def test_delegating_to_lmlab_is_refused(name):
    from lmlab import generate

    # looked up at call time, as a notebook's `generate.top_k_filter(...)` would be
    with pytest.raises(AssertionError, match="without calling lmlab"):
        run_part(PARTS[name], lambda *a: getattr(generate, name)(*a), quiet=True)
