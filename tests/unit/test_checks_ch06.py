"""The ch06_training checks accept different correct solutions and name specific mistakes."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.checks import (
    check_adamw_step,
    check_clip_grad_norm_global,
    check_cosine_lr,
    check_cross_entropy,
)

# --------------------------------------------------------------------------- cross_entropy


def ce_vectorized(logits, targets):
    c = logits.max(dim=-1, keepdim=True).values
    lse = c + (logits - c).exp().sum(-1, keepdim=True).log()
    return (lse.squeeze(-1) - logits[torch.arange(len(targets)), targets]).mean()


def ce_loop(logits, targets):
    total = 0.0
    for row, t in zip(logits.tolist(), targets.tolist()):
        c = max(row)
        total += c + math.log(sum(math.exp(x - c) for x in row)) - row[t]
    return total / len(targets)


def ce_onehot(logits, targets):
    shifted = logits - logits.amax(-1, keepdim=True)
    log_p = shifted - torch.log(torch.exp(shifted).sum(-1, keepdim=True))
    onehot = torch.zeros_like(logits).scatter_(1, targets[:, None], 1.0)
    return -(onehot * log_p).sum() / logits.shape[0]


@pytest.mark.parametrize("fn", [ce_vectorized, ce_loop, ce_onehot])
@pytest.mark.parametrize("seed", [0, 7])
def test_cross_entropy_accepts_correct(fn, seed):
    check_cross_entropy(fn, seed=seed)


def test_cross_entropy_names_overflow():
    def naive(logits, targets):
        p = logits.exp() / logits.exp().sum(-1, keepdim=True)
        return -p[torch.arange(len(targets)), targets].log().mean()

    with pytest.raises(AssertionError, match="(?s)huge logits.*without subtracting the row maximum"):
        check_cross_entropy(naive)


def test_cross_entropy_refuses_torch_shortcut():
    def shortcut(logits, targets):
        return torch.nn.functional.cross_entropy(logits, targets)

    with pytest.raises(AssertionError, match="write yourself"):
        check_cross_entropy(shortcut)


# --------------------------------------------------------------------------- adamw_step


def adamw_tensors(p, g, m, v, t, lr, betas, eps, weight_decay):
    b1, b2 = betas
    p = p - lr * weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return p - lr * m_hat / (torch.sqrt(v_hat) + eps), m, v


def adamw_inplace_folded(p, g, m, v, t, lr, betas, eps, weight_decay):
    """In place, with the bias corrections folded into a step size (torch's arrangement)."""
    b1, b2 = betas
    p.mul_(1 - lr * weight_decay)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    step = lr / (1 - b1**t)
    denom = v.sqrt() / math.sqrt(1 - b2**t) + eps
    p.addcdiv_(m, denom, value=-step)
    return p, m, v


def adamw_elementwise(p, g, m, v, t, lr, betas, eps, weight_decay):
    b1, b2 = betas
    P, M, V = p.flatten().tolist(), m.flatten().tolist(), v.flatten().tolist()
    for i, gi in enumerate(g.flatten().tolist()):
        M[i] = b1 * M[i] + (1 - b1) * gi
        V[i] = b2 * V[i] + (1 - b2) * gi * gi
        update = (M[i] / (1 - b1**t)) / (math.sqrt(V[i] / (1 - b2**t)) + eps)
        P[i] = P[i] * (1 - lr * weight_decay) - lr * update
    shape = p.shape
    as_t = lambda xs: torch.tensor(xs, dtype=p.dtype).reshape(shape)  # noqa: E731
    return as_t(P), as_t(M), as_t(V)


@pytest.mark.parametrize("fn", [adamw_tensors, adamw_inplace_folded, adamw_elementwise])
@pytest.mark.parametrize("seed", [0, 3])
def test_adamw_accepts_correct(fn, seed):
    check_adamw_step(fn, seed=seed)


def test_adamw_names_popular_formula():
    def blog(p, g, m, v, t, lr, betas, eps, weight_decay):
        b1, b2 = betas
        p = p * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        return p - lr * m / torch.sqrt(v + eps), m, v

    with pytest.raises(AssertionError, match="many blog posts"):
        check_adamw_step(blog)


def test_adamw_names_l2():
    def adam_l2(p, g, m, v, t, lr, betas, eps, weight_decay):
        return adamw_tensors(p, g + weight_decay * p, m, v, t, lr, betas, eps, 0.0)

    with pytest.raises(AssertionError, match="L2"):
        check_adamw_step(adam_l2)


def test_adamw_refuses_torch_optimizer():
    def via_torch(p, g, m, v, t, lr, betas, eps, weight_decay):
        p = p.clone().requires_grad_(True)
        torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        return p, m, v

    with pytest.raises(AssertionError, match="write yourself"):
        check_adamw_step(via_torch)


# --------------------------------------------------------------------------- cosine_lr


def cosine_branches(step, warmup, total, lr_max, lr_min):
    if step < warmup:
        return lr_max * (step + 1) / warmup
    if step >= total:
        return lr_min
    progress = (step - warmup) / (total - warmup)
    return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * progress))


def cosine_clamped(step, warmup, total, lr_max, lr_min):
    """One expression: clamp progress to [0, 1], pick warm-up or decay with min()."""
    progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    decay = lr_min + (lr_max - lr_min) * (math.cos(math.pi * progress) + 1) / 2
    return decay if step >= warmup else lr_max * (step + 1) / warmup


@pytest.mark.parametrize("fn", [cosine_branches, cosine_clamped])
@pytest.mark.parametrize("seed", [0, 11])
def test_cosine_accepts_correct(fn, seed):
    check_cosine_lr(fn, seed=seed)


def test_cosine_names_warmup_off_by_one():
    def off_by_one(step, warmup, total, lr_max, lr_min):
        if step < warmup:
            return lr_max * step / warmup
        return cosine_branches(step, warmup, total, lr_max, lr_min)

    with pytest.raises(AssertionError, match="off by one"):
        check_cosine_lr(off_by_one)


# --------------------------------------------------------------------------- clipping


def clip_vectorized(grads, max_norm):
    flat = torch.cat([g.reshape(-1) for g in grads])
    total = flat.norm()
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    return [g * scale for g in grads], total


def clip_loops(grads, max_norm):
    sq = 0.0
    for g in grads:
        for x in g.flatten().tolist():
            sq += x * x
    total = math.sqrt(sq)
    if total <= max_norm:
        return [g.clone() for g in grads], total
    return [g * (max_norm / total) for g in grads], total  # without the 1e-6: also fine


@pytest.mark.parametrize("fn", [clip_vectorized, clip_loops])
@pytest.mark.parametrize("seed", [0, 5])
def test_clip_accepts_correct(fn, seed):
    check_clip_grad_norm_global(fn, seed=seed)


def test_clip_names_per_tensor():
    def per_tensor(grads, max_norm):
        total = math.sqrt(sum(float((g**2).sum()) for g in grads))
        return [g * min(1.0, max_norm / float(g.norm())) for g in grads], total

    with pytest.raises(AssertionError, match="each tensor by its own norm"):
        check_clip_grad_norm_global(per_tensor)


def test_clip_bad_return_type_is_reported():
    with pytest.raises(AssertionError, match="expected"):
        check_clip_grad_norm_global(lambda grads, max_norm: None)
