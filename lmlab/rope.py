"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer").

Instead of adding a position vector to the token, RoPE *rotates* the queries and keys.
The D features of a head are grouped into D/2 pairs; pair ``i`` of a vector at position
``m`` is turned by the angle ``m · θ_i`` with ``θ_i = theta^(-2i/D)``
(:func:`rope_frequencies`). A rotation by ``mθ`` followed by the dot product with a
vector rotated by ``nθ`` only sees the difference of the angles, so ``q_m · k_n`` depends
on the positions only through ``m - n``: attention becomes relative, with no parameter.

Which features form a pair is a convention, and both exist in the wild:

* ``style="half"`` (Hugging Face Llama, Mistral, Qwen): pair ``(i, i + D/2)``;
* ``style="interleaved"`` (the RoFormer paper, Meta's reference Llama code): pair
  ``(2i, 2i + 1)``.

They are the same model up to a fixed reordering of the rows of the query and key
weights (:func:`half_to_interleaved_permutation`), but weights trained under one and run
under the other give a different model.

Shapes: ``B`` batch, ``H`` heads, ``T`` positions, ``D`` head size (even).
"""

from __future__ import annotations

import torch

__all__ = [
    "ROPE_STYLES",
    "rope_frequencies",
    "rope_cos_sin",
    "rotate",
    "apply_rope",
    "half_to_interleaved_permutation",
    "half_to_interleaved_weight",
]

ROPE_STYLES = ("half", "interleaved")


def _check_head_dim(head_dim: int) -> None:
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise ValueError(
            f"head_dim must be a positive even int (RoPE rotates pairs of features), got {head_dim!r}"
        )


def _check_style(style: str) -> None:
    if style not in ROPE_STYLES:
        raise ValueError(f"style must be one of {ROPE_STYLES}, got {style!r}")


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """The rotation speed of each pair: ``θ_i = theta^(-2i / head_dim)``, (head_dim // 2,).

    Pair 0 turns by one radian per position, the last pair almost not at all (one turn
    every ``≈ 2π·theta`` positions): fast pairs resolve nearby positions, slow ones far
    away ones. Computed in float32 as Hugging Face does, so the angles match bit for bit.
    """
    _check_head_dim(head_dim)
    if not theta > 1:
        raise ValueError(f"theta must be > 1, got {theta!r}")
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta ** exponent)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles ``position · θ_i``: positions (...,) -> two (..., D/2).

    Compute them once per forward pass and hand them to :func:`rotate` in every layer.
    """
    freqs = rope_frequencies(head_dim, theta).to(positions.device)
    angles = positions.float()[..., None] * freqs  # (..., D/2)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: str = "half") -> torch.Tensor:
    """Turn each pair of features of x (..., D) by the angles whose cos/sin are given.

    cos, sin: (..., D/2), broadcastable against x's leading axes. A pair ``(a, b)``
    becomes ``(a cos - b sin, b cos + a sin)``. Returns x's shape and dtype.
    """
    _check_style(style)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if style == "half":
        a, b = x.chunk(2, dim=-1)
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2)


def _positions(offset: int | torch.Tensor, B: int, T: int, device) -> torch.Tensor:
    steps = torch.arange(T, device=device)
    if isinstance(offset, torch.Tensor):
        if offset.dim() == 1 and offset.shape[0] == B:
            return offset.to(device)[:, None] + steps  # (B, T): one start per row
        if offset.dim() == 2 and tuple(offset.shape) == (B, T):
            return offset.to(device)  # (B, T): every position given
        raise ValueError(
            f"offset has shape {tuple(offset.shape)}, expected an int, ({B},) (a start per row) "
            f"or ({B}, {T}) (a position per token)"
        )
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0 or a position tensor, got {offset!r}")
    return offset + steps  # (T,)


def apply_rope(
    x: torch.Tensor,
    *,
    offset: int | torch.Tensor = 0,
    theta: float = 10000.0,
    style: str = "half",
) -> torch.Tensor:
    """Rotate queries or keys x (B, H, T, D) for positions ``offset, ..., offset + T - 1``.

    ``offset`` is the number of positions already in a KV cache (the new tokens come after
    them). It may also be a (B,) tensor, one start per row, or a (B, T) tensor of
    positions (left-padded batches, where each row's real tokens start at 0).
    ``style``: ``"half"`` pairs feature i with i + D/2 (Hugging Face), ``"interleaved"``
    pairs 2i with 2i + 1 (RoFormer, Meta). Returns (B, H, T, D).
    """
    _check_style(style)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (B, H, T, D) tensor, got {got}")
    B, _, T, D = x.shape
    _check_head_dim(D)
    pos = _positions(offset, B, T, x.device)
    cos, sin = rope_cos_sin(pos, D, theta)  # (T, D/2) or (B, T, D/2)
    if pos.dim() == 2:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D/2): broadcast over heads
    return rotate(x, cos, sin, style)


def half_to_interleaved_permutation(head_dim: int) -> torch.Tensor:
    """The order of features that turns a half-split RoPE head into an interleaved one.

    ``perm = [0, D/2, 1, D/2 + 1, ...]``: feature ``2i`` of the interleaved head is feature
    ``i`` of the half-split head and feature ``2i + 1`` is ``i + D/2``, so the pairs
    ``(i, i + D/2)`` land on ``(2i, 2i + 1)``. Then, for every x,
    ``apply_rope(x[..., perm], style="interleaved") == apply_rope(x, style="half")[..., perm]``,
    and because q and k get the same permutation, every ``q · k`` (so the model) is
    unchanged. For a weight with the rows of H heads, (H·D, C), reorder within each head:
    ``w.view(H, D, C)[:, perm].reshape(H·D, C)``. Returns a long tensor (D,).
    """
    _check_head_dim(head_dim)
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()


def half_to_interleaved_weight(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of a query or key weight (or bias) from half-split to interleaved.

    weight: (n_heads·D, ...) with head ``h`` in rows ``h·D : (h+1)·D``; each head's rows
    are reordered by :func:`half_to_interleaved_permutation`. A model whose q and k maps
    are converted this way and run with ``style="interleaved"`` computes exactly what the
    original computes with ``style="half"``. Returns a new tensor of the same shape.
    """
    if weight.shape[0] % n_heads:
        raise ValueError(f"weight has {weight.shape[0]} rows, not a multiple of n_heads={n_heads}")
    D = weight.shape[0] // n_heads
    perm = half_to_interleaved_permutation(D).to(weight.device)
    return weight.reshape(n_heads, D, *weight.shape[1:])[:, perm].reshape(weight.shape)
