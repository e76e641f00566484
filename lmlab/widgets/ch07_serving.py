"""The speculative-decoding explorer: how many tokens each target pass yields, for every
draft and k, from runs made in advance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lmlab.viz.ch07_serving import speculative_rounds
from lmlab.widgets.frames import frame_explorer

__all__ = ["speculative_explorer"]


def speculative_explorer(runs: Mapping[tuple[str, int], object], *, dpi: float | None = None):
    """Pick a draft and k; see the rounds of one run (kept, rejected, the target's token).

    ``runs``: (draft label, k) -> :class:`lmlab.speculative.SpeculativeStats` of one run
    (or any object with ``accepted``, ``proposed``, ``tokens_per_pass`` and
    ``acceptance_rate``). Every (draft, k) pair must be present: one frame each.
    """
    drafts: list[str] = list(dict.fromkeys(d for d, _ in runs))
    ks: Sequence[int] = sorted({k for _, k in runs})
    missing = [(d, k) for d in drafts for k in ks if (d, k) not in runs]
    if missing:
        raise ValueError(f"runs lacks {missing[:3]}: give one run for every (draft, k) pair")

    def render(draft, k):
        stats = runs[(draft, int(k))]
        title = (f"{draft}, k = {k}: {stats.tokens_per_pass:.2f} tokens per pass, "
                 f"{stats.acceptance_rate:.0%} of drafts kept")
        return speculative_rounds(stats.accepted, stats.proposed, title=title)

    return frame_explorer(render, {"draft": drafts, "k": list(ks)},
                          kinds={"draft": "dropdown"}, title="Speculative decoding, pass by pass",
                          dpi=dpi, max_frames=48)
