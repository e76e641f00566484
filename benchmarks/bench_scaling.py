"""lmlab.scaling's estimates against what this machine measures.

* FLOPs: ``training_flops`` (6·N·D + 12·L·T·d·D) against PyTorch's ``FlopCounterMode``
  on a forward + backward pass of ``lmlab.transformer.GPT``; ratio estimate / measured.
* Memory: ``memory_estimate`` against ``measure_training_memory`` (parameter, gradient and
  optimizer-state tensors; activations saved for backward, followed live by
  ``SavedTensorMeter``), with and without activation checkpointing; ratio measured /
  estimated.
* Time: one training step of the same GPT, timed, against its FLOPs at this CPU's
  estimated peak: the MFU a small model reaches here (the quantity ``training_cost``
  divides by).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from benchmarks.harness import Result
from lmlab import scaling
from lmlab.device import peak_flops, time_fn
from lmlab.transformer import GPT, GPTConfig, count_parameters

NAME = "scaling"

FULL = [(4, 128, 4, 128, 8, 1000), (6, 256, 8, 256, 4, 2000)]
QUICK = [(2, 64, 4, 32, 4, 100)]


def _model(L, C, H, T, V):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C))


def _checkpointed_loss(model, idx):
    g, T = model.transformer, idx.shape[1]
    x = g.wte(idx) + g.wpe(torch.arange(T))
    for block in g.h:
        x = checkpoint(block, x, use_reentrant=True)
    logits = model.lm_head(g.ln_f(x))
    return F.cross_entropy(logits.flatten(0, 1), idx.flatten())


def _flops(cfg) -> Result:
    L, C, H, T, B, V = cfg
    model = _model(L, C, H, T, V)
    idx = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    measured = scaling.measure_training_flops(lambda: model(idx, idx)[1].backward())
    estimate = scaling.training_flops(scaling.matmul_params(model), B * T, n_layer=L, seq_len=T, d_model=C)
    ratio = estimate / measured
    return Result(NAME, f"training_flops vs FlopCounterMode, GPT L={L} d={C} T={T}",
                  "FLOPs ratio estimate/measured", ratio, goal="= 1 (±1e-6)",
                  met=abs(ratio - 1) < 1e-6, details={"measured": measured, "estimate": estimate})


def _memory(cfg, ckpt: bool) -> list[Result]:
    L, C, H, T, B, V = cfg
    model = _model(L, C, H, T, V)
    idx = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    loss_fn = (lambda m: _checkpointed_loss(m, idx)) if ckpt else (lambda m: m(idx, idx)[1])
    measured = scaling.measure_training_memory(model, loss_fn, torch.optim.AdamW(model.parameters()))
    estimate = scaling.memory_estimate(
        count_parameters(model), optimizer="adamw", precision="fp32", batch=B, seq_len=T, n_layer=L,
        d_model=C, n_heads=H, vocab_size=V, profile="lmlab", activation_checkpointing=ckpt,
    )
    label = f"GPT L={L} d={C} T={T} B={B}" + (", checkpointing" if ckpt else "")
    results = []
    for part in ("activations", "total"):
        ratio = measured.as_dict()[part] / estimate.as_dict()[part]
        results.append(Result(NAME, f"memory_estimate vs measured, {label}",
                              f"{part} bytes ratio measured/estimated", ratio, goal="within 15 %",
                              met=abs(ratio - 1) <= 0.15,
                              details={"measured": measured.as_dict()[part], "estimate": estimate.as_dict()[part]}))
    return results


def _mfu(cfg, quick: bool) -> Result:
    L, C, H, T, B, V = cfg
    model = _model(L, C, H, T, V)
    idx = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        model(idx, idx)[1].backward()
        opt.step()

    timing = time_fn(step, warmup=1 if quick else 2, repeat=3 if quick else 7)
    flops = scaling.training_flops(scaling.matmul_params(model), B * T, n_layer=L, seq_len=T, d_model=C)
    peak = peak_flops("cpu").flops_per_s
    mfu = flops / timing.median / peak
    return Result(NAME, f"training step of GPT L={L} d={C} T={T} B={B} on this CPU",
                  "MFU (model FLOP/s / estimated peak)", mfu, iqr=mfu * timing.iqr / timing.median,
                  goal="informational", details={"step_s": timing.median, "flops": flops, "peak": peak})


def run(quick: bool = False) -> list[Result]:
    configs = QUICK if quick else FULL
    results = [_flops(cfg) for cfg in configs]
    for cfg in configs:
        results += _memory(cfg, ckpt=False) + _memory(cfg, ckpt=True)
    results.append(_mfu(configs[-1], quick))
    return results


if __name__ == "__main__":
    for r in run(quick=False):
        print(f"{r.case:<70} {r.metric:<40} {r.value:8.4f} {r.goal:<14} {r.met}")
