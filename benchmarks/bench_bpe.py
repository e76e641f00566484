"""BPE: lmlab's byte-level trainer and encoder against Hugging Face ``tokenizers``.

Both use GPT-2's pre-tokenization and byte-level alphabet, trained on the built-in corpus
to the same vocabulary size, single-threaded (``RAYON_NUM_THREADS=1``). Reported: training
time ratio (goal <= 5x), encoding time ratio and both encoders' MB/s on the held-out 10%,
and how many of lmlab's learned tokens HF also learned (ties may be ordered differently).
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before tokenizers starts its thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.harness import Result, compare  # noqa: E402
from lmlab.data import load_corpus, train_val_split  # noqa: E402
from lmlab.tokenizer import BPETokenizer  # noqa: E402

NAME = "bpe"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 bytes (HF's ByteLevel alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _hf_train(text: str, vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    return tok


def run(quick: bool = False) -> list[Result]:
    corpus = load_corpus("pydoc")
    if quick:
        corpus = corpus[:30_000]
    train_text, val_text = train_val_split(corpus, 0.1)
    vocab_size = 256 + 32 if quick else 4096
    rounds = 1 if quick else 5

    t_ratio, t_iqr, ours_t, hf_t = compare(
        lambda: BPETokenizer.train(train_text, vocab_size), lambda: _hf_train(train_text, vocab_size),
        rounds=rounds, warmup=0 if quick else 1, repeat=1, desc="BPE training")
    ours, hf = BPETokenizer.train(train_text, vocab_size), _hf_train(train_text, vocab_size)

    def encode_ours():
        ours._cache.clear()  # a cold cache each call, like a fresh process
        return ours.encode(val_text)

    e_ratio, e_iqr, ours_e, hf_e = compare(
        encode_ours, lambda: hf.encode(val_text).ids,
        rounds=rounds, warmup=1, repeat=1 if quick else 3, desc="BPE encoding")
    megabytes = len(val_text.encode("utf-8")) / 1e6

    u2b = {u: b for b, u in _bytes_to_unicode().items()}
    hf_merges = json.loads(hf.to_str())["model"]["merges"]
    hf_tokens = {bytes(u2b[c] for c in "".join(m.split(" ") if isinstance(m, str) else m))
                 for m in hf_merges}
    our_tokens = {ours.vocab[i] for i in range(256, 256 + len(ours.merges))}
    shared = len(our_tokens & hf_tokens) / max(len(our_tokens), 1)
    n_ours, n_hf = len(ours.encode(val_text)), len(hf.encode(val_text).ids)

    size = f"{len(train_text.encode('utf-8')) / 1e6:.2f} MB of pydoc, vocab {vocab_size}"
    return [
        Result(NAME, f"training, {size}", "time ratio lmlab/HF tokenizers", t_ratio, t_iqr,
               goal="≤ 5×", met=t_ratio <= 5,
               details={"lmlab_s": ours_t[-1].median, "hf_s": hf_t[-1].median}),
        Result(NAME, f"encoding {megabytes:.2f} MB held out", "time ratio lmlab/HF tokenizers",
               e_ratio, e_iqr, goal="(informative)",
               details={"lmlab_MB_per_s": megabytes / ours_e[-1].median,
                        "hf_MB_per_s": megabytes / hf_e[-1].median}),
        Result(NAME, "encoding throughput, lmlab", "MB/s", megabytes / ours_e[-1].median,
               goal="(informative)"),
        Result(NAME, "learned tokens also learned by HF", "fraction", shared,
               goal="≥ 0.98 (same algorithm; ties may differ)", met=shared >= 0.98,
               details={"tokens_lmlab": n_ours, "tokens_hf": n_hf}),
    ]
