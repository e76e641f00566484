"""Checks for exercise ch06_training: a stable cross-entropy, one AdamW step, the warm-up +
cosine schedule, and clipping by the global gradient norm."""

from __future__ import annotations

import math
import random

import torch

from lmlab import optim
from lmlab import train as _train
from lmlab.checks.core import Case, Mistake, Part, close, make_check

__all__ = [
    "check_cross_entropy",
    "check_adamw_step",
    "check_cosine_lr",
    "check_clip_grad_norm_global",
]

CHAPTER = "ch06_training"


# --------------------------------------------------------------------------- cross_entropy


def _ce_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    cases = []
    for n, v, scale in [(4, 5, 1.0), (8, 11, 3.0), (3, 7, 0.5), (16, 3, 2.0), (5, 30, 5.0)]:
        logits = torch.randn(n, v, generator=g) * scale
        targets = torch.randint(0, v, (n,), generator=g)
        cases.append(Case((logits, targets), label="random"))
    cases.append(Case((torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([2])), label="edge: one row"))
    cases.append(Case((torch.tensor([[1000.0, 0.0, -5.0], [2.0, 1000.0, 3.0]]), torch.tensor([0, 2])),
                      label="edge: huge logits (exp overflows)"))
    cases.append(Case((torch.tensor([[0.0, -200.0, 1.0], [3.0, 0.0, -150.0]]), torch.tensor([1, 0])),
                      label="edge: a target with tiny probability (underflows)"))
    return cases


def _log_softmax_unshifted(x):
    return x - x.exp().sum(-1, keepdim=True).log()


def _nll(log_probs, targets):
    return -log_probs.gather(-1, targets[:, None]).mean()


