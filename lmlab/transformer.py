"""The Transformer: positions, norms, the feed-forward network, the block, a GPT.

Read top to bottom, this module builds a decoder-only Transformer (GPT-2's architecture,
as in Radford et al. 2019 and nanoGPT) out of small parts:

* where a token is: learned position embeddings or :func:`sinusoidal_positions`
  (Vaswani et al. 2017, section 3.5);
* :class:`LayerNorm` (Ba et al. 2016) over the feature axis of each token;
* :class:`FeedForward`: ``W2 · GELU(W1 · x + b1) + b2`` applied to each token;
* :class:`CausalSelfAttention` on top of :func:`lmlab.attention.scaled_dot_product_attention`;
* :class:`Block`: pre-LN by default, ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``;
* :class:`GPT`: embeddings, ``n_layer`` blocks, a final LayerNorm, the language-model head.

The same code builds today's open models (Llama, Mistral, Qwen, Mixtral) when the config
says so: :class:`RMSNorm` instead of LayerNorm, rotary positions (:mod:`lmlab.rope`)
instead of a position table, the :class:`SwiGLU` feed-forward (or a mixture of experts,
:mod:`lmlab.moe`), grouped-query attention (:func:`repeat_kv`), no biases, an untied head;
:mod:`lmlab.presets` lists real models.

It also counts what a model costs: :func:`param_count` (closed form, equal to
:func:`count_parameters` of the built model), :func:`active_param_count`,
:func:`kv_cache_bytes_per_token` and :func:`flops_per_token`.

Shapes: ``B`` batch, ``T`` sequence length, ``C`` = ``n_embd``, ``H`` = ``n_head``,
``H_kv`` = ``n_kv_head``, ``D`` = ``C // H`` (head size), ``F`` the feed-forward's
hidden width, ``V`` = ``vocab_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.attention import scaled_dot_product_attention
from lmlab.rope import ROPE_STYLES, rope_cos_sin, rotate

__all__ = [
    "GPTConfig",
    "layer_norm",
    "LayerNorm",
    "rms_norm",
    "RMSNorm",
    "feed_forward",
    "FeedForward",
    "swiglu",
    "SwiGLU",
    "llama_hidden_size",
    "sinusoidal_positions",
    "repeat_kv",
    "CausalSelfAttention",
    "Block",
    "block_forward",
    "GPT",
    "count_parameters",
    "param_breakdown",
    "param_count",
    "active_param_count",
    "kv_cache_bytes_per_token",
    "gpt_param_count",
    "flops_per_token",
    "GPT2_CONFIGS",
]


# --------------------------------------------------------------------------- config


@dataclass
class GPTConfig:
    """The hyper-parameters of a GPT (field names as in nanoGPT), GPT-2 or Llama-style.

    The defaults build GPT-2's block. The other fields switch, one by one, to what
    today's open models (Llama, Mistral, Qwen, Mixtral) use instead:

    * ``positions``: ``"learned"`` (GPT-2: a trained table of ``block_size`` vectors),
      ``"sinusoidal"`` (the 2017 paper's fixed sines and cosines) or ``"rope"`` (rotary
      embeddings applied to q and k in every layer, see :mod:`lmlab.rope`, with
      ``rope_theta`` and the pairing ``rope_style``);
    * ``norm``: ``"layernorm"`` or ``"rmsnorm"`` (no mean, no bias), with ``norm_eps``;
    * ``mlp``: ``"gelu"`` (exact), ``"gelu_tanh"`` (GPT-2's tanh approximation) or
      ``"swiglu"``; ``ffn_hidden`` its hidden width (default ``4·n_embd``, or
      :func:`llama_hidden_size` for SwiGLU);
    * ``n_kv_head``: key/value heads for grouped-query attention (None = ``n_head``,
      1 = multi-query attention);
    * ``n_expert`` > 0 makes every feed-forward a mixture of ``n_expert`` SwiGLU experts
      with ``n_expert_per_token`` active per token, whose load-balancing loss is added
      to the training loss times ``moe_aux_loss_coef``;
    * ``bias``: biases in every linear map and LayerNorm; ``qkv_bias`` overrides it for the
      query/key/value map alone (Qwen2 has biases there and nowhere else).

    ``tie_weights`` shares the token embedding with the output head (GPT-2 does).
    ``norm_first`` picks pre-LN blocks (GPT-2, the default) or post-LN (the 2017 paper, BERT).
    ``fused=True`` runs the same maths on PyTorch's fused kernels (``F.layer_norm``,
    ``F.rms_norm`` and ``F.scaled_dot_product_attention``) instead of lmlab's written-out
    ones: same results to float rounding, faster; use it to train, read the default to learn.
    """

    vocab_size: int = 50304
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    positions: str = "learned"
    tie_weights: bool = True
    norm_first: bool = True
    fused: bool = False
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    ffn_hidden: int | None = None
    n_kv_head: int | None = None
    qkv_bias: bool | None = None
    rope_theta: float = 10000.0
    rope_style: str = "half"
    n_expert: int = 0
    n_expert_per_token: int = 2
    moe_aux_loss_coef: float = 0.01

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _check_positive(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                f"each head gets n_embd // n_head features"
            )
        for name, allowed in (("positions", ("learned", "sinusoidal", "rope")),
                              ("norm", ("layernorm", "rmsnorm")),
                              ("mlp", ("gelu", "gelu_tanh", "swiglu")),
                              ("rope_style", ROPE_STYLES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GPTConfig.{name} must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.n_kv_head is not None:
            _check_positive("n_kv_head", self.n_kv_head)
            if self.n_head % self.n_kv_head:
                raise ValueError(
                    f"GPTConfig.n_kv_head={self.n_kv_head} does not divide n_head={self.n_head}: "
                    f"each key/value head serves a group of n_head // n_kv_head query heads"
                )
        if self.ffn_hidden is not None:
            _check_positive("ffn_hidden", self.ffn_hidden)
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"positions='rope' needs an even head size, got "
                             f"n_embd // n_head = {self.head_dim}")
        if isinstance(self.n_expert, bool) or not isinstance(self.n_expert, int) or self.n_expert < 0:
            raise ValueError(f"GPTConfig.n_expert must be an int >= 0, got {self.n_expert!r}")
        if self.n_expert:
            if self.mlp != "swiglu":
                raise ValueError(f"GPTConfig.n_expert > 0 needs mlp='swiglu' (the experts are "
                                 f"SwiGLU networks), got mlp={self.mlp!r}")
            if not 1 <= self.n_expert_per_token <= self.n_expert:
                raise ValueError(f"GPTConfig.n_expert_per_token must be in [1, n_expert="
                                 f"{self.n_expert}], got {self.n_expert_per_token!r}")

    @property
    def head_dim(self) -> int:
        """Features per attention head, ``n_embd // n_head``."""
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_head``, or ``n_head`` when it is None."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def ffn_dim(self) -> int:
        """The feed-forward's hidden width (``ffn_hidden`` or the family's default)."""
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return llama_hidden_size(self.n_embd) if self.mlp == "swiglu" else 4 * self.n_embd

    @property
    def has_qkv_bias(self) -> bool:
        """Whether the query/key/value map has a bias (``qkv_bias``, else ``bias``)."""
        return self.bias if self.qkv_bias is None else self.qkv_bias


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")


