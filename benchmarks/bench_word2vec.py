"""Word2Vec skip-gram: lmlab (batched PyTorch) against gensim (optimised C, Hogwild threads).

Same corpus (the synthetic analogy corpus), same hyper-parameters (dim 100, window 5,
5 negatives, subsampling 1e-3, min_count 1, same epochs), 2 threads each: gensim
``workers=2``, lmlab ``workers=2`` (two lock-free threads, each on its half of the sentences
with one torch thread; the same Hogwild scheme as gensim and word2vec.c). Both timings cover
the whole call: vocabulary, training and all. Reported: throughput ratio in words/s (goal
>= 0.5x gensim's) and the analogy accuracy of both, scored by the same code (goal: within
2 points).
"""

from __future__ import annotations

import time

import torch

from benchmarks.harness import Result, ratio_stats
from lmlab.data import synthetic_analogies, synthetic_corpus
from lmlab.word2vec import Vocab, WordVectors, evaluate_analogies, train_word2vec

NAME = "word2vec"


def _gensim(sentences, *, dim, epochs, threads, seed=0):
    from gensim.models import Word2Vec as GensimWord2Vec

    return GensimWord2Vec(sentences, vector_size=dim, window=5, negative=5, sg=1,
                          min_count=1, sample=1e-3, epochs=epochs, workers=threads, seed=seed)


def _as_word_vectors(model) -> WordVectors:
    kv = model.wv
    vocab = Vocab({w: int(kv.get_vecattr(w, "count")) for w in kv.index_to_key})
    vectors = torch.stack([torch.from_numpy(kv[w].copy()) for w in vocab.itos])
    return WordVectors(vocab, vectors)


def run(quick: bool = False) -> list[Result]:
    n_sentences, dim, epochs, rounds = (1_000, 8, 1, 1) if quick else (30_000, 100, 5, 5)
    threads = 2
    sentences = [line.split() for line in synthetic_corpus(n_sentences, seed=0).splitlines()]
    n_words = sum(map(len, sentences)) * epochs
    questions = synthetic_analogies()
    # Warm-up, untimed: gensim's first call pays for importing it, lmlab's for lazy imports.
    train_word2vec(sentences[:100], dim=8, epochs=1, min_count=1, workers=threads, progress=False)
    _gensim(sentences[:100], dim=8, epochs=1, threads=threads)

    ours_s, theirs_s, ratios = [], [], []
    for r in range(rounds):  # interleaved: A, B then B, A
        for which in (("ours", "gensim") if r % 2 == 0 else ("gensim", "ours")):
            start = time.perf_counter()
            if which == "ours":
                ours = train_word2vec(sentences, dim=dim, window=5, negatives=5,
                                      min_count=1, sample=1e-3, epochs=epochs,
                                      batch_size=1024, seed=r, workers=threads,
                                      progress=False)
                ours_s.append(time.perf_counter() - start)
            else:
                theirs = _gensim(sentences, dim=dim, epochs=epochs, threads=threads, seed=r)
                theirs_s.append(time.perf_counter() - start)
        ratios.append(theirs_s[-1] / ours_s[-1])  # words/s ratio = inverse time ratio
    median, iqr = ratio_stats(ratios)
    acc_ours = 100 * evaluate_analogies(ours.wv, questions)
    acc_theirs = 100 * evaluate_analogies(_as_word_vectors(theirs), questions)
    case = f"skip-gram, {n_words // epochs:,} words x {epochs} epochs, dim {dim}, {threads} threads"
    return [
        Result(NAME, case, "words/s ratio lmlab/gensim", median, iqr, goal="≥ 0.5×",
               met=median >= 0.5,
               details={"lmlab_words_per_s": n_words / sorted(ours_s)[len(ours_s) // 2],
                        "gensim_words_per_s": n_words / sorted(theirs_s)[len(theirs_s) // 2]}),
        Result(NAME, f"analogy accuracy ({len(questions)} synthetic questions), lmlab minus gensim",
               "points", acc_ours - acc_theirs, goal="within ±2 points",
               met=abs(acc_ours - acc_theirs) <= 2,
               details={"lmlab_accuracy": acc_ours, "gensim_accuracy": acc_theirs}),
    ]
