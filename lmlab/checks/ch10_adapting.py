"""Checks for exercise ch10_adapting: from a language model to an assistant.

Seven parts: BERT's masking (``mlm_mask``), LoRA's initialisation and forward pass
(``lora_init``, ``lora_forward``), the labels of instruction tuning (``sft_labels``), the
DPO loss (``dpo_loss``), multiple-choice scoring (``mc_score``) and the distillation loss
(``distill_loss``).

Two parts draw random numbers, and a correct solution may draw them in any order, so their
checks compare *properties* instead of values: :class:`RepeatedCase` calls the function
three times (twice with generators seeded alike, once with another seed, while the global
RNG is moved between the calls) and the comparison looks at the rates, the positions left
alone and the reproducibility of what came back.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmlab import compress, finetune
from lmlab.checks.core import Case, Mistake, Part, close, describe, exact, make_check

__all__ = [
    "check_mlm_mask",
    "check_lora_init",
    "check_lora_forward",
    "check_sft_labels",
    "check_dpo_loss",
    "check_mc_score",
    "check_distill_loss",
]

CHAPTER = "ch10_adapting"
IGNORE = -100


# --------------------------------------------------------------------------- random parts


@dataclass
class Runs:
    """What a randomised function returned on one case: three runs and the case's inputs."""

    outputs: list
    info: dict

    def __repr__(self) -> str:  # what a failing check prints as "expected" and "got"
        return f"<{len(self.outputs)} runs, the first: {describe(self.outputs[0])}>"


class RepeatedCase(Case):
    """Calls ``fn`` three times: generator seeded ``s``, again ``s``, then ``s + 1``.

    The global RNG is reseeded differently before each call (and restored afterwards), so a
    function that ignores ``generator`` is not reproducible and is caught.
    """

    def __init__(self, args, kwargs, label, *, seed: int, info: dict):
        super().__init__(args, kwargs, label)
        self.seed = seed
        self.info = info

    def call(self, fn):
        outputs = []
        for trial, s in enumerate((self.seed, self.seed, self.seed + 1)):
            args, kwargs = copy.deepcopy((self.args, self.kwargs))
            kwargs["generator"] = torch.Generator().manual_seed(s)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(7919 * (trial + 1) + self.seed)
                outputs.append(fn(*args, **kwargs))
        return Runs(outputs, self.info)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b))
    return False


def _signature_compare(signature) -> callable:
    """A compare function: ``got`` is right when its signature equals ``expected``'s.

    ``signature(output, info) -> list[(name, value, sentence)]``; on the first differing
    entry the sentence of the student's value is returned.
    """

    def compare(expected: Runs, got: Any) -> str | None:
        info = expected.info
        if isinstance(got, Runs):
            runs = got.outputs
        else:  # a student function called directly (not through RepeatedCase)
            runs = [got]
        want = signature(expected.outputs, info)
        have = signature(runs, info)
        for (_name, w, _), (_, h, sentence) in zip(want, have):
            if w != h:
                return sentence
        return None

    return compare


# --------------------------------------------------------------------------- mlm_mask


def _rate_class(f: float, target: float) -> str:
    if abs(f - target) < 0.04:
        return "ok"
    if f < 0.01:
        return "none"
    if f > 0.99:
        return "all"
    return "other"


