"""Speculative decoding keeps the target's tokens (greedy) and its distribution (sampling).

References: the target's own greedy ``lmlab.generate.generate`` (token for token), and the
target distribution p itself, against which the accept/reject step's output is tested
exactly (integrating over a grid of uniforms) and statistically (chi-square).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.generate import KVCache, generate
from lmlab.speculative import (
    sample_from,
    speculative_accept,
    speculative_generate,
)
from lmlab.transformer import GPT, GPTConfig

V = 13


def _gpt(seed: int, *, n_layer=2, n_head=2, n_embd=32, vocab=V, block=96) -> GPT:
    """A random GPT with weights 5x GPT-2's init: its greedy path is not one repeated token."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd)).eval()
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() == 2:
                w.mul_(5)
    return model


@pytest.fixture(scope="module")
def target() -> GPT:
    return _gpt(0)


@pytest.fixture(scope="module")
def draft() -> GPT:
    return _gpt(1, n_layer=1, n_head=1, n_embd=16)


# --------------------------------------------------------------------------- (a) greedy


@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("prompt_seed", [0, 1, 2])
def test_greedy_equals_target_greedy(target, draft, k, prompt_seed):
    g = torch.Generator().manual_seed(prompt_seed)
    prompt = torch.randint(0, V, (1 + prompt_seed * 3,), generator=g)
    expected = generate(target, prompt, 40, temperature=0)
    got, stats = speculative_generate(target, draft, prompt, 40, k=k, greedy=True,
                                      seed=prompt_seed)
    assert torch.equal(got, expected)
    assert stats.new_tokens == 40
    assert all(0 <= a <= p <= k for a, p in zip(stats.accepted, stats.proposed))
    # the draft is a different model: it must have been wrong somewhere for the test to bite
    assert stats.acceptance_rate < 1


def test_temperature_zero_is_greedy(target, draft):
    a, _ = speculative_generate(target, draft, [3, 1, 4], 20, k=3, temperature=0)
    b, _ = speculative_generate(target, draft, [3, 1, 4], 20, k=3, greedy=True)
    assert torch.equal(a, b)


def test_greedy_equal_with_other_drafts(target):
    # drafts of other shapes and seeds, including one sharing the target's first layer
    expected = generate(target, [5, 6], 30, temperature=0)
    for seed in (2, 3):
        d = _gpt(seed, n_layer=1, n_head=2, n_embd=32)
        if seed == 3:
            d.load_state_dict(target.state_dict(), strict=False)
        got, _ = speculative_generate(target, d, [5, 6], 30, k=4, greedy=True)
        assert torch.equal(got, expected)


def test_sampling_is_repeatable_with_a_seed(target, draft):
    a, sa = speculative_generate(target, draft, [1, 2], 25, k=3, seed=5)
    b, sb = speculative_generate(target, draft, [1, 2], 25, k=3, seed=5)
    assert torch.equal(a, b) and sa == sb
    assert a.shape == (27,)


# --------------------------------------------------------------------------- (b) distribution


def _random_pair(seed: int, V: int, k: int, sharp: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(k + 1, V, generator=g, dtype=torch.float64) * sharp, -1)
    q = torch.softmax(torch.randn(k, V, generator=g, dtype=torch.float64) * sharp, -1)
    return p, q


def _emitted(q, p, n_draws, seed, accept=speculative_accept):
    """Draw proposals from q and run the step: -> the first and second emitted tokens."""
    k, V = q.shape
    g = torch.Generator().manual_seed(seed)
    first, second = torch.zeros(V), torch.zeros(V)
    for _ in range(n_draws):
        x = torch.stack([torch.multinomial(q[i], 1, generator=g)[0] for i in range(k)])
        n, nxt = accept(q, p, x, g)
        out = x[:n].tolist() + [nxt]
        first[out[0]] += 1
        if len(out) > 1:
            second[out[1]] += 1
    return first, second


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = counts.sum() * probs
    return float(((counts - expected) ** 2 / expected).sum())


# chi-square critical values at significance 0.001 (upper tail), degrees of freedom V - 1:
# df = 5 -> 20.515 (NIST/SEMATECH e-Handbook, table 1.3.6.7.4)
CHI2_CRIT_DF5_P001 = 20.515