#: GPT-2's four sizes (Radford et al. 2019, table 2), with its real vocabulary of 50257.
GPT2_CONFIGS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(vocab_size=50257, block_size=1024, n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": GPTConfig(vocab_size=50257, block_size=1024, n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600),
}


# --------------------------------------------------------------------------- LayerNorm


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """Normalize each vector along the last axis, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the mean and the *biased*
    variance (divide by C, not C - 1) of the last axis. x: (..., C); weight, bias: (C,)
    or None. Returns (..., C).
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with an optional bias (``torch.nn.LayerNorm`` has none
    to switch off before torch 2.1; GPT models without biases need that)."""

    def __init__(self, ndim: int, *, bias: bool = True, eps: float = 1e-5, fused: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) -> (..., C)."""
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this LayerNorm normalizes "
                f"{self.weight.shape[0]} features: the last dimension must match"
            )
        if self.fused:
            # weights may be stored in a smaller float type (quantize_model(float_dtype=...))
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.layer_norm(x, self.weight.shape, self.weight.to(x.dtype), bias, self.eps)
        return layer_norm(x, self.weight, self.bias, self.eps)


# --------------------------------------------------------------------------- RMSNorm


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Divide each vector by its root mean square, then scale: x (..., C) -> (..., C).

    ``y = x / sqrt(mean(x²) + eps) * weight`` over the last axis (Zhang & Sennrich 2019).
    Unlike LayerNorm nothing is subtracted (no mean, no bias): only the vector's length is
    normalized, not its centre. ``eps`` goes *inside* the root, as in Llama and
    ``torch.nn.RMSNorm``. weight: (C,) or None.
    """
    y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return y if weight is None else y * weight