def _mlm_signature(runs: list, info: dict) -> list[tuple[str, Any, str]]:
    ids, mask_id, vocab, special, p = (info[k] for k in ("ids", "mask_id", "vocab", "special", "p"))
    out = runs[0]
    if not (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(t, torch.Tensor) for t in out)):
        return [("type", "bad", f"result is {describe(out)}, expected a tuple (inputs, labels) "
                 "of two tensors")]
    inputs, labels = out
    if inputs.shape != ids.shape or labels.shape != ids.shape:
        return [("type", "bad", f"inputs and labels have shapes {tuple(inputs.shape)} and "
                 f"{tuple(labels.shape)}, expected both {tuple(ids.shape)} (the shape of ids)")]
    if inputs.dtype.is_floating_point or labels.dtype.is_floating_point:
        return [("type", "bad", f"inputs and labels have dtypes {inputs.dtype} and "
                 f"{labels.dtype}: token ids are integers (torch.long)")]
    inputs, labels = inputs.long(), labels.long()
    is_special = torch.isin(ids, torch.tensor(list(special) or [-1]))
    chosen = labels != IGNORE
    n_chosen = int(chosen.sum())
    eligible = int((~is_special).sum())
    rate = n_chosen / max(1, eligible)
    sig = [("type", "ok", "")]
    sig.append(("special", bool((chosen & is_special).any() or (inputs != ids)[is_special].any()),
                "a special token ([CLS], [SEP], [PAD]) was selected or changed: they are never "
                "masked"))
    sig.append(("labels", bool(torch.equal(labels[chosen], ids[chosen])),
                "at the selected positions labels must hold the original token (ids), the "
                "one the model has to recover"))
    sig.append(("untouched", bool(torch.equal(inputs[~chosen], ids[~chosen])),
                "a position that was not selected (label -100) has a changed input: only "
                "selected positions are replaced"))
    special_hit = sig[1][1]
    if special_hit:
        bucket = "n/a"  # already wrong; the rate would only blur the diagnosis
    elif abs(rate - p) < 0.025:
        bucket = "p"
    elif abs(rate - 1.0) < 1e-9:
        bucket = "all"
    elif abs(rate - 0.15) < 0.025:
        bucket = "0.15"
    else:
        bucket = "other"
    sig.append(("rate", bucket, f"you selected {rate:.1%} of the ordinary tokens; each one "
                f"should be selected with probability p = {p}"))
    ordinary = chosen & ~is_special  # ids equal to mask_id would count as masked and kept
    n_ord = max(1, int(ordinary.sum()))
    sel_in, sel_id = inputs[ordinary], ids[ordinary]
    frac_mask = float((sel_in == mask_id).sum()) / n_ord
    frac_keep = float((sel_in == sel_id).sum()) / n_ord
    frac_rand = 1.0 - frac_mask - frac_keep
    split = tuple(_rate_class(f, target) for f, target in
                  ((frac_mask, 0.8), (frac_rand, 0.1), (frac_keep, 0.1)))
    sig.append(("split", split, f"of the selected tokens {frac_mask:.0%} became [MASK], "
                f"{frac_rand:.0%} a random token and {frac_keep:.0%} stayed; expected "
                "80 % / 10 % / 10 %"))
    swapped = chosen & (inputs != mask_id) & (inputs != ids)
    in_range = bool(((inputs[swapped] >= 0) & (inputs[swapped] < vocab)).all())
    sig.append(("range", in_range, f"some random replacements lie outside [0, vocab_size = "
                f"{vocab}): draw them with torch.randint(vocab_size, ...)"))
    if len(runs) == 3:
        sig.append(("reproducible", _same(runs[0], runs[1]),
                    "two calls with generators seeded alike gave different results: draw "
                    "every random number from `generator` (torch.rand(..., generator="
                    "generator)), not from the global RNG"))
        sig.append(("seed-sensitive", not _same(runs[0], runs[2]),
                    "two calls with differently seeded generators gave the same result: the "
                    "masking must be random"))
    return sig


