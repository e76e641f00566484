"""Tokenizers: text to a list of integer ids and back.

Two of them, the simplest and the real one:

* :class:`CharTokenizer` gives every distinct character of a training text its own id.
  Tiny vocabulary, long sequences, and it cannot encode a character it never saw.
* :class:`BPETokenizer` starts from the 256 byte values, so any Unicode text can be
  encoded, then learns merges: the most frequent adjacent pair of ids becomes a new id,
  again and again until the vocabulary has ``vocab_size`` entries (Sennrich et al. 2016,
  "Neural Machine Translation of Rare Words with Subword Units"; byte-level as in GPT-2,
  Radford et al. 2019). Text is first cut into chunks by a regular expression (words,
  numbers, punctuation, spaces) and merges never cross a chunk boundary.

Both have ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size`` and
``save(path)`` / ``load(path)`` (JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path

__all__ = ["CharTokenizer", "BPETokenizer", "load_tokenizer", "pair_counts", "merge",
           "train_merges", "train_merges_naive", "GPT2_PATTERN"]


def _as_id_list(ids, name: str = "ids") -> list[int]:
    if hasattr(ids, "tolist"):  # torch tensors and numpy arrays
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"{name} must be a sequence of ints, got {type(ids).__name__}")
    ids = list(ids)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"{name} must contain ints, got {i!r} ({type(i).__name__})")
    return ids


class CharTokenizer:
    """One id per character, in sorted order of the characters.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.encode("hole"), tok.decode([2, 3])
    ([1, 3, 2, 0], 'lo')
    """

    def __init__(self, chars: Iterable[str]):
        chars = sorted(set(chars))
        if not chars:
            raise ValueError("chars is empty: a tokenizer needs at least one character")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must be single characters, got {c!r}")
        self.itos: list[str] = chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the set of characters in ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text is empty: nothing to build a vocabulary from")
        return cls(text)

    train = from_text

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"text contains {e.args[0]!r}, which is not in the vocabulary "
                             f"of {self.vocab_size} characters (a character tokenizer cannot "
                             f"encode what it never saw; use BPETokenizer)") from None

    def decode(self, ids: Sequence[int]) -> str:
        ids = _as_id_list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids contains {bad[0]}, outside the vocabulary "
                             f"[0, {self.vocab_size})")
        return "".join(self.itos[i] for i in ids)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "char", "chars": self.itos},
                                         ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        if state.get("type") != "char":
            raise ValueError(f"{path} holds a {state.get('type')!r} tokenizer, not 'char'")
        return cls(state["chars"])


# --------------------------------------------------------------------------- BPE building blocks

# GPT-2's pre-tokenization (Radford et al. 2019) written for the standard library's ``re``:
# contractions, then runs of letters, of digits, of other symbols (each may carry one
# leading space), then whitespace. ``[^\W\d_]`` is "a letter": a word character that is
# neither a digit nor the underscore. Every character matches some branch, so the chunks
# always join back to the text.
GPT2_PATTERN = r"""'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""

Pair = tuple[int, int]


def pair_counts(chunks: Iterable[Sequence[int]]) -> dict[Pair, int]:
    """Count adjacent pairs of ids inside each chunk, never across two chunks.

    chunks: e.g. ``[[104, 105], [32, 104, 105]]`` for ``"hi hi"`` cut into words.
    Returns ``{(104, 105): 2, (32, 104): 1}``.
    """
    counts: dict[Pair, int] = {}
    for ids in chunks:
        for pair in pairwise(ids):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right.

    Occurrences do not overlap: ``merge([5, 5, 5], (5, 5), 9) == [9, 5]``.
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _best(counts: dict[Pair, int]) -> Pair:
    # Most frequent pair; among equals, the smallest pair of ids, so training is
    # deterministic and the naive and the incremental trainers agree.
    return min(counts, key=lambda p: (-counts[p], p))


