"""Text that needs no download, and the batches a language model trains on.

``load_corpus("pydoc")`` gathers English prose that ships with every CPython: the
``pydoc_data`` help topics plus the docstrings of the standard library. It is built once in
a fresh interpreter (so whatever the caller has imported or patched cannot change it) and
cached as a text file; the same Python gives the same bytes.

``synthetic_corpus`` writes sentences with planted structure (countries and capitals,
singular and plural, male and female pairs) so that Word2Vec's analogies can be scored
offline with ``synthetic_analogies``.

``train_val_split`` and ``get_batch`` turn a long sequence of token ids into training
examples: ``x`` is a window of ``block_size`` ids and ``y`` is the same window shifted by
one, so ``y[b, t]`` is the token that follows ``x[b, :t + 1]``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import torch

__all__ = [
    "load_corpus",
    "cache_dir",
    "synthetic_corpus",
    "synthetic_analogies",
    "train_val_split",
    "get_batch",
    "word_sentences",
]

CORPORA = ("pydoc", "synthetic")
_FORMAT_VERSION = 1  # bump when the way the pydoc corpus is built changes

# Modules that open windows, browsers or print on import, and test suites.
_SKIP = {"tkinter", "turtle", "turtledemo", "idlelib", "antigravity", "this", "__main__",
         "test", "lib2to3.tests", "ensurepip", "pydoc_data"}
_SKIP_PARTS = {"test", "tests", "idle_test", "__main__"}


# --------------------------------------------------------------------------- the pydoc corpus


def cache_dir() -> Path:
    """Where lmlab caches built data: ``$LMLAB_CACHE`` or ``~/.cache/lmlab``."""
    return Path(os.environ.get("LMLAB_CACHE", Path.home() / ".cache" / "lmlab"))


def load_corpus(name: str = "pydoc") -> str:
    """Return a built-in corpus as one string.

    ``"pydoc"``: CPython's help topics and standard-library docstrings (about 2 MB of
    English with code), built on first use and cached under :func:`cache_dir`.
    ``"synthetic"``: ``synthetic_corpus()`` with its defaults.
    """
    if name == "synthetic":
        return synthetic_corpus()
    if name != "pydoc":
        raise ValueError(f"name must be one of {CORPORA}, got {name!r}")
    v = sys.version_info
    path = cache_dir() / f"pydoc-py{v.major}.{v.minor}.{v.micro}-v{_FORMAT_VERSION}.txt"
    if not path.exists():
        _build_in_subprocess(path)
    return path.read_text(encoding="utf-8")


def _build_in_subprocess(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file in the same folder and rename it into place: two processes
    # building at once each rename a complete file, and a reader never sees half of one.
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": package_root, "PYTHONWARNINGS": "ignore",
           "PYTHONHASHSEED": "0"}
    code = "import sys, lmlab.data as d; d._write_pydoc_corpus(sys.argv[1])"
    try:
        done = subprocess.run([sys.executable, "-c", code, tmp], env=env, cwd=path.parent,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=600)
        if done.returncode != 0:
            raise RuntimeError("building the pydoc corpus failed:\n"
                               + done.stderr.decode(errors="replace")[-2000:])
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_pydoc_corpus(out: str) -> None:
    """Run in a fresh interpreter: collect the text and write it to ``out``."""
    import warnings

    warnings.simplefilter("ignore")
    # Some modules print when imported; send file descriptor 1 (C-level output too) away.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    text = _collect_pydoc_text()
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


def _collect_pydoc_text() -> str:
    import pydoc_data.topics

    docs = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]
    seen = set(docs)
    for name in _stdlib_module_names():
        module = _try_import(name)
        if module is None:
            continue
        for doc in _docstrings(module):
            if doc not in seen:
                seen.add(doc)
                docs.append(doc)
    return "\n\n".join(d.strip() for d in docs) + "\n"


def _stdlib_module_names() -> list[str]:
    """Public standard-library modules and their submodules, sorted."""
    import pkgutil

    names = set()
    for top in sorted(sys.stdlib_module_names):
        if top.startswith("_") or top in _SKIP:
            continue
        module = _try_import(top)
        if module is None:
            continue
        names.add(top)
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), top + ".",
                                          onerror=lambda _: None):
            parts = info.name.split(".")
            if any(p.startswith("_") or p in _SKIP_PARTS for p in parts):
                continue
            if any(".".join(parts[:i]) in _SKIP for i in range(1, len(parts) + 1)):
                continue
            names.add(info.name)
    return sorted(names)


def _try_import(name: str):
    import importlib

    top = name.split(".")[0]
    if top in _SKIP or top.startswith("_"):
        return None
    try:
        return importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - anything may fail on import (SystemExit too)
        return None


def _docstrings(module) -> list[str]:
    """The module's docstring, then those of what it defines, in sorted order."""
    import inspect

    out = []

    def add(obj) -> None:
        doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
        if doc and doc.strip():
            out.append(inspect.cleandoc(doc))

    add(module)
    for attr in sorted(vars(module)):
        obj = vars(module)[attr]
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            add(obj)
            for meth in sorted(vars(obj)):
                member = vars(obj)[meth]
                if not meth.startswith("_") and (inspect.isfunction(member)
                                                 or inspect.isroutine(member)):
                    add(member)
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            add(obj)
    return out