def _mlm_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    settings = [  # (shape, p, vocab, n special ids)
        ((8, 3000), 0.15, 1000, 3),
        ((5, 5000), 0.15, 5000, 4),
        ((12, 2000), 0.3, 800, 3),
        ((6, 3500), 0.2, 3000, 2),
    ]
    for i, (shape, p, vocab, n_special) in enumerate(settings):
        gen = torch.Generator().manual_seed(seed * 31 + i)
        special = [vocab + k for k in range(n_special)]  # after the ordinary ids
        mask_id = special[0] if i % 2 else special[-1]
        ids = torch.randint(vocab, shape, generator=gen)
        # sprinkle the special tokens: a [CLS]-like start, [SEP]-like ends, [PAD] runs
        ids.view(-1)[:: 97] = special[-1 % n_special]
        flat = ids.view(-1)
        flat[torch.randperm(flat.numel(), generator=gen)[: flat.numel() // 12]] = special[1]
        ids[:, 0] = special[0]
        ids[:, -rng.randint(50, 300):] = special[-1]
        info = {"ids": ids.clone(), "mask_id": mask_id, "vocab": vocab,
                "special": tuple(special), "p": p}
        kwargs = {"mask_id": mask_id, "vocab_size": vocab, "special_ids": tuple(special), "p": p}
        cases.append(RepeatedCase((ids,), kwargs, f"{tuple(shape)} ids, p={p}, "
                                  f"{n_special} special ids", seed=(seed * 7919 + 104_729 * (i + 1)) % 2**31,
                                  info=info))
    return cases


def _mlm_variant(ids, *, mask_id, vocab_size, special_ids=(), p=0.15, generator=None,
                 split=(0.8, 0.1), mask_special=False, labels_all=False, labels_inputs=False,
                 fixed_p=None, use_global=False):
    gen = None if use_global else generator
    special = torch.isin(ids, torch.tensor(list(special_ids) or [-1]))
    prob = p if fixed_p is None else fixed_p
    chosen = torch.rand(ids.shape, generator=gen) < prob
    if not mask_special:
        chosen &= ~special
    u = torch.rand(ids.shape, generator=gen)
    rand_tok = torch.randint(vocab_size, ids.shape, generator=gen)
    inputs = ids.clone()
    to_mask = chosen & (u < split[0])
    to_rand = chosen & (u >= split[0]) & (u < split[0] + split[1])
    inputs[to_mask] = mask_id
    inputs[to_rand] = rand_tok[to_rand]
    if labels_all:
        labels = ids.clone()
    elif labels_inputs:
        labels = torch.where(chosen, inputs, torch.full_like(ids, IGNORE))
    else:
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, labels


def _mlm(**opts):
    return lambda ids, **kw: _mlm_variant(ids, **kw, **opts)


MLM_MISTAKES = [
    Mistake("special-masked",
            "special tokens ([CLS], [SEP], [PAD]) were selected for masking. Exclude them "
            "before drawing: a position whose id is in special_ids is never selected and "
            "keeps label -100.",
            _mlm(mask_special=True)),
    Mistake("all-mask",
            "every selected token became [MASK]. BERT replaces 80 % of the selected tokens "
            "with [MASK], 10 % with a random token and leaves 10 % unchanged, so that the "
            "model cannot learn that only [MASK] positions matter (it never sees [MASK] "
            "when fine-tuned).",
            _mlm(split=(1.0, 0.0))),
    Mistake("no-random",
            "no selected token became a random token: of the selected tokens 80 % become "
            "[MASK], 10 % a random id from the vocabulary and 10 % stay as they are.",
            _mlm(split=(0.8, 0.0))),
    Mistake("no-keep",
            "no selected token was left unchanged: of the selected tokens 80 % become [MASK], "
            "10 % a random id and 10 % stay as they are (and still get a label).",
            _mlm(split=(0.8, 0.2))),
    Mistake("labels-everywhere",
            "your labels hold a token at every position. The loss is computed only at the "
            "selected positions: set labels to -100 everywhere else.",
            _mlm(labels_all=True)),
    Mistake("labels-corrupted",
            "your labels hold the corrupted inputs ([MASK] or the random token); the label "
            "is the original token from ids, the one the model must recover.",
            _mlm(labels_inputs=True)),
    Mistake("p-ignored",
            "you selected 15 % of the tokens whatever p was: use the argument p.",
            _mlm(fixed_p=0.15)),
    Mistake("global-rng",
            "your random numbers do not come from `generator`: pass generator=generator to "
            "every torch.rand / torch.randint / torch.randperm call, so that the same seed "
            "gives the same masking.",
            _mlm(use_global=True)),
]


def _mlm_reference(ids, *, mask_id, vocab_size, special_ids=(), p=0.15, generator=None):
    return finetune.mlm_mask(ids, mask_id=mask_id, vocab_size=vocab_size,
                             special_ids=special_ids, p=p, generator=generator)


# --------------------------------------------------------------------------- lora_init


def _lora_init_signature(runs: list, info: dict) -> list[tuple[str, Any, str]]:
    fan_in, fan_out, r = info["in"], info["out"], info["r"]
    out = runs[0]
    if not (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(t, torch.Tensor) for t in out)):
        return [("type", "bad", f"result is {describe(out)}, expected a tuple (A, B) of two "
                 "tensors")]
    A, B = out
    if A.shape != (r, fan_in) or B.shape != (fan_out, r):
        return [("type", "bad", f"A has shape {tuple(A.shape)} and B {tuple(B.shape)}; "
                 f"expected A (r, in_features) = {(r, fan_in)} and B (out_features, r) = "
                 f"{(fan_out, r)}")]
    if not (A.is_floating_point() and B.is_floating_point()):
        return [("type", "bad", f"A and B have dtypes {A.dtype} and {B.dtype}, expected float")]
    sig = [("type", "ok", "")]
    sig.append(("B-zero", bool((B == 0).all()),
                "B is not all zeros, so B·A ≠ 0 and the wrapped model already differs from "
                "the pretrained one before the first training step. Start B at zero."))
    bound = 1 / math.sqrt(fan_in)
    a_zero = bool((A == 0).all())
    sig.append(("A-zero", a_zero,
                "A is all zeros: with A = 0 and B = 0 both gradients are zero (∂L/∂B ∝ A and "
                "∂L/∂A ∝ B), and LoRA never learns. A must be random."))
    if not a_zero:
        inside = bool((A.abs() <= bound * (1 + 1e-6)).all())
        ratio = float(A.double().std()) / (bound / math.sqrt(3))  # U(-b, b) has std b/√3
        sig.append(("A-range", inside and abs(ratio - 1) < 0.2,
                    f"A's entries do not look like U(−1/√in, 1/√in) = U(−{bound:.3g}, "
                    f"{bound:.3g}): their std is {float(A.std()):.3g}, expected about "
                    f"{bound / math.sqrt(3):.3g}"))
    if len(runs) == 3:
        sig.append(("reproducible", _same(runs[0], runs[1]),
                    "two calls with generators seeded alike gave different A: draw A with "
                    "generator=generator"))
        sig.append(("seed-sensitive", a_zero or not _same(runs[0], runs[2]),
                    "two calls with differently seeded generators gave the same A"))
    return sig


def _lora_init_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for i in range(4):
        fan_in, fan_out = rng.choice([(64, 48), (40, 96), (128, 128), (30, 72)])
        r = [4, 8, 2, 16][i]
        info = {"in": fan_in, "out": fan_out, "r": r}
        cases.append(RepeatedCase((fan_in, fan_out, r), {}, f"in={fan_in}, out={fan_out}, r={r}",
                                  seed=(seed * 7919 + 15_485_863 * (i + 1)) % 2**31,
                                  info=info))
    return cases


def _init_variant(in_features, out_features, r, *, generator=None, b_random=False,
                  a_zero=False, a_scale=None, use_global=False):
    gen = None if use_global else generator
    bound = 1 / math.sqrt(in_features) if a_scale is None else a_scale
    A = (torch.rand(r, in_features, generator=gen) * 2 - 1) * bound
    B = torch.zeros(out_features, r)
    if b_random:
        B = (torch.rand(out_features, r, generator=gen) * 2 - 1) / math.sqrt(r)
    if a_zero:
        A = torch.zeros(r, in_features)
    return A, B


def _lora_init_reference(in_features, out_features, r, *, generator=None):
    """A ~ U(-1/√in, 1/√in) (what peft's kaiming_uniform_(a=√5) gives), B = 0."""
    return _init_variant(in_features, out_features, r, generator=generator)


LORA_INIT_MISTAKES = [
    Mistake("B-random",
            "B is random, so the product B·A is not zero and the wrapped model's output "
            "changes before any training: the fine-tuning run starts from a damaged model. "
            "LoRA initialises B = 0 (and A random), so that training starts exactly at the "
            "pretrained model.",
            lambda i, o, r, *, generator=None: _init_variant(i, o, r, generator=generator,
                                                              b_random=True)),
    Mistake("both-zero",
            "A and B are both zero: the gradient of B is proportional to A and the gradient "
            "of A to B, so both stay zero for ever. Only B starts at zero; A is random.",
            lambda i, o, r, *, generator=None: _init_variant(i, o, r, a_zero=True)),
    Mistake("A-zero-B-random",
            "you made A zero and B random. The product is zero at the start either way, but "
            "the convention (the LoRA paper, peft, this chapter) is A random and B = 0, and "
            "the checks of lora_forward assume it.",
            lambda i, o, r, *, generator=None: _init_variant(i, o, r, generator=generator,
                                                              a_zero=True, b_random=True)),
    Mistake("A-unit-scale",
            "A's entries are too large: draw them from U(−1/√in_features, 1/√in_features) "
            "(nn.Linear's default and peft's), not U(−1, 1).",
            lambda i, o, r, *, generator=None: _init_variant(i, o, r, generator=generator,
                                                              a_scale=1.0)),
    Mistake("global-rng",
            "A does not come from `generator`: pass generator=generator to torch.rand, so "
            "the same seed gives the same A.",
            lambda i, o, r, *, generator=None: _init_variant(i, o, r, use_global=True)),
]


# --------------------------------------------------------------------------- lora_forward


def _lora_forward_reference(x, weight, bias, A, B, *, alpha, r):
    return finetune.lora_forward(x, weight, bias, A, B, alpha=alpha, r=r)


def _lora_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(6):
        fan_in, fan_out, r = rng.choice([(12, 20, 4), (24, 10, 2), (16, 16, 8), (9, 14, 3)])
        alpha = rng.choice([1.0, 8.0, 16.0, 32.0, 2.0])
        if alpha == r:  # alpha/r = 1 would hide a missing scale
            alpha += 3.0
        lead = [(5,), (2, 7), (3, 1, 4)][i % 3]
        x = torch.randn(*lead, fan_in, generator=gen)
        weight = torch.randn(fan_out, fan_in, generator=gen) / math.sqrt(fan_in)
        bias = torch.randn(fan_out, generator=gen) if i % 3 != 1 else None
        A = torch.randn(r, fan_in, generator=gen) / math.sqrt(fan_in)
        B = torch.randn(fan_out, r, generator=gen) * 0.5
        cases.append(Case((x, weight, bias, A, B), {"alpha": alpha, "r": r},
                          label=f"x {tuple(x.shape)}, r={r}, alpha={alpha:g}"
                          + (", no bias" if bias is None else "")))
    x = torch.randn(3, 6, generator=gen)
    cases.append(Case((x, torch.randn(5, 6, generator=gen), torch.zeros(5),
                       torch.randn(2, 6, generator=gen), torch.zeros(5, 2)),
                      {"alpha": 16.0, "r": 2}, label="edge: B = 0, the layer is unchanged"))
    return cases


def _lora_variant(scale_of):
    def fn(x, weight, bias, A, B, *, alpha, r):
        y = x @ weight.T + scale_of(alpha, r) * (x @ A.T @ B.T)
        return y if bias is None else y + bias
    return fn


LORA_FORWARD_MISTAKES = [
    Mistake("no-scale",
            "you added x·Aᵀ·Bᵀ without the factor alpha/r. LoRA's update is (alpha/r)·B·A; "
            "the scale lets you change r without retuning the learning rate.",
            _lora_variant(lambda alpha, r: 1.0)),
    Mistake("scale-inverted",
            "your scale is r/alpha; it is alpha/r.",
            _lora_variant(lambda alpha, r: r / alpha)),
    Mistake("scale-alpha",
            "you scaled by alpha alone; the scale is alpha/r.",
            _lora_variant(lambda alpha, r: alpha)),
    Mistake("scale-sqrt-r",
            "you scaled by alpha/√r (rsLoRA's rule); this exercise, the LoRA paper and peft's "
            "default use alpha/r.",
            _lora_variant(lambda alpha, r: alpha / math.sqrt(r))),
    Mistake("bias-dropped",
            "you dropped the bias: y = x·Wᵀ + b + (alpha/r)·x·Aᵀ·Bᵀ (when bias is not None).",
            lambda x, weight, bias, A, B, *, alpha, r: x @ weight.T + alpha / r * (x @ A.T @ B.T)),
    Mistake("no-base",
            "your output lacks the frozen layer's own x·Wᵀ + b: LoRA adds a low-rank update "
            "to the pretrained layer, it does not replace it.",
            lambda x, weight, bias, A, B, *, alpha, r: alpha / r * (x @ A.T @ B.T)),
]


# --------------------------------------------------------------------------- sft_labels


def _sft_reference(prompt_ids, response_ids, *, ignore_index=IGNORE):
    return finetune.sft_labels(prompt_ids, response_ids, ignore_index=ignore_index)


def _sft_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(6):
        n_prompt, n_resp = rng.randint(3, 12), rng.randint(2, 9)
        if n_prompt == n_resp:
            n_prompt += 1
        prompt = torch.randint(5, 300, (n_prompt,), generator=gen)
        response = torch.randint(5, 300, (n_resp,), generator=gen)
        ignore = [IGNORE, IGNORE, -1, IGNORE, -7, IGNORE][i]
        cases.append(Case((prompt, response), {"ignore_index": ignore},
                          label=f"{n_prompt} prompt, {n_resp} response tokens, "
                          f"ignore_index={ignore}"))
    cases.append(Case((torch.tensor([11]), torch.tensor([4, 5, 6])), {"ignore_index": IGNORE},
                      label="edge: a one-token prompt (no target is ignored)"))
    cases.append(Case((torch.tensor([9, 8, 7, 6]), torch.tensor([3])), {"ignore_index": IGNORE},
                      label="edge: a one-token response (only the last target counts)"))
    return cases


def _sft_variant(prompt_ids, response_ids, ignore_index=IGNORE, *, shift=True, cut=None,
                 mask_prompt=True, hard=False, mask_response=False):
    seq = torch.cat([prompt_ids, response_ids])
    n = len(prompt_ids)
    if shift:
        inputs, labels = seq[:-1].clone(), seq[1:].clone()
        default_cut = n - 1
    else:
        inputs, labels = seq.clone(), seq.clone()
        default_cut = n
    value = IGNORE if hard else ignore_index
    cut = default_cut if cut is None else cut(n)
    if mask_response:
        labels[max(cut, 0):] = value
    elif mask_prompt:
        labels[: max(cut, 0)] = value
    return inputs, labels


SFT_MISTAKES = [
    Mistake("loss-on-prompt",
            "no label is ignored, so the loss also trains the model to predict the prompt. "
            "In instruction tuning only the response is learned: every target that is a "
            "prompt token gets ignore_index.",
            lambda p, r, *, ignore_index=IGNORE: _sft_variant(p, r, ignore_index,
                                                              mask_prompt=False)),
    Mistake("mask-one-too-many",
            "you also ignored the first response token. After the shift, labels[i] is the "
            "token at position i + 1, so the prompt's targets are labels[:len(prompt) − 1]; "
            "labels[len(prompt) − 1] is the first response token and must be kept.",
            lambda p, r, *, ignore_index=IGNORE: _sft_variant(p, r, ignore_index,
                                                              cut=lambda n: n)),
    Mistake("mask-one-too-few",
            "the last prompt token is still a target: after the shift the prompt's targets "
            "are labels[:len(prompt) − 1]; you ignored one fewer.",
            lambda p, r, *, ignore_index=IGNORE: _sft_variant(p, r, ignore_index,
                                                              cut=lambda n: n - 2)),
    Mistake("no-shift",
            "inputs and labels are the same sequence: a language model predicts the *next* "
            "token, so inputs = seq[:-1] and labels = seq[1:].",
            lambda p, r, *, ignore_index=IGNORE: _sft_variant(p, r, ignore_index, shift=False)),
    Mistake("hard-coded-ignore",
            "you wrote −100 instead of using the argument ignore_index.",
            lambda p, r, *, ignore_index=IGNORE: _sft_variant(p, r, ignore_index, hard=True)),
    Mistake("masked-response",
            "you ignored the response and kept the prompt: it is the other way round, the "
            "loss is on the response tokens only.",
            lambda p, r, *, ignore_index=IGNORE: _sft_variant(p, r, ignore_index,
                                                              mask_response=True)),
]


# --------------------------------------------------------------------------- dpo_loss


def _dpo_reference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                   ref_rejected_logps, *, beta=0.1):
    return finetune.dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                             ref_rejected_logps, beta=beta)


