"""lmlab.generate against hand computations, torch built-ins and the model run without a cache."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.generate import (
    KVCache,
    apply_temperature,
    attend_with_cache,
    entropy,
    generate,
    generate_batch,
    kv_cache_bytes,
    left_pad,
    perplexity,
    sample_next,
    time_generation,
    top_k_filter,
    top_p_filter,
)
from lmlab.transformer import GPT, GPTConfig

SETTINGS = settings(max_examples=40, deadline=None)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread (and far faster on a busy shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MODERN = dict(
    # Llama-style: RoPE, RMSNorm, SwiGLU, 4 query heads sharing 2 KV heads
    llama=dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_head=4, n_kv_head=2,
               bias=False, tie_weights=False, rope_theta=100.0),
    # ... with a mixture of 3 experts, 2 per token, and multi-query attention
    mixtral=dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_head=4, n_kv_head=1,
                 bias=False, n_expert=3, n_expert_per_token=2, rope_style="interleaved"),
)


def tiny_gpt(positions: str = "learned", block_size: int = 24, seed: int = 0) -> GPT:
    """``positions``: "learned" or "sinusoidal" (GPT-2 family) or a family in MODERN."""
    torch.manual_seed(seed)
    fields = dict(vocab_size=23, block_size=block_size, n_layer=2, n_head=2, n_embd=16)
    fields.update(MODERN.get(positions, dict(positions=positions)))
    model = GPT(GPTConfig(**fields)).eval()
    if positions in MODERN:  # larger weights, so that the tokens depend on the positions
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(5.0 if p.dim() > 1 else 1.0)
    return model


def logits_strategy():
    return st.tuples(st.integers(1, 4), st.integers(1, 30), st.integers(0, 2**31 - 1)).map(
        lambda t: torch.randn(t[0], t[1], generator=torch.Generator().manual_seed(t[2])) * 3
    )


def hf_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Hugging Face's TopPLogitsWarper, rewritten: sort ascending, drop the tail whose mass
    is at most 1 - p."""
    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, -math.inf)


# --------------------------------------------------------------------------- temperature


@given(logits_strategy(), st.floats(0.05, 20.0))
@SETTINGS
def test_temperature_matches_torch_softmax(logits, t):
    torch.testing.assert_close(apply_temperature(logits, t), F.softmax(logits / t, dim=-1))


def test_temperature_one_is_softmax_and_sharpens():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    torch.testing.assert_close(apply_temperature(logits, 1.0), logits.softmax(-1))
    entropies = [float(entropy(logits / t)) for t in (0.1, 0.5, 1.0, 2.0, 10.0)]
    assert entropies == sorted(entropies)  # hotter = flatter = more entropy
    assert entropies[-1] < math.log(4) and entropies[0] > 0


def test_temperature_is_stable_for_huge_logits():
    probs = apply_temperature(torch.tensor([1000.0, 999.0, -1000.0]), 0.1)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs[0], torch.tensor(1 / (1 + math.exp(-10))))


@pytest.mark.parametrize("t", [0, -1.0, float("nan")])
def test_temperature_rejects_bad_values(t):
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(torch.zeros(3), t)


def test_entropy_matches_torch_distributions():
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(1))
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy(logits), expected)
    assert entropy(torch.tensor([0.0, -math.inf, -math.inf])) == 0  # one token left: certain


# --------------------------------------------------------------------------- top-k


def test_top_k_by_hand():
    logits = torch.tensor([0.1, 3.0, -2.0, 1.5, 0.7])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [-math.inf, 3.0, -math.inf, 1.5, -math.inf]
    assert torch.equal(top_k_filter(logits, 5), logits)
    assert torch.equal(top_k_filter(logits, 99), logits)


def test_top_k_keeps_exactly_k_on_ties_lower_id_first():
    logits = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0])
    out = top_k_filter(logits, 2)
    assert out.tolist() == [-math.inf, 2.0, 2.0, -math.inf, -math.inf]


