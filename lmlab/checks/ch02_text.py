"""Checks for exercise ch02_text: BPE's two steps, the negative-sampling loss, CBOW's mean."""

from __future__ import annotations

import random
from itertools import pairwise

import torch
import torch.nn.functional as F

from lmlab import tokenizer, word2vec
from lmlab.checks.core import Case, Mistake, Part, close, exact, make_check

__all__ = ["check_pair_counts", "check_merge", "check_sgns_loss", "check_cbow_hidden"]

CHAPTER = "ch02_text"


# --------------------------------------------------------------------------- pair_counts


def _pair_count_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for _ in range(8):
        chunks = [[rng.randrange(5) for _ in range(rng.randint(0, 7))]
                  for _ in range(rng.randint(2, 6))]
        cases.append(Case((chunks,), label="random chunks"))
    cases += [
        Case(([[97, 97, 97]],), label="edge: 'aaa' holds the pair (97, 97) twice"),
        Case(([[104, 105], [32, 104, 105], [32, 104, 105, 105]],), label="edge: 'hi hi hii'"),
        Case(([[1, 2], [1, 2], [3]],), label="edge: a pair split between chunks is not a pair"),
        Case(([[7], [], [8]],), label="edge: no chunk has two ids"),
        Case(([],), label="edge: no chunks"),
    ]
    return cases


class PairCounts(dict):
    """A dict of pair counts whose repr has no braces.

    The shared failure message is a ``str.format`` template (lmlab.checks.core), and the
    braces of a dict's repr would be read as fields in it; this repr avoids them.
    """

    def __repr__(self) -> str:
        return "PairCounts(" + ", ".join(f"{k!r}: {v!r}" for k, v in self.items()) + ")"