def _dpo_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(6):
        n = rng.randint(3, 9)
        beta = [0.1, 0.5, 0.1, 2.0, 0.05, 0.3][i]
        ref_c = -torch.rand(n, generator=gen) * 40 - 5
        ref_r = -torch.rand(n, generator=gen) * 40 - 5
        pol_c = ref_c + torch.randn(n, generator=gen) * 3
        pol_r = ref_r + torch.randn(n, generator=gen) * 3
        cases.append(Case((pol_c, pol_r, ref_c, ref_r), {"beta": beta},
                          label=f"{n} pairs, beta={beta}"))
    ref = torch.tensor([-20.0, -35.0, -12.0])
    cases.append(Case((ref.clone(), ref.clone() - 3, ref.clone(), ref.clone() - 3), {"beta": 0.1},
                      label="edge: policy = reference, loss = log 2"))
    pol_c = torch.tensor([-10.0, -400.0, -30.0])
    pol_r = torch.tensor([-500.0, -10.0, -31.0])
    cases.append(Case((pol_c, pol_r, torch.full((3,), -50.0), torch.full((3,), -50.0)),
                      {"beta": 1.0}, label="edge: huge margins (a naive log(sigmoid) overflows)"))
    return cases


def _dpo_variant(pc, pr, rc, rr, *, beta=0.1, refs=True, flip=False, use_beta=True,
                 outside=False, reduce="mean", naive=False, swap_refs=False):
    if swap_refs:
        logits = (pc - rr) - (pr - rc)
    elif refs:
        logits = (pc - rc) - (pr - rr)
    else:
        logits = pc - pr
    if flip:
        logits = -logits
    b = beta if use_beta else 1.0
    if outside:
        losses = -b * F.logsigmoid(logits)
    elif naive:
        losses = -torch.log(torch.sigmoid(b * logits))
    else:
        losses = -F.logsigmoid(b * logits)
    return losses.sum() if reduce == "sum" else losses.mean()