@given(logits_strategy(), st.integers(1, 40))
@SETTINGS
def test_top_k_keeps_the_same_values_as_torch_topk(logits, k):
    out = top_k_filter(logits, k)
    kept = torch.isfinite(out)
    assert (kept.sum(-1) == min(k, logits.shape[-1])).all()
    assert torch.equal(out[kept], logits[kept])  # kept values untouched
    expected = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values
    got = out.masked_fill(~kept, -math.inf).sort(-1, descending=True).values[..., : expected.shape[-1]]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be a positive int"):
        top_k_filter(torch.zeros(4), k)


# --------------------------------------------------------------------------- top-p


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()[[2, 0, 3, 1]]  # shuffled: sort matters
    kept = lambda p: torch.isfinite(top_p_filter(logits, p)).tolist()  # noqa: E731
    assert kept(0.45) == [False, True, False, False]  # 0.5 alone reaches 0.45
    assert kept(0.79) == [False, True, False, True]  # 0.5 + 0.3 = 0.8 crosses 0.79
    assert kept(0.81) == [True, True, False, True]  # needs the 0.15 too
    assert kept(0.99) == [True, True, True, True]
    assert kept(1.0) == [True, True, True, True]
    assert kept(1e-9) == [False, True, False, False]  # never empty


@given(logits_strategy(), st.floats(0.01, 0.99))
@SETTINGS
def test_top_p_matches_hugging_face_rule(logits, p):
    ours, theirs = top_p_filter(logits, p), hf_top_p(logits, p)
    probs = logits.softmax(-1).sort(-1, descending=True).values
    near_boundary = ((probs.cumsum(-1) - p).abs() < 1e-5).any()
    if not near_boundary:  # at the boundary the two float sums may round differently
        assert torch.equal(ours, theirs)
    mass = logits.softmax(-1).masked_fill(~torch.isfinite(ours), 0).sum(-1)
    assert (mass >= p - 1e-5).all()


@pytest.mark.parametrize("p", [0, -0.1, 1.5])
def test_top_p_rejects_bad_p(p):
    with pytest.raises(ValueError, match="p must be in"):
        top_p_filter(torch.zeros(4), p)


# --------------------------------------------------------------------------- sample_next


def test_sample_next_greedy_is_argmax():
    logits = torch.randn(6, 17, generator=torch.Generator().manual_seed(2))
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(sample_next(logits, top_k=1, generator=torch.Generator().manual_seed(0)),
                       logits.argmax(-1))
    assert sample_next(logits[0], temperature=0).shape == ()


def test_sample_next_frequencies_match_the_distribution():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    logits = probs.log().expand(20000, 4)
    tokens = sample_next(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=4).double() / len(tokens)
    sigma = (probs * (1 - probs) / len(tokens)).sqrt()
    assert ((freq - probs).abs() < 4 * sigma).all(), freq


def test_sample_next_temperature_and_filters_change_the_frequencies():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    logits = probs.log().expand(20000, 4)
    g = torch.Generator().manual_seed(1)
    hot = sample_next(logits, temperature=2.0, generator=g)
    target = apply_temperature(probs.log(), 2.0)
    freq = torch.bincount(hot, minlength=4).double() / len(hot)
    assert ((freq - target).abs() < 4 * (target * (1 - target) / len(hot)).sqrt()).all()
    topk = sample_next(logits, top_k=2, generator=g)
    assert set(topk.unique().tolist()) == {0, 1}
    assert abs(float((topk == 0).double().mean()) - 2 / 3) < 0.02  # renormalized 0.5 / 0.75
    topp = sample_next(logits, top_p=0.8, generator=g)
    assert set(topp.unique().tolist()) == {0, 1, 2}  # 0.5 + 0.25 < 0.8: 0.15 crosses