def test_next_token_has_the_targets_distribution_chi_square():
    p, q = _random_pair(seed=0, V=6, k=2)
    first, second = _emitted(q, p, n_draws=6000, seed=0)
    stat_first = chi_square(first, p[0].float())
    stat_second = chi_square(second, p[1].float())  # given the first was a kept draft token
    assert stat_first < CHI2_CRIT_DF5_P001, stat_first
    assert stat_second < CHI2_CRIT_DF5_P001, stat_second


def test_chi_square_test_catches_a_wrong_rule():
    """The same test rejects the common mistake of resampling from p instead of the residual."""
    p, q = _random_pair(seed=0, V=6, k=1)

    def resample_from_p(q, p, x, g):
        u = torch.rand(2, generator=g, dtype=torch.float64)
        if u[0] * q[0, x[0]] < p[0, x[0]]:
            return 1, sample_from(p[1], u[1])
        return 0, sample_from(p[0], u[1])

    first, _ = _emitted(q, p, n_draws=4000, seed=1, accept=resample_from_p)
    assert chi_square(first, p[0].float()) > 5 * CHI2_CRIT_DF5_P001


@settings(max_examples=15, deadline=None)
@given(V=st.integers(2, 6), seed=st.integers(0, 10_000), sharp=st.floats(0.1, 4.0))
def test_exact_output_distribution_over_a_grid_of_uniforms(V, seed, sharp):
    """Integrate over the uniforms on a midpoint grid of M points: P(first token = y)
    = sum_x q(x) [a(x) [x = y] + (1 - a(x)) r(y)] must equal p_1(y) to about 1/M."""
    p, q = _random_pair(seed, V, k=1, sharp=sharp)
    M = 200
    grid = (torch.arange(M, dtype=torch.float64) + 0.5) / M

    def step(x, u0, u1):
        return speculative_accept(q, p, torch.tensor([x]), uniforms=torch.stack([u0, u1]))

    # a(x): the fraction of u0 that keeps draft token x (u1 does not matter then)
    a = torch.tensor([sum(step(x, u, grid[0])[0] for u in grid) / M for x in range(V)],
                     dtype=torch.float64)
    assert torch.allclose(a, (p[0] / q[0]).clamp(max=1), atol=1 / M)
    rejectable = [x for x in range(V) if p[0, x] < q[0, x]]
    r = torch.zeros(V, dtype=torch.float64)
    if rejectable:  # r(y): the replacement's distribution, from a sure rejection
        for u in grid:
            n, nxt = step(rejectable[0], torch.tensor(1 - 1e-12, dtype=torch.float64), u)
            assert n == 0
            r[nxt] += 1 / M
    dist = q[0] * a + (q[0] * (1 - a)).sum() * r
    assert torch.allclose(dist, p[0], atol=2 / M)


