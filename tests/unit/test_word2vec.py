"""lmlab.word2vec: the loss by hand and by autograd, the SGD step, examples, training."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.data import synthetic_analogies, synthetic_corpus
from lmlab.word2vec import (
    Vocab,
    Word2Vec,
    WordVectors,
    _Corpus,
    _history,
    _reduced_windows,
    cbow_hidden,
    cbow_windows,
    evaluate_analogies,
    sgns_loss,
    skipgram_pairs,
    train_word2vec,
)


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


# --------------------------------------------------------------------------- the loss


def test_sgns_loss_by_hand():
    v = torch.tensor([[1.0, 2.0]])
    u = torch.tensor([[0.5, -1.0]])          # u.v = -1.5
    n = torch.tensor([[[1.0, 1.0], [0.0, -1.0]]])  # n.v = 3, -2
    expected = -(_logsig(-1.5) + _logsig(-3.0) + _logsig(2.0))
    assert sgns_loss(v, u, n).item() == pytest.approx(expected, rel=1e-6)


def test_sgns_loss_is_a_mean_over_the_batch():
    g = torch.Generator().manual_seed(0)
    v, u, n = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    per_row = [sgns_loss(v[i:i + 1], u[i:i + 1], n[i:i + 1]) for i in range(4)]
    torch.testing.assert_close(sgns_loss(v, u, n), torch.stack(per_row).mean())


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**31))
def test_sgns_gradient_matches_the_derivation(B, d, K, seed):
    """dL/dv = [(s_o - 1) u_o + sum_k s_k u_k] / B, dL/du_o = (s_o - 1) v / B, dL/du_k = s_k v / B."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(B, d, generator=g, dtype=torch.float64, requires_grad=True)
    u = torch.randn(B, d, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.randn(B, K, d, generator=g, dtype=torch.float64, requires_grad=True)
    sgns_loss(v, u, n).backward()
    s_o = torch.sigmoid((u * v).sum(-1, keepdim=True))                 # (B, 1)
    s_k = torch.sigmoid(torch.einsum("bkd,bd->bk", n, v)).unsqueeze(-1)  # (B, K, 1)
    with torch.no_grad():
        torch.testing.assert_close(v.grad, ((s_o - 1) * u + (s_k * n).sum(1)) / B)
        torch.testing.assert_close(u.grad, (s_o - 1) * v / B)
        torch.testing.assert_close(n.grad, s_k * v.unsqueeze(1) / B)


def test_sgns_loss_stable_for_large_scores():
    v = torch.full((1, 1), 200.0)
    loss = sgns_loss(v, -v, v.view(1, 1, 1))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(2 * 200.0 ** 2, rel=1e-6)


def test_sgns_loss_shape_errors():
    with pytest.raises(ValueError, match="center and context"):
        sgns_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="negatives must be"):
        sgns_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))


def test_cbow_hidden_masked_mean_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 2, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 1], [1, 1, 1, 1]], dtype=torch.bool)
    expected = torch.stack([x[b][mask[b]].mean(0) for b in range(3)])
    torch.testing.assert_close(cbow_hidden(x, mask), expected)
    torch.testing.assert_close(cbow_hidden(x), x.mean(1))
    with pytest.raises(ValueError, match="mask must be"):
        cbow_hidden(x, mask[:, :2])


# --------------------------------------------------------------------------- the SGD step


def _vocab(n=50):
    return Vocab({f"w{i}": 100 - i for i in range(n)})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_sgd_step_equals_autograd_sgd(mode, dtype):
    """The hand-written step = backward of the summed loss (sgns_loss) + plain SGD,
    duplicates included; to rounding error in float64."""
    g = torch.Generator().manual_seed(0)
    vocab = _vocab()
    model = Word2Vec(vocab, 8, mode, generator=g).to(dtype)
    with torch.no_grad():
        model.emb_out.weight.normal_(generator=g)
    twin = Word2Vec(vocab, 8, mode).to(dtype)
    twin.load_state_dict(model.state_dict())
    B, K, lr = 64, 5, 0.1
    targets = torch.randint(0, 10, (B,), generator=g)  # few ids: many duplicate rows
    negatives = torch.randint(10, 50, (B, K), generator=g)  # never equal to a target
    if mode == "skipgram":
        inputs, mask = torch.randint(0, 10, (B,), generator=g), None
    else:
        inputs = torch.randint(0, 50, (B, 6), generator=g)
        mask = torch.rand(B, 6, generator=g) < 0.7
        mask[:, 0] = True
    loss = model.sgd_step(inputs, targets, negatives, lr, mask=mask)
    ref = twin(inputs, targets, negatives, mask=mask)
    (ref * B).backward()
    tight = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {}
    assert loss == pytest.approx(ref.item(), rel=1e-12 if tight else 1e-5)
    with torch.no_grad():
        for p in twin.parameters():
            p -= lr * p.grad
    torch.testing.assert_close(model.emb_in.weight, twin.emb_in.weight, **tight)
    torch.testing.assert_close(model.emb_out.weight, twin.emb_out.weight, **tight)