def test_sample_next_is_repeatable_with_a_seeded_generator():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(3))
    a = sample_next(logits, top_p=0.9, generator=torch.Generator().manual_seed(7))
    b = sample_next(logits, top_p=0.9, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- KV cache


def test_kv_cache_appends_on_the_time_axis_and_advances_after_the_last_layer():
    cache = KVCache(n_layer=2, batch_size=3, n_head=2, max_len=10, head_dim=4)
    g = torch.Generator().manual_seed(0)
    k1, v1 = torch.randn(3, 2, 5, 4, generator=g), torch.randn(3, 2, 5, 4, generator=g)
    k2, v2 = torch.randn(3, 2, 1, 4, generator=g), torch.randn(3, 2, 1, 4, generator=g)
    cache.update(0, k1, v1)
    assert cache.length == 0  # layer 1 has not been written yet
    cache.update(1, k1, v1)
    assert cache.length == 5
    k_all, v_all = cache.update(0, k2, v2)
    assert cache.length == 5  # a model reading it now still sees the old length
    assert torch.equal(k_all, torch.cat([k1, k2], dim=2))
    assert torch.equal(v_all, torch.cat([v1, v2], dim=2))
    cache.update(1, k2, v2)
    assert cache.length == 6
    cache.reset()
    assert cache.length == 0


def test_kv_cache_errors_and_size():
    cache = KVCache(1, 1, 2, 4, 3, dtype=torch.float16)
    with pytest.raises(ValueError, match="at most max_len=4"):
        cache.update(0, torch.zeros(1, 2, 5, 3), torch.zeros(1, 2, 5, 3))
    with pytest.raises(ValueError, match=r"k has shape \(1, 3, 1, 3\)"):
        cache.update(0, torch.zeros(1, 3, 1, 3), torch.zeros(1, 2, 1, 3))
    with pytest.raises(ValueError, match="n_head must be a positive int"):
        KVCache(1, 1, 0, 4, 3)
    assert cache.nbytes == kv_cache_bytes(1, 1, 2, 4, 3, bytes_per_element=2) == 96


@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 6), st.integers(1, 5), st.integers(1, 8))
@SETTINGS
def test_attend_with_cache_equals_full_causal_attention(B, H, T_old, T_new, D):
    g = torch.Generator().manual_seed(B * 1000 + H * 100 + T_old * 10 + T_new + D)
    q, k, v = (torch.randn(B, H, T_old + T_new, D, generator=g) for _ in range(3))
    out, k_all, v_all = attend_with_cache(
        q[:, :, T_old:], k[:, :, :T_old], v[:, :, :T_old], k[:, :, T_old:], v[:, :, T_old:]
    )
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, full[:, :, T_old:], rtol=1e-5, atol=1e-6)
    assert torch.equal(k_all, k) and torch.equal(v_all, v)


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "llama", "mixtral"])
def test_cached_forward_equals_full_forward(positions):
    model = tiny_gpt(positions)
    ids = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(0))
    full, _ = model(ids)
    cache = KVCache.for_model(model, batch_size=2)
    pieces = [model(ids[:, :7], kv_cache=cache)[0]]  # prefill
    for t in range(7, 12):  # decode ticks
        pieces.append(model(ids[:, t:t + 1], kv_cache=cache)[0])
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "llama", "mixtral"])
@pytest.mark.parametrize("new", [5, 60])  # 60 runs past block_size: the window restarts
def test_greedy_is_identical_with_and_without_cache(positions, new):
    model = tiny_gpt(positions)
    ids = torch.randint(0, 23, (3, 6), generator=torch.Generator().manual_seed(1))
    cached = generate(model, ids, new, temperature=0, use_cache=True)
    plain = generate(model, ids, new, temperature=0, use_cache=False)
    assert cached.shape == (3, 6 + new)
    assert torch.equal(cached[:, :6], ids)
    assert torch.equal(cached, plain)


def test_sampling_with_a_seed_is_repeatable_and_cache_independent():
    model = tiny_gpt()
    kw = dict(temperature=0.8, top_k=10, top_p=0.9, seed=5)
    a = generate(model, [1, 2, 3], 30, use_cache=True, **kw)
    b = generate(model, [1, 2, 3], 30, use_cache=False, **kw)
    c = generate(model, [1, 2, 3], 30, **{**kw, "seed": 6})
    assert a.shape == (33,) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("family", ["learned", "llama", "mixtral"])
def test_batch_generation_with_left_padding_equals_one_by_one(family):
    model = tiny_gpt(family)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    batched = generate_batch(model, prompts, 15, temperature=0, pad_id=0)  # within block_size
    for prompt, row in zip(prompts, batched):
        assert row == generate(model, prompt, 15, temperature=0).tolist()
    if family != "learned":  # the prompts' continuations differ, so positions mattered
        assert len({tuple(row[-15:]) for row in batched}) > 1
    ids, mask = left_pad(prompts, pad_id=0)
    assert ids.shape == mask.shape == (3, 7)
    assert mask.sum(1).tolist() == [3, 7, 1] and mask[:, -1].all()


