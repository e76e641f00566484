"""A sparse mixture of experts: many feed-forward networks, each token uses only k of them.

A *router* (one linear map, C -> E) scores the E experts for every token; the token goes
to its ``k`` best (:func:`moe_route`), and its output is the weighted sum of what those k
experts make of it. The model holds E feed-forward networks' worth of parameters (its
*total* count) but each token pays for only k of them (its *active* count): Mixtral-8x7B
has 46.7 B parameters and runs about 12.9 B per token (Jiang et al. 2024).

Left alone, a router collapses onto a few experts (they get trained more, so they get
picked more). The load-balancing loss (:func:`load_balancing_loss`, Fedus et al. 2021,
"Switch Transformers", eq. 4) is added to the training loss to push the routing back
towards uniform.

Shapes: ``N`` tokens (batch and time flattened), ``C`` features, ``E`` experts, ``k``
experts per token.
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.transformer import SwiGLU

__all__ = ["moe_route", "load_balancing_loss", "MoEFeedForward"]


def _check_logits(router_logits: torch.Tensor) -> None:
    if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
        got = tuple(router_logits.shape) if isinstance(router_logits, torch.Tensor) else type(
            router_logits).__name__
        raise ValueError(f"router_logits must be an (N, E) tensor, got {got}")


def moe_route(
    router_logits: torch.Tensor, k: int, *, renormalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick each token's k experts and their weights: (N, E) -> (weights (N, k), indices (N, k)).

    ``renormalize=True`` (Mixtral): the weights are the softmax over the k chosen logits
    only, so they sum to 1; this equals the full softmax's top-k probabilities divided by
    their sum. ``renormalize=False`` (Switch Transformer with k = 1, Qwen-MoE, DeepSeek):
    the top-k probabilities of the softmax over *all* E experts, which sum to less than 1.
    Experts come in decreasing order of their logits.
    """
    _check_logits(router_logits)
    E = router_logits.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= E:
        raise ValueError(f"k must be an int in [1, {E}] (the number of experts), got {k!r}")
    top_logits, indices = router_logits.topk(k, dim=-1)
    if renormalize:
        weights = torch.softmax(top_logits.float(), dim=-1)
    else:
        weights = torch.softmax(router_logits.float(), dim=-1).gather(-1, indices)
    return weights.to(router_logits.dtype), indices


def load_balancing_loss(router_logits: torch.Tensor, indices: torch.Tensor, n_expert: int) -> torch.Tensor:
    """The auxiliary loss ``E · Σ_i f_i · P_i`` that keeps the router from collapsing.

    router_logits: (N, E); indices: (N, k), the chosen experts. ``f_i`` is the fraction
    of tokens that chose expert ``i`` among their k (so Σ f_i = k; not differentiable),
    ``P_i`` the router's mean probability of expert ``i`` (differentiable: the gradient
    lowers the probability of the experts that are picked too often). Perfectly balanced
    routing gives ``k``; everything on one expert gives ``E · k`` times its probability.
    This is the Mixtral form in Hugging Face's ``load_balancing_loss_func``; with k = 1 it
    is the Switch Transformer's eq. 4 (before the α coefficient). Returns a scalar.
    """
    _check_logits(router_logits)
    if router_logits.shape[1] != n_expert:
        raise ValueError(
            f"router_logits has {router_logits.shape[1]} columns but n_expert={n_expert}: "
            f"they must match"
        )
    if indices.dim() != 2 or indices.shape[0] != router_logits.shape[0]:
        raise ValueError(
            f"indices has shape {tuple(indices.shape)}, expected ({router_logits.shape[0]}, k)"
        )
    N = router_logits.shape[0]
    counts = torch.zeros(n_expert, device=indices.device).index_add_(
        0, indices.reshape(-1), torch.ones(indices.numel(), device=indices.device))
    f = counts / N  # (E,)
    P = torch.softmax(router_logits.float(), dim=-1).mean(dim=0)  # (E,)
    return n_expert * (f * P).sum()


class MoEFeedForward(nn.Module):
    """E SwiGLU experts behind a top-k router (Mixtral's sparse MoE block).

    ``forward(x)`` -> same shape as x (..., C). Each expert runs only on the tokens routed
    to it (gathered by index, then added back, scaled by their routing weight), so the
    compute per token is k experts, not E. The load-balancing loss of the last call is
    kept in ``self.aux_loss``.
    """

    def __init__(self, n_embd: int, hidden: int, n_expert: int, top_k: int, *,
                 bias: bool = False, renormalize: bool = True) -> None:
        super().__init__()
        if not 1 <= top_k <= n_expert:
            raise ValueError(f"top_k must be in [1, n_expert={n_expert}], got {top_k!r}")
        self.n_expert, self.top_k, self.renormalize = n_expert, top_k, renormalize
        self.gate = nn.Linear(n_embd, n_expert, bias=False)  # the router
        self.experts = nn.ModuleList(SwiGLU(n_embd, hidden, bias=bias) for _ in range(n_expert))
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) -> (..., C)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, C)
        logits = self.gate(x)  # (N, E)
        weights, indices = moe_route(logits, self.top_k, renormalize=self.renormalize)
        self.aux_loss = load_balancing_loss(logits, indices, self.n_expert)
        out = torch.zeros_like(x)
        # one sort instead of E boolean scans: the (token, slot) pairs grouped by expert
        flat = indices.reshape(-1)
        order = flat.argsort(stable=True)
        tokens = order // self.top_k  # which token each sorted pair belongs to
        counts = torch.bincount(flat, minlength=self.n_expert).tolist()
        scale = weights.reshape(-1)[order, None]
        start = 0
        for expert, n in zip(self.experts, counts):
            if n:
                rows = tokens[start:start + n]
                out.index_add_(0, rows, expert(x[rows]) * scale[start:start + n])
            start += n
        return out.view(shape)
