"""Load Hugging Face ``transformers`` weights into lmlab's :class:`~lmlab.transformer.GPT`.

What a reader would do with real weights (the course itself never downloads any)::

    from transformers import AutoModelForCausalLM
    hf_model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-0.5B", dtype=torch.float32)
    model = from_hf(hf_model)  # an lmlab GPT computing the same logits

The unit tests check ≤ 1e-5 in float32 for GPT-2, Llama, Mistral, Mixtral and Qwen2, built
from configs with random weights.
The conversion is a renaming plus three changes of layout:

* GPT-2 stores its linear maps as ``Conv1D`` with the weight as (in, out); ``nn.Linear``
  wants (out, in), so those weights are transposed.
* Llama-style models keep ``q_proj``, ``k_proj``, ``v_proj`` apart; lmlab's attention has
  one ``c_attn`` map, so the three are stacked (rows: all queries, then keys, then values).
* Mixtral (``transformers`` ≥ 5) stores the experts as one tensor ``gate_up_proj``
  (E, 2F, C), gate rows first; lmlab has one SwiGLU per expert (``w1`` = gate, ``w3`` = up,
  ``w2`` = down).

Hugging Face stores RoPE weights for the *half-split* pairing; loading into a model with
``rope_style="interleaved"`` reorders the q and k rows of each head
(:func:`lmlab.rope.half_to_interleaved_weight`), which gives the same model.

Not covered: RoPE scaling (Llama 3.1+), Mistral's sliding window (a warning: results
agree up to 4096 tokens), Llama models with ``attention_bias``/``mlp_bias``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import replace

import torch

from lmlab.rope import half_to_interleaved_weight
from lmlab.transformer import GPT, GPTConfig

__all__ = ["config_from_hf", "convert_hf_state_dict", "load_hf_state_dict", "from_hf"]

_LLAMA_TYPES = ("llama", "mistral", "mixtral", "qwen2")

# Hugging Face name (after "model.layers.{i}.") -> lmlab name (after "transformer.h.{i}.")
_LLAMA_LAYER = {
    "input_layernorm.weight": "ln_1.weight",
    "post_attention_layernorm.weight": "ln_2.weight",
    "self_attn.o_proj.weight": "attn.c_proj.weight",
    "mlp.gate_proj.weight": "mlp.w1.weight",
    "mlp.up_proj.weight": "mlp.w3.weight",
    "mlp.down_proj.weight": "mlp.w2.weight",
    "mlp.gate.weight": "mlp.gate.weight",  # Mixtral's router (transformers >= 5)
    "block_sparse_moe.gate.weight": "mlp.gate.weight",  # ... and before
}
_GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _rope_theta(hf_config) -> float:
    params = getattr(hf_config, "rope_parameters", None) or {}
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if kind != "default":
        raise ValueError(f"rope scaling of type {kind!r} is not supported by lmlab's RoPE")
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", None))
    return float(theta if theta is not None else 10000.0)


def config_from_hf(hf_config) -> GPTConfig:
    """A :class:`GPTConfig` equal to a ``transformers`` config of GPT-2, Llama, Mistral,
    Mixtral or Qwen2 (``hf_config.model_type``)."""
    kind = getattr(hf_config, "model_type", None)
    c = hf_config
    if kind == "gpt2":
        activations = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
        if c.activation_function not in activations:
            raise ValueError(f"GPT-2 activation_function {c.activation_function!r} is not "
                             f"supported; expected one of {sorted(activations)}")
        return GPTConfig(vocab_size=c.vocab_size, block_size=c.n_positions, n_layer=c.n_layer,
                         n_head=c.n_head, n_embd=c.n_embd, norm_eps=c.layer_norm_epsilon,
                         mlp=activations[c.activation_function],
                         ffn_hidden=c.n_inner, tie_weights=c.tie_word_embeddings)
    if kind not in _LLAMA_TYPES:
        raise ValueError(f"model_type {kind!r} is not supported; expected 'gpt2' or one of "
                         f"{_LLAMA_TYPES}")
    head_dim = getattr(c, "head_dim", None)
    if head_dim not in (None, c.hidden_size // c.num_attention_heads):
        raise ValueError(f"head_dim={head_dim} differs from hidden_size // num_attention_heads;"
                         f" lmlab's attention assumes they are equal")
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise ValueError("Llama models with attention_bias or mlp_bias are not supported")
    if getattr(c, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {c.hidden_act!r} is not supported; expected 'silu'")
    window = getattr(c, "sliding_window", None)
    if window is not None and window < c.max_position_embeddings and (
            kind != "qwen2" or getattr(c, "use_sliding_window", False)):
        warnings.warn(f"sliding_window={window} is not modelled: lmlab attends to the whole "
                      f"context, so results agree with the original up to {window} tokens",
                      stacklevel=2)
    moe = dict(n_expert=c.num_local_experts, n_expert_per_token=c.num_experts_per_tok,
               moe_aux_loss_coef=c.router_aux_loss_coef) if kind == "mixtral" else {}
    return GPTConfig(vocab_size=c.vocab_size, block_size=c.max_position_embeddings,
                     n_layer=c.num_hidden_layers, n_head=c.num_attention_heads,
                     n_embd=c.hidden_size, n_kv_head=c.num_key_value_heads,
                     ffn_hidden=c.intermediate_size, norm="rmsnorm", norm_eps=c.rms_norm_eps,
                     positions="rope", rope_theta=_rope_theta(c), mlp="swiglu", bias=False,
                     qkv_bias=kind == "qwen2", tie_weights=c.tie_word_embeddings, **moe)


def _gpt2_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in sd.items():
        if re.fullmatch(r"transformer\.h\.\d+\.attn\.(masked_)?bias", name):
            continue  # old versions keep the causal mask as a buffer
        out[name] = tensor.t() if name.endswith(_GPT2_CONV1D) else tensor
    return out


def _llama_state_dict(sd: Mapping[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    out = {"transformer.wte.weight": sd["model.embed_tokens.weight"],
           "transformer.ln_f.weight": sd["model.norm.weight"],
           "lm_head.weight": sd.get("lm_head.weight", sd["model.embed_tokens.weight"])}
    for i in range(config.n_layer):
        hf, lm = f"model.layers.{i}.", f"transformer.h.{i}."
        for hf_name, lm_name in _LLAMA_LAYER.items():
            if hf + hf_name in sd:
                out[lm + lm_name] = sd[hf + hf_name]
        for suffix in ("weight", "bias"):
            q, k, v = (sd.get(f"{hf}self_attn.{p}_proj.{suffix}") for p in "qkv")
            if q is None:
                continue
            if config.rope_style == "interleaved":
                q, k = half_to_interleaved_weight(q, config.n_head), half_to_interleaved_weight(
                    k, config.kv_heads)
            out[f"{lm}attn.c_attn.{suffix}"] = torch.cat([q, k, v], dim=0)
        out.update(_experts(sd, hf, lm, config.n_expert))
    return out


def _experts(sd, hf: str, lm: str, n_expert: int) -> dict[str, torch.Tensor]:
    """Mixtral's experts, from either layout of ``transformers``."""
    out = {}
    fused = sd.get(hf + "mlp.experts.gate_up_proj")
    for j in range(n_expert):
        new = f"{lm}mlp.experts.{j}."
        if fused is not None:  # transformers >= 5: (E, 2F, C), gate rows then up rows
            gate, up = fused[j].chunk(2, dim=0)
            out.update({new + "w1.weight": gate, new + "w3.weight": up,
                        new + "w2.weight": sd[hf + "mlp.experts.down_proj"][j]})
        else:
            old = f"{hf}block_sparse_moe.experts.{j}."
            out.update({new + f"{w}.weight": sd[old + f"{w}.weight"] for w in ("w1", "w2", "w3")})
    return out