def test_sgd_step_skips_negatives_equal_to_the_target():
    model = Word2Vec(_vocab(), 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.emb_out.weight.normal_(generator=torch.Generator().manual_seed(1))
    v, u = model.emb_in.weight[3].clone(), model.emb_out.weight[7].clone()
    model.sgd_step(torch.tensor([3]), torch.tensor([7]), torch.tensor([[7, 7]]), lr=1.0)
    # only the true pair moves u_7 and v_3, as if there were no negatives
    s = torch.sigmoid(u @ v)
    torch.testing.assert_close(model.emb_out.weight[7], u - (s - 1) * v)
    torch.testing.assert_close(model.emb_in.weight[3], v - (s - 1) * u)


# --------------------------------------------------------------------------- vocabulary and examples


def test_vocab_order_min_count_and_errors():
    v = Vocab.build([["b", "a", "c", "b"], ["a", "d"]], min_count=2)
    assert v.itos == ["a", "b"] and v["b"] == 1 and "c" not in v
    assert v.encode(["a", "c", "b"]) == [0, 1]
    with pytest.raises(ValueError, match="word 'zzz' is not in the vocabulary"):
        v.index("zzz")
    with pytest.raises(ValueError, match="min_count=9"):
        Vocab.build(["a"], min_count=9)
    with pytest.raises(ValueError, match="tokens is empty"):
        Vocab.build([])


def test_subsampling_formula():
    v = Vocab({"the": 50, "rare": 1, **{f"x{i}": 1 for i in range(949)}})
    p = v.keep_probs(1e-3)
    f = 50 / 1000
    assert p[0].item() == pytest.approx((math.sqrt(f / 1e-3) + 1) * 1e-3 / f)
    assert p[0].item() == pytest.approx(0.1614, abs=1e-4)
    assert (p[1:] >= 1).all()
    assert (v.keep_probs(0) == 1).all()


def test_negative_table_follows_unigram_to_the_three_quarters():
    v = Vocab({"a": 1000, "b": 100, "c": 10, "d": 1})
    p = v.noise_distribution()
    counts = torch.tensor([1000.0, 100, 10, 1], dtype=torch.float64) ** 0.75
    torch.testing.assert_close(p, counts / counts.sum())
    table = v.negative_table(100_000)
    share = torch.bincount(table, minlength=4).double() / len(table)
    torch.testing.assert_close(share, p, atol=2e-5, rtol=0)


def _pairs_by_loop(ids, sentence, window, b):
    out = []
    for i in range(len(ids)):
        for j in range(len(ids)):
            if i != j and abs(i - j) <= b[i] and sentence[i] == sentence[j]:
                out.append((int(ids[i]), int(ids[j])))
    return sorted(out)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=30), st.integers(1, 4), st.integers(0, 99))
def test_skipgram_pairs_match_a_loop(sentence_lengths_seed, window, seed):
    sentence = torch.tensor(sorted(sentence_lengths_seed))
    ids = torch.arange(len(sentence)) * 10
    b = _reduced_windows(len(ids), window, torch.Generator().manual_seed(seed))
    c, o = skipgram_pairs(ids, sentence, window, torch.Generator().manual_seed(seed))
    assert sorted(zip(c.tolist(), o.tolist(), strict=True)) == _pairs_by_loop(ids, sentence, window, b)