def test_kv_cache_holds_the_key_value_heads_only():
    for family, kv_heads in (("learned", 2), ("llama", 2), ("mixtral", 1)):
        model = tiny_gpt(family)
        cache = KVCache.for_model(model, batch_size=3)
        assert cache.keys[0].shape == (3, kv_heads, 24, 16 // model.config.n_head)
        model(torch.zeros(3, 5, dtype=torch.long), kv_cache=cache)
        assert cache.length == 5
    mqa = tiny_gpt("mixtral")
    mha = GPT(dataclasses.replace(mqa.config, n_kv_head=None))
    assert KVCache.for_model(mqa, 1).nbytes * 4 == KVCache.for_model(mha, 1).nbytes


def test_generate_rejects_bad_input():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [1], -1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [1], 2, top_p=0)
    with pytest.raises(ValueError, match="ids must be"):
        generate(model, [], 2)
    with pytest.raises(TypeError, match="GPT-like"):
        generate(torch.nn.Linear(2, 2), [1], 2)
    assert generate(model, [4, 5], 0).tolist() == [4, 5]
    assert generate(model, [[1, 2], [3, 4]], 3, temperature=0).shape == (2, 5)


def test_perplexity_is_exp_of_the_model_loss():
    model = tiny_gpt()
    ids = torch.randint(0, 23, (25,), generator=torch.Generator().manual_seed(2))  # one window
    with torch.no_grad():
        _, loss = model(ids[None, :-1], ids[None, 1:])
    assert perplexity(model, ids) == pytest.approx(math.exp(float(loss)), rel=1e-5)
    # a model that knows nothing (all logits equal) is exactly as unsure as a uniform die
    with torch.no_grad():
        model.lm_head.weight.zero_()
    long = torch.randint(0, 23, (200,), generator=torch.Generator().manual_seed(3))
    assert perplexity(model, long, batch_size=3) == pytest.approx(23, rel=1e-6)


def test_perplexity_of_a_text_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        perplexity(tiny_gpt(), "hello")


def test_time_generation_reports_each_tick():
    timing = time_generation(tiny_gpt(), prompt_len=8, new_tokens=5, batch_size=2)
    assert len(timing.decode) == 4 and timing.prefill > 0 and timing.tokens_per_second > 0


# --------------------------------------------------------------------------- figures and explorer


def test_sampling_explorer_has_one_distinct_frame_per_setting():

    from lmlab.widgets import sampling_explorer

    logits = torch.randn(12, generator=torch.Generator().manual_seed(4)) * 2
    box = sampling_explorer(logits, [chr(97 + i) for i in range(12)], temperatures=(0.5, 1.0),
                            top_ks=(None, 2), top_ps=(1.0, 0.5), show=8)
    assert box.frames == 8 and set(box.controls) == {"temperature", "top_k", "top_p"}
    pngs = []

    def walk(w):
        if hasattr(w, "png"):
            pngs.append(w.png)
        for child in getattr(w, "children", ()):
            walk(child)

    walk(box)
    assert len(pngs) == 8 and len(set(pngs)) == 8  # every setting draws a different figure
    assert "lmlab-explorer" in box._dom_classes


def test_sampling_bars_rejects_mismatched_labels():
    from lmlab.viz import sampling_bars

    with pytest.raises(ValueError, match="one label per token"):
        sampling_bars(torch.zeros(5), ["a", "b"])


# --------------------------------------------------------------------------- gaps found by
# mutation testing (make mutants): arguments passed on, defaults, boundaries


def test_sample_next_on_one_row_passes_every_argument_on():
    logits = torch.tensor([3.0, 2.9, 2.8, -1.0, 0.5])
    for kwargs in (dict(top_k=1), dict(top_p=0.01), dict(temperature=1e-3)):
        draws = {int(sample_next(logits, generator=torch.Generator().manual_seed(s), **kwargs))
                 for s in range(30)}
        assert draws == {0}, kwargs  # each of them alone leaves only the top token
    batch = logits.repeat(2, 1)
    for seed in range(5):  # the generator is used: one row == the same row in a batch
        one = sample_next(logits, generator=torch.Generator().manual_seed(seed))
        two = sample_next(batch, generator=torch.Generator().manual_seed(seed))
        assert one.dim() == 0 and int(one) == int(two[0])
    assert int(sample_next(torch.tensor([0.0, 5.0, 1.0]), temperature=0)) == 1


