"""lmlab.compress: distillation loss against a float64 hand-written KL, pruning patterns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.compress import distill_loss, magnitude_prune, prune_2_4, prune_model, sparsity_of
from lmlab.transformer import GPT, GPTConfig


def _kl64(s, t, T):
    """Σ_v p_t (log p_t - log p_s) per position, by hand in float64, times T², mean."""
    s, t = s.double().reshape(-1, s.shape[-1]) / T, t.double().reshape(-1, t.shape[-1]) / T
    total = 0.0
    for row_s, row_t in zip(s.tolist(), t.tolist()):
        zs = math.log(sum(math.exp(v) for v in row_s))
        zt = math.log(sum(math.exp(v) for v in row_t))
        total += sum(math.exp(b - zt) * ((b - zt) - (a - zs)) for a, b in zip(row_s, row_t))
    return total / len(s) * T * T


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.sampled_from([(5,), (3, 7), (2, 3, 4)]),
       T=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_distill_loss_matches_float64_kl(seed, shape, T):
    g = torch.Generator().manual_seed(seed)
    s, t = 3 * torch.randn(shape, generator=g), 3 * torch.randn(shape, generator=g)
    assert distill_loss(s, t, temperature=T).item() == pytest.approx(_kl64(s, t, T), rel=1e-5,
                                                                      abs=1e-6)


def test_distill_loss_equals_torch_kl_div_batchmean():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 6, 9, generator=g), torch.randn(4, 6, 9, generator=g)
    T = 3.0
    ref = F.kl_div(F.log_softmax(s.view(-1, 9) / T, -1), F.log_softmax(t.view(-1, 9) / T, -1),
                   reduction="batchmean", log_target=True) * T * T
    torch.testing.assert_close(distill_loss(s, t, temperature=T), ref)
    assert distill_loss(t, t, temperature=T).abs().item() < 1e-6


def test_distill_gradient_is_p_s_minus_p_t_over_T_times_T_squared():
    # d/ds [T² KL] = T (p_s - p_t) / N: the T² keeps the gradient's size as T grows
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 11, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 11, generator=g, dtype=torch.float64)
    for T in (1.0, 2.0, 8.0):
        s.grad = None
        distill_loss(s, t, temperature=T).backward()
        want = T * (torch.softmax(s.detach() / T, -1) - torch.softmax(t / T, -1)) / 5
        torch.testing.assert_close(s.grad, want, rtol=1e-10, atol=1e-12)
    # for large T the gradient tends to (s - t)/N minus its mean: O(1), not O(1/T²)
    s.grad = None
    distill_loss(s, t, temperature=1000.0).backward()
    d = (s.detach() - t) - (s.detach() - t).mean(-1, keepdim=True)
    torch.testing.assert_close(s.grad, d / 11 / 5, rtol=1e-2, atol=1e-4)


def test_distill_loss_bad_inputs():
    with pytest.raises(ValueError, match="must match"):
        distill_loss(torch.zeros(2, 3), torch.zeros(2, 4), temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        distill_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)
    with pytest.raises(TypeError, match="tensors"):
        distill_loss([1.0], torch.zeros(1), temperature=1.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), out=st.integers(1, 6), groups=st.integers(1, 5))
def test_prune_2_4_pattern(seed, out, groups):
    w = torch.randn(out, 4 * groups, generator=torch.Generator().manual_seed(seed))
    pruned, mask = prune_2_4(w)
    m = mask.view(out, groups, 4)
    assert (m.sum(-1) == 2).all()  # exactly 2 of every 4 kept
    a = w.abs().view(out, groups, 4)
    kept_min = a.masked_fill(~m, math.inf).min(-1).values
    dropped_max = a.masked_fill(m, -math.inf).max(-1).values
    assert (kept_min >= dropped_max).all()  # the kept ones are the 2 largest
    assert torch.equal(pruned, w * mask) and sparsity_of(pruned) == 0.5


def test_prune_2_4_ties_and_errors():
    w = torch.ones(1, 8)
    assert prune_2_4(w)[1].tolist() == [[True, True, False, False] * 2]
    with pytest.raises(ValueError, match="multiple of 4"):
        prune_2_4(torch.randn(3, 6))
    with pytest.raises(TypeError, match="float"):
        prune_2_4(torch.ones(2, 4, dtype=torch.long))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60),
       sparsity=st.floats(0, 1, allow_nan=False))
def test_magnitude_prune_exact_count_and_threshold(seed, n, sparsity):
    w = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    pruned, mask = magnitude_prune(w, sparsity)
    assert int((~mask).sum()) == round(sparsity * n)
    if mask.any() and (~mask).any():
        assert w.abs()[mask].min() >= w.abs()[~mask].max()
    assert torch.equal(pruned, w * mask)


def test_magnitude_prune_bad_sparsity():
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune(torch.randn(4), 1.5)


def test_prune_model_skips_embeddings_and_head():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    head = model.lm_head.weight.clone()
    prune_model(model, 0.75)
    assert sparsity_of(model.transformer.h[0].mlp.c_fc.weight) == 0.75
    assert torch.equal(model.lm_head.weight, head)
    prune_model(model, pattern="2:4")
    with pytest.raises(ValueError, match="2:4"):
        prune_model(model, 0.3, pattern="2:4")
