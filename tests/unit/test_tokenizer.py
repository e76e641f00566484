"""lmlab.tokenizer: character and byte-level BPE tokenizers."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.tokenizer import CharTokenizer

# --------------------------------------------------------------------------- CharTokenizer


@given(st.text(min_size=1))
def test_char_roundtrip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.vocab_size == len(set(text))
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_char_ids_sorted_and_tensor_decode(tmp_path):
    tok = CharTokenizer.train("hello")
    assert tok.encode("hole") == [1, 3, 2, 0]
    assert tok.decode(torch.tensor([2, 3])) == "lo"
    tok.save(tmp_path / "t.json")
    again = CharTokenizer.load(tmp_path / "t.json")
    assert again.itos == tok.itos and len(again) == 4


def test_char_errors():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="text is empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("az")
    with pytest.raises(ValueError, match="ids contains 3"):
        tok.decode([0, 3])
    with pytest.raises(TypeError, match="ids must"):
        tok.decode("ab")


# --------------------------------------------------------------------------- BPE pieces

import re  # noqa: E402

from lmlab.tokenizer import (  # noqa: E402
    GPT2_PATTERN,
    BPETokenizer,
    load_tokenizer,
    merge,
    pair_counts,
    train_merges,
    train_merges_naive,
)

MIXED = ("The quick brown fox jumps over the lazy dog. def f(x_1): return x_1 ** 2\n"
         "机器学习很有趣, 深度学习也是。 Emoji: 🙂🙂🚀 naïve café — it's 2024!\n") * 30


def test_pair_counts_stays_inside_chunks():
    assert pair_counts([[1, 2, 3], [3, 1, 2]]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert pair_counts([[7], []]) == {}


def test_merge_does_not_overlap():
    assert merge([5, 5, 5], (5, 5), 9) == [9, 5]
    assert merge([5, 5, 5, 5], (5, 5), 9) == [9, 9]
    assert merge([1, 2, 1, 2, 3], (1, 2), 7) == [7, 7, 3]
    assert merge([], (1, 2), 7) == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 4), max_size=12), max_size=12), st.integers(0, 15))
def test_incremental_training_matches_naive_recount(chunks, n):
    counts = {}
    for c in chunks:
        counts[tuple(c)] = counts.get(tuple(c), 0) + 1
    assert train_merges(counts, n) == train_merges_naive(chunks, n)


@given(st.text())
def test_pattern_chunks_cover_the_text(text):
    assert "".join(re.findall(GPT2_PATTERN, text)) == text


# --------------------------------------------------------------------------- BPETokenizer


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(MIXED, vocab_size=256 + 80, special_tokens=["<|endoftext|>"])


def test_bpe_vocab_layout(bpe):
    assert bpe.vocab_size == 256 + 80 and len(bpe.merges) == 79
    assert bpe.special_tokens == {"<|endoftext|>": 335}
    for (a, b), i in bpe.merges.items():
        assert a < i and b < i and bpe.vocab[i] == bpe.vocab[a] + bpe.vocab[b]


def test_bpe_compresses_training_text(bpe):
    ids = bpe.encode(MIXED)
    assert len(ids) < 0.5 * len(MIXED.encode("utf-8"))
    assert bpe.decode(ids) == MIXED


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_bpe_roundtrip_any_unicode(bpe, text):
    ids = bpe.encode(text, allow_special=False)
    assert all(0 <= i < bpe.vocab_size - 1 for i in ids)
    assert bpe.decode(ids, errors="strict") == text


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="机器学习很有趣🙂🚀ab "))
def test_bpe_roundtrip_chinese_and_emoji(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_encode_matches_replaying_merges_in_order(bpe):
    """Encoding = applying every learned merge, in training order, inside each chunk."""
    text = "the quick brown 机器 dog's café"
    expected = []
    for chunk in re.findall(GPT2_PATTERN, text):
        ids = list(chunk.encode("utf-8"))
        for pair, new_id in bpe.merges.items():
            ids = merge(ids, pair, new_id)
        expected += ids
    assert bpe.encode(text) == expected


def test_bpe_special_tokens(bpe):
    text = "hello<|endoftext|>world"
    ids = bpe.encode(text)
    assert ids.count(335) == 1 and bpe.decode(ids) == text
    plain = bpe.encode(text, allow_special=False)
    assert 335 not in plain and bpe.decode(plain) == text
    assert bpe.token_bytes(335) == b"<|endoftext|>"


def test_bpe_save_load(bpe, tmp_path):
    bpe.save(tmp_path / "bpe.json")
    again = load_tokenizer(tmp_path / "bpe.json")
    assert isinstance(again, BPETokenizer)
    assert again.merges == bpe.merges and again.special_tokens == bpe.special_tokens
    assert again.encode(MIXED) == bpe.encode(MIXED)


def test_bpe_stops_when_nothing_left_to_merge():
    tok = BPETokenizer.train("ab", vocab_size=1000)
    assert len(tok.merges) == 1 and tok.encode("ab") == [256]


def test_bpe_errors(bpe):
    with pytest.raises(ValueError, match="text is empty"):
        BPETokenizer.train("", 300)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 256 \\+ 1 special"):
        BPETokenizer.train("abc", 256, special_tokens=["<s>"])
    with pytest.raises(ValueError, match="ids contains 336"):
        bpe.decode([1, 336])
    with pytest.raises(ValueError, match="ids contains -1"):
        bpe.decode([-1])
    with pytest.raises(TypeError, match="text must be a str"):
        bpe.encode(b"bytes")
    with pytest.raises(ValueError, match="not defined before"):
        BPETokenizer([(300, 1)])


def test_bpe_decode_partial_character(bpe):
    ids = bpe.encode("机")  # three UTF-8 bytes
    assert bpe.decode(ids[:1]) == "\ufffd" or len(ids) == 1
    with pytest.raises(UnicodeDecodeError):
        bpe.decode(list("机".encode())[:2], errors="strict")


# --------------------------------------------------------------------------- against HF tokenizers


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 bytes (what HF's ByteLevel uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def test_bpe_learns_the_same_merges_as_hf_tokenizers():
    """Same pre-tokenization, same greedy rule: the same merges up to the order of ties."""
    tokenizers = pytest.importorskip("tokenizers")
    import json

    from lmlab.data import load_corpus

    text = load_corpus()[:150_000]
    vocab = 256 + 300
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab, show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer)
    u2b = {u: b for b, u in _bytes_to_unicode().items()}
    hf_merges = json.loads(hf.to_str())["model"]["merges"]
    hf_tokens = [bytes(u2b[c] for c in "".join(m.split(" ") if isinstance(m, str) else m))
                 for m in hf_merges]

    ours = BPETokenizer.train(text, vocab)
    our_tokens = [ours.vocab[i] for i in range(256, vocab)]
    assert len(hf_tokens) == len(our_tokens) == 300
    assert len(set(hf_tokens) & set(our_tokens)) >= 0.98 * 300
    assert our_tokens[:20] == hf_tokens[:20]
    assert abs(len(ours.encode(text)) - len(hf.encode(text).ids)) <= 0.002 * len(text)


# --------------------------------------------------------------------------- found by mutation testing
# (tests that build their own tokenizer: mutmut credits a module-scoped fixture's
# construction to the first test that uses it, so the fixture cannot cover __init__/train)


def test_char_tokenizer_rejects_bad_characters_and_ids():
    """chars must be single characters; ids must be an iterable of ints (not bools or floats)."""
    with pytest.raises(ValueError, match="chars"):
        CharTokenizer(["ab", "c"])
    with pytest.raises(ValueError, match="chars"):
        CharTokenizer([])
    tok = CharTokenizer.from_text("abc")
    for bad in ([True], [1.5], 5, None):
        with pytest.raises(TypeError, match="ids"):
            tok.decode(bad)
    bpe = BPETokenizer()
    for bad in ([True], [1.0], 7):
        with pytest.raises(TypeError, match="ids"):
            bpe.decode(bad)


def test_saved_files_are_readable_utf8(tmp_path):
    """save writes UTF-8 JSON with the characters themselves, not \\u escapes."""
    CharTokenizer.from_text("café 机").save(tmp_path / "c.json")
    BPETokenizer([(233, 105)], special_tokens=["<|é|>"]).save(tmp_path / "b.json")
    for name, text in (("c.json", "机"), ("b.json", "<|é|>")):
        raw = (tmp_path / name).read_bytes()
        assert text.encode("utf-8") in raw and b"\\u" not in raw


def test_load_tokenizer_dispatches_on_the_saved_type(tmp_path):
    """load_tokenizer returns a CharTokenizer for a saved char tokenizer, and rejects other files."""
    CharTokenizer.from_text("hello 机").save(tmp_path / "c.json")
    tok = load_tokenizer(tmp_path / "c.json")
    assert isinstance(tok, CharTokenizer) and tok.itos == sorted(set("hello 机"))
    (tmp_path / "x.json").write_text('{"type": "gpt"}', encoding="utf-8")
    with pytest.raises(ValueError, match="'gpt'"):
        load_tokenizer(tmp_path / "x.json")
    with pytest.raises(ValueError, match="'char'"):
        BPETokenizer.load(tmp_path / "c.json")


def test_training_progress_bar_only_when_asked(capsys):
    """train_merges and BPETokenizer.train show a 'BPE merges' bar with progress=True only."""
    counts = {(1, 2, 1, 2): 3, (2, 1): 1}
    train_merges(counts, 2)
    BPETokenizer.train("abab abab", 258)
    assert capsys.readouterr().err == ""
    train_merges(counts, 2, progress=True)
    assert "BPE merges" in capsys.readouterr().err
    BPETokenizer.train("abab abab", 258, progress=True)
    assert "BPE merges" in capsys.readouterr().err


def test_special_tokens_must_be_distinct_and_non_empty():
    """A repeated or an empty special token is an error, each on its own."""
    with pytest.raises(ValueError, match="special_tokens"):
        BPETokenizer(special_tokens=["<s>", "<s>"])
    with pytest.raises(ValueError, match="special_tokens"):
        BPETokenizer(special_tokens=["<s>", ""])


def test_special_tokens_take_ids_after_the_merges_longest_match_first():
    """Special tokens get consecutive ids after the merges, in the given order; a special
    token that is a prefix of another cannot steal the longer one's match."""
    tok = BPETokenizer([(97, 98), (256, 99)], special_tokens=["<a>", "<a>b", "<e>"])
    assert tok.special_tokens == {"<a>": 258, "<a>b": 259, "<e>": 260} and tok.vocab_size == 261
    assert tok.encode("<a>b<a>abc<e>") == [259, 258, 257, 260]
    assert tok.encode("abc<a>", allow_special=False) == [257, *b"<a>"]
    assert tok.token_bytes(260) == b"<e>" and tok.decode([259, 260]) == "<a>b<e>"


