"""lmlab's GPT against Hugging Face ``transformers``: tiny random models built from configs
written here (no download), weights copied with :mod:`lmlab.hf`, logits equal in float32."""

from __future__ import annotations

import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lmlab.generate import KVCache, generate, generate_batch  # noqa: E402
from lmlab.hf import config_from_hf, from_hf, load_hf_state_dict  # noqa: E402
from lmlab.transformer import GPT  # noqa: E402

ATOL = 1e-5
V = 61


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomize(model, seed: int):
    """Weights of order 1 (the default init is so small that every logit is near 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
            else:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.eval()


def _llama_config(cls, **extra):
    return cls(vocab_size=V, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
               num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
               rope_theta=1000.0, attn_implementation="eager", **extra)


def hf_model(kind: str):
    t = transformers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "gpt2":
            config = t.GPT2Config(vocab_size=V, n_positions=64, n_embd=48, n_layer=2, n_head=4,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="eager")
            return _randomize(t.GPT2LMHeadModel(config), 1)
        if kind == "llama":
            return _randomize(t.LlamaForCausalLM(_llama_config(t.LlamaConfig)), 2)
        if kind == "llama-mha":
            config = _llama_config(t.LlamaConfig)
            config.num_key_value_heads = 6
            return _randomize(t.LlamaForCausalLM(config), 3)
        if kind == "mistral":
            config = _llama_config(t.MistralConfig, sliding_window=None)
            return _randomize(t.MistralForCausalLM(config), 4)
        if kind == "mixtral":
            config = _llama_config(t.MixtralConfig, num_local_experts=4, num_experts_per_tok=2)
            return _randomize(t.MixtralForCausalLM(config), 5)
        if kind == "qwen2":
            config = _llama_config(t.Qwen2Config, tie_word_embeddings=True)
            return _randomize(t.Qwen2ForCausalLM(config), 6)
    raise ValueError(kind)


KINDS = ["gpt2", "llama", "llama-mha", "mistral", "mixtral", "qwen2"]


def ids(B=2, T=11, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_logits_equal_transformers(kind):
    hf = hf_model(kind)
    x = ids()
    with torch.no_grad():
        expected = hf(x).logits
        assert expected.abs().max() > 1  # not a trivially small comparison
        for style in ("half", "interleaved"):
            for fused in (False, True):
                model = from_hf(hf, rope_style=style, fused=fused)
                torch.testing.assert_close(model(x)[0], expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_logits_with_kv_cache_equal_transformers(kind):
    hf = hf_model(kind)
    model = from_hf(hf)
    x = ids(T=13, seed=1)
    cache = KVCache.for_model(model, 2)
    assert cache.keys[0].shape[1] == model.config.kv_heads  # the cache holds KV heads only
    with torch.no_grad():
        expected = hf(x).logits
        parts = [model(x[:, :6], kv_cache=cache)[0]]
        for t in range(6, 13):
            parts.append(model(x[:, t:t + 1], kv_cache=cache)[0])
    torch.testing.assert_close(torch.cat(parts, dim=1), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "mixtral"])
def test_greedy_generation_equals_transformers(kind):
    hf = hf_model(kind)
    model = from_hf(hf)
    x = ids(B=1, T=5, seed=2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = hf.generate(x, max_new_tokens=8, do_sample=False, pad_token_id=0,
                               attention_mask=torch.ones_like(x))
    assert torch.equal(generate(model, x, 8, temperature=0), expected)
    assert torch.equal(generate(model, x, 8, temperature=0, use_cache=False), expected)


def test_left_padded_batch_equals_transformers_with_position_ids():
    hf = hf_model("llama")
    model = from_hf(hf)
    prompts = [[5, 9, 2], [7, 1, 8, 3, 4, 6]]
    out = generate_batch(model, prompts, 4, temperature=0)
    for prompt, row in zip(prompts, out):
        x = torch.tensor([prompt])
        with torch.no_grad():
            expected = hf.generate(x, max_new_tokens=4, do_sample=False, pad_token_id=0,
                                   attention_mask=torch.ones_like(x))
        assert row == expected[0].tolist()


def test_converter_config_and_errors():
    hf = hf_model("mixtral")
    config = config_from_hf(hf.config)
    assert (config.n_expert, config.n_expert_per_token, config.kv_heads) == (4, 2, 2)
    assert config.rope_theta == 1000.0 and config.norm == "rmsnorm" and not config.bias
    assert config_from_hf(hf_model("qwen2").config).has_qkv_bias
    assert config_from_hf(hf_model("gpt2").config).mlp == "gelu_tanh"
    with pytest.raises(ValueError, match="neither"):
        load_hf_state_dict(GPT(config), {"foo": torch.zeros(1)})
    with pytest.raises(ValueError, match="model_type"):
        config_from_hf(transformers.BertConfig())
    with pytest.raises(RuntimeError):  # strict: a mismatched model does not load silently
        load_hf_state_dict(from_hf(hf_model("llama")), hf.state_dict())
