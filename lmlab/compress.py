"""Compression that is trained or chosen, not just rounded: distillation and pruning.

Chapter 8 shrinks a model by storing its weights in fewer bits (:mod:`lmlab.quantize`).
This module holds the two other ways:

* **knowledge distillation** (Hinton, Vinyals & Dean 2015): a small *student* learns from
  the full next-token distribution of a big *teacher*, softened by a temperature ``T``,
  instead of from the one observed token (:func:`distill_loss`);
* **magnitude pruning**: set the weights with the smallest ``|w|`` to zero, anywhere in the
  matrix (:func:`magnitude_prune`, *unstructured*) or two of every four consecutive inputs
  (:func:`prune_2_4`, the *2:4 structured* pattern NVIDIA's sparse tensor cores run at
  twice the speed, Mishra et al. 2021).

The training and measuring experiments that use them live in :mod:`lmlab.finetune`
(:func:`lmlab.finetune.run_distillation`, :func:`lmlab.finetune.run_pruning`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distill_loss", "magnitude_prune", "prune_2_4", "prune_model", "sparsity_of"]


# --------------------------------------------------------------------------- distillation


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                 temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(t / T) || softmax(s / T))``, averaged over positions.

    student_logits, teacher_logits: (..., V), the same shape; every leading index is one
    position (a token of a batch of sequences). Per position the KL divergence is summed
    over the V classes, ``Σ_v p_t(v) (log p_t(v) - log p_s(v))``; the result is the mean
    over positions (PyTorch's ``reduction="batchmean"`` on the flattened (N, V) logits, not
    ``"mean"``, which would also divide by V). Returns a 0-d tensor.

    Why ``T²``: the gradient of the softened KL with respect to a student logit is
    ``(p_s - p_t) / T``, and for large T that difference itself shrinks like ``1 / T``, so
    the gradient shrinks like ``1 / T²``; multiplying by ``T²`` keeps its size independent
    of T (Hinton et al. 2015, section 2), so a mix with the hard-label loss keeps its
    balance when T changes. Both sides are divided by the same T. Compute the teacher's
    logits under ``torch.no_grad()``: this function lets gradients flow into both inputs.
    """
    if not isinstance(student_logits, torch.Tensor) or not isinstance(teacher_logits, torch.Tensor):
        raise TypeError("student_logits and teacher_logits must be tensors, got "
                        f"{type(student_logits).__name__} and {type(teacher_logits).__name__}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits has shape {tuple(student_logits.shape)} but "
                         f"teacher_logits has shape {tuple(teacher_logits.shape)}: they must match")
    if student_logits.dim() < 1 or student_logits.numel() == 0:
        raise ValueError(f"logits must be (..., V) and non-empty, got {tuple(student_logits.shape)}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    V = student_logits.shape[-1]
    log_p_s = F.log_softmax(student_logits.reshape(-1, V) / temperature, dim=-1)  # (N, V)
    log_p_t = F.log_softmax(teacher_logits.reshape(-1, V) / temperature, dim=-1)  # (N, V)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=-1)  # (N,)
    return kl.mean() * temperature**2


# --------------------------------------------------------------------------- pruning


def _check_weight(w, name: str = "w") -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {w.dtype}")


def magnitude_prune(w: torch.Tensor, sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the ``round(sparsity · w.numel())`` entries of smallest ``|w|``, anywhere.

    w: any shape. Returns ``(pruned, mask)``: ``pruned = w * mask`` (same shape and dtype),
    ``mask`` bool, True where a weight is kept. Ties in ``|w|`` go to the earlier entry
    (flattened order), so the number of zeros is exact.
    """
    _check_weight(w)
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity must be a number in [0, 1], got {sparsity!r}")
    n_drop = round(float(sparsity) * w.numel())
    order = torch.argsort(w.detach().abs().flatten(), stable=True)  # smallest first
    mask = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
    mask[order[:n_drop]] = False
    mask = mask.view(w.shape)
    return w * mask, mask


def prune_2_4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2:4 structured sparsity: in every group of 4 consecutive inputs keep the 2 largest |w|.

    w: (out, in) with ``in`` a multiple of 4 (a ``nn.Linear`` weight: the groups run along
    the input dimension, the one a matmul sums over). Returns ``(pruned, mask)`` as in
    :func:`magnitude_prune`; exactly half of the entries are zero. Ties go to the earlier
    input of the group.
    """
    _check_weight(w)
    if w.dim() != 2 or w.shape[1] % 4:
        raise ValueError(f"w must be (out, in) with in a multiple of 4, got {tuple(w.shape)}")
    groups = w.detach().abs().reshape(w.shape[0], -1, 4)  # (out, in/4, 4)
    order = torch.argsort(-groups, dim=-1, stable=True)  # largest first, ties: earlier first
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(-1, order[..., :2], True)
    mask = mask.view(w.shape)
    return w * mask, mask


def sparsity_of(w: torch.Tensor) -> float:
    """The fraction of exact zeros in ``w``."""
    _check_weight(w)
    return float((w == 0).sum()) / max(1, w.numel())


@torch.no_grad()
def prune_model(model: torch.nn.Module, sparsity: float | None = None, *,
                pattern: str = "unstructured", skip: tuple[str, ...] = ("lm_head", "wte", "wpe")
                ) -> torch.nn.Module:
    """Prune every ``nn.Linear`` weight of ``model`` in place, layer by layer.

    ``pattern``: ``"unstructured"`` (:func:`magnitude_prune` with ``sparsity`` per matrix)
    or ``"2:4"`` (:func:`prune_2_4`; ``sparsity`` must be None or 0.5). Modules whose name
    contains an entry of ``skip`` are left alone (embeddings and the output head are usually
    kept dense). Returns ``model``.
    """
    if pattern not in ("unstructured", "2:4"):
        raise ValueError(f"pattern must be 'unstructured' or '2:4', got {pattern!r}")
    if pattern == "unstructured" and sparsity is None:
        raise ValueError("sparsity is needed for pattern='unstructured'")
    if pattern == "2:4" and sparsity not in (None, 0.5):
        raise ValueError(f"pattern='2:4' always prunes half of the weights, got sparsity={sparsity!r}")
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or any(s in name for s in skip):
            continue
        if pattern == "2:4":
            pruned, _ = prune_2_4(module.weight)
        else:
            pruned, _ = magnitude_prune(module.weight, sparsity)
        module.weight.copy_(pruned)
    return model
