"""Optimizers from scratch: SGD (momentum, Nesterov), Adam, AdamW; clipping; the cosine schedule.

Each optimizer is a ``torch.optim.Optimizer`` subclass, so it plugs into any training loop,
and its parameter trajectory matches ``torch.optim``'s to float rounding (tested over 100
steps in ``tests/unit/test_optim.py``). The update rules, for a parameter ``p`` with gradient
``g`` at step ``t = 1, 2, ...``:

* SGD with momentum ``mu``: ``b = mu·b + g`` (``b = g`` on the first step), ``p -= lr·b``;
  Nesterov looks one step ahead: ``p -= lr·(g + mu·b)``.
* Adam (Kingma & Ba, 2015, Algorithm 1): ``m = b1·m + (1-b1)·g``, ``v = b2·v + (1-b2)·g²``,
  ``m̂ = m / (1-b1^t)``, ``v̂ = v / (1-b2^t)``, ``p -= lr·m̂ / (sqrt(v̂) + eps)``.
  Weight decay in Adam is L2: ``g += wd·p`` before the moments, so it gets rescaled by ``v``.
* AdamW (Loshchilov & Hutter, 2019): the same moments of the *raw* gradient, and the decay
  applied to the weights directly: ``p -= lr·wd·p``, then the Adam step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import Optimizer

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "adam_step",
    "adamw_step",
    "clip_gradients",
    "clip_grad_norm_",
    "cosine_schedule",
]


def _check_hyper(name: str, value: float, low: float = 0.0, high: float | None = None) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


# --------------------------------------------------------------------------- SGD


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 decay.

    Matches ``torch.optim.SGD(params, lr, momentum, dampening=0, weight_decay, nesterov)``.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        _check_hyper("lr", lr)
        _check_hyper("momentum", momentum, 0.0, 1.0)
        _check_hyper("weight_decay", weight_decay)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    g = g.add(p, alpha=wd)
                if mu != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()  # first step: b = g
                    else:
                        state["momentum_buffer"].mul_(mu).add_(g)
                    buf = state["momentum_buffer"]
                    g = g.add(buf, alpha=mu) if group["nesterov"] else buf
                p.add_(g, alpha=-lr)
        return loss


# --------------------------------------------------------------------------- Adam, AdamW


def adam_step(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    t: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    *,
    decoupled: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam (``decoupled=False``) or AdamW (``decoupled=True``) step; returns new (p, m, v).

    p, g, m, v: tensors of one shape (parameter, gradient, first and second moment);
    t: the number of this step, 1 for the first. Inputs are not modified.
    """
    beta1, beta2 = betas
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)  # AdamW: shrink the weights, leave the gradient alone
        else:
            g = g + weight_decay * p  # Adam: L2, which v then rescales per coordinate
    # The torch functions below are the ones torch.optim uses, so float rounding matches.
    m = torch.lerp(m, g, 1 - beta1)  # m = b1·m + (1-b1)·g
    v = torch.addcmul(v * beta2, g, g, value=1 - beta2)  # v = b2·v + (1-b2)·g²
    # Bias correction: m and v start at 0, so early on they underestimate E[g] and E[g²].
    bias1 = 1 - beta1**t
    bias2 = 1 - beta2**t
    # eps goes outside the square root, added to sqrt(v̂) (Algorithm 1 of the paper).
    denom = v.sqrt() / math.sqrt(bias2) + eps
    p = torch.addcdiv(p, m, denom, value=-lr / bias1)  # p - lr·m̂ / (sqrt(v̂) + eps)
    return p, m, v


def adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay):
    """One AdamW step: ``adam_step(..., decoupled=True)``; returns new (p, m, v)."""
    return adam_step(p, g, m, v, t, lr, betas, eps, weight_decay, decoupled=True)


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is L2 (added to the gradient).

    Matches ``torch.optim.Adam(params, lr, betas, eps, weight_decay)``. State per parameter:
    ``step`` (t), ``exp_avg`` (m) and ``exp_avg_sq`` (v), each shaped like the parameter.
    """

    decoupled = False  # AdamW flips this: decay the weights, not the gradient

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        _check_hyper("lr", lr)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check_hyper("betas[0]", betas[0], 0.0, 1.0)
        _check_hyper("betas[1]", betas[1], 0.0, 1.0)
        _check_hyper("eps", eps)
        _check_hyper("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        new_p, state["exp_avg"], state["exp_avg_sq"] = adam_step(
            p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"],
            group["lr"], group["betas"], group["eps"], group["weight_decay"],
            decoupled=self.decoupled,
        )
        p.copy_(new_p)


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p -= lr·wd·p`` before the Adam step.

    Matches ``torch.optim.AdamW(params, lr, betas, eps, weight_decay)`` (default wd 0.01).
    """

    decoupled = True

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# --------------------------------------------------------------------------- clipping


def clip_gradients(
    grads: list[torch.Tensor], max_norm: float, eps: float = 1e-6
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Scale a list of gradients together so their global L2 norm is at most ``max_norm``.

    The global norm is ``sqrt(sum over every tensor of ||g||²)``: one number for the whole
    model, so clipping keeps the direction of the full gradient (clipping each tensor on
    its own would turn it). Returns ``(clipped, norm before clipping)``; scale
    ``min(1, max_norm / (norm + eps))`` as in ``torch.nn.utils.clip_grad_norm_``.
    """
    _check_hyper("max_norm", max_norm)
    if not grads:
        return [], torch.tensor(0.0)
    norms = torch.stack([torch.linalg.vector_norm(g.detach(), 2) for g in grads])
    total = torch.linalg.vector_norm(norms, 2)
    scale = torch.clamp(max_norm / (total + eps), max=1.0)
    return [g * scale.to(g.device, g.dtype) for g in grads], total


def clip_grad_norm_(
    parameters: torch.Tensor | Iterable[torch.Tensor], max_norm: float, eps: float = 1e-6
) -> torch.Tensor:
    """Clip the ``.grad`` of ``parameters`` in place by their global norm (:func:`clip_gradients`).

    Returns the norm before clipping (a 0-d tensor), like ``torch.nn.utils.clip_grad_norm_``.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    clipped, total = clip_gradients(grads, max_norm, eps)
    for g, c in zip(grads, clipped):
        g.detach().copy_(c)
    return total


# --------------------------------------------------------------------------- schedule


def cosine_schedule(step: int, *, warmup: int, total: int, lr_max: float, lr_min: float = 0.0) -> float:
    """The learning rate at ``step`` (0-based): linear warm-up, then a cosine down to ``lr_min``.

    * ``step < warmup``: ``lr_max · (step + 1) / warmup`` (the first step already moves;
      the last warm-up step, ``warmup - 1``, reaches ``lr_max``);
    * ``warmup <= step <= total``: ``lr_min + ½(lr_max - lr_min)(1 + cos(π·progress))``
      with ``progress = (step - warmup) / (total - warmup)``, from 0 to 1;
    * ``step > total``: ``lr_min``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup < 0 or total < 0:
        raise ValueError(f"warmup and total must be >= 0, got warmup={warmup}, total={total}")
    if warmup > total:
        raise ValueError(f"warmup ({warmup}) must not exceed total ({total})")
    if step < warmup:
        return lr_max * (step + 1) / warmup
    if step >= total:
        return lr_min
    progress = (step - warmup) / (total - warmup)
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * progress))