def test_encode_without_specials_chunks_the_whole_text():
    """allow_special=False encodes the text exactly as a tokenizer without special tokens
    would: the special token's characters may merge with their neighbours."""
    merges = [(ord("!"), ord("<"))]
    with_special = BPETokenizer(merges, special_tokens=["<s>"])
    plain = BPETokenizer(merges)
    text = "hi!<s>!"
    assert with_special.encode(text, allow_special=False) == plain.encode(text) == [*b"hi", 256, *b"s>!"]
    assert with_special.encode(text) == [*b"hi!", 257, ord("!")]


def test_train_at_the_minimum_vocab_size_learns_no_merges():
    """vocab_size = 256 + number of special tokens is allowed: no merges, only bytes and specials."""
    tok = BPETokenizer.train("aaaa", 257, special_tokens=["<s>"])
    assert tok.merges == {} and tok.vocab_size == 257 and tok.special_tokens == {"<s>": 256}
    assert len(BPETokenizer.train("aaaa", 256).merges) == 0


def test_train_uses_and_keeps_a_custom_pattern(tmp_path):
    """A custom chunking pattern is used while training and kept by the tokenizer and by save/load."""
    one_char = r"[\s\S]"  # every character its own chunk: nothing can be merged
    tok = BPETokenizer.train("aaaa bbbb aaaa", 300, pattern=one_char)
    assert tok.merges == {} and tok.pattern == one_char
    words = r"\S+|\s+"  # spaces never merge into words
    tok = BPETokenizer.train("ab ab ab", 300, pattern=words)
    assert set(tok.merges) == {(97, 98)} and tok.encode("ab ab") == [256, 32, 256]
    tok.save(tmp_path / "p.json")
    again = load_tokenizer(tmp_path / "p.json")
    assert again.pattern == words and again.encode("ab ab") == [256, 32, 256]


def test_train_learns_from_the_text_on_both_sides_of_a_special_token():
    """Special tokens cut the training text; the text after them still counts."""
    tok = BPETokenizer.train("xy<s>zw zw zw", 258, special_tokens=["<s>"])
    assert list(tok.merges) == [(ord("z"), ord("w"))]
    assert tok.encode("xy<s>zw") == [*b"xy", 257, 256]
