"""Chapter 9's estimators on the model presets (dense, grouped-query and mixture of experts)."""

from __future__ import annotations

import pytest

from lmlab.presets import PRESETS
from lmlab.scaling import inference_memory, memory_estimate, training_flops
from lmlab.transformer import (
    active_param_count,
    flops_per_token,
    kv_cache_bytes_per_token,
    param_breakdown,
    param_count,
)


def test_training_flops_of_a_preset_is_six_n_d_with_the_used_weights():
    llama = PRESETS["llama-2-7b"]
    # matmul weights: everything but the token embedding and the norm gains
    n = param_count(llama) - param_breakdown(llama)["token embedding"] - param_breakdown(
        llama)["layer norms"]
    assert training_flops("llama-2-7b", 2e12) == pytest.approx(6 * n * 2e12, rel=1e-12)
    assert training_flops(llama, 1e9, seq_len=4096) == 3 * flops_per_token(llama, 4096) * 1e9
    with pytest.raises(ValueError, match="seq_len"):
        training_flops(llama, 1e9, n_layer=32)
    with pytest.raises(ValueError, match="unknown preset"):
        training_flops("llama-9b", 1e9)


def test_training_flops_of_a_preset_at_another_context_length():
    """With seq_len the attention term is 12·L·T·d per token at that T, not at block_size."""
    llama = PRESETS["llama-2-7b"]
    n = param_count(llama) - param_breakdown(llama)["token embedding"] - param_breakdown(
        llama)["layer norms"]
    assert training_flops(llama, 1e9, seq_len=1024) == pytest.approx(
        6 * n * 1e9 + 12 * 32 * 1024 * 4096 * 1e9, rel=1e-12)


def test_training_flops_of_a_preset_checks_its_arguments():
    """Zero tokens cost zero; the shape comes from the config (d_model is refused); bad
    tokens or seq_len raise naming the argument."""
    assert training_flops("gpt2", 0) == 0
    assert training_flops("gpt2", 0, seq_len=128) == 0
    with pytest.raises(ValueError, match="d_model"):
        training_flops("gpt2", 1e9, d_model=768)
    with pytest.raises(ValueError, match="tokens"):
        training_flops("gpt2", -1)
    with pytest.raises(ValueError, match="seq_len"):
        training_flops("gpt2", 1e9, seq_len=0)


def test_moe_trains_at_the_cost_of_its_active_parameters():
    mixtral = PRESETS["mixtral-8x7b"]
    flops = training_flops(mixtral, 1e12)
    embedding = mixtral.vocab_size * mixtral.n_embd
    norms = param_breakdown(mixtral)["layer norms"]
    assert flops == pytest.approx(6 * (active_param_count(mixtral) - embedding - norms) * 1e12)
    assert flops < 0.3 * 6 * param_count(mixtral) * 1e12


def test_memory_estimate_of_a_preset_stores_every_parameter():
    mixtral = PRESETS["mixtral-8x7b"]
    estimate = memory_estimate("mixtral-8x7b", precision="mixed")
    assert estimate.total == 16 * param_count(mixtral)  # every expert has Adam states
    with_acts = memory_estimate(mixtral, precision="mixed", batch=1, seq_len=4096)
    by_hand = memory_estimate(param_count(mixtral), precision="mixed", batch=1, seq_len=4096,
                              n_layer=32, d_model=4096, n_heads=32, vocab_size=32000)
    assert with_acts == by_hand and with_acts.activations > 0


def test_memory_estimate_of_a_preset_takes_the_heads_from_the_config():
    """With the T×T attention matrices in the profile, a preset's activations use its own
    n_head (GPT-2: 12) unless n_heads is given."""
    gpt2 = PRESETS["gpt2"]
    run = dict(precision="mixed", batch=2, seq_len=256, profile="unfused-attention")
    shape = dict(n_layer=12, d_model=768, vocab_size=gpt2.vocab_size)
    by_hand = memory_estimate(param_count(gpt2), n_heads=12, **shape, **run)
    assert memory_estimate("gpt2", **run) == by_hand
    assert memory_estimate("gpt2", n_heads=4, **run) == memory_estimate(
        param_count(gpt2), n_heads=4, **shape, **run)
    assert memory_estimate("gpt2", n_heads=4, **run).activations < by_hand.activations


def test_inference_memory_weights_and_gqa_cache():
    llama3 = inference_memory("llama-3-8b", batch=4, seq_len=8192)
    assert llama3["weights"] == 2 * 8_030_261_248
    assert llama3["kv_cache"] == 4 * 8192 * 128 * 1024  # 128 KiB per token: 4 GiB
    assert llama3["total"] == llama3["weights"] + llama3["kv_cache"]
    llama2 = inference_memory(PRESETS["llama-2-7b"], seq_len=4096)
    assert llama2["kv_cache"] == 4096 * kv_cache_bytes_per_token(PRESETS["llama-2-7b"]) == 2**31
    assert inference_memory("gpt2", bytes_per_param=1)["weights"] == param_count(PRESETS["gpt2"])
    with pytest.raises(ValueError, match="batch"):
        inference_memory("gpt2", batch=0)


def test_inference_memory_context_and_cache_precision():
    """seq_len overrides block_size; kv_bytes_per_element sets the cache's bytes per value;
    bad sizes raise naming the argument."""
    gpt2 = PRESETS["gpt2"]
    per_token = 2 * 12 * 768 * 2  # a key and a value of 768 per layer, 2 bytes each
    assert kv_cache_bytes_per_token(gpt2) == per_token
    assert inference_memory("gpt2", seq_len=100)["kv_cache"] == 100 * per_token
    assert inference_memory("gpt2", batch=3)["kv_cache"] == 3 * 1024 * per_token
    assert inference_memory("gpt2", seq_len=100, kv_bytes_per_element=1)["kv_cache"] == 50 * per_token
    with pytest.raises(ValueError, match="seq_len"):
        inference_memory("gpt2", seq_len=0)
    with pytest.raises(ValueError, match="bytes_per_param"):
        inference_memory("gpt2", bytes_per_param=0)