# --------------------------------------------------------------------------- synthetic text

# Each family: (relation on the left, relation on the right, pairs, words seen with a pair).
_CAPITALS = [
    ("france", "paris", "french"), ("germany", "berlin", "german"),
    ("italy", "rome", "italian"), ("spain", "madrid", "spanish"),
    ("japan", "tokyo", "japanese"), ("china", "beijing", "chinese"),
    ("russia", "moscow", "russian"), ("egypt", "cairo", "arabic"),
    ("greece", "athens", "greek"), ("poland", "warsaw", "polish"),
    ("sweden", "stockholm", "swedish"), ("portugal", "lisbon", "portuguese"),
]
_PLURALS = [
    ("cat", "cats", "milk"), ("dog", "dogs", "bone"), ("horse", "horses", "hay"),
    ("bird", "birds", "seed"), ("car", "cars", "road"), ("book", "books", "page"),
    ("tree", "trees", "leaf"), ("apple", "apples", "juice"), ("ship", "ships", "sea"),
    ("house", "houses", "roof"), ("river", "rivers", "water"), ("star", "stars", "sky"),
]
_GENDERS = [
    ("king", "queen", "crown"), ("man", "woman", "street"), ("boy", "girl", "school"),
    ("father", "mother", "family"), ("brother", "sister", "sibling"),
    ("son", "daughter", "child"), ("uncle", "aunt", "cousin"),
    ("prince", "princess", "castle"), ("husband", "wife", "wedding"),
    ("actor", "actress", "stage"), ("waiter", "waitress", "restaurant"),
    ("nephew", "niece", "relative"),
]

# Templates: {a}/{b} are the two members of a pair, {x} the word tied to the pair. The left
# templates put a pair member in its family's "left" contexts, the right ones in the
# "right" contexts, so each vector is (what the pair is about) + (which side it is on).
_TEMPLATES = {
    "capital": (
        ["{a} is a large country", "the country of {a} speaks {x}", "people travel across {a}",
         "the nation {a} has borders", "{a} is a country where people speak {x}"],
        ["{b} is a big city", "the city of {b} speaks {x}", "people walk around {b}",
         "the capital {b} has streets", "{b} is the capital of {a}"],
    ),
    "plural": (
        ["one {a} likes {x}", "a single {a} is here", "this {a} has {x}",
         "that {a} is alone", "the only {a} sees {x}"],
        ["many {b} like {x}", "several {b} are here", "these {b} have {x}",
         "those {b} are together", "all the {b} see {x}"],
    ),
    "gender": (
        ["he is the {a} of the {x}", "the {a} said he was tired", "his {x} loves the {a}",
         "mister {a} and his {x}", "he became a {a}"],
        ["she is the {b} of the {x}", "the {b} said she was tired", "her {x} loves the {b}",
         "missis {b} and her {x}", "she became a {b}"],
    ),
}
_FAMILIES = {"capital": _CAPITALS, "plural": _PLURALS, "gender": _GENDERS}
_FILLER = ["today", "often", "again", "now", "yesterday", "always", "sometimes", "indeed"]


