"""Figures for chapter 5: positions, masks, where the parameters live, the model calculator."""

from __future__ import annotations

import torch

from lmlab.transformer import GPTConfig, flops_per_token, param_breakdown, sinusoidal_positions
from lmlab.viz.core import PALETTE, new_figure

__all__ = [
    "positions_plot",
    "mask_gallery",
    "param_bars",
    "model_calculator_figure",
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
    ax.legend(fontsize=8, ncols=3, loc="lower right")
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


def model_calculator_figure(n_layer: int, n_embd: int, n_head: int, vocab_size: int, block_size: int):
    """One frame of the model calculator: where the parameters live and what they cost."""
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                       n_head=n_head, n_embd=n_embd)
    costs = model_costs(config)
    fig, (ax, text) = new_figure(8, 2.8, ncols=2, gridspec_kw={"width_ratios": [1.4, 1]})
    parts = param_breakdown(config)
    total = costs["parameters"]
    left = 0.0
    for part, color in PART_COLORS.items():
        share = parts[part] / total * 100
        ax.barh([0], [share], left=left, color=color, label=f"{part} {share:.0f}%")
        left += share
    ax.set(xlim=(0, 100), yticks=[], xlabel="share of the parameters (%)",
           title=f"L={n_layer}, C={n_embd}, H={n_head}, V={vocab_size:,}, T={block_size:,}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncols=2)
    lines = [
        ("parameters", _human(total)),
        ("weights fp32 / bf16", f"{_human(costs['weights fp32 (bytes)'], 'B')} / "
                                f"{_human(costs['weights bf16 (bytes)'], 'B')}"),
        ("AdamW training state", _human(costs["training state (bytes)"], "B")),
        ("KV cache (T tokens, bf16)", _human(costs["KV cache, one full sequence, bf16 (bytes)"], "B")),
        (f"scores per layer (H·T², head {costs['head size']})",
         _human(costs["attention scores, one layer, fp32 (bytes)"], "B")),
        ("FLOPs/token forward", _human(costs["forward FLOPs per token"], "FLOP")),
        ("FLOPs/token training", _human(costs["training FLOPs per token"], "FLOP")),
    ]
    text.axis("off")
    for i, (label, value) in enumerate(lines):
        y = 0.95 - i * 0.14
        text.text(0.0, y, label, fontsize=8.5, va="top", transform=text.transAxes)
        text.text(1.0, y, value, fontsize=8.5, va="top", ha="right", weight="bold",
                  transform=text.transAxes)
    fig.tight_layout()
    return fig


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
