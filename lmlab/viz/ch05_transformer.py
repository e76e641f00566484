"""Figures for chapter 5: positions, masks, where the parameters live, the model calculator."""

from __future__ import annotations

import math

import torch

from lmlab.rope import rope_frequencies
from lmlab.transformer import (
    GPTConfig,
    active_param_count,
    flops_per_token,
    kv_cache_bytes_per_token,
    param_breakdown,
    param_count,
    sinusoidal_positions,
)
from lmlab.viz.core import PALETTE, new_figure

__all__ = [
    "positions_plot",
    "mask_gallery",
    "param_bars",
    "model_calculator_figure",
    "config_calculator_figure",
    "calculator_parts",
    "rope_pair_figure",
    "rope_wavelength_plot",
    "rope_distance_plot",
    "curves_plot",
    "model_costs",
]

PART_COLORS = {
    "token embedding": PALETTE[0],
    "position embedding": PALETTE[6],
    "attention": PALETTE[1],
    "feed-forward": PALETTE[2],
    "layer norms": PALETTE[5],
    "output head": PALETTE[3],
}


def positions_plot(T: int = 64, d: int = 32):
    """Left: the (T, d) sinusoidal encodings; right: similarity of position 20 to the others."""
    pe = sinusoidal_positions(T, d)
    fig, (ax1, ax2) = new_figure(8, 3, ncols=2)
    im = ax1.imshow(pe.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
    ax1.set(xlabel="position p", ylabel="feature", title=f"sinusoidal positions (T={T}, d={d})")
    ax1.grid(False)
    fig.colorbar(im, ax=ax1, fraction=0.05)
    sim = pe @ pe[20] / d * 2
    ax2.plot(range(T), sim, marker=".", ms=3)
    ax2.axvline(20, color="gray", lw=0.8, ls="--")
    ax2.set(xlabel="position p", ylabel="PE[p]·PE[20] / (d/2)", title="nearby positions look alike")
    fig.tight_layout()
    return fig


def mask_gallery(T_src: int = 6, T_tgt: int = 5):
    """Who may attend to whom in an encoder, a decoder and an encoder-decoder."""
    full = torch.ones(T_src, T_src)
    causal = torch.ones(T_tgt, T_tgt).tril()
    cross = torch.ones(T_tgt, T_src)
    fig, axes = new_figure(8, 2.6, ncols=4)
    panels = [
        (full, "encoder (BERT)\nself-attention: all"),
        (causal, "decoder (GPT)\nself-attention: causal"),
        (causal, "T5 decoder\nself-attention: causal"),
        (cross, "T5 decoder\ncross-attention to encoder"),
    ]
    for ax, (m, title) in zip(axes, panels, strict=True):
        ax.imshow(m, cmap="Greens", vmin=0, vmax=1.3)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        ax.tick_params(labelsize=7)
        ax.set_xlabel("key", fontsize=8)
        ax.grid(False)
    axes[0].set_ylabel("query", fontsize=8)
    fig.tight_layout()
    return fig


def _stack(ax, rows: dict[str, dict[str, int]], scale: float, unit: str) -> None:
    names = list(rows)
    left = [0.0] * len(names)
    for part, color in PART_COLORS.items():
        widths = [rows[n][part] / scale for n in names]
        ax.barh(names, widths, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:,.0f}{unit}", va="center", fontsize=8)
    ax.set_xlim(0, max(left) * 1.25)
    ax.invert_yaxis()


def param_bars(configs: dict[str, GPTConfig]):
    """Stacked bars: how each model's parameters split between embeddings, attention, FFN, ..."""
    fig, ax = new_figure(8, 0.6 * len(configs) + 1.4)
    _stack(ax, {name: param_breakdown(c) for name, c in configs.items()}, 1e6, "M")
    ax.set_xlabel("parameters (millions)")
    # above the bars: at the lower right the legend would cover the largest model's bar
    ax.legend(fontsize=9, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def model_costs(config: GPTConfig) -> dict[str, float]:
    """The numbers the calculator shows for ``config`` (bytes, FLOPs)."""
    n = sum(param_breakdown(config).values())
    C, L, T, H = config.n_embd, config.n_layer, config.block_size, config.n_head
    return {
        "parameters": n,
        "weights fp32 (bytes)": 4 * n,
        "weights bf16 (bytes)": 2 * n,
        # AdamW training in mixed precision: fp32 master weights, two moments, bf16 copy
        # and gradients: about 16 bytes per parameter, before activations.
        "training state (bytes)": 16 * n,
        "KV cache, one full sequence, bf16 (bytes)": 2 * L * T * C * 2,
        "attention scores, one layer, fp32 (bytes)": H * T * T * 4,
        "forward FLOPs per token": flops_per_token(config),
        "training FLOPs per token": flops_per_token(config, training=True),
        "head size": C // H,
    }


def _human(x: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _bytes(x: float) -> str:
    """Binary units, as memory is sold: 131072 -> '128 KiB'."""
    for factor, prefix in ((2**40, "Ti"), (2**30, "Gi"), (2**20, "Mi"), (2**10, "Ki")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}B"
    return f"{x:.0f} B"


CALC_PARTS = {
    "token embedding": PALETTE[0],
    "position embedding": PALETTE[6],
    "attention": PALETTE[1],
    "feed-forward (active)": PALETTE[2],
    "idle experts": "#a6d8a6",
    "norms": PALETTE[5],
    "output head": PALETTE[3],
}


def calculator_parts(config: GPTConfig) -> dict[str, int]:
    """:func:`param_breakdown` with a mixture of experts' idle experts split off."""
    parts = param_breakdown(config)
    idle = param_count(config) - active_param_count(config)
    return {
        "token embedding": parts["token embedding"],
        "position embedding": parts["position embedding"],
        "attention": parts["attention"],
        "feed-forward (active)": parts["feed-forward"] - idle,
        "idle experts": idle,
        "norms": parts["layer norms"],
        "output head": parts["output head"],
    }


def config_calculator_figure(config: GPTConfig, *, title: str = "", context: int | None = None):
    """One frame of a model calculator: where the parameters live, what the model costs.

    Top: the share of each part in a 100 % bar (idle experts apart for a mixture of
    experts). Below: parameters (total and active per token), weights in bf16, the AdamW
    training state, the KV cache per token and for ``context`` tokens (default
    ``block_size``), and the forward FLOPs per token at that context.
    """
    T = config.block_size if context is None else context
    parts = calculator_parts(config)
    total, active = param_count(config), active_param_count(config)
    fig, _ = new_figure(7.2, 4.3)
    fig.clear()
    ax = fig.add_axes((0.03, 0.80, 0.94, 0.11))  # the 100 % bar
    left = 0.0
    for part, color in CALC_PARTS.items():
        share = parts[part] / total * 100
        if parts[part] == 0:
            continue
        ax.barh([0], [share], left=left, color=color, label=f"{part} {share:.0f}%", height=0.8)
        if share >= 7:
            ax.text(left + share / 2, 0, f"{share:.0f}%", ha="center", va="center",
                    fontsize=9, color="white", weight="bold")
        left += share
    ax.set(xlim=(0, 100), yticks=[])
    ax.tick_params(labelsize=8)
    ax.grid(False)
    ax.set_title(title or f"L={config.n_layer}, C={config.n_embd}, H={config.n_head}, "
                 f"V={config.vocab_size:,}", fontsize=10)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.45), ncols=3,
              frameon=False, handlelength=1.0, columnspacing=1.2)
    kv_heads = config.n_kv_head or config.n_head
    kv = kv_cache_bytes_per_token(config)
    lines = [
        ("parameters", f"{_human(total)}  ({total:,})"),
        ("active per token", _human(active) + ("" if active == total else
                                                f"  ({active / total:.0%} of them)")),
        ("weights in bf16", _bytes(2 * total)),
        ("AdamW training state (16 B/param)", _bytes(16 * total)),
        ("heads: query / key-value / size",
         f"{config.n_head} / {kv_heads} / {config.n_embd // config.n_head}"),
        ("KV cache per token (bf16)", _bytes(kv)),
        (f"KV cache for {T:,} tokens", _bytes(kv * T)),
        (f"forward FLOPs per token at T={T:,}", _human(flops_per_token(config, T), "FLOP")),
    ]
    for i, (label, value) in enumerate(lines):
        y = 0.55 - i * 0.068
        fig.text(0.04, y, label, fontsize=10, va="top")
        fig.text(0.96, y, value, fontsize=10, va="top", ha="right", weight="bold")
    return fig


def model_calculator_figure(n_layer: int, n_embd: int, n_head: int, vocab_size: int,
                            block_size: int):
    """One frame of the GPT-2-family calculator (learned positions, LayerNorm, GELU MLP)."""
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                       n_head=n_head, n_embd=n_embd)
    return config_calculator_figure(
        config, title=f"GPT-2 family: L={n_layer}, C={n_embd}, H={n_head}, V={vocab_size:,}, "
                      f"T={block_size:,}")