class RMSNorm(nn.Module):
    """RMSNorm over the last axis with an optional learned scale (Llama's norm).

    ``fused=True`` calls ``F.rms_norm`` (the same maths in one kernel).
    """

    def __init__(self, ndim: int, *, eps: float = 1e-6, weight: bool = True,
                 fused: bool = False) -> None:
        super().__init__()
        self.ndim, self.eps, self.fused = ndim, eps, fused
        self.weight = nn.Parameter(torch.ones(ndim)) if weight else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) -> (..., C)."""
        if x.shape[-1] != self.ndim:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this RMSNorm normalizes {self.ndim} "
                f"features: the last dimension must match"
            )
        weight = None if self.weight is None else self.weight.to(x.dtype)
        if self.fused:
            return F.rms_norm(x, (self.ndim,), weight, self.eps)
        return rms_norm(x, weight, self.eps)


def _norm(config: GPTConfig) -> nn.Module:
    """The normalization ``config`` asks for, over ``n_embd`` features."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps, fused=config.fused)
    return LayerNorm(config.n_embd, bias=config.bias, eps=config.norm_eps, fused=config.fused)


# --------------------------------------------------------------------------- feed-forward


def feed_forward(
    x: torch.Tensor, W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """The position-wise feed-forward network ``GELU(x W1 + b1) W2 + b2``.

    x: (..., C); W1: (C, 4C); b1: (4C,); W2: (4C, C); b2: (C,). Returns (..., C).
    The first bias goes *inside* the GELU, the second after the last matmul. GELU is the
    exact one, ``x · Φ(x)`` with the normal CDF Φ.
    """
    return F.gelu(x @ W1 + b1) @ W2 + b2


class FeedForward(nn.Module):
    """Two linear maps with a GELU between, applied to each position on its own.

    The hidden width is ``4 · n_embd`` (Vaswani et al. 2017; GPT-2). Dropout acts on the
    output, before it joins the residual stream.
    """

    def __init__(self, n_embd: int, *, hidden: int | None = None, bias: bool = True,
                 dropout: float = 0.0, approximate: str = "none") -> None:
        super().__init__()
        hidden = 4 * n_embd if hidden is None else hidden
        self.approximate = approximate  # "tanh": GPT-2's approximation of the GELU
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) -> (..., C)."""
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate)))


def swiglu(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """The SwiGLU feed-forward ``W2 (SiLU(W1 x) ⊙ W3 x)`` (Shazeer 2020), as in Llama.

    x: (..., C); w1, w3: (F, C); w2: (C, F), in ``nn.Linear``'s (out, in) layout.
    ``W1 x`` goes through SiLU (``z · σ(z)``) and *gates* ``W3 x`` element-wise; the SiLU
    is on the W1 branch only. Returns (..., C).
    """
    return (F.silu(x @ w1.T) * (x @ w3.T)) @ w2.T


def llama_hidden_size(dim: int, multiple_of: int = 256,
                      ffn_dim_multiplier: float | None = None) -> int:
    """SwiGLU's hidden width by Meta's rule: about ``8/3 · dim``, rounded up.

    SwiGLU has three matrices instead of two, so a hidden width of ``2/3 · 4·dim`` keeps
    the parameters (and FLOPs) of a GELU network of width ``4·dim``. Meta's code then
    multiplies by ``ffn_dim_multiplier`` (if any) and rounds up to a multiple of
    ``multiple_of``: Llama-2-7B (dim 4096) gets 11008; Llama-3-8B (multiplier 1.3,
    multiple_of 1024) 14336.
    """
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward with three linear maps: ``w2(silu(w1(x)) * w3(x))``.

    Names as in Meta's Llama code: ``w1`` the gate (Hugging Face's ``gate_proj``), ``w3``
    the value it gates (``up_proj``), ``w2`` back to ``n_embd`` (``down_proj``).
    """

    def __init__(self, n_embd: int, hidden: int, *, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(n_embd, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, n_embd, bias=bias)
        self.w3 = nn.Linear(n_embd, hidden, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) -> (..., C)."""
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


def _feed_forward(config: GPTConfig) -> nn.Module:
    """The feed-forward network ``config`` asks for: GELU MLP, SwiGLU or a mixture of experts."""
    if config.n_expert:
        from lmlab.moe import MoEFeedForward  # lmlab.moe builds on SwiGLU from this module

        return MoEFeedForward(config.n_embd, config.ffn_dim, config.n_expert,
                              config.n_expert_per_token, bias=config.bias)
    if config.mlp == "swiglu":
        return SwiGLU(config.n_embd, config.ffn_dim, bias=config.bias, dropout=config.dropout)
    approximate = "tanh" if config.mlp == "gelu_tanh" else "none"
    return FeedForward(config.n_embd, hidden=config.ffn_dim, bias=config.bias,
                       dropout=config.dropout, approximate=approximate)


# --------------------------------------------------------------------------- positions


def sinusoidal_positions(T: int, d: int) -> torch.Tensor:
    """The fixed position encodings of Vaswani et al. (2017), section 3.5: (T, d).

    ``PE[p, 2i] = sin(p / 10000^(2i/d))`` and ``PE[p, 2i+1] = cos(p / 10000^(2i/d))``.
    Each pair of features is a clock turning at its own speed, from once every 2π
    positions down to once every 10000·2π.
    """
    if T < 0 or d < 1:
        raise ValueError(f"sinusoidal_positions needs T >= 0 and d >= 1, got T={T}, d={d}")
    position = torch.arange(T, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    rate = torch.pow(10000.0, -torch.arange(0, d, 2, dtype=torch.float64) / d)  # (ceil(d/2),)
    angle = position * rate  # (T, ceil(d/2))
    pe = torch.zeros(T, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d // 2])
    return pe.to(torch.get_default_dtype())


# --------------------------------------------------------------------------- attention


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Share each key/value head with its group of query heads: (B, H_kv, T, D) -> (B, H_kv·n_rep, T, D).

    Head ``j`` of the result is KV head ``j // n_rep``: the ``n_rep`` *consecutive* query
    heads of a group read the same keys and values (``repeat_interleave``, as Hugging
    Face's ``repeat_kv``; ``repeat`` would give query head j the KV head ``j % H_kv``).
    """
    if isinstance(n_rep, bool) or not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"n_rep must be a positive int, got {n_rep!r}")
    if x.dim() != 4:
        raise ValueError(f"x must be (B, H_kv, T, D), got shape {tuple(x.shape)}")
    if n_rep == 1:
        return x
    B, H_kv, T, D = x.shape
    return x[:, :, None].expand(B, H_kv, n_rep, T, D).reshape(B, H_kv * n_rep, T, D)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: each token looks at itself and the tokens before it.

    One ``c_attn`` linear map makes the queries of the ``n_head`` heads and the keys and
    values of the ``n_kv_head`` key/value heads at once (C -> (H + 2·H_kv)·D; 3C for
    multi-head attention), the heads attend in parallel, ``c_proj`` mixes them back
    (C -> C). With grouped-query attention (Ainslie et al. 2023) ``H_kv < H``: each
    key/value head serves ``H // H_kv`` consecutive query heads, and the KV cache holds
    only ``H_kv`` heads. With RoPE the queries and keys are rotated by their positions
    before the keys enter the cache.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.rope_style = config.rope_style
        self.fused = config.fused
        qkv = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.c_attn = nn.Linear(config.n_embd, qkv, bias=config.has_qkv_bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout  # on the attention weights, while training
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        kv_cache=None,
        layer_index: int = 0,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C).

        ``mask``: None for plain causal attention (bottom-right aligned when a cache holds
        earlier keys), or a boolean (B, 1, T, T_total) tensor, True where a query may look.
        ``kv_cache``: an object with ``update(layer_index, k, v) -> (k_all, v_all)``.
        ``rope``: (cos, sin) of the new tokens' angles, (T, D/2) or (B, 1, T, D/2), from
        :func:`lmlab.rope.rope_cos_sin`; None when positions are added to the embeddings.
        """
        B, T, C = x.shape
        H, H_kv, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.c_attn(x).split([H * D, H_kv * D, H_kv * D], dim=2)
        # (B, T, H·D) -> (B, H, T, D): each head sees its own D features
        q = q.view(B, T, H, D).transpose(1, 2)
        k = k.view(B, T, H_kv, D).transpose(1, 2)
        v = v.view(B, T, H_kv, D).transpose(1, 2)
        if rope is not None:
            q, k = rotate(q, *rope, self.rope_style), rotate(k, *rope, self.rope_style)
        if kv_cache is not None:
            k, v = kv_cache.update(layer_index, k, v)  # (B, H_kv, T_total, D)
        p = self.dropout if self.training else 0.0
        if self.fused:
            y = self._fused_attention(q, k, v, mask, p)
        else:
            k, v = repeat_kv(k, H // H_kv), repeat_kv(v, H // H_kv)  # (B, H, T_total, D)
            if mask is None:
                y = scaled_dot_product_attention(q, k, v, causal=True, dropout_p=p)
            else:
                y = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    @staticmethod
    def _fused_attention(q, k, v, mask, p):
        T_q, T_k = q.shape[-2], k.shape[-2]
        if mask is None and T_q != T_k:
            # torch's is_causal aligns top-left; with cached keys we need bottom-right
            mask = torch.ones(T_q, T_k, dtype=torch.bool, device=q.device).tril(T_k - T_q)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                              is_causal=mask is None,
                                              enable_gqa=q.shape[1] != k.shape[1])


# --------------------------------------------------------------------------- block


class Block(nn.Module):
    """One Transformer block: attention then feed-forward, each inside a residual.

    Pre-LN (``norm_first=True``, GPT-2, Llama): ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``;
    the residual stream itself is never normalized, which keeps gradients flowing in deep
    stacks (Xiong et al. 2020). Post-LN (the 2017 paper): ``x = ln_1(x + attn(x));
    x = ln_2(x + mlp(x))``. The norms are LayerNorm or RMSNorm, the feed-forward a GELU
    MLP, a SwiGLU or a mixture of experts, as the config says.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.ln_1 = _norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = _norm(config)
        self.mlp = _feed_forward(config)

    def forward(self, x: torch.Tensor, *, mask=None, kv_cache=None, layer_index: int = 0,
                rope=None):
        """x: (B, T, C) -> (B, T, C); the keywords as in :class:`CausalSelfAttention`."""
        attend = lambda h: self.attn(h, mask=mask, kv_cache=kv_cache, layer_index=layer_index,  # noqa: E731
                                     rope=rope)
        if self.norm_first:
            x = x + attend(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
        else:
            x = self.ln_1(x + attend(x))
            x = self.ln_2(x + self.mlp(x))
        return x


BLOCK_PARAMS = ("ln1_weight", "ln1_bias", "W_qkv", "b_qkv", "W_o", "b_o",
                "ln2_weight", "ln2_bias", "W1", "b1", "W2", "b2")


def block_forward(x: torch.Tensor, params: dict[str, torch.Tensor], n_heads: int) -> torch.Tensor:
    """A pre-LN causal block written as one function of its weights (what :class:`Block` does).

    x: (B, T, C). ``params``: ``ln1_weight``, ``ln1_bias``, ``ln2_weight``, ``ln2_bias`` (C,);
    ``W_qkv`` (C, 3C) and ``b_qkv`` (3C,) whose outputs are [q | k | v]; ``W_o`` (C, C),
    ``b_o`` (C,); ``W1`` (C, 4C), ``b1`` (4C,), ``W2`` (4C, C), ``b2`` (C,). Head ``h`` uses
    features ``h·D : (h+1)·D`` of q, k and v. Returns (B, T, C).
    """
    missing = [name for name in BLOCK_PARAMS if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}; expected the keys {list(BLOCK_PARAMS)}")
    B, T, C = x.shape
    if C % n_heads:
        raise ValueError(f"x has {C} features, not divisible by n_heads={n_heads}")
    p = params
    h = layer_norm(x, p["ln1_weight"], p["ln1_bias"])
    q, k, v = (h @ p["W_qkv"] + p["b_qkv"]).split(C, dim=-1)
    heads = lambda t: t.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # noqa: E731
    y = scaled_dot_product_attention(heads(q), heads(k), heads(v), causal=True)  # (B, H, T, D)
    x = x + y.transpose(1, 2).reshape(B, T, C) @ p["W_o"] + p["b_o"]
    h = layer_norm(x, p["ln2_weight"], p["ln2_bias"])
    return x + feed_forward(h, p["W1"], p["b1"], p["W2"], p["b2"])


# --------------------------------------------------------------------------- GPT


class GPT(nn.Module):
    """A decoder-only Transformer language model: GPT-2's architecture, or Llama's.

    ``forward(idx, targets=None, *, kv_cache=None, attention_mask=None)`` returns
    ``(logits, loss)``: logits (B, T, V) for the next token at every position, and the
    mean cross-entropy against ``targets`` (B, T) when given (targets of -1 are ignored;
    with mixture-of-experts layers, plus ``moe_aux_loss_coef`` times their mean
    load-balancing loss). The config decides the family (see :class:`GPTConfig`).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=_norm(config),
            )
        )
        if config.positions == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        elif config.positions == "sinusoidal":
            pe = sinusoidal_positions(config.block_size, config.n_embd)
            self.register_buffer("pe", pe, persistent=False)
        # "rope": no table; the attention layers rotate q and k (see forward)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # One matrix both reads tokens in and scores them out (Press & Wolf 2017).
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the layers that write into the residual stream by 1/sqrt(2·n_layer),
        # so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith(("c_proj.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ helpers

    def _positions(self, idx: torch.Tensor, past: int, attention_mask) -> torch.Tensor:
        """Position ids of the new tokens ``idx`` (B, T): (B, T) or (T,)."""
        if attention_mask is None:
            return torch.arange(past, past + idx.shape[1], device=idx.device)
        # A token's position is the number of real tokens before it, so left padding
        # does not shift the positions of the real tokens.
        pos = attention_mask.long().cumsum(dim=1) - 1
        return pos.clamp(min=0)[:, past:]

    def _check_last_position(self, pos: torch.Tensor, last: int | None) -> None:
        """``last``: the largest position when known without reading ``pos`` (no sync)."""
        last = int(pos.max()) if last is None else last
        if last >= self.config.block_size:
            raise ValueError(
                f"position {last} is past block_size={self.config.block_size}: "
                f"this model was built for at most {self.config.block_size} tokens of context"
            )

    def _rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for positions (T,) -> (T, D/2), or (B, T) -> (B, 1, T, D/2)."""
        cos, sin = rope_cos_sin(pos, self.config.head_dim, self.config.rope_theta)
        if pos.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]  # one angle table per row, shared by heads
        return cos, sin

    def _embed_positions(self, pos: torch.Tensor, last: int | None) -> torch.Tensor:
        self._check_last_position(pos, last)
        if self.config.positions == "learned":
            return self.transformer.wpe(pos)
        return self.pe[pos]

    def _check_inputs(self, idx, targets, past, attention_mask) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a (B, T) tensor of token ids, got {got}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"idx must hold integer token ids (torch.long), got dtype {idx.dtype}")
        if idx.shape[1] == 0:
            raise ValueError("idx has no tokens (shape (B, 0)): pass at least one token")
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(
                f"targets has shape {tuple(targets.shape)} but idx has shape "
                f"{tuple(idx.shape)}: they must match"
            )
        if attention_mask is not None:
            expected = (idx.shape[0], past + idx.shape[1])
            if tuple(attention_mask.shape) != expected:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected "
                    f"{expected} (batch, cached + new tokens)"
                )

    @staticmethod
    def _attention_mask(attention_mask: torch.Tensor, past: int, T: int) -> torch.Tensor:
        """(B, T_total) padding mask -> (B, 1, T, T_total) boolean, True = may attend."""
        total = past + T
        q_pos = torch.arange(past, total, device=attention_mask.device).unsqueeze(1)  # (T, 1)
        k_pos = torch.arange(total, device=attention_mask.device).unsqueeze(0)  # (1, T_total)
        causal = k_pos <= q_pos  # bottom-right aligned: query i sits at past + i
        keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T_total)
        # A padding query may look at itself, so that no row is all masked (which would
        # give NaN); real tokens never look at padding.
        return (causal & keys) | (k_pos == q_pos)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        kv_cache=None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) token ids -> (logits (B, T, V), loss or None).

        ``kv_cache``: keys and values of earlier positions (``.length`` of them); the new
        tokens sit at positions ``length, length + 1, ...``. ``attention_mask``: bool
        (B, length + T), False at left padding, which no token attends to.
        """
        past = 0 if kv_cache is None else int(kv_cache.length)  # read once, before updates
        self._check_inputs(idx, targets, past, attention_mask)
        B, T = idx.shape
        pos = self._positions(idx, past, attention_mask)
        last = past + T - 1 if attention_mask is None else None
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.positions == "rope":
            self._check_last_position(pos, last)
            rope = self._rope(pos)
        else:
            x = x + self._embed_positions(pos, last)
        x = self.transformer.drop(x)
        mask = None if attention_mask is None else self._attention_mask(attention_mask, past, T)
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask=mask, kv_cache=kv_cache, layer_index=i, rope=rope)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=-1
            )
            if self.config.n_expert and self.config.moe_aux_loss_coef:
                loss = loss + self.config.moe_aux_loss_coef * self.aux_loss()
        return logits, loss

    def aux_loss(self) -> torch.Tensor:
        """The mean load-balancing loss of the MoE layers in the last forward pass."""
        losses = [block.mlp.aux_loss for block in self.transformer.h
                  if getattr(block.mlp, "aux_loss", None) is not None]
        if not losses:
            raise ValueError("aux_loss: this model has no mixture-of-experts layer that ran")
        return torch.stack(losses).mean()


# --------------------------------------------------------------------------- counting


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """The number of parameters in ``model``; a tied matrix counts once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already yields a shared tensor once
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _expert_params(config: GPTConfig) -> int:
    """Parameters of one feed-forward network (one expert) of ``config``."""
    C, F_, b = config.n_embd, config.ffn_dim, int(config.bias)
    if config.mlp == "swiglu":
        return 3 * C * F_ + b * (2 * F_ + C)
    return 2 * C * F_ + b * (F_ + C)