def train_merges_naive(chunks: list[list[int]], num_merges: int,
                       first_id: int = 256) -> list[Pair]:
    """Learn ``num_merges`` merges by recounting every pair after every merge.

    The textbook algorithm: correct, short, and O(merges x text) slow. Kept as the
    reference that :func:`train_merges` is tested against.
    """
    chunks = [list(c) for c in chunks]
    merges = []
    for k in range(num_merges):
        counts = pair_counts(chunks)
        if not counts:
            break
        pair = _best(counts)
        chunks = [merge(c, pair, first_id + k) for c in chunks]
        merges.append(pair)
    return merges


def train_merges(word_counts: dict[tuple[int, ...], int], num_merges: int,
                 first_id: int = 256, progress: bool = False) -> list[Pair]:
    """Learn ``num_merges`` merges, updating the pair counts instead of recounting.

    word_counts: each distinct chunk (a tuple of ids) and how often it occurs.
    After merging pair ``p`` only the words that contain ``p`` change, so only their pairs
    are taken out of the counts and put back after the merge. A heap of ``(-count, pair)``
    finds the most frequent pair; entries made stale by an update are skipped when popped.
    """
    import heapq

    from tqdm.auto import tqdm

    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}  # pair -> indices of the words that contain it
    for w, (ids, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(ids):
            counts[pair] = counts.get(pair, 0) + f
            where.setdefault(pair, set()).add(w)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    for k in tqdm(range(num_merges), desc="BPE merges", disable=not progress):
        while heap and counts.get(heap[0][1], 0) != -heap[0][0]:
            heapq.heappop(heap)  # stale: the count changed after this entry was pushed
        if not heap or -heap[0][0] <= 0:
            break
        pair = heap[0][1]
        new_id = first_id + k
        changed: dict[Pair, int] = {}
        for w in where.pop(pair):
            old, f = words[w], freqs[w]
            new = merge(old, pair, new_id)
            for p in pairwise(old):
                changed[p] = changed.get(p, 0) - f
            for p in pairwise(new):
                changed[p] = changed.get(p, 0) + f
                where.setdefault(p, set()).add(w)
            words[w] = new
        for p, delta in changed.items():
            if delta:
                counts[p] = counts.get(p, 0) + delta
                if counts[p] > 0:
                    heapq.heappush(heap, (-counts[p], p))
        counts.pop(pair, None)
        merges.append(pair)
    return merges


# --------------------------------------------------------------------------- BPETokenizer


class BPETokenizer:
    """Byte-level byte-pair encoding with GPT-2's pre-tokenization and special tokens.

    Ids 0..255 are the bytes, then one id per merge in the order learned, then the special
    tokens. ``vocab_size`` counts all three.

    >>> tok = BPETokenizer.train("low lower lowest " * 20, vocab_size=260)
    >>> tok.decode(tok.encode("lowest 最低 🙂")) == "lowest 最低 🙂"
    True
    """

    def __init__(self, merges: Sequence[Pair] = (), special_tokens: Sequence[str] = (),
                 pattern: str = GPT2_PATTERN):
        import re

        self.merges: dict[Pair, int] = {}
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for pair in merges:
            a, b = (int(x) for x in pair)
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(f"merge {pair} uses an id that is not defined before it")
            new_id = 256 + len(self.merges)
            self.merges[(a, b)] = new_id
            self.vocab[new_id] = self.vocab[a] + self.vocab[b]
        if len(set(special_tokens)) != len(special_tokens) or "" in special_tokens:
            raise ValueError(f"special_tokens must be distinct non-empty strings, got {special_tokens}")
        self.special_tokens: dict[str, int] = {
            s: 256 + len(self.merges) + i for i, s in enumerate(special_tokens)}
        self.pattern = pattern
        self._chunker = re.compile(pattern)
        # Longest first, so "<|a|><|ab|>"-style prefixes cannot steal a match.
        specials = sorted(self.special_tokens, key=len, reverse=True)
        self._special_splitter = (re.compile("(" + "|".join(map(re.escape, specials)) + ")")
                                  if specials else None)
        self._cache: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- training

    @classmethod
    def train(cls, text: str, vocab_size: int, *, special_tokens: Sequence[str] = (),
              pattern: str = GPT2_PATTERN, progress: bool = False) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        Stops early (with a smaller vocabulary) when no pair occurs any more.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text is empty: there is nothing to learn merges from")
        special_tokens = list(special_tokens)
        minimum = 256 + len(special_tokens)
        if not isinstance(vocab_size, int) or vocab_size < minimum:
            raise ValueError(f"vocab_size must be an int >= 256 + {len(special_tokens)} special "
                             f"tokens = {minimum}, got {vocab_size!r}")
        tok = cls((), special_tokens, pattern)
        word_counts: dict[tuple[int, ...], int] = {}
        for piece in tok._split_special(text):
            if piece in tok.special_tokens:
                continue  # special tokens are never merged with their neighbours
            for chunk in tok._chunker.findall(piece):
                key = tuple(chunk.encode("utf-8"))
                word_counts[key] = word_counts.get(key, 0) + 1
        merges = train_merges(word_counts, vocab_size - minimum, progress=progress)
        return cls(merges, special_tokens, pattern)

    # ---------------------------------------------------------------- encoding

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")

    def _split_special(self, text: str) -> list[str]:
        if self._special_splitter is None:
            return [text]
        return [p for p in self._special_splitter.split(text) if p]

    def encode_chunk(self, chunk: bytes | Sequence[int]) -> list[int]:
        """Apply the merges to one chunk: always the earliest-learned pair present first."""
        ids = list(chunk)
        while len(ids) >= 2:
            ranks = [self.merges.get(p, 1 << 62) for p in pairwise(ids)]
            best = min(ranks)
            if best == 1 << 62:
                break
            i = ranks.index(best)
            ids = merge(ids, (ids[i], ids[i + 1]), best)
        return ids

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Text to ids. Special-token strings become their id unless ``allow_special=False``,
        in which case they are encoded as ordinary text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out: list[int] = []
        pieces = self._split_special(text) if allow_special else [text]
        for piece in pieces:
            if allow_special and piece in self.special_tokens:
                out.append(self.special_tokens[piece])
                continue
            for chunk in self._chunker.findall(piece):
                ids = self._cache.get(chunk)
                if ids is None:
                    ids = self.encode_chunk(chunk.encode("utf-8"))
                    if len(self._cache) < 100_000:
                        self._cache[chunk] = ids
                out.extend(ids)
        return out

    def token_bytes(self, i: int) -> bytes:
        """The bytes that id ``i`` stands for (a special token's UTF-8)."""
        if i in self.vocab:
            return self.vocab[i]
        for s, j in self.special_tokens.items():
            if j == i:
                return s.encode("utf-8")
        raise ValueError(f"id {i} is outside the vocabulary [0, {self.vocab_size})")

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        """Ids to text. A slice of ids may cut a multi-byte character: those bytes become
        U+FFFD with ``errors="replace"`` (the default), or raise with ``"strict"``."""
        ids = _as_id_list(ids)
        specials = {j: s.encode("utf-8") for s, j in self.special_tokens.items()}
        parts = []
        for i in ids:
            b = self.vocab.get(i)
            if b is None:
                b = specials.get(i)
            if b is None:
                raise ValueError(f"ids contains {i}, outside the vocabulary [0, {self.vocab_size})")
            parts.append(b)
        return b"".join(parts).decode("utf-8", errors=errors)

    # ---------------------------------------------------------------- saving

    def save(self, path: str | Path) -> None:
        state = {"type": "bpe", "pattern": self.pattern,
                 "merges": [list(p) for p in self.merges],
                 "special_tokens": list(self.special_tokens)}
        Path(path).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        if state.get("type") != "bpe":
            raise ValueError(f"{path} holds a {state.get('type')!r} tokenizer, not 'bpe'")
        return cls([tuple(p) for p in state["merges"]], state["special_tokens"], state["pattern"])


def load_tokenizer(path: str | Path) -> CharTokenizer | BPETokenizer:
    """Load whichever tokenizer ``save`` wrote to ``path``."""
    kind = json.loads(Path(path).read_text(encoding="utf-8")).get("type")
    if kind == "char":
        return CharTokenizer.load(path)
    if kind == "bpe":
        return BPETokenizer.load(path)
    raise ValueError(f"{path} is not a saved lmlab tokenizer (type {kind!r})")
