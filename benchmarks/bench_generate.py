"""Greedy decoding with the KV cache against the same decoding without it.

The peer is lmlab's own generation with ``use_cache=False``, which reruns the whole
context at every tick (what a naive loop around ``model(ids)`` does). Both must produce
the same tokens; the cache should make 1000 new tokens at least 5× faster.

The model has the chapter's shape (``lmlab.train.SMALL_CHAR_GPT``: 4 layers, 4 heads,
128 features, a character vocabulary) with a context long enough to hold the prompt
and every new token, so the cache is never restarted. Its weights are random and seeded:
the time of a forward pass does not depend on what the weights are.
"""

from __future__ import annotations

import torch

from benchmarks.harness import Result, compare, threads
from lmlab.generate import generate
from lmlab.transformer import GPT, GPTConfig

NAME = "generate"

PROMPT = 16
VOCAB = 96  # about the size of the pydoc character vocabulary


def _model(block_size: int) -> GPT:
    from lmlab.train import SMALL_CHAR_GPT as h

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, block_size=block_size, n_layer=h["n_layer"],
                       n_head=h["n_head"], n_embd=h["n_embd"])
    return GPT(config).eval()


def run(quick: bool = False) -> list[Result]:
    # One thread: for a model this small, a second thread costs more in synchronization
    # than it saves, and on a busy shared machine it can be 10x slower (spin-waiting).
    with threads(1):
        return _run(quick)


def _run(quick: bool) -> list[Result]:
    lengths = [20, 60] if quick else [200, 1000]
    results = []
    model = _model(PROMPT + max(lengths))
    prompt = torch.randint(0, VOCAB, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    for n in lengths:
        cached = generate(model, prompt, n, temperature=0, use_cache=True)
        plain = generate(model, prompt, n, temperature=0, use_cache=False)
        identical = bool(torch.equal(cached, plain))
        ratio, iqr, t_plain, t_cached = compare(
            lambda n=n: generate(model, prompt, n, temperature=0, use_cache=False),
            lambda n=n: generate(model, prompt, n, temperature=0, use_cache=True),
            rounds=1 if quick else 3, warmup=0, repeat=1, desc=f"{n} tokens",
        )
        tokens_per_s = n / t_cached[0].median
        goal_met = identical and (ratio >= 5 if n >= 1000 else True)
        results.append(
            Result(
                benchmark=NAME,
                case=f"greedy, {n} new tokens after {PROMPT}, KV cache vs none",
                metric="speed-up (time without cache / with cache)",
                value=ratio,
                iqr=iqr,
                goal="≥ 5× at 1000 tokens, identical tokens" if n >= 1000 else "identical tokens",
                met=goal_met,
                details={"identical_tokens": identical, "cached_tokens_per_s": tokens_per_s,
                         "threads": torch.get_num_threads()},
            )
        )
    return results


if __name__ == "__main__":
    for r in run():
        print(r)