def curves_plot(curves: dict[str, list[float]], *, ylabel: str = "training loss", title: str = "",
                logy: bool = False):
    """Line plot of one or more per-step curves (e.g. pre-LN vs post-LN losses)."""
    fig, ax = new_figure(6, 3.2)
    for label, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=label, lw=1.2)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- RoPE


def _rope_query(head_dim: int, seed: int = 0) -> torch.Tensor:
    """A fixed random query vector (head_dim,) for the RoPE figures."""
    return torch.randn(head_dim, generator=torch.Generator().manual_seed(seed))


def _rope_score(q: torch.Tensor, k: torch.Tensor, distance: torch.Tensor, theta: float,
                pair: int | None = None) -> torch.Tensor:
    """q_m·k_n of the rotated vectors as a function of m - n (half-split pairs), float64.

    Rotating q by m·θ_i and k by n·θ_i leaves, in each pair, the dot product of the
    unrotated pair turned by (m - n)·θ_i: Re[q_i · conj(k_i) · e^{i (m-n) θ_i}].
    """
    D = q.shape[-1]
    qc = torch.complex(q[: D // 2].double(), q[D // 2:].double())
    kc = torch.complex(k[: D // 2].double(), k[D // 2:].double())
    freqs = rope_frequencies(D, theta).double()
    phase = torch.polar(torch.ones(len(distance), D // 2, dtype=torch.float64),
                        distance.double()[:, None] * freqs)
    terms = (qc * kc.conj() * phase).real  # (n_distances, D/2)
    return terms[:, pair] if pair is not None else terms.sum(-1)


def rope_pair_figure(position: int, pair: int, *, head_dim: int = 64, theta: float = 10000.0,
                     n_keys: int = 128):
    """One frame of the RoPE explorer.

    Left: pair ``pair`` of a query, at position 0 and turned to position ``position`` (the
    dots mark the positions in between). Right: the score of that query at ``position``
    against a key equal to it at every position n (all pairs summed), and pair ``pair``'s
    share of it: the curve depends on position - n only, so moving the query slides it.
    """
    from lmlab.rope import apply_rope

    q = _rope_query(head_dim)
    freq = float(rope_frequencies(head_dim, theta)[pair])
    fig, (ax1, ax2) = new_figure(7.2, 3.2, ncols=2, gridspec_kw={"width_ratios": [1, 1.6]})
    a, b = float(q[pair]), float(q[pair + head_dim // 2])
    r = math.hypot(a, b)
    circle = torch.linspace(0, 2 * torch.pi, 200)
    ax1.plot(r * circle.cos(), r * circle.sin(), color="0.8", lw=0.8)
    # the same query at positions 0..position: apply_rope turns row t by t·θ_i
    path = apply_rope(q.expand(1, 1, position + 1, head_dim).contiguous(), theta=theta)
    ax1.plot(path[0, 0, :, pair], path[0, 0, :, pair + head_dim // 2], ".", color=PALETTE[0],
             ms=3, alpha=0.5)
    ax1.annotate("", xy=(a, b), xytext=(0, 0),
                 arrowprops=dict(arrowstyle="->", color="0.5", lw=1.5, ls="--"))
    x_m, y_m = float(path[0, 0, -1, pair]), float(path[0, 0, -1, pair + head_dim // 2])
    ax1.annotate("", xy=(x_m, y_m), xytext=(0, 0),
                 arrowprops=dict(arrowstyle="->", color=PALETTE[1], lw=2))
    ax1.set_aspect("equal")
    lim = 1.2 * r
    ax1.set(xlim=(-lim, lim), ylim=(-lim, lim))
    ax1.set_axis_off()
    ax1.set_title(f"pair {pair}: θ = {freq:.3g} rad/position\n"
                  f"angle at position {position}: {position * freq:.3g} rad", fontsize=9)
    n = torch.arange(n_keys)
    distance = position - n
    ax2.plot(n, _rope_score(q, q, distance, theta) / head_dim ** 0.5, color=PALETTE[0],
             lw=1.5)
    ax2.axvline(position, color="0.4", lw=0.8, ls="--")
    ax2.set(xlabel="key position n (the key is the query's vector)", xlim=(0, n_keys - 1))
    ax2.set_ylabel("score q·k / √D (all pairs)", color=PALETTE[0], fontsize=9)
    ax2.set_title(f"query at position {position}: the scores depend on {position} − n only",
                  fontsize=9)
    share = ax2.twinx()
    share.plot(n, _rope_score(q, q, distance, theta, pair), color=PALETTE[1], lw=1.0)
    share.set_ylabel(f"pair {pair}'s term", color=PALETTE[1], fontsize=9)
    share.grid(False)
    share.spines["right"].set_visible(True)
    for axis in (ax2, share):
        axis.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def rope_wavelength_plot(head_dim: int = 128, thetas=(10000.0, 500000.0),
                         contexts=(4096, 131072)):
    """Wavelength 2π/θ_i (positions per full turn) of every pair, for each ``theta``."""
    fig, ax = new_figure(7.0, 3.4)
    for j, theta in enumerate(thetas):
        wavelength = 2 * torch.pi / rope_frequencies(head_dim, theta).double()
        ax.semilogy(range(head_dim // 2), wavelength, marker=".", ms=3, color=PALETTE[j],
                    label=f"theta = {theta:,.0f}")
    for T in contexts:
        ax.axhline(T, color="0.5", lw=0.8, ls="--")
        ax.text(1, T * 1.25, f"context {T:,}", fontsize=9, color="0.3")
    ax.set(xlabel="pair index i", ylabel="wavelength 2π/θ_i (positions)",
           title=f"RoPE: how many positions one full turn takes (D = {head_dim})")
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    return fig


def rope_distance_plot(head_dim: int = 128, thetas=(10000.0, 500000.0),
                       max_distance: int = 131072, n_vectors: int = 64, seed: int = 0):
    """Mean score q_m·k_n / √D against the distance m - n, for a key equal to its query.

    Averaged over ``n_vectors`` random vectors; log-spaced distances up to
    ``max_distance``. With a small theta the score flattens out (every pair has turned
    many times) long before a long context ends; a larger theta keeps it decaying.
    """
    g = torch.Generator().manual_seed(seed)
    qs = torch.randn(n_vectors, head_dim, generator=g)
    distance = torch.unique(torch.logspace(0, torch.log10(torch.tensor(float(max_distance))),
                                           400).round())
    fig, ax = new_figure(7.0, 3.4)
    for j, theta in enumerate(thetas):
        score = torch.stack([_rope_score(q, q, distance, theta) for q in qs]).mean(0)
        ax.semilogx(distance, score / head_dim ** 0.5, color=PALETTE[j], lw=1.3,
                    label=f"theta = {theta:,.0f}")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set(xlabel="distance m − n (positions)", ylabel="mean q·k / √D",
           title="a key equal to its query: the score fades with distance")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig
