"""The modern (Llama-style) block: lmlab against transformers and torch, same weights.

Three comparisons, one thread, fp32 on the CPU, interleaved rounds (median ratio):

* **block**: one lmlab :class:`~lmlab.transformer.Block` built as Llama's (RMSNorm, RoPE,
  SwiGLU, grouped-query attention; ``fused=True``) against ``transformers``'
  ``LlamaDecoderLayer`` (SDPA attention) with the very same weights (copied with
  :func:`lmlab.hf.from_hf`; the outputs are checked equal), forward + backward. Both get
  the RoPE cos/sin precomputed, as their models do once per forward pass. Goal ≤ 1.1×.
  The readable ``fused=False`` block is reported too, without a goal.
* **gqa**: attention with 8 query heads sharing 2 key/value heads: lmlab's way in the
  readable layer (:func:`~lmlab.transformer.repeat_kv`, then PyTorch's fused kernel as
  the ``fused`` layer would use for MHA) against ``F.scaled_dot_product_attention(...,
  enable_gqa=True)``, which shares the heads inside the kernel. Goal ≤ 1.2×. lmlab's own
  written-out attention after ``repeat_kv`` is reported without a goal.
* **moe**: :class:`~lmlab.moe.MoEFeedForward` (8 experts, 2 per token, dispatch by
  index) against a dense SwiGLU whose hidden width is 2 experts' (the same active
  parameters), forward + backward. Goal ≤ 1.5×: the sparse layer must not run every
  expert on every token.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from benchmarks.harness import Result, compare, threads
from lmlab.attention import scaled_dot_product_attention
from lmlab.moe import MoEFeedForward
from lmlab.rope import rope_cos_sin
from lmlab.transformer import SwiGLU, repeat_kv

NAME = "modern"
THREADS = 1


def _llama_layer_pair(C: int, H: int, H_kv: int, hidden: int, fused: bool):
    """transformers' LlamaDecoderLayer and lmlab's Block with the same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmlab.hf import from_hf

    config = LlamaConfig(vocab_size=32, hidden_size=C, intermediate_size=hidden,
                         num_hidden_layers=1, num_attention_heads=H, num_key_value_heads=H_kv,
                         max_position_embeddings=4096, attn_implementation="sdpa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        hf = LlamaForCausalLM(config)
    ours = from_hf(hf, fused=fused)
    return hf.model.layers[0].train(), ours.transformer.h[0].train(), hf.model.rotary_emb


def _block_case(fused: bool, B: int, T: int, C: int, H: int, H_kv: int, hidden: int,
                rounds: int, repeat: int) -> Result:
    hf_layer, block, rotary = _llama_layer_pair(C, H, H_kv, hidden, fused)
    x = torch.randn(B, T, C, requires_grad=True)
    position_ids = torch.arange(T)[None]
    hf_rope = rotary(x, position_ids)  # (cos, sin) of the full head size, once
    our_rope = rope_cos_sin(torch.arange(T), C // H, 10000.0)

    def peer():
        return hf_layer(x, position_embeddings=hf_rope, position_ids=position_ids)

    def ours():
        return block(x, rope=our_rope)

    with torch.no_grad():
        error = (ours() - peer()).abs().max().item()
    ratio, iqr, a, b = compare(lambda: ours().sum().backward(), lambda: peer().sum().backward(),
                               rounds=rounds, warmup=1, repeat=repeat, desc=f"block fused={fused}")
    return Result(
        NAME, f"Llama block fwd+bwd vs transformers LlamaDecoderLayer, fused={fused}, "
              f"B={B} T={T} C={C} H={H} H_kv={H_kv}, {THREADS} thread",
        "time ratio lmlab/transformers", ratio, iqr, goal="≤ 1.1×" if fused else "",
        met=(ratio <= 1.1) if fused else None,
        details={"lmlab_s": a[0].median, "transformers_s": b[0].median, "max_abs_error": error})


def _block(*shape_and_rounds) -> list[Result]:
    return [_block_case(fused, *shape_and_rounds) for fused in (True, False)]


def _gqa(B: int, T: int, H: int, H_kv: int, D: int, rounds: int, repeat: int) -> list[Result]:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, H, T, D, generator=g)
    k, v = (torch.randn(B, H_kv, T, D, generator=g) for _ in range(2))
    n_rep = H // H_kv

    def peer():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def shared_kv_fused():
        return F.scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep),
                                              is_causal=True)

    def shared_kv_readable():
        return scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep),
                                            causal=True)

    error = max((fn() - peer()).abs().max().item() for fn in (shared_kv_fused, shared_kv_readable))
    results = []
    for label, fn, goal in (("repeat_kv + torch SDPA", shared_kv_fused, 1.2),
                            ("repeat_kv + lmlab attention (readable)", shared_kv_readable, None)):
        ratio, iqr, a, b = compare(fn, peer, rounds=rounds, warmup=1, repeat=repeat,
                                   desc=f"gqa {label}")
        results.append(Result(
            NAME, f"GQA {label} vs SDPA enable_gqa, causal, q ({B}, {H}, {T}, {D}), "
                  f"{H_kv} KV heads, {THREADS} thread",
            "time ratio lmlab/torch", ratio, iqr, goal="≤ 1.2×" if goal else "",
            met=(ratio <= goal) if goal else None,
            details={"lmlab_s": a[0].median, "torch_s": b[0].median, "max_abs_error": error}))
    return results


def _moe(N: int, C: int, hidden: int, E: int, k: int, rounds: int, repeat: int) -> list[Result]:
    torch.manual_seed(2)
    moe = MoEFeedForward(C, hidden, E, k)
    dense = SwiGLU(C, k * hidden)  # the parameters one token uses in the MoE, router aside
    x = torch.randn(N, C, requires_grad=True)
    # how evenly the random router spreads the tokens (the slowest expert sets the pace)
    _, idx = torch.topk(moe.gate(x), k)
    busiest = torch.bincount(idx.flatten(), minlength=E).max().item() / (N * k / E)
    ratio, iqr, a, b = compare(lambda: moe(x).sum().backward(), lambda: dense(x).sum().backward(),
                               rounds=rounds, warmup=1, repeat=repeat, desc="moe")
    return [Result(
        NAME, f"MoE ({E} experts, top-{k}, dispatch by index) fwd+bwd vs dense SwiGLU of "
              f"{k}×{hidden} hidden, N={N} tokens, C={C}, {THREADS} thread",
        "time ratio MoE/dense", ratio, iqr, goal="≤ 1.5×", met=ratio <= 1.5,
        details={"moe_s": a[0].median, "dense_s": b[0].median,
                 "busiest_expert_load": busiest})]


def run(quick: bool = False) -> list[Result]:
    rounds, repeat = (1, 1) if quick else (9, 3)
    with threads(THREADS):
        if quick:
            return (_block(1, 16, 32, 4, 2, 64, rounds, repeat)
                    + _gqa(1, 16, 4, 2, 8, rounds, repeat)
                    + _moe(32, 16, 32, 4, 2, rounds, repeat))
        return (_block(1, 256, 512, 8, 2, 1408, rounds, repeat)
                + _gqa(1, 1024, 8, 2, 64, rounds, repeat)
                + _moe(512, 512, 1408, 8, 2, rounds, repeat))


if __name__ == "__main__":
    for result in run(quick=False):
        print(f"{result.case:100s} {result.value:8.3f} ±{result.iqr:.3f} {result.goal} {result.met}")