check_cross_entropy = make_check(
    Part(
        name="cross_entropy",
        chapter=CHAPTER,
        reference=_train.cross_entropy,
        cases=_ce_cases,
        compare=close(rtol=1e-5, atol=1e-5),
        guard=[
            "lmlab.train.cross_entropy",
            "torch.nn.functional.cross_entropy",
            "torch.nn.functional.log_softmax",
            "torch.nn.functional.nll_loss",
            "torch.log_softmax",
            "torch.logsumexp",
            "torch.Tensor.log_softmax",
            "torch.Tensor.logsumexp",
            "torch.special.logsumexp",
            "torch.special.log_softmax",
            "torch.nn.CrossEntropyLoss",
            "torch.nn.NLLLoss",
            "torch.nn.LogSoftmax",
            "torch._C._nn.cross_entropy_loss",
            "torch._C._nn.nll_loss",
            "torch._C._nn.nll_loss_nd",
        ],
        pure=True,
        mistakes=[
            Mistake(
                "log-of-softmax-unshifted",
                "you took log(exp(x) / sum(exp(x))) without subtracting the row maximum: "
                "exp(1000) overflows to inf and inf/inf is NaN. Subtract max(x) from each row "
                "first, and compute log-softmax as x - logsumexp(x) instead of the log of a "
                "softmax.",
                lambda x, t: _nll((x.exp() / x.exp().sum(-1, keepdim=True)).log(), t),
            ),
            Mistake(
                "logsumexp-unshifted",
                "you computed x - log(sum(exp(x))) without the max shift: exp(1000) overflows "
                "to inf. Use logsumexp(x) = c + log(sum(exp(x - c))) with c = max(x) per row.",
                lambda x, t: _nll(_log_softmax_unshifted(x), t),
            ),
            Mistake(
                "log-of-softmax",
                "you took the log of a (stable) softmax: a probability of exp(-200) underflows "
                "to 0 in float32 and log(0) = -inf. Stay in log space: "
                "log_softmax(x) = (x - c) - log(sum(exp(x - c))).",
                lambda x, t: _nll(torch.softmax(x, -1).log(), t),
            ),
            Mistake(
                "all-pairs-indexing",
                "you indexed log_probs[:, targets], which picks every row's log-probability "
                "of every target (an N×N matrix) and averages all of them. Pick one entry per "
                "row: log_probs[torch.arange(N), targets] (or gather(-1, targets[:, None])).",
                lambda x, t: -torch.log_softmax(x.double(), -1)[:, t].mean().float(),
            ),
            Mistake(
                "sum",
                "you summed the losses of the rows; the loss is their mean (divide by N), so "
                "that it does not grow with the batch size.",
                lambda x, t: -torch.log_softmax(x.double(), -1).gather(-1, t[:, None]).sum().float(),
            ),
            Mistake(
                "no-minus",
                "your result is the mean log-probability, which is negative: the loss is its "
                "negative, -mean(log p[target]).",
                lambda x, t: torch.log_softmax(x.double(), -1).gather(-1, t[:, None]).mean().float(),
            ),
            Mistake(
                "wrong-axis",
                "you normalized over the batch axis (dim=0); each row's scores must be "
                "normalized over the classes (dim=-1).",
                lambda x, t: -torch.log_softmax(x.double(), 0).gather(-1, t[:, None]).mean().float(),
            ),
            Mistake(
                "log2",
                "you used log base 2 (bits); the loss is in nats: use the natural log.",
                lambda x, t: (-torch.log_softmax(x.double(), -1).gather(-1, t[:, None]).mean()
                              / math.log(2)).float(),
            ),
            Mistake(
                "mse",
                "you computed the squared error between softmax and the one-hot target; "
                "cross-entropy is -log p[target].",
                lambda x, t: ((torch.softmax(x.double(), -1)
                               - torch.nn.functional.one_hot(t, x.shape[-1])) ** 2).mean().float(),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- adamw_step


def _adam_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(8):
        shape = rng.choice([(3, 4), (5,), (2, 3, 2)])
        p = torch.randn(shape, generator=g, dtype=torch.float64)
        grad = torch.randn(shape, generator=g, dtype=torch.float64) * 10 ** rng.uniform(-2, 0)
        m = torch.randn(shape, generator=g, dtype=torch.float64) * 0.1
        v = torch.rand(shape, generator=g, dtype=torch.float64) * 10 ** rng.uniform(-4, -1)
        t = rng.choice([1, 2, 3, 10, 100])
        lr = rng.choice([0.1, 0.05, 0.01])
        betas = rng.choice([(0.9, 0.999), (0.9, 0.95), (0.8, 0.99)])
        eps = rng.choice([1e-8, 1e-6, 1e-3])
        wd = 0.0 if i == 0 else rng.choice([0.1, 0.3])
        cases.append(Case((p, grad, m, v, t, lr, betas, eps, wd), label="random"))
    z = torch.zeros(4, dtype=torch.float64)
    cases.append(Case((torch.ones(4, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64),
                       z.clone(), z.clone(), 1, 0.1, (0.9, 0.999), 1e-8, 0.1),
                      label="edge: first step from zero moments"))
    cases.append(Case((torch.ones(3, dtype=torch.float64), torch.full((3,), 1e-4, dtype=torch.float64),
                       torch.zeros(3, dtype=torch.float64), torch.full((3,), 1e-8, dtype=torch.float64),
                       5, 0.1, (0.9, 0.99), 1e-6, 0.0), label="edge: tiny gradients, eps matters"))
    return cases


def _adamw(p, g, m, v, t, lr, betas, eps, wd, *, bias=True, eps_inside=False, l2=False,
           decay_lr=True, t_shift=0, swap=False, decay_after=False):
    b1, b2 = (betas[1], betas[0]) if swap else betas
    if l2:
        g = g + wd * p
    elif not decay_after:
        p = p * (1 - (lr if decay_lr else 1.0) * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    tt = t + t_shift
    m_hat = m / (1 - b1**tt) if bias else m
    v_hat = v / (1 - b2**tt) if bias else v
    denom = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
    p = p - lr * m_hat / denom
    if decay_after and not l2:
        p = p * (1 - lr * wd)
    return p, m, v


def _stale_moments(p, g, m, v, t, lr, betas, eps, wd):
    new_p, _, _ = _adamw(p, g, m, v, t, lr, betas, eps, wd)
    return new_p, m, v


check_adamw_step = make_check(
    Part(
        name="adamw_step",
        chapter=CHAPTER,
        reference=optim.adamw_step,
        cases=_adam_cases,
        compare=close(rtol=1e-6, atol=1e-9),
        guard=["lmlab.optim.adamw_step", "lmlab.optim.adam_step", "torch.optim.AdamW", "torch.optim.Adam",
               "torch.optim.adamw.adamw", "torch.optim.adam.adam", "torch._fused_adamw_",
               "torch._fused_adam_"],
        mistakes=[
            Mistake(
                "popular-formula",
                "this is the update of many blog posts: no bias correction and eps inside the "
                "square root, p -= lr·m / sqrt(v + eps). Adam divides m and v by (1 - beta^t) "
                "and adds eps to sqrt(v̂): p -= lr·m̂ / (sqrt(v̂) + eps).",
                lambda *a: _adamw(*a, bias=False, eps_inside=True),
            ),
            Mistake(
                "no-bias-correction",
                "you left out the bias correction. m and v start at 0, so early on they are "
                "too small: use m̂ = m / (1 - beta1^t) and v̂ = v / (1 - beta2^t).",
                lambda *a: _adamw(*a, bias=False),
            ),
            Mistake(
                "eps-inside-sqrt",
                "eps is inside the square root: sqrt(v̂ + eps). Adam adds it after: "
                "sqrt(v̂) + eps (it matters when v̂ is tiny).",
                lambda *a: _adamw(*a, eps_inside=True),
            ),
            Mistake(
                "l2-not-decoupled",
                "you added weight_decay·p to the gradient (L2, which is Adam's weight decay). "
                "AdamW decouples it: shrink the weights directly, p ← p·(1 - lr·weight_decay), "
                "and use the raw gradient for m and v.",
                lambda *a: _adamw(*a, l2=True),
            ),
            Mistake(
                "decay-without-lr",
                "you shrank the weights by weight_decay·p without the learning rate; the decay "
                "follows the learning rate (and its schedule): p ← p·(1 - lr·weight_decay).",
                lambda *a: _adamw(*a, decay_lr=False),
            ),
            Mistake(
                "decay-after-update",
                "you applied the weight decay to the already-updated weights. Decay the "
                "weights as they were at the start of the step: p·(1 - lr·wd) - lr·m̂/(sqrt(v̂)+eps).",
                lambda *a: _adamw(*a, decay_after=True),
            ),
            Mistake(
                "t-plus-one",
                "your bias correction uses t + 1; t is already the number of this step "
                "(1 on the first step): divide by (1 - beta^t).",
                lambda *a: _adamw(*a, t_shift=1),
            ),
            Mistake(
                "betas-swapped",
                "you swapped the betas: beta1 (0.9) averages the gradient into m, beta2 "
                "(0.999) averages its square into v.",
                lambda *a: _adamw(*a, swap=True),
            ),
            Mistake(
                "stale-moments",
                "the parameters are right but you returned the old m and v; return the "
                "updated moments, the next step needs them.",
                _stale_moments,
            ),
        ],
    )
)


# --------------------------------------------------------------------------- cosine_lr


def _cosine_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for _ in range(4):
        warmup = rng.randint(2, 50)
        total = warmup + rng.randint(20, 500)
        lr_max = rng.choice([1e-3, 6e-4, 3e-3, 0.1])
        lr_min = lr_max * rng.choice([0.0, 0.1])
        for step in (rng.randrange(warmup), rng.randint(warmup + 1, total - 1), rng.randint(total + 1, total + 200)):
            cases.append(Case(kwargs=dict(step=step, warmup=warmup, total=total, lr_max=lr_max, lr_min=lr_min),
                              label="random"))
    kw = dict(warmup=10, total=100, lr_max=1.0, lr_min=0.1)
    for step, label in [(0, "first step"), (9, "last warm-up step"), (10, "end of warm-up"),
                        (55, "half way through the decay"), (80, "late decay"), (100, "step == total"),
                        (150, "after total")]:
        cases.append(Case(kwargs=dict(step=step, **kw), label=f"edge: {label}"))
    cases.append(Case(kwargs=dict(step=0, warmup=0, total=50, lr_max=0.5, lr_min=0.05), label="edge: no warm-up"))
    return cases


def _cosine(step, warmup, total, lr_max, lr_min, *, ramp=lambda s, w: (s + 1) / w,
            progress=lambda s, w, T: (s - w) / (T - w), curve=None, clamp=True, floor=True):
    if step < warmup:
        return lr_max * ramp(step, warmup)
    if clamp and step >= total:
        return lr_min if floor else 0.0
    x = progress(step, warmup, total)
    low = lr_min if floor else 0.0
    shape = curve(x) if curve else 0.5 * (1 + math.cos(math.pi * x))
    return low + (lr_max - low) * shape


check_cosine_lr = make_check(
    Part(
        name="cosine_lr",
        chapter=CHAPTER,
        reference=optim.cosine_schedule,
        cases=_cosine_cases,
        compare=close(rtol=1e-9, atol=1e-12),
        guard=["lmlab.optim.cosine_schedule", "torch.optim.lr_scheduler.CosineAnnealingLR"],
        mistakes=[
            Mistake(
                "warmup-off-by-one",
                "your warm-up is off by one: lr_max·step/warmup gives 0 at step 0 (a wasted "
                "step) and never reaches lr_max during warm-up. Use lr_max·(step + 1)/warmup.",
                lambda **k: _cosine(**k, ramp=lambda s, w: s / w),
            ),
            Mistake(
                "warmup-plus-one",
                "your warm-up divides by warmup + 1, so it never reaches lr_max before the "
                "decay starts; this exercise's convention is lr_max·(step + 1)/warmup.",
                lambda **k: _cosine(**k, ramp=lambda s, w: (s + 1) / (w + 1)),
            ),
            Mistake(
                "progress-ignores-warmup",
                "your cosine starts at step 0 instead of at the end of the warm-up: use "
                "progress = (step - warmup) / (total - warmup).",
                lambda **k: _cosine(**k, progress=lambda s, w, T: s / T),
            ),
            Mistake(
                "no-lr-min",
                "your cosine decays to 0; it must end at lr_min: "
                "lr_min + ½(lr_max - lr_min)(1 + cos(π·progress)).",
                lambda **k: _cosine(**k, floor=False),
            ),
            Mistake(
                "no-pi",
                "you wrote cos(progress); the half cosine from lr_max to lr_min is "
                "cos(π·progress), progress going from 0 to 1.",
                lambda **k: _cosine(**k, curve=lambda x: 0.5 * (1 + math.cos(x))),
            ),
            Mistake(
                "no-half",
                "you forgot the ½: (1 + cos(π·progress)) goes from 2 to 0, so multiply it by "
                "½(lr_max - lr_min).",
                lambda **k: _cosine(**k, curve=lambda x: 1 + math.cos(math.pi * x)),
            ),
            Mistake(
                "linear",
                "your decay is a straight line; the schedule is a half cosine, "
                "½(1 + cos(π·progress)).",
                lambda **k: _cosine(**k, curve=lambda x: 1 - x),
            ),
            Mistake(
                "no-clamp",
                "after step total your cosine keeps going and the learning rate climbs back "
                "up; from step total on, return lr_min.",
                lambda **k: _cosine(**k, clamp=False),
            ),
        ],
    )
)


# --------------------------------------------------------------------------- clipping


def _clip_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    cases = []
    for i in range(6):
        shapes = rng.sample([(3, 4), (7,), (2, 2, 2), (5, 1), (1,)], k=rng.randint(2, 4))
        grads = [torch.randn(s, generator=g, dtype=torch.float64) * rng.uniform(0.5, 4) for s in shapes]
        total = math.sqrt(sum(float((x**2).sum()) for x in grads))
        max_norm = total * (rng.uniform(0.1, 0.6) if i < 4 else rng.uniform(1.5, 3))
        cases.append(Case((grads, round(max_norm, 3)), label="random" if i < 4 else "random, below max_norm"))
    d = torch.float64
    cases.append(Case(([torch.tensor([3.0, 0.0], dtype=d), torch.tensor([[4.0]], dtype=d)], 1.0),
                      label="edge: norm 5 across two tensors"))
    cases.append(Case(([torch.tensor([30.0, 40.0], dtype=d), torch.tensor([0.1, 0.1], dtype=d)], 5.0),
                      label="edge: one big tensor, one small"))
    cases.append(Case(([torch.tensor([0.3, 0.4], dtype=d)], 1.0), label="edge: one tensor, already small"))
    return cases


def _clip(grads, max_norm, *, norm=None, always=False, report_after=False, per_tensor=False):
    if per_tensor:
        out = [x * min(1.0, max_norm / (float(x.norm()) + 1e-6)) for x in grads]
        total = math.sqrt(sum(float((x**2).sum()) for x in grads))
        return out, total
    total = norm(grads) if norm else math.sqrt(sum(float((x**2).sum()) for x in grads))
    scale = max_norm / (total + 1e-6)
    if not always:
        scale = min(1.0, scale)
    out = [x * scale for x in grads]
    return out, (min(total, max_norm) if report_after else total)


check_clip_grad_norm_global = make_check(
    Part(
        name="clip_grad_norm_global",
        chapter=CHAPTER,
        reference=optim.clip_gradients,
        cases=_clip_cases,
        compare=close(rtol=1e-5, atol=1e-8),
        guard=["lmlab.optim.clip_gradients", "lmlab.optim.clip_grad_norm_",
               "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.get_total_norm",
               "torch.nn.utils.clip_grads_with_norm_"],
        mistakes=[
            Mistake(
                "per-tensor",
                "you clipped each tensor by its own norm. That changes the direction of the "
                "whole gradient; compute one global norm sqrt(Σ ||g_i||²) over all tensors and "
                "scale every tensor by the same factor.",
                lambda gs, c: _clip(gs, c, per_tensor=True),
            ),
            Mistake(
                "no-sqrt",
                "your global norm is the sum of squares; take its square root: "
                "sqrt(Σ_i ||g_i||²).",
                lambda gs, c: _clip(gs, c, norm=lambda gs: sum(float((x**2).sum()) for x in gs)),
            ),
            Mistake(
                "sum-of-norms",
                "you added the tensors' norms (Σ ||g_i||); the global norm is the norm of "
                "everything at once: sqrt(Σ ||g_i||²).",
                lambda gs, c: _clip(gs, c, norm=lambda gs: sum(float(x.norm()) for x in gs)),
            ),
            Mistake(
                "l1",
                "you used the L1 norm (sum of absolute values); clip by the L2 norm.",
                lambda gs, c: _clip(gs, c, norm=lambda gs: sum(float(x.abs().sum()) for x in gs)),
            ),
            Mistake(
                "always-scale",
                "you rescaled every gradient to norm max_norm, scaling small gradients up. "
                "Clipping only shrinks: leave the gradients alone when their norm is already "
                "at most max_norm.",
                lambda gs, c: _clip(gs, c, always=True),
            ),
            Mistake(
                "norm-after",
                "the gradients are right but you returned the norm after clipping; return "
                "the norm before clipping (training logs use it to spot spikes).",
                lambda gs, c: _clip(gs, c, report_after=True),
            ),
        ],
    )
)
