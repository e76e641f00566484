"""Train every model the book notebooks load from the cache, before the notebooks run.

    python -m tools.warm_cache            # all groups, two processes (make test's cache stage)
    python -m tools.warm_cache 1          # one group

The book's trained models are cached under ``$LMLAB_CACHE`` (``lmlab.data.cache_dir``):
a fresh clone trains them once, here, so that each notebook then runs in seconds and
nbval's two workers do not both wait on training. The calls are exactly the notebooks'
(same arguments, so the same cache keys). Each group prints what it trained and how long
it took; the groups are balanced to take about the same time on two cores.
"""

from __future__ import annotations

import subprocess
import sys
import time


def _group_0() -> None:
    from lmlab.finetune import pretrain_encoder, run_finetune
    from lmlab.speculative import char_gpt

    for steps in (0, 60, 300):
        _timed(f"char_gpt draft {steps} steps", lambda s=steps: char_gpt(1, 2, 64, s))
    _timed("encoder", pretrain_encoder)
    for method in ("probe", "full", "lora"):
        _timed(f"fine-tune {method}", lambda m=method: run_finetune(m))
    for r in (1, 4, 16):
        for alpha in (8, 32):
            _timed(f"LoRA r={r} alpha={alpha}", lambda r=r, a=alpha: run_finetune("lora", r=r, alpha=a))


def _group_1() -> None:
    from lmlab.finetune import pretrain_gpt, run_distillation, run_dpo, run_pruning, run_sft

    _timed("distillation", run_distillation)
    _timed("pruning", run_pruning)
    _timed("base GPT", pretrain_gpt)
    _timed("SFT", run_sft)
    for beta in (0.03, 0.1, 0.3, 1.0):
        _timed(f"DPO beta={beta}", lambda b=beta: run_dpo(beta=b))


GROUPS = [_group_0, _group_1]


def _timed(label: str, fn) -> None:
    start = time.perf_counter()
    fn()
    print(f"  {label}: {time.perf_counter() - start:.0f} s", flush=True)


def main(argv: list[str]) -> int:
    if argv:
        GROUPS[int(argv[0])]()
        return 0
    from lmlab.data import load_corpus
    from lmlab.train import small_char_gpt

    start = time.perf_counter()
    _timed("corpus", load_corpus)  # what both groups share, first
    _timed("small_char_gpt", small_char_gpt)
    procs = [subprocess.Popen([sys.executable, "-m", "tools.warm_cache", str(i)])
             for i in range(len(GROUPS))]
    codes = [p.wait() for p in procs]
    print(f"cache warm in {time.perf_counter() - start:.0f} s")
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