def synthetic_corpus(n_sentences: int = 30_000, seed: int = 0) -> str:
    """Sentences with planted analogies, one per line, lower case, words split by spaces.

    Every word of a pair appears in templates that say which side of its relation it is
    on ("one cat", "many cats") and next to a word tied to the pair ("milk"), so a good
    embedding learns ``vec(cats) - vec(cat) ~ vec(dogs) - vec(dog)``. Deterministic in
    ``seed``. Score embeddings with :func:`synthetic_analogies`.
    """
    if n_sentences < 1:
        raise ValueError(f"n_sentences must be >= 1, got {n_sentences}")
    rng = random.Random(seed)
    families = sorted(_FAMILIES)
    lines = []
    for _ in range(n_sentences):
        family = rng.choice(families)
        a, b, x = rng.choice(_FAMILIES[family])
        side = rng.randrange(2)
        template = rng.choice(_TEMPLATES[family][side])
        sentence = template.format(a=a, b=b, x=x)
        if rng.random() < 0.3:
            sentence += " " + rng.choice(_FILLER)
        lines.append(sentence)
    return "\n".join(lines) + "\n"


def synthetic_analogies(family: str | None = None) -> list[tuple[str, str, str, str]]:
    """Analogy questions ``(a, b, c, d)`` meaning "a is to b as c is to d".

    For every family (``"capital"``, ``"plural"``, ``"gender"``, or all when ``None``) and
    every ordered pair of distinct pairs ``(a, b)``, ``(c, d)``: 3 x 12 x 11 = 396 questions.
    """
    names = sorted(_FAMILIES) if family is None else [family]
    out = []
    for name in names:
        if name not in _FAMILIES:
            raise ValueError(f"family must be one of {sorted(_FAMILIES)} or None, got {name!r}")
        pairs = _FAMILIES[name]
        for a, b, _ in pairs:
            for c, d, _ in pairs:
                if a != c:
                    out.append((a, b, c, d))
    return out


# --------------------------------------------------------------------------- batches

Seq = TypeVar("Seq", str, list, torch.Tensor)


def train_val_split(data: Seq, val_fraction: float = 0.1) -> tuple[Seq, Seq]:
    """Split a sequence (str, list or 1-D tensor) into its head (train) and tail (val).

    The split is not random: shuffling would put the same sentences on both sides of the
    boundary of every window, and the validation loss would look better than it is.
    """
    if not isinstance(data, (str, Sequence, torch.Tensor)):
        raise TypeError(f"data must be a str, list or 1-D tensor, got {type(data).__name__}")
    if isinstance(data, torch.Tensor) and data.dim() != 1:
        raise ValueError(f"data must be 1-D, got a tensor of shape {tuple(data.shape)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cut = len(data) - int(round(len(data) * val_fraction))
    return data[:cut], data[cut:]


def get_batch(data, block_size: int, batch_size: int,
              generator: torch.Generator | None = None,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``batch_size`` windows of ``block_size`` token ids and their next tokens.

    data: 1-D token ids (list or tensor), length N > block_size.
    Returns ``x, y``: LongTensors of shape (B, T) on ``device`` with
    ``y[:, t] == data[i + t + 1]`` where ``x[:, t] == data[i + t]``.
    Start positions are drawn on the CPU from ``generator``, so a seeded generator gives
    the same batches on every device.
    """
    if not isinstance(data, torch.Tensor):
        data = torch.as_tensor(data, dtype=torch.long)
    if data.dim() != 1:
        raise ValueError(f"data must be 1-D token ids, got shape {tuple(data.shape)}")
    if block_size < 1 or batch_size < 1:
        raise ValueError(f"block_size and batch_size must be >= 1, got {block_size} and {batch_size}")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens but block_size is {block_size}: "
                         f"need at least block_size + 1 tokens")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    data = data.long()
    x = data[starts[:, None] + offsets]      # (B, T)
    y = data[starts[:, None] + offsets + 1]  # (B, T)
    return x.to(device), y.to(device)


def word_sentences(text: str, lower: bool = True) -> list[list[str]]:
    """Cut text into paragraphs (split at blank lines) of words (runs of letters).

    The input Word2Vec wants: a list of sentences, each a list of words; context windows
    stop at paragraph ends. Digits, punctuation and code symbols are dropped.
    """
    import re

    if lower:
        text = text.lower()
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = re.findall(r"[^\W\d_]+", paragraph)
        if words:
            out.append(words)
    return out