def _dpo(**opts):
    return lambda pc, pr, rc, rr, *, beta=0.1: _dpo_variant(pc, pr, rc, rr, beta=beta, **opts)


DPO_MISTAKES = [
    Mistake("no-reference",
            "you left out the reference model: the implicit reward is β·log(π(y|x)/π_ref(y|x)), "
            "so the margin is (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)). "
            "Without the reference the policy is pushed away from anything, not away from "
            "where it started.",
            _dpo(refs=False)),
    Mistake("sign-flipped",
            "your margin has the wrong sign: it is chosen minus rejected. With the sign "
            "flipped, minimising the loss prefers the rejected answers.",
            _dpo(flip=True)),
    Mistake("refs-swapped",
            "you subtracted the reference of the other answer: each answer's log-ratio uses "
            "its own reference log-probability, (π_w − ref_w) − (π_l − ref_l).",
            _dpo(swap_refs=True)),
    Mistake("no-beta",
            "β is missing: the loss is −log σ(β · margin).",
            _dpo(use_beta=False)),
    Mistake("beta-outside",
            "you multiplied the loss by β instead of the margin inside the sigmoid: "
            "−log σ(β · margin), not −β · log σ(margin).",
            _dpo(outside=True)),
    Mistake("sum-over-pairs",
            "you summed over the pairs; the loss is the mean over the batch of pairs.",
            _dpo(reduce="sum")),
    Mistake("naive-log-sigmoid",
            "log(sigmoid(z)) overflows to −inf for a large negative z (σ(z) rounds to 0). "
            "Use torch.nn.functional.logsigmoid(z), which computes it stably.",
            _dpo(naive=True)),
]


