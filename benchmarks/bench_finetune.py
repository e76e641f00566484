"""Fine-tuning (chapter 10): LoRA against full fine-tuning and against peft, SFT, DPO,
distillation.

Speed, in one process and interleaved (ratios, not seconds): one training step (forward,
backward, AdamW) of the chapter's encoder classifier with LoRA against full fine-tuning,
and lmlab's ``apply_lora`` against ``peft.get_peft_model`` on the same small model with
the same targets. Quality, from the chapter's cached runs (:mod:`lmlab.finetune`): LoRA's
trainable share and test accuracy against full fine-tuning, SFT's held-out answer F1
against the untuned model's, DPO's held-out preference win rate against SFT's, and the
distilled student's validation loss against the same student on hard labels.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import Result, compare, threads
from lmlab import finetune as ft
from lmlab.optim import AdamW
from lmlab.transformer import count_parameters

NAME = "finetune"


def _step_fn(model: nn.Module, batch) -> callable:
    """One optimizer step of ``model`` on a fixed batch; ``batch() -> loss``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW(params, lr=1e-4)

    def step():
        loss = batch()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _tiny_encoder(quick: bool):
    from lmlab.transformer import GPTConfig

    sizes = dict(n_layer=2, n_head=2, n_embd=64, block_size=64) if quick else ft.ENCODER_CONFIG
    config = GPTConfig(vocab_size=120, dropout=0.0, fused=True, **sizes)
    torch.manual_seed(0)
    return ft.Classifier(ft.Encoder(config), 5), config


def lora_vs_full_speed(quick: bool) -> Result:
    full, config = _tiny_encoder(quick)
    lora = ft.apply_lora(copy.deepcopy(full), ["c_attn"], r=4, alpha=8, trainable=["head"])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 120, (32, config.block_size), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    y = torch.randint(0, 5, (32,), generator=g)
    steps = {name: _step_fn(m, lambda m=m: F.cross_entropy(m(ids, mask), y))
             for name, m in (("lora", lora), ("full", full))}
    ratio, iqr, _, _ = compare(steps["lora"], steps["full"], rounds=3 if quick else 7,
                               repeat=2 if quick else 5, desc="LoRA vs full step")
    return Result(NAME, f"LoRA r=4 vs full fine-tuning, one training step, "
                        f"{config.n_layer}x{config.n_embd} encoder, batch 32x{config.block_size}",
                  "time ratio LoRA/full", ratio, iqr, "≤ 0.8×", ratio <= 0.8,
                  {"trainable_lora": count_parameters(lora, trainable_only=True),
                   "trainable_full": count_parameters(full, trainable_only=True)})


class _Tiny(nn.Module):
    """Four 256-wide layers with the names a real model's projections have."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleDict({"q_proj": nn.Linear(width, width),
                                                   "v_proj": nn.Linear(width, width)})
                                    for _ in range(4))

    def forward(self, x):
        for layer in self.layers:
            x = x + torch.tanh(layer["q_proj"](x)) * layer["v_proj"](x)
        return x


def lora_vs_peft_speed(quick: bool) -> list[Result]:
    import peft

    width = 64 if quick else 256
    torch.manual_seed(0)
    base = _Tiny(width)
    targets = ["q_proj", "v_proj"]
    ours = ft.apply_lora(copy.deepcopy(base), targets, r=8, alpha=16)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    x = torch.randn(64, 32, width, generator=torch.Generator().manual_seed(0))
    steps = [_step_fn(m, lambda m=m: m(x).pow(2).mean()) for m in (ours, theirs)]
    ratio, iqr, _, _ = compare(*steps, rounds=3 if quick else 9, repeat=2 if quick else 10,
                               desc="lmlab LoRA vs peft")
    n_ours = count_parameters(ours, trainable_only=True)
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    return [Result(NAME, f"lmlab LoRA vs peft, one training step, 8 x Linear({width}, {width}), "
                         f"r=8, batch 64x32", "time ratio lmlab/peft", ratio, iqr, "≤ 1.1×",
                   ratio <= 1.1, {"trainable_lmlab": n_ours, "trainable_peft": n_theirs})]


def quality() -> list[Result]:
    full, lora = ft.run_finetune("full"), ft.run_finetune("lora")
    probe = ft.run_finetune("probe")
    share = lora["trainable"] / full["trainable"]
    gap = 100 * (full["test_acc"] - lora["test_acc"])
    base = full["baselines"]
    details = {"test_n": full["test_n"], "acc_full": full["test_acc"],
               "acc_lora": lora["test_acc"], "acc_probe": probe["test_acc"],
               "ci_full": full["test_ci"], "ci_lora": lora["test_ci"],
               "majority": base["majority"], "bag_of_words": base["bag_of_words"]}
    sft = ft.run_sft()
    f1_ratio = sft["after"]["f1"] / max(sft["before"]["f1"], 1e-9)
    dpo = ft.run_dpo()
    wins = dpo["win_rate"]
    return [
        Result(NAME, "LoRA r=4 on c_attn: trainable parameters vs full fine-tuning",
               "trainable share", share, 0.0, "≤ 2 %", share <= 0.02,
               {"lora": lora["trainable"], "full": full["trainable"]}),
        Result(NAME, f"module task, test accuracy full - LoRA (n={full['test_n']})",
               "points", gap, 0.0, "≤ 3 points", gap <= 3, details),
        Result(NAME, f"SFT held-out answer F1, tuned / untuned (n={sft['n_test']})",
               "F1 ratio", f1_ratio, 0.0, "≥ 3×", f1_ratio >= 3,
               {"f1_before": sft["before"]["f1"], "f1_after": sft["after"]["f1"],
                "exact_before": sft["before"]["exact"], "exact_after": sft["after"]["exact"]}),
        Result(NAME, f"DPO held-out preference win rate - SFT's (n={dpo['n_test']} pairs, "
                     f"beta={dpo['beta']})", "points", 100 * (wins["dpo"] - wins["sft"]), 0.0,
               "> 0", wins["dpo"] > wins["sft"],
               {**wins, "margin": dpo["margin"], "kl_proxy": dpo["kl_proxy"]}),
    ] + [_distillation(temperature, alpha) for temperature, alpha in ((2.0, 1.0), (1.0, 0.5))]


def _distillation(temperature: float, alpha: float) -> Result:
    dist = ft.run_distillation(temperature, alpha=alpha)
    soft, hard = dist["soft"]["final_val"], dist["hard"]["final_val"]
    return Result(NAME, f"distillation T={temperature}, alpha={alpha}: student val loss "
                        f"soft / hard ({dist['student_params']:,} vs teacher "
                        f"{dist['teacher_params']:,} params)",
                  "loss ratio soft/hard", soft / hard, 0.0, "< 1", soft < hard,
                  {"soft": soft, "hard": hard, "teacher": dist["teacher_val"]})


def run(quick: bool = False) -> list[Result]:
    with threads(1):
        results = [lora_vs_full_speed(quick), *lora_vs_peft_speed(quick)]
    if not quick:  # the quality numbers need the chapter's trained models (cached)
        results += quality()
    return results


if __name__ == "__main__":
    for r in run(quick=False):
        print(f"{r.case:90s} {r.metric:24s} {r.value:8.3f}  goal {r.goal}  met={r.met}")