def convert_hf_state_dict(state_dict: Mapping[str, torch.Tensor],
                          config: GPTConfig) -> dict[str, torch.Tensor]:
    """A Hugging Face state dict (GPT-2 or Llama family) renamed and reshaped for
    ``GPT(config)``; the family is read from the key names."""
    if "transformer.wte.weight" in state_dict:
        return _gpt2_state_dict(state_dict)
    if "model.embed_tokens.weight" in state_dict:
        return _llama_state_dict(state_dict, config)
    raise ValueError("state_dict has neither 'transformer.wte.weight' (GPT-2) nor "
                     "'model.embed_tokens.weight' (Llama family): not a supported checkpoint")


def load_hf_state_dict(model: GPT, state_dict: Mapping[str, torch.Tensor]) -> GPT:
    """Copy Hugging Face weights into an lmlab ``model`` built with the matching config
    (:func:`config_from_hf`); every parameter must be covered (strict). Returns ``model``."""
    converted = convert_hf_state_dict(state_dict, model.config)
    with torch.no_grad():
        model.load_state_dict(converted, strict=True)
    return model


def from_hf(hf_model, *, rope_style: str = "half", fused: bool = False) -> GPT:
    """An lmlab GPT equal to a ``transformers`` causal LM (GPT-2, Llama, Mistral, Mixtral,
    Qwen2), in its dtype and on its device, in eval mode."""
    config = replace(config_from_hf(hf_model.config), rope_style=rope_style, fused=fused)
    weight = next(hf_model.parameters())
    with torch.device("meta"):
        model = GPT(config)
    model = model.to_empty(device=weight.device).to(weight.dtype)
    if config.tie_weights:
        model.lm_head.weight = model.transformer.wte.weight  # to_empty unties shared tensors
    load_hf_state_dict(model, hf_model.state_dict())
    return model.eval()
