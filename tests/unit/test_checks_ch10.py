"""The ch10_adapting checks accept different correct solutions and name the mistakes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.checks import PARTS, run_part
from lmlab.checks.ch10_adapting import (
    check_distill_loss,
    check_dpo_loss,
    check_lora_forward,
    check_lora_init,
    check_mc_score,
    check_mlm_mask,
    check_sft_labels,
)

CH10 = sorted(name for name, part in PARTS.items() if part.chapter == "ch10_adapting")


def test_seven_parts():
    assert CH10 == sorted(["mlm_mask", "lora_init", "lora_forward", "sft_labels", "dpo_loss",
                           "mc_score", "distill_loss"])


@pytest.mark.parametrize("name, mistake", [(n, m.name) for n in CH10 for m in PARTS[n].mistakes])
def test_every_catalogued_mistake_is_named(name, mistake):
    part = PARTS[name]
    entry = next(m for m in part.mistakes if m.name == mistake)
    with pytest.raises(AssertionError) as info:
        run_part(part, entry.fn, quiet=True, seed=3)
    assert f"Likely mistake: {entry.hint}" in str(info.value)


# --------------------------------------------------------------------------- mlm_mask


def mlm_vectorized(ids, *, mask_id, vocab_size, special_ids=(), p=0.15, generator=None):
    special = torch.zeros_like(ids, dtype=torch.bool)
    for s in special_ids:
        special |= ids == s
    # draws in another order than lmlab's: replacements first, one uniform for both choices
    random_ids = torch.randint(0, vocab_size, ids.shape, generator=generator)
    u = torch.rand(ids.shape, generator=generator)
    selected = (u < p) & ~special
    inputs = ids.clone()
    v = u / p  # given u < p, v is uniform on [0, 1): reuse it for the 80/10/10 split
    inputs[selected & (v < 0.8)] = mask_id
    swap = selected & (v >= 0.8) & (v < 0.9)
    inputs[swap] = random_ids[swap]
    labels = torch.full_like(ids, -100)
    labels[selected] = ids[selected]
    return inputs, labels


def mlm_loops(ids, *, mask_id, vocab_size, special_ids=(), p=0.15, generator=None):
    inputs, labels = ids.clone(), torch.full_like(ids, -100)
    special = set(special_ids)
    draws = torch.rand(ids.numel(), 2, generator=generator).tolist()
    tokens = torch.randint(vocab_size, (ids.numel(),), generator=generator).tolist()
    flat_in, flat_lab = inputs.view(-1), labels.view(-1)
    for i, tok in enumerate(ids.view(-1).tolist()):
        if tok in special or draws[i][0] >= p:
            continue
        flat_lab[i] = tok
        if draws[i][1] < 0.8:
            flat_in[i] = mask_id
        elif draws[i][1] < 0.9:
            flat_in[i] = tokens[i]
    return inputs, labels


@pytest.mark.parametrize("fn", [mlm_vectorized, mlm_loops])
def test_mlm_mask_accepts_correct_solutions(fn):
    check_mlm_mask(fn)
    check_mlm_mask(fn, seed=5)


def test_mlm_mask_names_masked_specials_written_differently():
    def no_special(ids, *, mask_id, vocab_size, special_ids=(), p=0.15, generator=None):
        return mlm_vectorized(ids, mask_id=mask_id, vocab_size=vocab_size, p=p,
                              generator=generator)

    with pytest.raises(AssertionError, match="special tokens"):
        check_mlm_mask(no_special)


def test_mlm_mask_names_all_mask():
    def all_mask(ids, *, mask_id, vocab_size, special_ids=(), p=0.15, generator=None):
        inputs, labels = mlm_loops(ids, mask_id=mask_id, vocab_size=vocab_size,
                                   special_ids=special_ids, p=p, generator=generator)
        return torch.where(labels != -100, torch.full_like(ids, mask_id), ids), labels

    with pytest.raises(AssertionError, match="every selected token became"):
        check_mlm_mask(all_mask)


def test_mlm_mask_rejects_a_wrong_return_type():
    with pytest.raises(AssertionError, match="expected a tuple"):
        check_mlm_mask(lambda ids, **kw: ids)


# --------------------------------------------------------------------------- lora_init


def init_uniform(in_features, out_features, r, *, generator=None):
    bound = 1 / math.sqrt(in_features)
    A = torch.empty(r, in_features).uniform_(-bound, bound, generator=generator)
    return A, torch.zeros(out_features, r)


def init_kaiming(in_features, out_features, r, *, generator=None):
    A = torch.empty(r, in_features)
    torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
    return A, torch.zeros((out_features, r), dtype=A.dtype)


@pytest.mark.parametrize("fn", [init_uniform, init_kaiming])
def test_lora_init_accepts_correct_solutions(fn):
    check_lora_init(fn)
    check_lora_init(fn, seed=4)


def test_lora_init_names_random_b():
    def random_b(in_features, out_features, r, *, generator=None):
        A, _ = init_uniform(in_features, out_features, r, generator=generator)
        return A, torch.randn(out_features, r, generator=generator) * 0.01

    with pytest.raises(AssertionError, match="changes before any training"):
        check_lora_init(random_b)


# --------------------------------------------------------------------------- lora_forward


def lora_two_matmuls(x, weight, bias, A, B, *, alpha, r):
    y = x @ weight.T + (alpha / r) * ((x @ A.T) @ B.T)
    return y if bias is None else y + bias


def lora_merged_einsum(x, weight, bias, A, B, *, alpha, r):
    merged = weight + alpha / r * torch.einsum("or,ri->oi", B, A)
    return F.linear(x, merged, bias)


@pytest.mark.parametrize("fn", [lora_two_matmuls, lora_merged_einsum])
def test_lora_forward_accepts_correct_solutions(fn):
    check_lora_forward(fn)
    check_lora_forward(fn, seed=8)


def test_lora_forward_names_inverted_scale():
    def inverted(x, weight, bias, A, B, *, alpha, r):
        return F.linear(x, weight + (r / alpha) * B @ A, bias)

    with pytest.raises(AssertionError, match="your scale is r/alpha"):
        check_lora_forward(inverted)


# --------------------------------------------------------------------------- sft_labels


def sft_cat(prompt_ids, response_ids, *, ignore_index=-100):
    seq = torch.cat([prompt_ids, response_ids])
    labels = seq[1:].clone()
    labels[: len(prompt_ids) - 1] = ignore_index
    return seq[:-1], labels


def sft_lists(prompt_ids, response_ids, *, ignore_index=-100):
    seq = list(prompt_ids.tolist()) + list(response_ids.tolist())
    labels = [ignore_index if j + 1 < len(prompt_ids) else seq[j + 1] for j in range(len(seq) - 1)]
    return torch.tensor(seq[:-1]), torch.tensor(labels)


@pytest.mark.parametrize("fn", [sft_cat, sft_lists])
def test_sft_labels_accepts_correct_solutions(fn):
    check_sft_labels(fn)
    check_sft_labels(fn, seed=2)


def test_sft_labels_names_the_off_by_one():
    def off_by_one(prompt_ids, response_ids, *, ignore_index=-100):
        seq = torch.cat([prompt_ids, response_ids])
        labels = seq[1:].clone()
        labels[: len(prompt_ids)] = ignore_index
        return seq[:-1], labels

    with pytest.raises(AssertionError, match="also ignored the first response token"):
        check_sft_labels(off_by_one)


# --------------------------------------------------------------------------- dpo_loss


def dpo_softplus(pc, pr, rc, rr, *, beta=0.1):
    return F.softplus(-beta * ((pc - rc) - (pr - rr))).mean()


def dpo_float64_loop(pc, pr, rc, rr, *, beta=0.1):
    total = 0.0
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        z = beta * ((a - c) - (b - d))
        total += max(-z, 0.0) + math.log1p(math.exp(-abs(z)))  # -log sigmoid(z), stable
    return torch.tensor(total / len(pc))


@pytest.mark.parametrize("fn", [dpo_softplus, dpo_float64_loop])
def test_dpo_loss_accepts_correct_solutions(fn):
    check_dpo_loss(fn)
    check_dpo_loss(fn, seed=6)


def test_dpo_loss_names_missing_reference():
    def no_ref(pc, pr, rc, rr, *, beta=0.1):
        return -F.logsigmoid(beta * pc - beta * pr).mean()

    with pytest.raises(AssertionError, match="left out the reference model"):
        check_dpo_loss(no_ref)


# --------------------------------------------------------------------------- mc_score


def mc_stack(token_logprobs, *, normalize=False):
    return torch.stack([lp.mean() if normalize else lp.sum() for lp in token_logprobs])


def mc_padded(token_logprobs, *, normalize=False):
    padded = torch.nn.utils.rnn.pad_sequence(list(token_logprobs), batch_first=True)
    lengths = torch.tensor([len(lp) for lp in token_logprobs], dtype=padded.dtype)
    sums = padded.sum(dim=1)
    return sums / lengths if normalize else sums


@pytest.mark.parametrize("fn", [mc_stack, mc_padded])
def test_mc_score_accepts_correct_solutions(fn):
    check_mc_score(fn)
    check_mc_score(fn, seed=9)


def test_mc_score_names_averaging():
    def always_mean(token_logprobs, *, normalize=False):
        return torch.tensor([float(lp.mean()) for lp in token_logprobs])

    with pytest.raises(AssertionError, match="averaged the log-probabilities"):
        check_mc_score(always_mean)


# --------------------------------------------------------------------------- distill_loss


def distill_kl_div(student_logits, teacher_logits, *, temperature):
    V = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, V) / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.reshape(-1, V) / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature**2


def distill_by_hand(student_logits, teacher_logits, *, temperature):
    p_t = torch.softmax(teacher_logits.double() / temperature, dim=-1)
    log_p_s = torch.log_softmax(student_logits.double() / temperature, dim=-1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(dim=-1)
    return kl.mean() * temperature * temperature


@pytest.mark.parametrize("fn", [distill_kl_div, distill_by_hand])
def test_distill_loss_accepts_correct_solutions(fn):
    check_distill_loss(fn)
    check_distill_loss(fn, seed=7)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
def test_distill_loss_names_kl_div_mean():
    def kl_mean(student_logits, teacher_logits, *, temperature):
        s = F.log_softmax(student_logits / temperature, dim=-1)
        t = F.softmax(teacher_logits / temperature, dim=-1)
        return F.kl_div(s, t, reduction="mean") * temperature**2

    with pytest.raises(AssertionError, match="averaged over the V classes"):
        check_distill_loss(kl_mean)