class _shown:  # noqa: N801 - used as a decorator
    """Make ``fn``'s dict results :class:`PairCounts`; other results pass unchanged."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "pair_counts")
        # The guard looks for lmlab references in the student's own namespace.
        self.__globals__ = getattr(fn, "__globals__", None)

    def __call__(self, *args, **kwargs):
        out = self.fn(*args, **kwargs)
        return PairCounts(out) if isinstance(out, dict) else out


@_shown
def _counts_across_chunks(chunks):
    flat = [i for c in chunks for i in c]
    return tokenizer.pair_counts([flat])


@_shown
def _counts_once_per_chunk(chunks):
    counts: dict = {}
    for c in chunks:
        for pair in set(pairwise(c)):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


@_shown
def _counts_without_overlap(chunks):
    counts: dict = {}
    for c in chunks:
        i = 0
        while i + 1 < len(c):
            pair = (c[i], c[i + 1])
            counts[pair] = counts.get(pair, 0) + 1
            i += 2 if c[i] == c[i + 1] else 1
    return counts


@_shown
def _counts_wrapping(chunks):
    counts: dict = {}
    for c in chunks:
        if len(c) >= 2:
            for i in range(len(c)):
                pair = (c[i], c[(i + 1) % len(c)])
                counts[pair] = counts.get(pair, 0) + 1
    return counts


_check_pair_counts = make_check(
    Part(
        name="pair_counts",
        chapter=CHAPTER,
        reference=_shown(tokenizer.pair_counts),
        cases=_pair_count_cases,
        compare=exact(),
        guard=["lmlab.tokenizer.pair_counts"],
        pure=True,
        mistakes=[
            Mistake(
                "across-boundaries",
                "you counted pairs across chunk boundaries (the last id of one chunk with "
                "the first of the next). Chunks are the words the pre-tokenizer cut; BPE "
                "never merges across them, so count pairs inside each chunk separately.",
                _counts_across_chunks,
            ),
            Mistake(
                "once-per-chunk",
                "you counted each pair at most once per chunk (a set of pairs?). Count every "
                "occurrence: 'hii i' style repeats matter for which pair is most frequent.",
                _counts_once_per_chunk,
            ),
            Mistake(
                "no-overlap",
                "you skipped ahead after a repeated pair, so (97, 97) in 'aaa' counts once. "
                "Counting looks at every adjacent position: zip(ids, ids[1:]) gives 2 there.",
                _counts_without_overlap,
            ),
            Mistake(
                "wraps-around",
                "you paired the last id of a chunk with its first one (an index taken modulo "
                "the length). A chunk of n ids has n - 1 adjacent pairs.",
                _counts_wrapping,
            ),
        ],
    )
)


def check_pair_counts(fn, *, seed: int = 0, hidden: bool = False) -> None:
    __tracebackhide__ = True
    _check_pair_counts(_shown(fn) if callable(fn) else fn, seed=seed, hidden=hidden)


check_pair_counts.__doc__ = _check_pair_counts.__doc__


# --------------------------------------------------------------------------- merge


def _merge_cases(seed: int) -> list[Case]:
    rng = random.Random(seed + 1)
    cases = []
    for _ in range(8):
        a, b = rng.randrange(4), rng.randrange(4)
        ids = [rng.randrange(4) for _ in range(rng.randint(3, 14))]
        ids[0:0] = [a, b]  # at least one occurrence
        cases.append(Case((ids, (a, b), 256), label="random ids"))
    cases += [
        Case(([5, 5, 5], (5, 5), 9), label="edge: 'aaa' merging (a, a)"),
        Case(([5, 5, 5, 5], (5, 5), 9), label="edge: 'aaaa' merging (a, a)"),
        Case(([1, 2, 3, 1, 2], (1, 2), 7), label="edge: pair at the start and at the end"),
        Case(([1, 2, 1, 2, 3], (1, 2), 7), label="edge: two occurrences in a row"),
        Case(([3, 1, 4, 1, 5], (1, 2), 7), label="edge: the pair does not occur"),
        Case(([2, 1], (1, 2), 7), label="edge: reversed pair is a different pair"),
        Case(([4], (4, 4), 8), label="edge: one id"),
        Case(([], (4, 4), 8), label="edge: no ids"),
    ]
    return cases


def _merge_overlapping(ids, pair, new_id):
    out = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
        elif i == 0 or (ids[i - 1], ids[i]) != tuple(pair):
            out.append(ids[i])
    return out


def _merge_overlap_steps_by_one(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out


def _merge_right_to_left(ids, pair, new_id):
    out = tokenizer.merge(list(reversed(ids)), (pair[1], pair[0]), new_id)
    return list(reversed(out))


def _merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return list(ids[:i]) + [new_id] + list(ids[i + 2:])
    return list(ids)


check_merge = make_check(
    Part(
        name="merge",
        chapter=CHAPTER,
        reference=tokenizer.merge,
        cases=_merge_cases,
        compare=exact(),
        guard=["lmlab.tokenizer.merge"],
        pure=True,
        mistakes=[
            Mistake(
                "overlapping",
                "your merge lets occurrences overlap: in 'aaa' the pair (a, a) is found at "
                "positions 0 and 1 and both become the new id. After a match, skip both "
                "ids (i += 2): merge([5, 5, 5], (5, 5), 9) == [9, 5].",
                _merge_overlapping,
            ),
            Mistake(
                "step-by-one",
                "after writing new_id you moved on by one position, so the second id of the "
                "pair is written again. A match consumes two ids: advance by 2.",
                _merge_overlap_steps_by_one,
            ),
            Mistake(
                "right-to-left",
                "you merged from the right: 'aaa' became [a, X]. BPE scans left to right, "
                "giving [X, a].",
                _merge_right_to_left,
            ),
            Mistake(
                "drops-last",
                "the last id disappears when it is not part of a match: your loop stops at "
                "len(ids) - 1. Keep going to the end and copy the final id.",
                _merge_drops_last,
            ),
            Mistake(
                "first-only",
                "you replaced only the first occurrence of the pair. A merge replaces every "
                "(non-overlapping) occurrence.",
                _merge_first_only,
            ),
        ],
    )
)


# --------------------------------------------------------------------------- sgns_loss


def _sgns_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(6):
        B, d, K = (int(torch.randint(2, 7, (1,), generator=g)) for _ in range(3))
        cases.append(Case((torch.randn(B, d, generator=g), torch.randn(B, d, generator=g),
                           torch.randn(B, K, d, generator=g)), label=f"random B={B} d={d} K={K}"))
    cases.append(Case((torch.randn(1, 3, generator=g), torch.randn(1, 3, generator=g),
                       torch.randn(1, 1, 3, generator=g)), label="edge: one example, one negative"))
    big = torch.full((2, 4), 6.0)
    cases.append(Case((big, -big, big.unsqueeze(1).repeat(1, 3, 1)),
                      label="edge: scores of -144 and +144 (the loss is large but finite)"))
    return cases


def _logsig_sum(center, context, negatives):
    pos = (center * context).sum(-1)
    neg = torch.einsum("bkd,bd->bk", negatives, center)
    return pos, neg


def _sgns_plus(center, context, negatives):
    pos, neg = _logsig_sum(center, context, negatives)
    return -(F.logsigmoid(pos) + F.logsigmoid(neg).sum(-1)).mean()


def _sgns_raw_sigmoid(center, context, negatives):
    pos, neg = _logsig_sum(center, context, negatives)
    return -(torch.sigmoid(pos) + torch.sigmoid(-neg).sum(-1)).mean()


def _sgns_sum(center, context, negatives):
    pos, neg = _logsig_sum(center, context, negatives)
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).sum()


def _sgns_mean_negatives(center, context, negatives):
    pos, neg = _logsig_sum(center, context, negatives)
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).mean(-1)).mean()


def _sgns_no_minus(center, context, negatives):
    pos, neg = _logsig_sum(center, context, negatives)
    return (F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()


def _sgns_unstable(center, context, negatives):
    pos, neg = _logsig_sum(center, context, negatives)
    return -(torch.log(torch.sigmoid(pos)) + torch.log(torch.sigmoid(-neg)).sum(-1)).mean()


check_sgns_loss = make_check(
    Part(
        name="sgns_loss",
        chapter=CHAPTER,
        reference=word2vec.sgns_loss,
        cases=_sgns_cases,
        compare=close(rtol=1e-4, atol=1e-5),
        guard=["lmlab.word2vec.sgns_loss"],
        mistakes=[
            Mistake(
                "plus-on-negatives",
                "the negatives enter with the wrong sign: you used log σ(u_k·v_c). A noise "
                "word should get a LOW score, so the term is log σ(−u_k·v_c).",
                _sgns_plus,
            ),
            Mistake(
                "raw-sigmoid",
                "you summed sigmoids, not log-sigmoids. The objective is a log-likelihood: "
                "log σ(u_o·v_c) + Σ_k log σ(−u_k·v_c) (use torch.nn.functional.logsigmoid).",
                _sgns_raw_sigmoid,
            ),
            Mistake(
                "sum-over-batch",
                "you summed over the batch. Return the mean over the B examples, so the "
                "loss (and the learning rate that suits it) does not depend on batch size.",
                _sgns_sum,
            ),
            Mistake(
                "mean-over-negatives",
                "you averaged the K negative terms. Each noise word is its own logistic "
                "term: sum them over k (only the batch is averaged).",
                _sgns_mean_negatives,
            ),
            Mistake(
                "no-minus",
                "you returned the log-likelihood, which training maximises. A loss is "
                "minimised: put a minus sign in front.",
                _sgns_no_minus,
            ),
            Mistake(
                "log-of-sigmoid",
                "torch.log(torch.sigmoid(x)) gives -inf when σ(x) underflows to 0 (x below "
                "about -104 in float32), and the loss becomes inf. "
                "torch.nn.functional.logsigmoid(x) computes the same value stably.",
                _sgns_unstable,
            ),
        ],
    )
)


# --------------------------------------------------------------------------- cbow_hidden


def _cbow_cases(seed: int) -> list[Case]:
    g = torch.Generator().manual_seed(seed + 2)
    cases = []
    for _ in range(6):
        B, C, d = (int(torch.randint(2, 7, (1,), generator=g)) for _ in range(3))
        mask = torch.rand(B, C, generator=g) < 0.6
        mask[:, 0] = True  # every example has at least one context word
        cases.append(Case((torch.randn(B, C, d, generator=g), mask),
                          label=f"random B={B} C={C} d={d}"))
    cases.append(Case((torch.randn(3, 4, 2, generator=g), torch.ones(3, 4, dtype=torch.bool)),
                      label="edge: every slot holds a word"))
    one = torch.zeros(2, 5, dtype=torch.bool)
    one[0, 3] = one[1, 0] = True
    cases.append(Case((torch.randn(2, 5, 3, generator=g), one),
                      label="edge: one context word each"))
    return cases


def _cbow_sum(x, mask):
    return (x * mask.unsqueeze(-1)).sum(1)


def _cbow_mask_ignored(x, mask):
    return x.mean(1)


def _cbow_divide_by_slots(x, mask):
    return (x * mask.unsqueeze(-1)).sum(1) / x.shape[1]


def _cbow_batch_axis(x, mask):
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(0) / m.sum(0).clamp(min=1)


def _cbow_feature_axis(x, mask):
    return (x * mask.unsqueeze(-1)).mean(-1)


check_cbow_hidden = make_check(
    Part(
        name="cbow_hidden",
        chapter=CHAPTER,
        reference=word2vec.cbow_hidden,
        cases=_cbow_cases,
        compare=close(rtol=1e-5, atol=1e-6),
        guard=["lmlab.word2vec.cbow_hidden"],
        mistakes=[
            Mistake(
                "sum-not-mean",
                "you summed the context vectors. CBOW's hidden layer is their mean: divide "
                "by the number of real context words in each row.",
                _cbow_sum,
            ),
            Mistake(
                "mask-ignored",
                "you averaged over every slot, padding included. Only slots where mask is "
                "True hold context words: average over those.",
                _cbow_mask_ignored,
            ),
            Mistake(
                "divide-by-slots",
                "you masked the sum but divided by C, the number of slots. Divide by the "
                "number of True entries of each row's mask (mask.sum(1)).",
                _cbow_divide_by_slots,
            ),
            Mistake(
                "batch-axis",
                "you averaged over the batch axis (dim 0). Average over the context axis "
                "(dim 1): h has shape (B, d).",
                _cbow_batch_axis,
            ),
            Mistake(
                "feature-axis",
                "you averaged over the vector axis (dim -1). Average over the context axis "
                "(dim 1), keeping the d features: h has shape (B, d).",
                _cbow_feature_axis,
            ),
        ],
    )
)
