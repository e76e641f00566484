"""Chapter 2 checks accept different correct implementations and name specific mistakes."""

from collections import Counter, defaultdict
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from lmlab.checks import check_cbow_hidden, check_merge, check_pair_counts, check_sgns_loss

# --------------------------------------------------------------------------- pair_counts


def pair_counts_counter(chunks):
    return dict(Counter(p for ids in chunks for p in pairwise(ids)))


def pair_counts_indices(chunks):
    counts = defaultdict(int)
    for ids in chunks:
        for i in range(len(ids) - 1):
            counts[(ids[i], ids[i + 1])] += 1
    return counts


@pytest.mark.parametrize("fn", [pair_counts_counter, pair_counts_indices])
@pytest.mark.parametrize("seed", [0, 7])
def test_pair_counts_correct_versions(fn, seed):
    check_pair_counts(fn, seed=seed)


def test_pair_counts_across_boundaries_is_named():
    def flat(chunks):
        ids = [i for c in chunks for i in c]
        return dict(Counter(pairwise(ids)))

    with pytest.raises(AssertionError, match="across chunk boundaries"):
        check_pair_counts(flat)


# --------------------------------------------------------------------------- merge


def merge_while(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if ids[i:i + 2] == list(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_stack(ids, pair, new_id):
    out = []
    for x in ids:
        if out and out[-1] == pair[0] and x == pair[1]:  # new_id is fresh: never pair[0]
            out[-1] = new_id
        else:
            out.append(x)
    return out


def merge_iterator(ids, pair, new_id):
    out, it = [], iter(ids)
    for x in it:
        while x == pair[0]:
            nxt = next(it, None)
            if nxt == pair[1]:
                out.append(new_id)
                break
            out.append(x)
            if nxt is None:
                return out
            x = nxt
        else:
            out.append(x)
    return out


@pytest.mark.parametrize("fn", [merge_while, merge_stack, merge_iterator])
@pytest.mark.parametrize("seed", [0, 7])
def test_merge_correct_versions(fn, seed):
    check_merge(fn, seed=seed)


def test_merge_overlap_is_named():
    def overlapping(ids, pair, new_id):
        out = []
        for i in range(len(ids)):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
                out.append(new_id)
            elif i == 0 or (ids[i - 1], ids[i]) != tuple(pair):
                out.append(ids[i])
        return out

    with pytest.raises(AssertionError, match="occurrences overlap") as info:
        check_merge(overlapping)
    assert "'aaa'" in str(info.value)  # the first wrong input is the telling one


# --------------------------------------------------------------------------- sgns_loss


def sgns_einsum(center, context, negatives):
    pos = torch.einsum("bd,bd->b", center, context)
    neg = torch.einsum("bkd,bd->bk", negatives, center)
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(1)).mean()


def sgns_softplus_loop(center, context, negatives):
    total = 0.0
    for b in range(center.shape[0]):
        term = F.softplus(-(center[b] @ context[b]))  # -log sigma(x) = softplus(-x)
        for k in range(negatives.shape[1]):
            term = term + F.softplus(negatives[b, k] @ center[b])
        total = total + term
    return total / center.shape[0]


@pytest.mark.parametrize("fn", [sgns_einsum, sgns_softplus_loop])
@pytest.mark.parametrize("seed", [0, 7])
def test_sgns_correct_versions(fn, seed):
    check_sgns_loss(fn, seed=seed)


def test_sgns_sign_mistake_is_named():
    def plus(center, context, negatives):
        pos = (center * context).sum(-1)
        neg = (negatives @ center.unsqueeze(-1)).squeeze(-1)
        return -(F.logsigmoid(pos) + F.logsigmoid(neg).sum(-1)).mean()

    with pytest.raises(AssertionError, match="wrong sign"):
        check_sgns_loss(plus)


def test_sgns_delegating_to_lmlab_is_refused():
    import lmlab.word2vec

    with pytest.raises(AssertionError, match="write yourself"):
        check_sgns_loss(lambda c, o, n: lmlab.word2vec.sgns_loss(c, o, n))


# --------------------------------------------------------------------------- cbow_hidden


def cbow_masked_sum(context_vectors, mask):
    m = mask.unsqueeze(-1).float()
    return (context_vectors * m).sum(1) / m.sum(1)


def cbow_loop(context_vectors, mask):
    return torch.stack([row[keep].mean(0) for row, keep in zip(context_vectors, mask, strict=True)])


def cbow_einsum(context_vectors, mask):
    weights = mask.float() / mask.sum(1, keepdim=True)
    return torch.einsum("bc,bcd->bd", weights, context_vectors)


@pytest.mark.parametrize("fn", [cbow_masked_sum, cbow_loop, cbow_einsum])
@pytest.mark.parametrize("seed", [0, 7])
def test_cbow_correct_versions(fn, seed):
    check_cbow_hidden(fn, seed=seed)


def test_cbow_mask_ignored_is_named():
    with pytest.raises(AssertionError, match="padding included"):
        check_cbow_hidden(lambda x, mask: x.mean(1))


def test_cbow_wrong_return_type_is_readable():
    with pytest.raises(AssertionError, match="expected a torch.Tensor of shape"):
        check_cbow_hidden(lambda x, mask: x.mean(1).tolist())


def test_pair_counts_delegation_through_an_imported_name_is_refused():
    namespace = {}
    exec("from lmlab.tokenizer import pair_counts as ref\n"
         "def pair_counts(chunks):\n"
         "    return ref(chunks)\n", namespace)
    with pytest.raises(AssertionError, match="write yourself"):
        check_pair_counts(namespace["pair_counts"])


def test_pair_counts_message_shows_the_dicts():
    with pytest.raises(AssertionError) as info:
        check_pair_counts(lambda chunks: {(0, 0): 99})
    message = str(info.value)
    assert "got:      {(0, 0): 99}" in message and "keys differ" in message