# --------------------------------------------------------------------------- mc_score


def _mc_reference(token_logprobs, *, normalize=False):
    return finetune.mc_score(token_logprobs, normalize=normalize)


def _mc_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(6):
        lengths = [rng.randint(1, 9) for _ in range(rng.randint(2, 5))]
        while len(set(lengths)) < 2:
            lengths[0] += 1
        choices = [-torch.rand(n, generator=gen) * 4 - 0.05 for n in lengths]
        normalize = i % 2 == 1
        cases.append(Case((choices,), {"normalize": normalize},
                          label=f"choices of lengths {lengths}, normalize={normalize}"))
    long_good = [-torch.full((8,), 0.5), -torch.tensor([2.0, 2.5])]
    for normalize in (False, True):
        cases.append(Case((long_good,), {"normalize": normalize},
                          label=f"edge: a long likely answer vs a short unlikely one, "
                          f"normalize={normalize}"))
    return cases


def _mc_variant(token_logprobs, *, normalize=False, how=None):
    scores = []
    total = sum(len(t) for t in token_logprobs)
    for t in token_logprobs:
        if how == "mean-always":
            scores.append(t.mean())
        elif how == "sum-always":
            scores.append(t.sum())
        elif how == "prob":
            scores.append(t.sum().exp() if not normalize else t.mean().exp())
        elif how == "global-length":
            scores.append(t.sum() / total if normalize else t.sum())
        elif how == "mean-prob":
            scores.append(t.exp().mean() if normalize else t.exp().sum())
        else:
            scores.append(t.mean() if normalize else t.sum())
    return torch.stack(scores)