def param_breakdown(config: GPTConfig) -> dict[str, int]:
    """Where the parameters of ``GPT(config)`` live, by closed form.

    Keys: ``token embedding`` (V·C), ``position embedding`` (block_size·C if learned),
    ``attention`` (per layer: the q/k/v map C·(H + 2·H_kv)·D and its bias if any, the
    output map C² and its bias; 4C² + 4C for GPT-2), ``feed-forward`` (per layer: 8C² + 5C
    for GPT-2's MLP, 3·C·F for SwiGLU, E of them plus the router's C·E for a mixture of
    experts), ``layer norms`` (2 per layer + the final one; C each, 2C for a LayerNorm with
    bias), ``output head`` (V·C unless tied to the token embedding).
    """
    C, L, V = config.n_embd, config.n_layer, config.vocab_size
    b = int(config.bias)
    qkv = (config.n_head + 2 * config.kv_heads) * config.head_dim
    norm = C * (1 + b) if config.norm == "layernorm" else C
    experts = max(1, config.n_expert)
    router = C * config.n_expert
    return {
        "token embedding": V * C,
        "position embedding": config.block_size * C if config.positions == "learned" else 0,
        "attention": L * (C * qkv + int(config.has_qkv_bias) * qkv + C * C + b * C),
        "feed-forward": L * (experts * _expert_params(config) + router),
        "layer norms": (2 * L + 1) * norm,
        "output head": 0 if config.tie_weights else V * C,
    }