def test_corpus_split_keeps_sentences_whole():
    sentence = torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 3, 3])
    corpus = _Corpus(torch.arange(10), sentence, n_words=20)
    for parts in (1, 2, 3, 4, 12):
        pieces = corpus.split(parts)
        assert len(pieces) == parts
        torch.testing.assert_close(torch.cat([p.ids for p in pieces]), corpus.ids)
        assert sum(p.n_words for p in pieces) == pytest.approx(20)
        for a, b in zip(pieces, pieces[1:], strict=False):
            if len(a.ids) and len(b.ids):
                assert a.sentence[-1] < b.sentence[0]  # no sentence cut in two
    assert [len(p.ids) for p in corpus.split(2)] == [4, 6]


def test_history_bins_batches_by_percent_of_training():
    losses = [(0.015, 4.0), (0.0, 1.0), (0.005, 3.0), (0.5, 7.0), (0.999, 9.0)]
    assert _history(losses) == [2.0, 4.0, 7.0, 9.0]


def test_cbow_windows_match_skipgram_pairs():
    g = torch.Generator().manual_seed(3)
    sentence = torch.tensor([0] * 7 + [1] * 1 + [2] * 5)
    ids = torch.arange(13)
    ctx, mask, target = cbow_windows(ids, sentence, 3, torch.Generator().manual_seed(3))
    c, o = skipgram_pairs(ids, sentence, 3, g)
    assert 7 not in target.tolist()  # a one-word sentence has no context
    from_cbow = sorted((t, int(x)) for row, m, t in zip(ctx, mask, target.tolist(), strict=True)
                       for x, keep in zip(row, m, strict=True) if keep)
    assert from_cbow == sorted(zip(c.tolist(), o.tolist(), strict=True))


# --------------------------------------------------------------------------- vectors


def test_word_vectors_queries():
    vocab = Vocab({"man": 5, "woman": 4, "king": 3, "queen": 2, "apple": 1})
    vecs = torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1], [-1, 0, 0]])
    wv = WordVectors(vocab, vecs)
    assert wv.similarity("man", "apple") == pytest.approx(-1.0)
    assert wv.most_similar("man", 1)[0][0] in {"woman", "king"}
    assert wv.analogy("man", "woman", "king")[0][0] == "queen"
    assert evaluate_analogies(wv, [("man", "woman", "king", "queen"),
                                   ("man", "king", "woman", "queen"),
                                   ("man", "woman", "zebra", "queen")]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="c 'zebra' is not in the vocabulary"):
        wv.analogy("man", "woman", "zebra")
    with pytest.raises(ValueError, match="word 'zebra'"):
        wv.most_similar("zebra")


# --------------------------------------------------------------------------- training


@pytest.fixture
def one_thread():
    """Word2Vec's small ops run fastest on one thread (and do not fight a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_training_learns_the_planted_analogies(mode, one_thread):
    torch.manual_seed(0)
    sentences = [line.split() for line in synthetic_corpus(15_000, seed=1).splitlines()]
    model = train_word2vec(sentences, mode=mode, dim=32, epochs=5, min_count=1,
                           batch_size=256, progress=False)
    acc = evaluate_analogies(model.wv, synthetic_analogies())
    assert model.history[-1] < 0.75 * model.history[0]
    assert acc >= 0.9
    assert model.words_per_second > 0


def test_training_is_seeded(one_thread):
    sentences = [line.split() for line in synthetic_corpus(500).splitlines()]
    a, b = (train_word2vec(sentences, dim=8, epochs=1, min_count=1, progress=False)
            for _ in range(2))
    torch.testing.assert_close(a.emb_in.weight, b.emb_in.weight, rtol=0, atol=0)


def test_train_word2vec_errors():
    with pytest.raises(ValueError, match="mode must be"):
        train_word2vec(["a", "b"], mode="glove")
    with pytest.raises(ValueError, match="window must be >= 1"):
        train_word2vec(["a", "b"], window=0)
    with pytest.raises(ValueError, match="tokens is empty"):
        train_word2vec([])


def test_hogwild_workers_train_and_restore_threads():
    sentences = [line.split() for line in synthetic_corpus(6000, seed=2).splitlines()]
    threads = torch.get_num_threads()
    model = train_word2vec(sentences, dim=16, epochs=2, min_count=1, batch_size=256,
                           workers=2, progress=False)
    assert torch.get_num_threads() == threads
    assert all(math.isfinite(x) for x in model.history)
    assert model.history[-1] < 0.8 * model.history[0]
    assert len(model.history) == 100
