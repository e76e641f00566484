"""The scaling explorer: a compute budget → the compute-optimal model, its tokens, its
cost, and its memory per GPU under a chosen parallel layout."""

from __future__ import annotations

from collections.abc import Sequence

from lmlab import scaling
from lmlab.viz.ch09_scale import memory_breakdown_plot
from lmlab.viz.core import new_figure
from lmlab.widgets.frames import frame_explorer

__all__ = ["scaling_explorer", "DEFAULT_LAYOUTS", "render_scaling_frame"]

#: Three common layouts on 80 GB GPUs (64, 256 and 1024 GPUs).
DEFAULT_LAYOUTS: dict[str, scaling.Layout] = {
    "DP64 + ZeRO-1": scaling.Layout(dp=64, zero=1),
    "TP8 × DP32 + ZeRO-1": scaling.Layout(dp=32, tp=8, zero=1),
    "TP8 × PP8 × DP16 (m=32)": scaling.Layout(dp=16, tp=8, pp=8, microbatches=32, zero=1),
}


def render_scaling_frame(
    budget: float,
    layout: str | scaling.Layout,
    *,
    device: str = "H100",
    mfu: float = 0.4,
    price_per_hour: float = 2.0,
    seq_len: int = 4096,
    micro_batch: int = 1,
):
    """One frame: the optimum for ``budget`` FLOPs (text) and its memory per GPU (bars)."""
    lay = DEFAULT_LAYOUTS[layout] if isinstance(layout, str) else layout
    chip = scaling.get_accelerator(device)
    n, d = scaling.chinchilla_optimal(budget)
    shape = scaling.model_shape(n)
    cost = scaling.training_cost(budget, device=device, mfu=mfu, price_per_hour=price_per_hour,
                                 n_gpus=lay.n_gpus)
    kw = dict(layout=lay, optimizer="adamw", precision="mixed", micro_batch=micro_batch,
              seq_len=seq_len, vocab_size=128_000, **shape)
    memory = {
        "no checkpointing": scaling.memory_per_gpu(n, **kw),
        "checkpointing": scaling.memory_per_gpu(n, activation_checkpointing=True, **kw),
    }
    fig, (text_ax, bar_ax) = new_figure(7.6, 3.6, ncols=2, gridspec_kw={"width_ratios": [1, 2.0]})
    text_ax.axis("off")
    lines = [
        f"budget  C = {budget:.1e} FLOPs",
        f"params  N = {n / 1e9:,.2f} B",
        f"tokens  D = {d / 1e9:,.0f} B  (20·N)",
        f"shape   L={shape['n_layer']}, d={shape['d_model']}",
        f"{device} at {mfu:.0%} MFU:",
        f"  {cost.gpu_hours:,.0f} GPU-hours",
        f"  {cost.days:,.1f} days on {lay.n_gpus} GPUs",
        f"  \\${cost.dollars:,.0f} at \\${price_per_hour:g}/h",
        f"layout  {lay}",
    ]
    text_ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=10)
    memory_breakdown_plot(memory, capacity=chip.memory, capacity_label=f"{device} {chip.memory / 1e9:.0f} GB",
                          ax=bar_ax)
    bar_ax.set_title("memory per GPU", fontsize=10, pad=16)
    fig.tight_layout()
    return fig


def scaling_explorer(
    budgets: Sequence[float] = (1e20, 3e20, 1e21, 3e21, 1e22, 3e22, 1e23, 3e23, 1e24, 3e24, 1e25),
    layouts: Sequence[str] = tuple(DEFAULT_LAYOUTS),
    *,
    dpi: float | None = None,
) -> object:
    """Budget slider × layout buttons → optimal N and D, GPU-hours, dollars, memory per GPU.

    Uses Chinchilla's 20 tokens per parameter, H100s at 40 % MFU and an illustrative
    $2 per GPU-hour, AdamW in mixed precision, sequences of 4096 tokens, one sequence per
    micro-batch. Frames are precomputed, so it works in the static book.
    """
    labels = {f"{b:.0e}": b for b in budgets}

    def render(budget: str, layout: str):
        return render_scaling_frame(labels[budget], layout)

    return frame_explorer(
        render,
        {"budget": list(labels), "layout": list(layouts)},
        kinds={"budget": "slider", "layout": "toggle"},
        title="Scaling explorer: compute budget (FLOPs) → compute-optimal model and its memory",
        dpi=dpi,
        max_frames=40,
    )