def param_count(config: GPTConfig) -> int:
    """The number of parameters of ``GPT(config)``, without building it."""
    return sum(param_breakdown(config).values())


def active_param_count(config: GPTConfig) -> int:
    """Parameters one token uses: all of them, except the experts it is not routed to.

    A mixture of experts with E experts and k per token leaves ``E - k`` experts idle in
    every layer; for dense models this is :func:`param_count`.
    """
    idle = max(0, config.n_expert - config.n_expert_per_token) if config.n_expert else 0
    return param_count(config) - config.n_layer * idle * _expert_params(config)


def kv_cache_bytes_per_token(config: GPTConfig, bytes_per_element: int = 2) -> int:
    """Bytes of KV cache one token of context costs: ``2 · L · H_kv · D · bytes``.

    A key and a value vector per layer and *key/value* head: grouped-query attention
    divides it by ``n_head // n_kv_head``. Default 2 bytes (bf16/fp16): Llama-3-8B stores
    128 KiB per token with its 8 KV heads, where 32 would take 512 KiB.
    """
    return 2 * config.n_layer * config.kv_heads * config.head_dim * bytes_per_element


def gpt_param_count(vocab_size: int, block_size: int, n_layer: int, n_embd: int,
                    tied: bool = True) -> int:
    """:func:`param_count` of a GPT-2-style model (biases, learned positions) from its sizes."""
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                       n_head=1, n_embd=n_embd, tie_weights=tied)
    return param_count(config)


