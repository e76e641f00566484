"""Speculative decoding against plain decoding of the same target model.

The peer is lmlab's own greedy ``generate`` with the KV cache: one target forward pass per
token. Speculative decoding must give exactly the same tokens (greedy) and, with a draft
that agrees often, at least 1.5x the tokens per second.

Models: character GPTs trained on the built-in pydoc corpus with the chapter's recipe
(:func:`lmlab.speculative.char_gpt`, cached under ``$LMLAB_CACHE``; about 6 minutes of
training on one core the first time), both on PyTorch's fused kernels: the target has 12
layers of width 128 (300 steps), the draft one layer of width 64 (300 steps, about 40x
fewer parameters). Small models are dominated by fixed per-layer costs, so the cost ratio
of target to draft is roughly their ratio of layers.
Prompts are slices of the corpus; each run fills the 64-token context. The acceptance
rate and the tokens per target pass are reported for every k.

Read the greedy acceptance with care: greedy decoding of small character models soon
falls into loops ("the the the ...", runs of spaces) that the draft predicts as well as
the target, which inflates agreement. The sampled rows (temperature 1, same seed for
both sides; no identical-token check, the two draw their random numbers differently)
measure how well the two distributions overlap, the harder test.
"""

from __future__ import annotations

import torch

from benchmarks.harness import Result, compare, threads
from lmlab.generate import generate
from lmlab.speculative import char_gpt, speculative_generate

NAME = "speculative"

TARGET = dict(n_layer=12, n_head=4, n_embd=128, steps=300, fused=True)
DRAFT = dict(n_layer=1, n_head=2, n_embd=64, steps=300, fused=True)
PROMPT = 16
PROMPTS = 4


def _prompts(n: int) -> list[torch.Tensor]:
    from lmlab.data import load_corpus
    from lmlab.tokenizer import CharTokenizer

    text = load_corpus("pydoc")
    ids = torch.tensor(CharTokenizer.from_text(text).encode(text[:200_000]))
    starts = torch.linspace(1000, len(ids) - 1000, n).long().tolist()
    return [ids[s:s + PROMPT] for s in starts]


def run(quick: bool = False) -> list[Result]:
    # one thread: the ratio is about passes saved, not about how well a kernel scales
    with threads(1):
        return _run(quick)


def _run(quick: bool) -> list[Result]:
    if quick:  # untrained and tiny: checks the plumbing, not the speed
        target, draft = char_gpt(2, 2, 32, 0), char_gpt(1, 1, 16, 0, seed=1)
        ks, prompts = [2], _prompts(1)
    else:
        target, draft = char_gpt(**TARGET), char_gpt(**DRAFT)
        ks, prompts = [1, 2, 3, 4, 5, 6], _prompts(PROMPTS)
    new = target.config.block_size - PROMPT

    def plain():
        return [generate(target, p, new, temperature=0) for p in prompts]

    results = []
    expected = plain()
    for k in ks:
        def spec(k=k):
            return [speculative_generate(target, draft, p, new, k=k, greedy=True) for p in prompts]

        runs = spec()
        identical = all(torch.equal(out, ref) for (out, _), ref in zip(runs, expected))
        accepted = sum(sum(s.accepted) for _, s in runs)
        proposed = sum(sum(s.proposed) for _, s in runs)
        passes = sum(s.target_passes for _, s in runs)
        ratio, iqr, _, _ = compare(plain, spec, rounds=1 if quick else 3, warmup=0, repeat=1,
                                   desc=f"k={k}")
        is_main = k == 4
        results.append(
            Result(
                benchmark=NAME,
                case=f"greedy, {new} new tokens after {PROMPT}, k={k}, "
                     f"{'untrained tiny models' if quick else '1x64 draft for a 12x128 target'}",
                metric="speed-up (time of plain decoding / speculative)",
                value=ratio,
                iqr=iqr,
                goal="≥ 1.5×, identical tokens" if is_main and not quick else "identical tokens",
                met=identical and (ratio >= 1.5 if is_main and not quick else True),
                details={"identical_tokens": identical, "acceptance_rate": accepted / proposed,
                         "tokens_per_target_pass": len(prompts) * new / passes,
                         "threads": torch.get_num_threads()},
            )
        )
    for k in ([] if quick else [2, 4]):
        results.append(_sampled(target, draft, prompts, new, k))
    return results


def _sampled(target, draft, prompts, new, k) -> Result:
    def plain():
        return [generate(target, p, new, temperature=1.0, seed=i) for i, p in enumerate(prompts)]

    def spec():
        return [speculative_generate(target, draft, p, new, k=k, temperature=1.0, seed=i)
                for i, p in enumerate(prompts)]

    stats = [s for _, s in spec()]
    ratio, iqr, _, _ = compare(plain, spec, rounds=3, warmup=0, repeat=1, desc=f"sampled k={k}")
    accepted, proposed = sum(sum(s.accepted) for s in stats), sum(sum(s.proposed) for s in stats)
    return Result(
        benchmark=NAME,
        case=f"sampled (temperature 1), {new} new tokens after {PROMPT}, k={k}, "
             f"1x64 draft for a 12x128 target",
        metric="speed-up (time of plain decoding / speculative)",
        value=ratio, iqr=iqr, goal="", met=None,
        details={"acceptance_rate": accepted / proposed,
                 "tokens_per_target_pass": len(prompts) * new / sum(s.target_passes for s in stats),
                 "threads": torch.get_num_threads()},
    )


if __name__ == "__main__":
    for r in run():
        print(r)
