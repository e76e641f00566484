"""Word2Vec: skip-gram and CBOW with negative sampling (Mikolov et al. 2013).

Each word ``w`` has two vectors: an input vector ``v_w`` (a row of ``emb_in``, the one-hot
to embedding step: ``onehot(w) @ W_in == W_in[w]``) and an output vector ``u_w`` (a row of
``emb_out``). Skip-gram scores how likely ``o`` is to appear near ``c`` with ``u_o . v_c``;
CBOW scores the middle word ``o`` from the mean ``h`` of its context words' input vectors.
Instead of a softmax over the whole vocabulary, negative sampling asks a logistic
classifier to tell the true pair from ``K`` words drawn from the unigram distribution
raised to the power 3/4:

    loss = -log sigma(u_o . h) - sum_k log sigma(-u_k . h)        (h = v_c, or the mean)

Its gradient, with ``s = sigma(u . h)`` and label ``y`` (1 for the true word, 0 for a
noise word), is ``dloss/du = (s - y) h`` and ``dloss/dh = sum (s - y) u``; for CBOW every
context word receives ``dloss/dh / C`` because ``h`` is their mean over ``C`` words.

Training follows word2vec.c in batches: frequent words are dropped at random
(subsampling), each position gets a window of random size 1..``window``, and plain SGD
with a linearly decaying learning rate updates only the rows a batch touches.
"""

from __future__ import annotations

import array
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Vocab", "sgns_loss", "cbow_hidden", "Word2Vec", "WordVectors", "train_word2vec",
           "evaluate_analogies", "skipgram_pairs", "cbow_windows"]


# --------------------------------------------------------------------------- vocabulary


