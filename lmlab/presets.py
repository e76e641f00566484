"""Real models as :class:`lmlab.transformer.GPTConfig`: GPT-2 and today's open models.

Each preset restates the model's published configuration (its ``config.json`` on the
Hugging Face hub, names mapped to lmlab's: ``hidden_size`` -> ``n_embd``,
``num_hidden_layers`` -> ``n_layer``, ``num_attention_heads`` -> ``n_head``,
``num_key_value_heads`` -> ``n_kv_head``, ``intermediate_size`` -> ``ffn_hidden``,
``max_position_embeddings`` -> ``block_size``, ``rms_norm_eps`` -> ``norm_eps``,
``tie_word_embeddings`` -> ``tie_weights``). Build one on the meta device to count it
without memory: ``GPT(PRESETS["llama-3-8b"])`` under ``torch.device("meta")``.

What is *not* modelled: Mistral-7B's sliding-window attention (4096 tokens; it changes
which keys a query sees, not the parameters), and rope scaling (Llama 3.1 onwards).
"""

from __future__ import annotations

from dataclasses import replace

from lmlab.transformer import GPT2_CONFIGS, GPTConfig

__all__ = ["PRESETS", "preset"]

#: Llama-style defaults: RMSNorm, RoPE (half-split, as the Hugging Face weights are
#: stored), SwiGLU, no biases, untied output head.
_LLAMA = dict(norm="rmsnorm", positions="rope", mlp="swiglu", bias=False, tie_weights=False)

PRESETS: dict[str, GPTConfig] = {
    # GPT-2 (Radford et al. 2019): exact GELU here; the released weights used the tanh
    # approximation, mlp="gelu_tanh" (what lmlab.hf.from_hf sets).
    **{name: replace(config, mlp="gelu_tanh") for name, config in GPT2_CONFIGS.items()},
    # meta-llama/Llama-2-7b-hf (Touvron et al. 2023b)
    "llama-2-7b": GPTConfig(vocab_size=32000, block_size=4096, n_layer=32, n_head=32,
                            n_embd=4096, ffn_hidden=11008, norm_eps=1e-5, rope_theta=10000.0,
                            **_LLAMA),
    # meta-llama/Meta-Llama-3-8B (Llama Team 2024): GQA with 8 KV heads, 128K vocabulary
    "llama-3-8b": GPTConfig(vocab_size=128256, block_size=8192, n_layer=32, n_head=32,
                            n_embd=4096, n_kv_head=8, ffn_hidden=14336, norm_eps=1e-5,
                            rope_theta=500000.0, **_LLAMA),
    # mistralai/Mistral-7B-v0.1 (Jiang et al. 2023); sliding window 4096 not modelled
    "mistral-7b": GPTConfig(vocab_size=32000, block_size=32768, n_layer=32, n_head=32,
                            n_embd=4096, n_kv_head=8, ffn_hidden=14336, norm_eps=1e-5,
                            rope_theta=10000.0, **_LLAMA),
    # mistralai/Mixtral-8x7B-v0.1 (Jiang et al. 2024): 8 experts, 2 per token
    "mixtral-8x7b": GPTConfig(vocab_size=32000, block_size=32768, n_layer=32, n_head=32,
                              n_embd=4096, n_kv_head=8, ffn_hidden=14336, norm_eps=1e-5,
                              rope_theta=1e6, n_expert=8, n_expert_per_token=2,
                              moe_aux_loss_coef=0.02, **_LLAMA),
    # Qwen/Qwen2.5-0.5B (Qwen Team 2024): biases on q, k, v only; tied embeddings
    "qwen2.5-0.5b": GPTConfig(vocab_size=151936, block_size=32768, n_layer=24, n_head=14,
                              n_embd=896, n_kv_head=2, ffn_hidden=4864, norm_eps=1e-6,
                              rope_theta=1e6, qkv_bias=True,
                              **{**_LLAMA, "tie_weights": True}),
}


def preset(name_or_config: str | GPTConfig) -> GPTConfig:
    """A preset by name (see :data:`PRESETS`), or a config passed through unchanged."""
    if isinstance(name_or_config, GPTConfig):
        return name_or_config
    if name_or_config not in PRESETS:
        raise ValueError(f"unknown preset {name_or_config!r}; expected one of {sorted(PRESETS)} "
                         f"or a GPTConfig")
    return PRESETS[name_or_config]