def test_top_p_boundaries():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    torch.testing.assert_close(top_p_filter(logits, 1.0), logits)
    # the mass before token 1 is exactly 0.5: with p = 0.5 it is not kept
    kept = torch.isfinite(top_p_filter(logits, 0.5))
    assert kept.tolist() == [True, False, False]
    assert torch.isfinite(top_p_filter(logits, 0.51)).tolist() == [True, True, False]


def test_kv_cache_bytes_multiplies_every_size():
    assert kv_cache_bytes(3, 5, 7, 11, 13) == 2 * 3 * 5 * 7 * 11 * 13 * 4
    assert kv_cache_bytes(3, 5, 7, 11, 13, bytes_per_element=2) == 2 * 3 * 5 * 7 * 11 * 13 * 2


def test_left_pad_defaults_and_a_single_prompt():
    ids, mask = left_pad([[4, 5]])
    assert ids.tolist() == [[4, 5]] and mask.tolist() == [[True, True]]
    ids, mask = left_pad([[7], [1, 2, 3]])
    assert ids.tolist() == [[0, 0, 7], [1, 2, 3]] and ids.dtype == torch.long
    assert mask.tolist() == [[False, False, True], [True, True, True]]


def test_generate_passes_sampling_arguments_on():
    model = tiny_gpt()
    prompt = torch.tensor([1, 2, 3])
    greedy = generate(model, prompt, 6, temperature=0)
    # top_k=1 and a tiny top_p leave only the arg-max: sampling must equal greedy decoding
    for kwargs in (dict(top_k=1), dict(top_p=1e-6)):
        for seed in range(3):
            assert torch.equal(generate(model, prompt, 6, seed=seed, **kwargs), greedy), kwargs
    # the default samples at temperature 1: different seeds give different continuations
    outs = {tuple(generate(model, prompt, 12, seed=s).tolist()) for s in range(6)}
    assert len(outs) > 1
    assert generate(model, [1, 2, 3], 2, temperature=0).dtype == torch.long


# --------------------------------------------------------------------------- more gaps found by
# mutation testing: validation, tie-breaking, the cache's options, the decode loop's window


class SpyModel(torch.nn.Module):
    """A stand-in GPT that records what the decode loop feeds it and always favours the token
    after the last one it saw (so greedy decoding counts up modulo the vocabulary)."""

    def __init__(self, block_size=8, vocab_size=5, bare=False, scale=1.0, **config):
        super().__init__()
        fields = dict(n_layer=1, n_head=1, n_embd=2, block_size=block_size, vocab_size=vocab_size)
        self.config = SimpleNamespace(**{**fields, **config})
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.bare, self.scale = bare, scale
        self.calls = []  # (ids fed, kv_cache given, attention_mask)

    def forward(self, idx, attention_mask=None, kv_cache=None):
        self.calls.append((idx.clone(), kv_cache is not None, attention_mask))
        favourite = (idx + 1) % self.config.vocab_size
        logits = self.scale * F.one_hot(favourite, self.config.vocab_size).float()
        return logits if self.bare else (logits, None)


def test_logits_must_have_a_last_axis_of_at_least_one():
    """A 0-d tensor or an empty vocabulary axis is a ValueError naming logits."""
    for bad in (torch.tensor(1.0), torch.zeros(2, 0)):
        for fn in (lambda t: apply_temperature(t, 1.0), lambda t: top_k_filter(t, 1), entropy):
            with pytest.raises(ValueError, match="logits"):
                fn(bad)


def test_numbers_must_not_be_booleans_and_errors_name_them():
    """True is not a temperature; bad values are reported under the argument's name."""
    with pytest.raises(TypeError, match="temperature"):
        apply_temperature(torch.zeros(3), True)
    with pytest.raises(TypeError, match="temperature"):
        sample_next(torch.zeros(3), temperature=True)
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(3), temperature=-1.0)


