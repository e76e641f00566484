"""lmlab.data: the built-in corpus, the synthetic analogies, splits and batches."""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab import data
from lmlab.data import (
    get_batch,
    load_corpus,
    synthetic_analogies,
    synthetic_corpus,
    train_val_split,
)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("pydoc")


def test_pydoc_corpus_is_large_english(corpus):
    assert len(corpus.encode("utf-8")) >= 1_500_000
    assert "the" in corpus.split()[:2000]
    assert "Return" in corpus  # docstrings, not only the help topics


def test_pydoc_corpus_is_cached_and_deterministic(corpus, tmp_path):
    """A second build in a fresh cache gives the same bytes."""
    env = {**os.environ, "LMLAB_CACHE": str(tmp_path)}
    code = "import hashlib, lmlab.data as d; print(hashlib.sha256(d.load_corpus().encode()).hexdigest())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    import hashlib

    assert out == hashlib.sha256(corpus.encode()).hexdigest()
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".txt"  # no temporary file left behind


def test_load_corpus_bad_name():
    with pytest.raises(ValueError, match="name must be one of"):
        load_corpus("wikipedia")


def test_synthetic_corpus_deterministic_and_covers_analogies():
    a, b = synthetic_corpus(2000, seed=1), synthetic_corpus(2000, seed=1)
    assert a == b != synthetic_corpus(2000, seed=2)
    words = set(synthetic_corpus().split())
    questions = synthetic_analogies()
    assert len(questions) == 3 * 12 * 11
    assert all(w in words for q in questions for w in q)
    assert load_corpus("synthetic") == synthetic_corpus()
    with pytest.raises(ValueError, match="family"):
        synthetic_analogies("colours")


@given(st.one_of(st.text(max_size=50), st.lists(st.integers(), max_size=50)),
       st.floats(0.0, 0.99))
def test_train_val_split_is_head_and_tail(seq, frac):
    train, val = train_val_split(seq, frac)
    assert train + val == seq
    assert len(val) == round(len(seq) * frac)


def test_train_val_split_tensor_and_errors():
    t = torch.arange(100)
    train, val = train_val_split(t, 0.1)
    assert torch.equal(train, torch.arange(90)) and torch.equal(val, torch.arange(90, 100))
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(t, 1.0)
    with pytest.raises(ValueError, match="1-D"):
        train_val_split(t.view(10, 10))


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 200), st.integers(1, 16), st.integers(1, 8), st.integers(0, 2**31))
def test_get_batch_targets_are_shifted_inputs(n, block, batch, seed):
    block = min(block, n - 1)
    seq = torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(seed))
    x, y = get_batch(seq, block, batch, generator=torch.Generator().manual_seed(seed))
    assert x.shape == y.shape == (batch, block) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x, y, strict=True):
        # each row is a window of the data, and y continues it by one token
        starts = [i for i in range(n - block) if torch.equal(seq[i:i + block], row_x)]
        assert any(torch.equal(seq[i + 1:i + block + 1], row_y) for i in starts)


def test_get_batch_seeded_and_list_input():
    seq = list(range(50))
    x1, _ = get_batch(seq, 8, 4, generator=torch.Generator().manual_seed(0))
    x2, _ = get_batch(torch.tensor(seq), 8, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2)
    assert x1.device.type == "cpu"


def test_get_batch_errors():
    with pytest.raises(ValueError, match="block_size"):
        get_batch(list(range(5)), 5, 2)
    with pytest.raises(ValueError, match="1-D"):
        get_batch(torch.zeros(3, 3, dtype=torch.long), 2, 2)


def test_skip_list_keeps_side_effects_out():
    assert {"antigravity", "this", "tkinter", "turtle", "idlelib"} <= data._SKIP