class Vocab:
    """Words kept (count >= ``min_count``), most frequent first; ties in alphabetical order."""

    def __init__(self, counts: dict[str, int], min_count: int = 1):
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        kept = sorted(((w, c) for w, c in counts.items() if c >= min_count),
                      key=lambda wc: (-wc[1], wc[0]))
        if not kept:
            raise ValueError(f"no word occurs at least min_count={min_count} times "
                             f"(the most frequent occurs {max(counts.values(), default=0)} times)")
        self.min_count = min_count
        self.itos: list[str] = [w for w, _ in kept]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        self.counts = torch.tensor([c for _, c in kept], dtype=torch.float64)  # (V,)

    @classmethod
    def build(cls, tokens: Iterable[str] | Iterable[Sequence[str]], min_count: int = 1) -> Vocab:
        """Count a flat list of words or a list of sentences (lists of words)."""
        counts = Counter(itertools.chain.from_iterable(
            [item] if isinstance(item, str) else item for item in tokens))
        if not counts:
            raise ValueError("tokens is empty: nothing to build a vocabulary from")
        return cls(dict(counts), min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __getitem__(self, word: str) -> int:
        return self.index(word)

    def index(self, word: str, name: str = "word") -> int:
        try:
            return self.stoi[word]
        except KeyError:
            raise ValueError(f"{name} {word!r} is not in the vocabulary ({len(self)} words "
                             f"seen at least min_count={self.min_count} times)") from None

    def encode(self, words: Iterable[str]) -> list[int]:
        """Ids of the words in the vocabulary; unknown words are dropped."""
        return [self.stoi[w] for w in words if w in self.stoi]

    def keep_probs(self, sample: float = 1e-3) -> torch.Tensor:
        """Probability of keeping each word under word2vec.c's subsampling: (V,).

        With ``f`` the word's share of the corpus and ``t = sample``:
        ``p_keep = (sqrt(f / t) + 1) * t / f``, capped at 1. Words rarer than about ``t``
        are always kept; "the" at f = 5% with t = 1e-3 is kept 16% of the time.
        (Mikolov et al. 2013 wrote the discard probability as ``1 - sqrt(t / f)``; the
        released code uses the formula above.) ``sample=0`` keeps everything.
        """
        if sample < 0:
            raise ValueError(f"sample must be >= 0, got {sample}")
        if sample == 0:
            return torch.ones(len(self), dtype=torch.float64)
        f = self.counts / self.counts.sum()
        return ((f / sample).sqrt() + 1) * sample / f

    def noise_distribution(self, power: float = 0.75) -> torch.Tensor:
        """The distribution negatives are drawn from: count^power, normalised. (V,)"""
        p = self.counts ** power
        return p / p.sum()

    def negative_table(self, size: int = 1_000_000, power: float = 0.75) -> torch.Tensor:
        """word2vec.c's table: word ``w`` fills a share ``noise_distribution()[w]`` of
        ``size`` slots, so ``table[randint(size)]`` draws a negative in O(1). (size,) int64."""
        ends = (self.noise_distribution(power).cumsum(0) * size).round().long()  # (V,)
        slots = torch.diff(ends, prepend=ends.new_zeros(1))                      # (V,)
        return torch.arange(len(self)).repeat_interleave(slots)


# --------------------------------------------------------------------------- the objective


def sgns_loss(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Skip-gram negative-sampling loss, averaged over the batch.

    center: (B, d) input vectors v_c (or CBOW's hidden h); context: (B, d) output vectors
    u_o of the true words; negatives: (B, K, d) output vectors of K noise words.
    Returns a scalar: mean_b [ -log sigma(u_o . v_c) - sum_k log sigma(-u_k . v_c) ].
    """
    if center.dim() != 2 or context.shape != center.shape:
        raise ValueError(f"center and context must both be (B, d), got {tuple(center.shape)} "
                         f"and {tuple(context.shape)}")
    if negatives.dim() != 3 or negatives.shape[0] != center.shape[0] \
            or negatives.shape[2] != center.shape[1]:
        raise ValueError(f"negatives must be (B, K, d) = ({center.shape[0]}, K, "
                         f"{center.shape[1]}), got {tuple(negatives.shape)}")
    pos = (center * context).sum(-1)                              # (B,)
    neg = torch.bmm(negatives, center.unsqueeze(-1)).squeeze(-1)  # (B, K)
    # logsigmoid, not log(sigmoid(x)): sigmoid underflows to 0 for x < -100 and log(0) = -inf.
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()


def cbow_hidden(context_vectors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """CBOW's hidden layer: the mean of the context words' input vectors.

    context_vectors: (B, C, d); mask: (B, C) bool, True where a context slot holds a word
    (windows near sentence ends are shorter). Returns h: (B, d).
    """
    if context_vectors.dim() != 3:
        raise ValueError(f"context_vectors must be (B, C, d), got {tuple(context_vectors.shape)}")
    if mask is None:
        return context_vectors.mean(1)
    if mask.shape != context_vectors.shape[:2]:
        raise ValueError(f"mask must be (B, C) = {tuple(context_vectors.shape[:2])}, "
                         f"got {tuple(mask.shape)}")
    m = mask.to(context_vectors.dtype).unsqueeze(-1)             # (B, C, 1)
    return (context_vectors * m).sum(1) / m.sum(1).clamp(min=1)


# --------------------------------------------------------------------------- training examples


def _reduced_windows(n: int, window: int, generator: torch.Generator) -> torch.Tensor:
    # word2vec.c draws each position's window size uniformly from 1..window, which
    # weights a context word at distance k by (window - k + 1) / window.
    return torch.randint(1, window + 1, (n,), generator=generator)


def _context_slots(sentence: torch.Tensor, window: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of every position's 2 * window neighbours are its context words.

    sentence: (N,) sentence numbers, each sentence one contiguous run. Returns offsets
    (2W,) = -W..-1, 1..W and a mask (N, 2W), True where position ``i + offsets[k]`` lies
    inside position ``i``'s reduced window and its sentence.
    """
    n = len(sentence)
    b = _reduced_windows(n, window, generator)                                    # (N,)
    pos = torch.arange(n)
    _, length = torch.unique_consecutive(sentence, return_counts=True)            # (S,)
    last = (length.cumsum(0) - 1).repeat_interleave(length)                       # (N,)
    first = last - length.repeat_interleave(length) + 1                           # (N,)
    distance = torch.arange(1, window + 1)                                        # (W,)
    left = distance.flip(0) <= torch.minimum(b, pos - first)[:, None]             # (N, W)
    right = distance <= torch.minimum(b, last - pos)[:, None]                     # (N, W)
    return torch.cat([-distance.flip(0), distance]), torch.cat([left, right], 1)


def skipgram_pairs(ids: torch.Tensor, sentence: torch.Tensor, window: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """All (center, context) pairs inside each position's reduced window, same sentence.

    ids, sentence: (N,) word ids and sentence numbers (each sentence one contiguous run).
    Returns centers, contexts: (P,), position by position.
    """
    offsets, mask = _context_slots(sentence, window, generator)
    center, slot = mask.nonzero(as_tuple=True)                                    # (P,)
    return ids[center], ids[center + offsets[slot]]


def cbow_windows(ids: torch.Tensor, sentence: torch.Tensor, window: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every position: its context ids (N, 2*window), a mask of real slots, its id (N,).

    Positions with no context word (one-word sentences) are dropped.
    """
    offsets, mask = _context_slots(sentence, window, generator)                  # (N, 2W)
    keep = mask.any(1)
    slots = (torch.arange(len(ids))[:, None] + offsets).clamp_(0, len(ids) - 1)  # (N, 2W)
    return ids[slots[keep]], mask[keep], ids[keep]


# --------------------------------------------------------------------------- vectors


class WordVectors:
    """Word vectors with cosine-similarity queries. vectors: (V, d)."""

    def __init__(self, vocab: Vocab, vectors: torch.Tensor):
        if vectors.dim() != 2 or vectors.shape[0] != len(vocab):
            raise ValueError(f"vectors must be ({len(vocab)}, d), got {tuple(vectors.shape)}")
        self.vocab = vocab
        self.vectors = vectors.detach().float().cpu()
        self._unit = F.normalize(self.vectors, dim=1)

    def __getitem__(self, word: str) -> torch.Tensor:
        return self.vectors[self.vocab.index(word)]

    def __contains__(self, word: str) -> bool:
        return word in self.vocab

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words' vectors."""
        ia, ib = self.vocab.index(a, "a"), self.vocab.index(b, "b")
        return float(self._unit[ia] @ self._unit[ib])

    def most_similar(self, word: str | torch.Tensor, topn: int = 10,
                     exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The ``topn`` words closest in cosine to ``word`` (a word or a (d,) vector)."""
        if isinstance(word, str):
            query = self._unit[self.vocab.index(word)]
            exclude = {*exclude, word}
        else:
            query = F.normalize(word.detach().float().cpu().reshape(-1), dim=0)
        sims = self._unit @ query                                  # (V,)
        for w in exclude:
            if w in self.vocab:
                sims[self.vocab.stoi[w]] = -math.inf
        top = sims.topk(min(topn, int(torch.isfinite(sims).sum())))
        return [(self.vocab.itos[i], float(s)) for s, i in zip(top.values, top.indices, strict=True)]

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """"a is to b as c is to ?": words nearest to b - a + c (unit vectors; a, b, c
        excluded, as in Mikolov et al.'s evaluation)."""
        ia, ib, ic = (self.vocab.index(w, n) for w, n in ((a, "a"), (b, "b"), (c, "c")))
        query = self._unit[ib] - self._unit[ia] + self._unit[ic]
        return self.most_similar(query, topn, exclude=(a, b, c))


def evaluate_analogies(wv: WordVectors, questions: Iterable[tuple[str, str, str, str]]) -> float:
    """Share of questions (a, b, c, d) whose top answer to ``analogy(a, b, c)`` is d.

    A question with a word outside the vocabulary counts as wrong.
    """
    questions = list(questions)
    if not questions:
        raise ValueError("questions is empty")
    right = 0
    for a, b, c, d in questions:
        if all(w in wv for w in (a, b, c, d)):
            right += wv.analogy(a, b, c)[0][0] == d
    return right / len(questions)


# --------------------------------------------------------------------------- the model


class Word2Vec(nn.Module):
    """Input and output embeddings of a vocabulary, trained by :func:`train_word2vec`.

    ``mode`` is ``"skipgram"`` or ``"cbow"``. Initialised like word2vec.c: input vectors
    uniform in [-0.5/d, 0.5/d], output vectors zero.
    """

    def __init__(self, vocab: Vocab, dim: int = 100, mode: str = "skipgram",
                 generator: torch.Generator | None = None):
        super().__init__()
        if mode not in ("skipgram", "cbow"):
            raise ValueError(f"mode must be 'skipgram' or 'cbow', got {mode!r}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.vocab, self.dim, self.mode = vocab, dim, mode
        self.emb_in = nn.Embedding(len(vocab), dim)
        self.emb_out = nn.Embedding(len(vocab), dim)
        with torch.no_grad():
            self.emb_in.weight.copy_((torch.rand(len(vocab), dim, generator=generator) - 0.5) / dim)
            self.emb_out.weight.zero_()
        self.history: list[float] = []  # mean loss per logged chunk of training

    def hidden(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Skip-gram: inputs (B,) center ids -> (B, d). CBOW: inputs (B, C) context ids and
        mask (B, C) -> the mean of their input vectors (B, d)."""
        if self.mode == "skipgram":
            return self.emb_in(inputs)
        return cbow_hidden(self.emb_in(inputs), mask)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """The negative-sampling loss of a batch. targets: (B,), negatives: (B, K)."""
        return sgns_loss(self.hidden(inputs, mask), self.emb_out(targets), self.emb_out(negatives))

    @torch.no_grad()
    def sgd_step(self, inputs: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                 lr: float, mask: torch.Tensor | None = None) -> float:
        """One SGD step on the summed loss of the batch, gradients written out by hand.

        Equal to ``forward(...) * B`` then ``backward()`` then ``w -= lr * grad`` (tested),
        but touches only the rows in the batch. Returns the batch's mean loss.
        """
        w_in, w_out = self.emb_in.weight, self.emb_out.weight
        B, K = negatives.shape
        h = self.hidden(inputs, mask)                                   # (B, d)
        out_ids = torch.cat([targets[:, None], negatives], 1)           # (B, 1+K)
        u = w_out.index_select(0, out_ids.view(-1)).view(B, K + 1, self.dim)  # (B, 1+K, d)
        scores = torch.bmm(h.unsqueeze(1), u.transpose(1, 2)).squeeze(1)  # (B, 1+K)
        labels = scores.new_zeros(K + 1)
        labels[0] = 1.0                                 # the true word, then K noise words
        # lr * (y - sigma(score)) = -lr * dloss/dscore. lr goes in here rather than into
        # index_add_(alpha=-lr) below, which is several times slower than without alpha.
        step = (labels - torch.sigmoid(scores)).mul_(lr)                # (B, 1+K)
        # A negative that happens to be the true word is skipped (as in word2vec.c).
        clash = negatives == targets[:, None]                           # (B, K)
        step[:, 1:].masked_fill_(clash, 0.0)
        # step_h[b] = sum_k step[b, k] u[b, k]; embedding_bag does it faster than a bmm.
        step_h = F.embedding_bag(out_ids, w_out, per_sample_weights=step, mode="sum")  # (B, d)
        step_u = step.unsqueeze(-1) * h.unsqueeze(1)                    # (B, 1+K, d)
        w_out.index_add_(0, out_ids.view(-1), step_u.view(-1, self.dim))
        if self.mode == "skipgram":
            w_in.index_add_(0, inputs, step_h)
        else:
            m = mask.to(h.dtype)
            share = (step_h / m.sum(1, keepdim=True)).unsqueeze(1) * m.unsqueeze(-1)  # (B, C, d)
            w_in.index_add_(0, inputs.reshape(-1), share.view(-1, self.dim))
        loss = F.binary_cross_entropy_with_logits(scores, labels.expand(B, -1), reduction="none")
        loss[:, 1:].masked_fill_(clash, 0.0)
        return float(loss.sum()) / B

    @property
    def wv(self) -> WordVectors:
        """The input vectors as :class:`WordVectors` (what word2vec.c saves)."""
        return WordVectors(self.vocab, self.emb_in.weight)

    def most_similar(self, word, topn: int = 10, exclude: Iterable[str] = ()):
        return self.wv.most_similar(word, topn, exclude)

    def similarity(self, a: str, b: str) -> float:
        return self.wv.similarity(a, b)

    def analogy(self, a: str, b: str, c: str, topn: int = 1):
        return self.wv.analogy(a, b, c, topn)


# --------------------------------------------------------------------------- training loop


@dataclass
class _Corpus:
    ids: torch.Tensor       # (N,) word ids, unknown words removed
    sentence: torch.Tensor  # (N,) which sentence each word is in, non-decreasing
    n_words: float = 0      # raw words, unknown included (for words/s)

    def split(self, parts: int) -> list[_Corpus]:
        """``parts`` runs of whole sentences with about the same number of words each."""
        n = len(self.ids)
        cut_sentences = self.sentence[[k * n // parts for k in range(1, parts)]]
        cuts = [0, *torch.searchsorted(self.sentence, cut_sentences).tolist(), n]
        return [_Corpus(self.ids[a:b], self.sentence[a:b], self.n_words * (b - a) / n)
                for a, b in zip(cuts, cuts[1:], strict=False)]


def _as_sentences(tokens) -> list[Sequence[str]]:
    tokens = list(tokens)
    if not tokens:
        raise ValueError("tokens is empty: give a list of words or a list of sentences")
    if isinstance(tokens[0], str):
        return [tokens]
    return tokens


def _encode(sentences: list[Sequence[str]], vocab: Vocab) -> _Corpus:
    words = list(itertools.chain.from_iterable(sentences))
    ids = _long_tensor([vocab.stoi.get(w, -1) for w in words])                    # (N,)
    lengths = _long_tensor([len(s) for s in sentences])                           # (S,)
    sentence = torch.arange(len(sentences)).repeat_interleave(lengths)            # (N,)
    known = ids >= 0
    return _Corpus(ids[known], sentence[known], len(words))


def _long_tensor(values: list[int]) -> torch.Tensor:
    # A few times faster than torch.tensor(values) on long lists: one copy of a C array.
    return torch.frombuffer(array.array("q", values), dtype=torch.long)


def train_word2vec(tokens: Iterable[str] | Iterable[Sequence[str]], *, mode: str = "skipgram",
                   dim: int = 100, window: int = 5, negatives: int = 5, min_count: int = 5,
                   sample: float = 1e-3, epochs: int = 5, lr: float | None = None,
                   batch_size: int = 1024, seed: int = 0, device: str | torch.device = "cpu",
                   workers: int = 1, progress: bool = True) -> Word2Vec:
    """Train skip-gram or CBOW with negative sampling on a list of words or of sentences.

    Windows never cross a sentence boundary. ``lr`` decays linearly from its start
    (0.025 for skip-gram, 0.05 for CBOW, as word2vec.c) to 1e-4 of it. The model's
    ``history`` holds the mean loss of the batches starting in every 1% of training (fewer
    entries when a batch spans more than 1%); ``words_per_second`` the throughput (raw
    words times epochs over wall time).

    ``workers > 1`` splits the sentences into that many parts and runs one thread per part
    on the shared vectors without locks, the way word2vec.c and gensim do ("Hogwild",
    Recht et al. 2011): faster on a multi-core CPU, but no longer bit-for-bit reproducible,
    and with a small vocabulary and big batches the stale concurrent updates can diverge.
    Each worker uses one torch thread (``torch.set_num_threads(1)`` for the duration,
    restored afterwards): the steps are many small ops that extra threads only slow down.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    if mode not in ("skipgram", "cbow"):
        raise ValueError(f"mode must be 'skipgram' or 'cbow', got {mode!r}")
    for name, value in (("window", window), ("negatives", negatives), ("epochs", epochs),
                        ("batch_size", batch_size), ("workers", workers)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    lr0 = lr if lr is not None else (0.025 if mode == "skipgram" else 0.05)
    sentences = _as_sentences(tokens)
    vocab = Vocab.build(sentences, min_count)
    corpus = _encode(sentences, vocab)
    gen = torch.Generator().manual_seed(seed)
    model = Word2Vec(vocab, dim, mode, generator=gen).to(device)
    table = vocab.negative_table()
    keep = vocab.keep_probs(sample).float()
    # Worker 0 goes on with the seeded stream; the others get streams drawn from it.
    gens = [gen] + [torch.Generator().manual_seed(int(torch.randint(2**62, (), generator=gen)))
                    for _ in range(workers - 1)]
    losses: list[tuple[float, float]] = []  # (share of training done, batch loss)

    def work(part: _Corpus, generator: torch.Generator) -> None:
        # All epochs over its own part, as in word2vec.c: no waiting for the others.
        for epoch in range(epochs):
            examples, all_negs = _epoch_examples(part, keep, table, mode, window, negatives,
                                                 generator)
            n = len(examples[0])
            reported = 0  # words of this epoch shown on the bar: whole numbers, so it ends
            for s in range(0, n, batch_size):  # exactly at its total
                done = (epoch + s / n) / epochs
                batch = [t[s:s + batch_size].to(device) for t in examples]
                loss = model.sgd_step(batch[0], batch[1], all_negs[s:s + batch_size].to(device),
                                      lr0 * max(1e-4, 1 - done),
                                      mask=batch[2] if mode == "cbow" else None)
                losses.append((done, loss))
                words = part.n_words * min(s + batch_size, n) // n
                bar.update(words - reported)
                reported = words

    start = time.perf_counter()
    bar = tqdm(total=corpus.n_words * epochs, desc=f"word2vec {mode}", unit="word",
               disable=not progress)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, corpus.split(workers), gens))  # list(): re-raises errors
    finally:
        torch.set_num_threads(previous_threads)
        bar.close()
    elapsed = time.perf_counter() - start
    model.history = _history(losses)
    model.words_per_second = corpus.n_words * epochs / elapsed
    model.train_seconds = elapsed
    return model


def _epoch_examples(corpus: _Corpus, keep: torch.Tensor, table: torch.Tensor, mode: str,
                    window: int, negatives: int, gen: torch.Generator):
    """Subsample, cut windows, shuffle, and draw the negatives of one epoch."""
    # index_select rather than tensor[index] in this function: the same result, faster.
    kept = (torch.rand(len(corpus.ids), generator=gen) < keep[corpus.ids]).nonzero().squeeze(1)
    ids, sent = corpus.ids.index_select(0, kept), corpus.sentence.index_select(0, kept)
    if mode == "skipgram":
        examples = skipgram_pairs(ids, sent, window, gen)               # centers, contexts
    else:
        ctx, mask, targets = cbow_windows(ids, sent, window, gen)
        examples = (ctx, targets, mask)
    # Shuffled, so that one batch is not all copies of the same few windows.
    order = torch.randperm(len(examples[0]), generator=gen)
    examples = tuple(t.index_select(0, order) for t in examples)
    slots = torch.randint(len(table), (len(order) * negatives,), generator=gen)
    all_negs = table.index_select(0, slots).view(len(order), negatives)  # (P, K)
    return examples, all_negs


def _history(losses: list[tuple[float, float]]) -> list[float]:
    """The mean loss of the batches starting in each 1% of training, in order.

    losses: (share of training done when the batch started, its loss), in any order.
    """
    bins: dict[int, list[float]] = {}
    for done, loss in sorted(losses):
        bins.setdefault(int(done * 100), []).append(loss)
    return [sum(b) / len(b) for b in bins.values()]
