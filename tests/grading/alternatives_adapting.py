"""Correct but different implementations of chapter 10's parts (masked LM, LoRA, SFT labels,
DPO, multiple-choice scoring, distillation), as a student might write them."""

EXTRA = {
    "ch10_adapting": {
        "mlm_mask": """\
import torch

def mlm_mask(ids, *, mask_id, vocab_size, special_ids=(), p=0.15, generator=None):
    # one loop over positions; draws in another order than the reference's
    inputs, labels = ids.clone(), torch.full_like(ids, -100)
    u = torch.rand(ids.numel(), generator=generator).tolist()
    v = torch.rand(ids.numel(), generator=generator).tolist()
    tokens = torch.randint(0, vocab_size, (ids.numel(),), generator=generator).tolist()
    flat_in, flat_lab = inputs.view(-1), labels.view(-1)
    for i, tok in enumerate(ids.reshape(-1).tolist()):
        if tok in special_ids or u[i] >= p:
            continue
        flat_lab[i] = tok
        if v[i] < 0.8:
            flat_in[i] = mask_id
        elif v[i] < 0.9:
            flat_in[i] = tokens[i]
    return inputs, labels
""",
        "lora_init": """\
import math
import torch

def lora_init(in_features, out_features, r, *, generator=None):
    A = torch.empty(r, in_features)
    torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
    return A, A.new_zeros(out_features, r)
""",
        "lora_forward": """\
import torch

def lora_forward(x, weight, bias, A, B, *, alpha, r):
    merged = weight + (alpha / r) * torch.einsum("or,ri->oi", B, A)
    y = torch.einsum("...i,oi->...o", x, merged)
    return y if bias is None else y + bias
""",
        "sft_labels": """\
import torch

def sft_labels(prompt_ids, response_ids, *, ignore_index=-100):
    seq = prompt_ids.tolist() + response_ids.tolist()
    n = len(prompt_ids)
    labels = [seq[j + 1] if j + 1 >= n else ignore_index for j in range(len(seq) - 1)]
    return torch.tensor(seq[:-1]), torch.tensor(labels)
""",
        "dpo_loss": """\
import torch

def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
             ref_rejected_logps, *, beta=0.1):
    z = beta * (policy_chosen_logps - policy_rejected_logps
                - ref_chosen_logps + ref_rejected_logps)
    return torch.nn.functional.softplus(-z).mean()
""",
        "mc_score": """\
import torch

def mc_score(token_logprobs, *, normalize=False):
    scores = []
    for lp in token_logprobs:
        total = 0.0
        for value in lp.tolist():
            total += value
        scores.append(total / len(lp) if normalize else total)
    return torch.tensor(scores)
""",
        "distill_loss": """\
import torch
import torch.nn.functional as F

def distill_loss(student_logits, teacher_logits, *, temperature):
    V = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, V) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.reshape(-1, V) / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature ** 2
""",
    },
}