def flops_per_token(config: GPTConfig, seq_len: int | None = None, *, training: bool = False) -> int:
    """Matmul FLOPs per token of a forward pass over ``seq_len`` tokens (default block_size).

    Every weight matrix of shape (m, n) costs 2·m·n FLOPs per token (a multiply and an add
    per weight): for GPT-2 2·(12·L·C² + V·C) with the output head. Only the weights a token
    *uses* count: with a mixture of experts, the router and k experts of each layer
    (:func:`active_param_count`). Attention adds, per layer and token, 2·T·C for the scores
    q·kᵀ and 2·T·C for the weighted sum of values (all ``n_head`` query heads, whatever the
    number of KV heads); this counts the full T×T score matrix, as the usual kernels compute
    it (causal masking throws half away). Embedding look-ups, biases, norms, activations,
    RoPE and softmax are a few FLOPs per element, not counted. Training is about 3× a forward
    pass (the backward pass costs twice the forward: gradients with respect to both the
    inputs and the weights).
    """
    T = config.block_size if seq_len is None else seq_len
    if T < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    C, L, V, F_ = config.n_embd, config.n_layer, config.vocab_size, config.ffn_dim
    qkv = (config.n_head + 2 * config.kv_heads) * config.head_dim
    per_expert = (3 if config.mlp == "swiglu" else 2) * C * F_
    active = config.n_expert_per_token if config.n_expert else 1
    per_layer = C * qkv + C * C + active * per_expert + C * config.n_expert
    weights = L * per_layer + V * C
    attention = L * 4 * T * C
    forward = 2 * weights + attention
    return 3 * forward if training else forward
