"""Chapter 10's explorers: LoRA's rank and alpha, and DPO's beta, over stored runs.

Both only draw results that :mod:`lmlab.finetune` has already trained and cached: every
frame is one finished run, so the explorers work without a kernel and cost nothing to move.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lmlab.finetune import training_memory_bytes
from lmlab.viz.ch10_adapting import dpo_frame_plot, lora_frame_plot
from lmlab.widgets.frames import frame_explorer

__all__ = ["lora_explorer", "dpo_explorer"]


def lora_explorer(runs: Mapping[tuple[int, float], Mapping], full: Mapping,
                  baselines: Mapping[str, float], *,
                  title: str = "LoRA explorer: rank and alpha"):
    """Sliders for LoRA's rank ``r`` and ``alpha`` over stored fine-tuning runs.

    ``runs`` maps ``(r, alpha)`` to a :func:`lmlab.finetune.run_finetune` result with
    ``method="lora"``; ``full`` is the full fine-tuning run and ``baselines`` the baseline
    accuracies drawn beside every curve. Every combination of the ranks and alphas in
    ``runs`` must be present. Each frame shows the trainable parameters and training
    memory against full fine-tuning, and the validation curves.
    """
    ranks = sorted({r for r, _ in runs})
    alphas = sorted({a for _, a in runs})
    missing = [(r, a) for r in ranks for a in alphas if (r, a) not in runs]
    if missing:
        raise ValueError(f"runs lacks the (r, alpha) combinations {missing}: the explorer "
                         "needs one run for every rank and every alpha")

    def render(r, alpha):
        run = runs[int(r), float(alpha)]
        memory = {"full": training_memory_bytes(full["total"], full["trainable"]),
                  "lora": training_memory_bytes(run["total"], run["trainable"])}
        return lora_frame_plot(run, full, baselines, memory)

    return frame_explorer(render, {"r": ranks, "alpha": alphas}, title=title)


def dpo_explorer(runs: Sequence[Mapping], *, title: str = "DPO explorer: beta"):
    """A slider for DPO's ``beta`` over stored :func:`lmlab.finetune.run_dpo` results
    (one per beta): the held-out reward margin during training, how far the policy moved
    from the reference, and the held-out win rate."""
    if len(runs) < 2:
        raise ValueError(f"runs holds {len(runs)} run(s): the explorer needs at least two betas")
    ordered = sorted(runs, key=lambda r: r["beta"])
    by_beta = {str(r["beta"]): r for r in ordered}

    def render(beta):
        return dpo_frame_plot(by_beta[str(beta)], ordered)

    return frame_explorer(render, {"beta": [r["beta"] for r in ordered]}, title=title)