def test_ties_break_towards_the_lower_token_id_in_a_large_vocabulary():
    """With many equal logits top-k, top-p keep the lowest ids (a stable sort, whatever V)."""
    logits = torch.zeros(2, 200)
    logits[1, ::3] = 1.0  # 67 tied maxima in row 1
    kept = torch.isfinite(top_k_filter(logits, 10))
    assert kept[0].nonzero().flatten().tolist() == list(range(10))
    assert kept[1].nonzero().flatten().tolist() == list(range(0, 30, 3))
    kept = torch.isfinite(top_p_filter(logits[:1], 0.0501))  # each token has probability 0.005
    assert kept[0].nonzero().flatten().tolist() == list(range(11))


def test_top_p_one_keeps_even_negligible_tokens():
    """p = 1 keeps every token, also those whose probability vanishes next to 1 in float32."""
    logits = torch.tensor([0.0, -30.0, -40.0])
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_kv_cache_checks_every_size_by_name():
    """Each of the five sizes must be a positive int (not a bool); the error names it."""
    sizes = dict(n_layer=1, batch_size=1, n_head=1, max_len=2, head_dim=1)
    for name in sizes:
        for bad in (0, True):
            with pytest.raises(ValueError, match=f"KVCache {name} must"):
                KVCache(**{**sizes, name: bad})


def test_kv_cache_device_dtype_and_for_model():
    """Buffers go to the requested device; for_model follows the weights and the KV heads."""
    meta = KVCache(2, 1, 1, 4, 2, device="meta")
    assert all(t.device.type == "meta" for t in meta.keys + meta.values)
    model = tiny_gpt().double()
    cache = KVCache.for_model(model, 2, max_len=5)
    assert cache.keys[0].dtype == cache.values[1].dtype == torch.float64
    assert cache.keys[0].shape == (2, 2, 5, 8)
    meta_model = tiny_gpt().to("meta")
    assert KVCache.for_model(meta_model, 1).keys[0].device.type == "meta"
    # a GPT-2 style config without an n_kv_head field: one KV head per query head
    spy = SpyModel(block_size=6, n_head=4, n_embd=16)
    assert KVCache.for_model(spy, 3).keys[0].shape == (3, 4, 6, 4)