def _mc(how):
    return lambda token_logprobs, *, normalize=False: _mc_variant(token_logprobs,
                                                                  normalize=normalize, how=how)


MC_MISTAKES = [
    Mistake("averaged-not-summed",
            "with normalize=False you averaged the log-probabilities; the log-likelihood of "
            "an answer is the SUM of its tokens' log-probabilities (log of the product of "
            "their probabilities). Divide by the length only when normalize=True.",
            _mc("mean-always")),
    Mistake("never-normalized",
            "with normalize=True you still returned the sum: divide each answer's sum by its "
            "own number of tokens (the mean log-probability per token).",
            _mc("sum-always")),
    Mistake("probability",
            "you returned probabilities (exp of the log-likelihood); return the "
            "log-likelihood itself: products of many probabilities underflow, sums of logs "
            "do not.",
            _mc("prob")),
    Mistake("global-length",
            "you divided by the total number of tokens of all answers; each answer's score is "
            "divided by its own length.",
            _mc("global-length")),
    Mistake("summed-probabilities",
            "you summed the tokens' probabilities (exp of each log-probability); the score "
            "sums the log-probabilities themselves.",
            _mc("mean-prob")),
]


# --------------------------------------------------------------------------- distill_loss


def _distill_reference(student_logits, teacher_logits, *, temperature):
    return compress.distill_loss(student_logits, teacher_logits, temperature=temperature)


def _distill_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(6):
        shape = [(6, 11), (2, 5, 9), (4, 17), (3, 2, 13), (7, 5), (1, 3, 20)][i]
        T = [2.0, 4.0, 0.5, 3.0, 1.5, 8.0][i]
        spread = rng.choice([1.0, 3.0, 5.0])
        s = torch.randn(*shape, generator=gen) * spread
        t = torch.randn(*shape, generator=gen) * spread
        cases.append(Case((s, t), {"temperature": T}, label=f"logits {tuple(shape)}, T={T}"))
    t = torch.randn(4, 7, generator=gen) * 3
    cases.append(Case((t.clone(), t.clone()), {"temperature": 2.0},
                      label="edge: student = teacher, loss 0"))
    return cases


def _distill_variant(s, t, *, temperature, t_power=2, student_T=True, teacher_T=True,
                     reverse=False, reduction="batchmean", cross_entropy=False):
    V = s.shape[-1]
    s2, t2 = s.reshape(-1, V), t.reshape(-1, V)
    log_ps = F.log_softmax(s2 / (temperature if student_T else 1.0), dim=-1)
    log_pt = F.log_softmax(t2 / (temperature if teacher_T else 1.0), dim=-1)
    if reverse:
        log_ps, log_pt = log_pt, log_ps
    if cross_entropy:
        per = -(log_pt.exp() * log_ps)
    else:
        per = log_pt.exp() * (log_pt - log_ps)
    loss = per.sum(-1).mean() if reduction == "batchmean" else per.mean()
    return loss * temperature**t_power


