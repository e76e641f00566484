"""Presets of real models: closed-form counts equal the models built on the meta device."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmlab.presets import PRESETS, preset
from lmlab.transformer import (
    GPT,
    active_param_count,
    count_parameters,
    flops_per_token,
    kv_cache_bytes_per_token,
    llama_hidden_size,
    param_count,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_param_count_equals_the_model_built_on_meta(name):
    config = PRESETS[name]
    with torch.device("meta"):
        model = GPT(config)
    assert count_parameters(model) == param_count(config)
    if config.n_expert:
        per_expert = count_parameters(model.transformer.h[0].mlp.experts[0])
        idle = config.n_layer * (config.n_expert - config.n_expert_per_token) * per_expert
        assert active_param_count(config) == param_count(config) - idle
    else:
        assert active_param_count(config) == param_count(config)


def test_published_sizes():
    assert param_count(PRESETS["llama-3-8b"]) == 8_030_261_248
    assert param_count(PRESETS["llama-2-7b"]) == 6_738_415_616
    assert param_count(PRESETS["gpt2"]) == 124_439_808
    assert param_count(PRESETS["mistral-7b"]) == 7_241_732_096
    assert param_count(PRESETS["qwen2.5-0.5b"]) == 494_032_768  # "0.49B" on its model card
    mixtral = PRESETS["mixtral-8x7b"]
    assert round(param_count(mixtral) / 1e9, 1) == 46.7
    assert round(active_param_count(mixtral) / 1e9, 1) == 12.9


def test_kv_cache_bytes_per_token():
    llama3 = PRESETS["llama-3-8b"]
    assert kv_cache_bytes_per_token(llama3) == 128 * 1024  # 8 KV heads, bf16
    assert kv_cache_bytes_per_token(replace(llama3, n_kv_head=None)) == 512 * 1024
    assert kv_cache_bytes_per_token(replace(llama3, n_kv_head=1)) == 16 * 1024  # MQA
    assert kv_cache_bytes_per_token(PRESETS["llama-2-7b"]) == 512 * 1024
    assert kv_cache_bytes_per_token(PRESETS["gpt2"], bytes_per_element=4) == 2 * 12 * 768 * 4


def test_swiglu_widths_follow_meta_rule():
    assert PRESETS["llama-2-7b"].ffn_dim == llama_hidden_size(4096) == 11008
    assert PRESETS["llama-3-8b"].ffn_dim == llama_hidden_size(4096, 1024, 1.3) == 14336


def test_preset_lookup():
    assert preset("gpt2") is PRESETS["gpt2"]
    assert preset(PRESETS["gpt2"]) is PRESETS["gpt2"]
    with pytest.raises(ValueError, match="unknown preset"):
        preset("llama-9")


def shrunk(config):
    """The preset's architecture at toy size (same family, GQA ratio, MoE shape)."""
    ratio = config.n_head // config.kv_heads
    return replace(config, vocab_size=37, block_size=12, n_layer=2, n_head=2 * ratio,
                   n_kv_head=2 if config.n_kv_head else None, n_embd=8 * ratio,
                   ffn_hidden=20 if config.ffn_hidden else None)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_flops_per_token_matches_the_flop_counter(name):
    config = shrunk(PRESETS[name])
    model = GPT(config)
    assert count_parameters(model) == param_count(config)
    T = config.block_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randint(0, config.vocab_size, (2, T)))
    measured = counter.get_total_flops() / (2 * T)
    # every matmul is counted exactly (MoE: only the tokens each expert sees)
    assert measured == flops_per_token(config, T)
    assert flops_per_token(config, T, training=True) == 3 * flops_per_token(config, T)


def test_moe_flops_use_active_parameters():
    mixtral = PRESETS["mixtral-8x7b"]
    dense_equivalent = replace(mixtral, n_expert=0)
    assert flops_per_token(mixtral, 1) < 2 * flops_per_token(dense_equivalent, 1)
    non_embedding_active = active_param_count(mixtral) - mixtral.vocab_size * mixtral.n_embd
    norms = (2 * mixtral.n_layer + 1) * mixtral.n_embd
    assert flops_per_token(mixtral, 1) == 2 * (non_embedding_active - norms) + 4 * 32 * 4096