def test_accept_rule_by_hand():
    q = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]], dtype=torch.float64)
    p = torch.tensor([[0.25, 0.75, 0.0], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([0, 2])
    # token 0: p/q = 0.5; u = 0.4 keeps it; token 2: p/q = 4/3 always kept; bonus from p[2]
    assert speculative_accept(q, p, x, uniforms=torch.tensor([0.4, 0.99, 0.3])) == (2, 2)
    # u = 0.6 rejects token 0; residual max(0, p - q) = [0, 0.25, 0] -> token 1
    assert speculative_accept(q, p, x, uniforms=torch.tensor([0.6, 0.1, 0.05])) == (0, 1)


def test_sample_from_never_picks_an_impossible_token():
    probs = torch.tensor([0.3, 0.7 - 1e-7, 0.0], dtype=torch.float64)
    assert sample_from(probs, 0.9999999) == 1
    assert sample_from(probs, 0.0) == 0


# --------------------------------------------------------------------------- (c) acceptance


def test_draft_equal_to_target_accepts_everything(target):
    _, stats = speculative_generate(target, target, [1, 2, 3], 40, k=4, seed=0)
    assert stats.acceptance_rate == 1.0
    assert stats.target_passes == 8  # 5 tokens per pass


def _trained_cycle_model() -> GPT:
    """A target that learned a cycle through the vocabulary (so it is confident)."""
    model = _gpt(7, n_layer=1, n_head=2, n_embd=32, vocab=16, block=64)
    model.train()
    data = torch.arange(400) * 5 % 16  # next = current + 5 (mod 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(60):
        starts = torch.randint(0, 400 - 33, (16,), generator=torch.Generator().manual_seed(step))
        x = torch.stack([data[s:s + 32] for s in starts])
        y = torch.stack([data[s + 1:s + 33] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_random_draft_on_a_trained_target_is_almost_never_accepted():
    trained = _trained_cycle_model()
    random_draft = _gpt(8, n_layer=1, n_head=1, n_embd=16, vocab=16, block=64)
    prompt = [0, 5, 10, 15]
    _, good = speculative_generate(trained, trained, prompt, 40, k=4, seed=0)
    _, bad = speculative_generate(trained, random_draft, prompt, 40, k=4, seed=0)
    assert good.acceptance_rate == 1.0
    assert bad.acceptance_rate < 0.2  # ≈ 1/16: a near-uniform q against a peaked p
    assert bad.tokens_per_pass < 1.5


def test_truncate_cache_rolls_back():
    cache = KVCache(2, 1, 1, 8, 4)
    for layer in range(2):
        cache.update(layer, torch.ones(1, 1, 5, 4), torch.ones(1, 1, 5, 4))
    cache.truncate(3)
    assert cache.length == 3
    k, _ = cache.update(0, torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))
    assert k.shape[2] == 4 and float(k[0, 0, 3].sum()) == 0
    with pytest.raises(ValueError, match="length"):
        cache.truncate(9)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs(target, draft):
    q = torch.full((2, 4), 0.25)
    p = torch.full((3, 4), 0.25)
    x = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="target_probs"):
        speculative_accept(q, p[:2], x)
    with pytest.raises(ValueError, match="draft_tokens"):
        speculative_accept(q, p, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="draft_tokens"):
        speculative_accept(q, p, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="draft_probs"):
        speculative_accept(q[0], p, x)
    with pytest.raises(ValueError, match="uniforms"):
        speculative_accept(q, p, x, uniforms=torch.rand(2))
    with pytest.raises(ValueError, match="k must be"):
        speculative_generate(target, draft, [1], 5, k=0)
    with pytest.raises(ValueError, match="block_size"):
        speculative_generate(target, draft, [1] * 90, 10)
    with pytest.raises(ValueError, match="vocab_size"):
        speculative_generate(target, _gpt(0, vocab=V + 1), [1], 5)
    with pytest.raises(ValueError, match="ids must be"):
        speculative_generate(target, draft, [], 5)
    with pytest.raises(TypeError, match="model must be"):
        speculative_generate(target, object(), [1], 5)
    with pytest.raises(ValueError, match="temperature"):
        speculative_generate(target, draft, [1], 5, temperature=-1.0)


# --------------------------------------------------------------------------- figures, explorer


def test_explorer_has_a_frame_per_draft_and_k():
    from lmlab.speculative import SpeculativeStats
    from lmlab.widgets import speculative_explorer

    runs = {(d, k): SpeculativeStats(accepted=[k, 0, 1], proposed=[k, k, k])
            for d in ("good", "bad") for k in (1, 3)}
    box = speculative_explorer(runs)
    assert box.frames == 4 and set(box.controls) == {"draft", "k"}
    del runs[("bad", 3)]
    with pytest.raises(ValueError, match="every \\(draft, k\\) pair"):
        speculative_explorer(runs)


def test_kv_memory_figure_draws_one_line_per_model():
    import matplotlib.pyplot as plt

    from lmlab.viz import kv_memory_figure, speculative_curves

    fig = kv_memory_figure({"a": 2**19, "b": 2**17}, [1024, 4096], budget_gib=8)
    assert len(fig.axes[0].lines) == 3  # two models and the budget
    fig2 = speculative_curves([1, 2], {"d": {"tokens_per_pass": [1.5, 2.0], "speedup": [1, 1.2]}})
    assert len(fig2.axes) == 2
    plt.close("all")