def _distill(**opts):
    return lambda s, t, *, temperature: _distill_variant(s, t, temperature=temperature, **opts)


DISTILL_MISTAKES = [
    Mistake("no-T-squared",
            "the factor T² is missing. Softening both distributions by T shrinks the gradient "
            "by 1/T²; multiplying the loss by T² restores its size, so the loss does not "
            "fade when T grows (Hinton et al., 2015).",
            _distill(t_power=0)),
    Mistake("T-not-squared",
            "you multiplied by T, not T²: the gradient of the softened KL shrinks like 1/T², "
            "so the loss is scaled by T².",
            _distill(t_power=1)),
    Mistake("T-student-only",
            "only the student's logits were divided by T: soften both, p_t = softmax(t/T) "
            "and p_s = softmax(s/T).",
            _distill(teacher_T=False)),
    Mistake("T-teacher-only",
            "only the teacher's logits were divided by T: soften both, p_t = softmax(t/T) "
            "and p_s = softmax(s/T).",
            _distill(student_T=False)),
    Mistake("reverse-KL",
            "you computed KL(student || teacher); distillation uses KL(teacher || student) = "
            "Σ p_t (log p_t − log p_s), the teacher's distribution is the target.",
            _distill(reverse=True)),
    Mistake("mean-over-classes",
            "you averaged over the V classes too (F.kl_div's reduction='mean'); sum the KL "
            "over the classes and average over positions only (reduction='batchmean').",
            _distill(reduction="mean")),
    Mistake("cross-entropy",
            "you returned the soft cross-entropy −Σ p_t log p_s; the KL divergence subtracts "
            "the teacher's own entropy, Σ p_t (log p_t − log p_s), so it is 0 when the "
            "student matches the teacher (same gradient, different value).",
            _distill(cross_entropy=True)),
]


# --------------------------------------------------------------------------- parts

_GUARD = [f"lmlab.finetune.{n}" for n in ("mlm_mask", "lora_forward", "lora_merge",
                                          "sft_labels", "dpo_loss", "mc_score")]


def _guard(own: str) -> list[str]:
    first = own if own.startswith("lmlab.") else f"lmlab.finetune.{own}"
    return [first] + [g for g in _GUARD + ["lmlab.compress.distill_loss"] if g != first]


check_mlm_mask = make_check(Part(
    name="mlm_mask", chapter=CHAPTER, reference=_mlm_reference, cases=_mlm_cases,
    compare=_signature_compare(_mlm_signature), mistakes=MLM_MISTAKES,
    guard=_guard("mlm_mask"), timeout=20.0,
))

check_lora_init = make_check(Part(
    name="lora_init", chapter=CHAPTER, reference=_lora_init_reference, cases=_lora_init_cases,
    compare=_signature_compare(_lora_init_signature), mistakes=LORA_INIT_MISTAKES,
    guard=_guard("lmlab.finetune.LoRALinear"),
))

check_lora_forward = make_check(Part(
    name="lora_forward", chapter=CHAPTER, reference=_lora_forward_reference, cases=_lora_cases,
    compare=close(rtol=1e-4, atol=1e-5), mistakes=LORA_FORWARD_MISTAKES,
    guard=_guard("lora_forward"),
))

check_sft_labels = make_check(Part(
    name="sft_labels", chapter=CHAPTER, reference=_sft_reference, cases=_sft_cases,
    compare=exact(), mistakes=SFT_MISTAKES, guard=_guard("sft_labels"),
))

check_dpo_loss = make_check(Part(
    name="dpo_loss", chapter=CHAPTER, reference=_dpo_reference, cases=_dpo_cases,
    compare=close(rtol=1e-4, atol=1e-6), mistakes=DPO_MISTAKES, guard=_guard("dpo_loss"),
))

check_mc_score = make_check(Part(
    name="mc_score", chapter=CHAPTER, reference=_mc_reference, cases=_mc_cases,
    compare=close(rtol=1e-5, atol=1e-6), mistakes=MC_MISTAKES, guard=_guard("mc_score"),
))

check_distill_loss = make_check(Part(
    name="distill_loss", chapter=CHAPTER, reference=_distill_reference, cases=_distill_cases,
    compare=close(rtol=1e-4, atol=1e-6), mistakes=DISTILL_MISTAKES,
    guard=_guard("lmlab.compress.distill_loss"),
))
