"""lmlab.word2vec against gensim (the peer in `make bench`), small enough for every run.

Three things must agree with gensim: the vocabulary and its counts, word2vec.c's
subsampling probabilities (gensim stores them as 32-bit thresholds), and what training
achieves: on the synthetic analogy corpus, both reach the same analogy accuracy within
2 points (the benchmark's goal, here enforced) with the same hyper-parameters.
"""

from __future__ import annotations

import pytest
import torch

from lmlab.data import synthetic_analogies, synthetic_corpus
from lmlab.word2vec import Vocab, WordVectors, evaluate_analogies, train_word2vec

gensim_models = pytest.importorskip("gensim.models")


def _sentences(n: int) -> list[list[str]]:
    return [line.split() for line in synthetic_corpus(n, seed=0).splitlines()]


def _gensim(sentences, **kwargs):
    settings = dict(vector_size=32, window=5, negative=5, sg=1, min_count=1, sample=1e-3,
                    epochs=3, workers=1, seed=0)
    return gensim_models.Word2Vec(sentences, **{**settings, **kwargs})


def _as_word_vectors(model) -> WordVectors:
    kv = model.wv
    vocab = Vocab({w: int(kv.get_vecattr(w, "count")) for w in kv.index_to_key})
    return WordVectors(vocab, torch.stack([torch.from_numpy(kv[w].copy()) for w in vocab.itos]))


def test_vocabulary_and_counts_equal_gensims():
    sentences = _sentences(2_000)
    theirs = _gensim(sentences, epochs=1)
    ours = Vocab.build(sentences)
    assert len(ours) == len(theirs.wv.index_to_key)
    assert {w: int(ours.counts[ours[w]]) for w in ours.itos} == {
        w: int(theirs.wv.get_vecattr(w, "count")) for w in theirs.wv.index_to_key
    }


@pytest.mark.parametrize("sample", [1e-3, 1e-4])
def test_subsampling_probabilities_equal_gensims(sample):
    sentences = _sentences(2_000)
    theirs = _gensim(sentences, epochs=1, sample=sample)
    vocab = Vocab.build(sentences)
    keep = vocab.keep_probs(sample)
    # gensim keeps a word when random_uint32 < sample_int = round(p_keep * 2**32)
    expected = torch.tensor([theirs.wv.get_vecattr(w, "sample_int") / 2**32 for w in vocab.itos],
                            dtype=keep.dtype)
    torch.testing.assert_close(keep.clamp(max=1.0), expected.clamp(max=1.0), rtol=1e-6, atol=1e-9)
    assert (keep < 1).any(), "the corpus must have frequent words for this test to mean anything"


def _accuracies(n_sentences: int, dim: int, epochs: int, seed: int = 0) -> tuple[float, float]:
    sentences = _sentences(n_sentences)
    questions = synthetic_analogies()
    ours = train_word2vec(sentences, dim=dim, window=5, negatives=5, min_count=1, sample=1e-3,
                          epochs=epochs, seed=seed, workers=1, progress=False)
    theirs = _gensim(sentences, vector_size=dim, epochs=epochs, seed=seed)
    return (100 * evaluate_analogies(ours.wv, questions),
            100 * evaluate_analogies(_as_word_vectors(theirs), questions))


def test_analogy_accuracy_within_two_points_of_gensim():
    """The benchmark's goal, at a size that runs in seconds (both solve the task)."""
    ours, theirs = _accuracies(20_000, dim=50, epochs=5)
    assert theirs >= 95, f"gensim reached only {theirs:.1f} %: the setting is too hard"
    assert abs(ours - theirs) <= 2, f"lmlab {ours:.1f} % vs gensim {theirs:.1f} %"


def test_analogy_accuracy_on_a_small_budget_stays_near_gensims():
    """Below saturation lmlab learns less per word than gensim (measured: 86.6 % vs 97.5 %
    and 91.7 % vs 98.2 % for seeds 0 and 1 at this size). The cause is not found yet: it
    is not the batch size (16, 128 and 1024 pairs per step give the same accuracy). This
    bounds the gap so that a regression shows; closing it is open work."""
    ours, theirs = _accuracies(20_000, dim=32, epochs=3)
    assert theirs >= 90
    assert ours >= theirs - 15, f"lmlab {ours:.1f} % vs gensim {theirs:.1f} %"