def test_kv_cache_update_layer_index_and_truncate():
    """update rejects a layer past the last; truncate keeps [0, length) for any length up to it."""
    cache = KVCache(2, 1, 1, 8, 2)
    with pytest.raises(IndexError, match="layer_index"):
        cache.update(2, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(1, 1, 5, 2, generator=g), torch.randn(1, 1, 5, 2, generator=g)
    for layer in range(2):
        cache.update(layer, k, v)
    cache.truncate(5)  # the whole length: nothing forgotten
    assert cache.length == 5
    cache.truncate(2)
    assert cache.length == 2
    k2, v2 = torch.randn(1, 1, 1, 2, generator=g), torch.randn(1, 1, 1, 2, generator=g)
    k_all, v_all = cache.update(0, k2, v2)
    assert torch.equal(k_all, torch.cat([k[:, :, :2], k2], dim=2))
    assert torch.equal(v_all, torch.cat([v[:, :, :2], v2], dim=2))
    for bad in (3, -1, True, 1.0):  # 3 > length 2
        with pytest.raises(ValueError, match="length"):
            cache.truncate(bad)


def test_attend_with_cache_keeps_its_mask_on_the_inputs_device():
    """On the meta device (a stand-in for an accelerator) the causal mask is made there too."""
    q, k_new, v_new = (torch.empty(1, 2, 3, 4, device="meta") for _ in range(3))
    k_old = v_old = torch.empty(1, 2, 5, 4, device="meta")
    out, k_all, _ = attend_with_cache(q, k_old, v_old, k_new, v_new)
    assert out.device.type == "meta" and out.shape == (1, 2, 3, 4) and k_all.shape == (1, 2, 8, 4)


def _without_block_size():
    model = SpyModel()
    del model.config.block_size
    return model


def test_generate_needs_every_config_field_and_accepts_bare_logits():
    """A config without block_size is not GPT-like; a model returning bare logits is fine."""
    with pytest.raises(TypeError, match="GPT-like"):
        generate(_without_block_size(), [1], 1)
    tupled = generate(SpyModel(), [1, 2], 6, temperature=0)
    bare = generate(SpyModel(bare=True), [1, 2], 6, temperature=0)
    assert tupled.tolist() == bare.tolist() == [1, 2, 3, 4, 0, 1, 2, 3]


@pytest.mark.parametrize("use_cache", [False, True])
def test_context_window_restarts_with_the_newest_half(use_cache):
    """Past block_size tokens the window restarts with the newest block_size // 2 (at least 1)."""
    model = SpyModel(block_size=8)
    out = generate(model, [1, 2, 3], 12, temperature=0, use_cache=use_cache)
    windows = [3, 4, 5, 6, 7, 8, 4, 5, 6, 7, 8, 4]  # tokens in the window at each tick
    starts = [0] * 6 + [5] * 5 + [10]
    fed = [len(ids[0]) for ids, _, _ in model.calls]
    if use_cache:  # prefill the window, then one token per tick
        assert fed == [3, 1, 1, 1, 1, 1, 4, 1, 1, 1, 1, 4]
    else:
        assert fed == windows
    for (ids, cached, _), start, width in zip(model.calls, starts, windows):
        assert cached == use_cache
        assert torch.equal(ids[0], out[start:start + width][-len(ids[0]):])
    tiny = SpyModel(block_size=2)
    generate(tiny, [1], 4, temperature=0, use_cache=False)
    assert [len(ids[0]) for ids, _, _ in tiny.calls] == [1, 2, 1, 2]  # max(1, 2 // 2) = 1


def test_generate_validates_sampling_arguments_even_without_new_tokens():
    """top_k, top_p and temperature are checked up front, under their own names."""
    model = SpyModel()
    for kwargs, name in ((dict(top_k=0), "top_k"), (dict(top_k=True), "top_k"),
                         (dict(top_p=1.5), "top_p"), (dict(temperature=-1.0), "temperature")):
        for n in (0, 2):
            with pytest.raises(ValueError, match=name):
                generate(model, [1], n, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [1], True)
    with pytest.raises(ValueError, match="attention_mask"):
        generate(model, [[1, 2]], 1, attention_mask=torch.ones(1, 3, dtype=torch.bool))


def test_generate_defaults_cache_temperature_progress_and_dtype(capsys):
    """Defaults: the KV cache, temperature 1, no progress bar; ids come back as int64."""
    spy = SpyModel()
    generate(spy, [1], 3)
    assert [cached for _, cached, _ in spy.calls] == [True] * 3
    spy = SpyModel()
    generate(spy, [1], 3, use_cache=True)
    assert [cached for _, cached, _ in spy.calls] == [True] * 3
    peaked = SpyModel(scale=2.0)  # the favourite token has probability 0.65 at temperature 1
    for seed in range(3):
        default = generate(peaked, [1], 30, seed=seed)
        assert torch.equal(default, generate(peaked, [1], 30, seed=seed, temperature=1.0))
        assert not torch.equal(default, generate(peaked, [1], 30, seed=seed, temperature=2.0))
    model = tiny_gpt()
    capsys.readouterr()
    generate(model, [1, 2], 3)
    assert capsys.readouterr().err == ""
    generate(model, [1, 2], 3, progress=True)
    assert "decode" in capsys.readouterr().err
    out = generate(model, torch.tensor([[1, 2]], dtype=torch.int32), 2, temperature=0)
    assert out.dtype == torch.long


def test_left_pad_rejects_an_empty_prompt_and_returns_a_bool_mask():
    """Every prompt needs a token; the mask is boolean."""
    with pytest.raises(ValueError, match="non-empty"):
        left_pad([[1, 2], []])
    _, mask = left_pad([[1, 2], [3]])
    assert mask.dtype == torch.bool


def test_generate_batch_pads_with_pad_id_under_a_false_mask():
    """The model sees pad_id (default 0) in the padding columns, masked out."""
    for kwargs, pad in ((dict(), 0), (dict(pad_id=7), 7)):
        spy = SpyModel(vocab_size=9)
        rows = generate_batch(spy, [[1, 2], [3]], 2, temperature=0, **kwargs)
        assert rows == [[1, 2, 3, 4], [3, 4, 5]]
        ids, _, mask = spy.calls[0]
        assert ids.tolist() == [[1, 2], [pad, 3]]
        assert mask.tolist() == [[True, True], [False, True]]
