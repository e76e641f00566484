"""lmlab.finetune against peft (LoRA), a float64 transcription of DPO's eq. 7, and
statistics / properties for the masking and labelling helpers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lmlab.finetune import (
    CHAT_TOKENS,
    IGNORE_INDEX,
    LoRALinear,
    SpecialTokenizer,
    apply_lora,
    dpo_loss,
    dpo_rewards,
    format_chat,
    lora_forward,
    lora_merge,
    mc_score,
    mlm_mask,
    ngram_overlap,
    sequence_logprob,
    sft_labels,
    span_corruption,
    wilson_interval,
)
from lmlab.transformer import GPT, GPTConfig, count_parameters

# --------------------------------------------------------------------------- LoRA vs peft


class Tiny(nn.Module):
    """Two attention-like projections and an MLP, names chosen like a real model's."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(12, 12)
        self.v_proj = nn.Linear(12, 12)
        self.fc1 = nn.Linear(12, 20)
        self.fc2 = nn.Linear(20, 5)

    def forward(self, x):
        h = torch.tanh(self.q_proj(x)) + self.v_proj(x)
        return self.fc2(F.gelu(self.fc1(h)))


def _pair(r=4, alpha=8, targets=("q_proj", "v_proj", "fc1")):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = Tiny()
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets)))
    ours = apply_lora(copy.deepcopy(base), list(targets), r=r, alpha=alpha)
    # give B random values (both start at zero) and copy A and B from peft into ours
    with torch.no_grad():
        for name in targets:
            layer = theirs.base_model.model.get_submodule(name)
            layer.lora_B["default"].weight.normal_()
            mine = ours.get_submodule(name)
            mine.lora_A.copy_(layer.lora_A["default"].weight)
            mine.lora_B.copy_(layer.lora_B["default"].weight)
    return base, theirs, ours


def test_lora_matches_peft_outputs_and_counts():
    base, theirs, ours = _pair()
    x = torch.randn(7, 3, 12)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-6)
    assert not torch.allclose(ours(x), base(x), atol=1e-3)  # the update does something
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert count_parameters(ours, trainable_only=True) == n_theirs == 4 * (12 + 12) * 2 + 4 * (12 + 20)


def test_lora_gradients_match_peft():
    _, theirs, ours = _pair()
    x = torch.randn(5, 12)
    theirs(x).pow(2).sum().backward()
    ours(x).pow(2).sum().backward()
    for name in ("q_proj", "v_proj", "fc1"):
        layer = theirs.base_model.model.get_submodule(name)
        torch.testing.assert_close(ours.get_submodule(name).lora_A.grad,
                                   layer.lora_A["default"].weight.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.get_submodule(name).lora_B.grad,
                                   layer.lora_B["default"].weight.grad, rtol=1e-5, atol=1e-6)


def test_lora_merge_unmerge_exact_and_equal_to_peft_merge():
    _, theirs, ours = _pair()
    x = torch.randn(4, 12)
    before = ours(x)
    weight = ours.q_proj.base.weight.clone()
    for m in ours.modules():
        if isinstance(m, LoRALinear):
            m.merge()
    torch.testing.assert_close(ours(x), before, rtol=0, atol=1e-6)
    merged = theirs.merge_and_unload()
    torch.testing.assert_close(ours.q_proj.base.weight, merged.q_proj.weight, rtol=0, atol=1e-6)
    for m in ours.modules():
        if isinstance(m, LoRALinear):
            m.unmerge()
    assert torch.equal(ours.q_proj.base.weight, weight)  # bit for bit
    assert torch.equal(ours(x), before)


def test_lora_regex_targets_like_peft():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = Tiny()
    pattern = r".*_proj"
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=2, target_modules=pattern))
    ours = apply_lora(copy.deepcopy(base), pattern, r=2)
    wrapped = sorted(n for n, m in ours.named_modules() if isinstance(m, LoRALinear))
    assert wrapped == ["q_proj", "v_proj"]
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert count_parameters(ours, trainable_only=True) == n_theirs


def test_lora_starts_as_identity_and_init_like_peft():
    torch.manual_seed(0)
    lin = nn.Linear(16, 6)
    layer = LoRALinear(copy.deepcopy(lin), r=4, alpha=8)
    x = torch.randn(3, 16)
    assert torch.equal(layer(x), lin(x))  # B = 0
    assert torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / math.sqrt(16)  # kaiming_uniform(a=sqrt(5)) on fan_in 16
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 4
    assert not layer.base.weight.requires_grad and layer.lora_A.requires_grad


def test_lora_forward_and_merge_functions():
    torch.manual_seed(1)
    x, W, b = torch.randn(2, 5, 9), torch.randn(7, 9), torch.randn(7)
    A, B = torch.randn(3, 9), torch.randn(7, 3)
    y = lora_forward(x, W, b, A, B, alpha=6, r=3)
    ref = x.double() @ (W.double() + 2.0 * B.double() @ A.double()).T + b.double()
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(F.linear(x, lora_merge(W, A, B, alpha=6, r=3), b), y,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="A must be"):
        lora_forward(x, W, b, B, A, alpha=6, r=3)
    with pytest.raises(ValueError, match="weight"):
        lora_merge(W.T, A, B, alpha=6, r=3)


def test_apply_lora_on_gpt_keeps_head_trainable_and_rejects_no_match():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    apply_lora(model, ["c_attn"], r=2, alpha=4, trainable=["ln_f"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"transformer.h.0.attn.c_attn.lora_A", "transformer.h.0.attn.c_attn.lora_B",
                         "transformer.h.1.attn.c_attn.lora_A", "transformer.h.1.attn.c_attn.lora_B",
                         "transformer.ln_f.weight", "transformer.ln_f.bias"}
    logits, _ = model(torch.randint(0, 11, (2, 8)))
    assert logits.shape == (2, 8, 11)
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        apply_lora(model, ["nothing_like_this"])
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="r must be"):
        LoRALinear(nn.Linear(2, 2), r=0)


# --------------------------------------------------------------------------- DPO vs float64


def _dpo_eq7(pc, pr, rc, rr, beta):
    """Rafailov et al. (2023), eq. 7, transcribed in float64 with math.log and math.exp."""
    total = 0.0
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        z = beta * ((a - c) - (b - d))
        total += -math.log(1.0 / (1.0 + math.exp(-z)))
    return total / len(pc)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), B=st.integers(1, 6),
       beta=st.sampled_from([0.01, 0.1, 0.5, 2.0]), scale=st.sampled_from([1.0, 10.0, 60.0]))
def test_dpo_loss_and_gradient_match_float64_eq7(seed, B, beta, scale):
    g = torch.Generator().manual_seed(seed)
    logps = [(-scale * torch.rand(B, generator=g, dtype=torch.float64)).requires_grad_()
             for _ in range(4)]
    loss = dpo_loss(*logps, beta=beta)
    assert abs(loss.item() - _dpo_eq7(*[t.detach() for t in logps], beta)) <= 1e-10
    loss.backward()
    # d/dπc of -log σ(βm)/B is -β σ(-βm) / B; π_r and the reference terms flip the sign
    with torch.no_grad():
        m = (logps[0] - logps[2]) - (logps[1] - logps[3])
        d = -beta * torch.sigmoid(-beta * m) / B
    for t, sign in zip(logps, (1, -1, -1, 1)):
        torch.testing.assert_close(t.grad, sign * d, rtol=1e-10, atol=1e-12)


def test_dpo_loss_float32_close_to_float64_and_stable():
    g = torch.Generator().manual_seed(3)
    logps = [-80 * torch.rand(16, generator=g, dtype=torch.float64) for _ in range(4)]
    ref = _dpo_eq7(*logps, 0.1)
    assert abs(dpo_loss(*[t.float() for t in logps], beta=0.1).item() - ref) < 1e-5
    big = torch.tensor([0.0]), torch.tensor([-1e4]), torch.tensor([0.0]), torch.tensor([0.0])
    assert dpo_loss(*big, beta=1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(dpo_loss(big[1], big[0], big[2], big[3], beta=1.0).item())


def test_dpo_rewards_and_zero_margin():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -5.0]), torch.tensor([-4.0, -1.0])
    rew = dpo_rewards(pc, pr, rc, rr, beta=0.5)
    torch.testing.assert_close(rew.chosen, torch.tensor([0.25, 0.0]))
    torch.testing.assert_close(rew.rejected, torch.tensor([0.0, -0.5]))
    torch.testing.assert_close(rew.margin, torch.tensor([0.25, 0.5]))
    assert rew.accuracy == 1.0
    # policy == reference: margin 0, loss log 2 whatever the log-probs
    assert dpo_loss(pc, pr, pc, pr, beta=0.3).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="same B"):
        dpo_loss(pc, pr, rc, rr[:1])
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0)
    with pytest.raises(TypeError, match="ref_chosen_logps"):
        dpo_loss(pc, pr, [1.0, 2.0], rr)


def test_sequence_logprob_sums_kept_positions_only():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=10, n_layer=1, n_head=2, n_embd=8))
    ids = torch.randint(0, 13, (3, 6))
    labels = torch.randint(0, 13, (3, 6))
    labels[:, :2] = IGNORE_INDEX
    logits, _ = model(ids)
    logp = F.log_softmax(logits.double(), -1)
    want = torch.stack([sum(logp[b, t, labels[b, t]] for t in range(2, 6)) for b in range(3)])
    torch.testing.assert_close(sequence_logprob(model, ids, labels).double(), want,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="must match"):
        sequence_logprob(model, ids, labels[:, :3])


# --------------------------------------------------------------------------- MLM masking


def test_mlm_mask_proportions_large_sample():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 1000, (64, 512), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
    inputs, labels = mlm_mask(ids, mask_id=3, vocab_size=1000, special_ids=[0, 1, 2, 3],
                              generator=g)
    sel = labels != IGNORE_INDEX
    n = ids.numel() - 2 * 64
    p_sel = sel.sum().item() / n
    assert abs(p_sel - 0.15) < 4 * math.sqrt(0.15 * 0.85 / n)
    k = sel.sum().item()
    masked = (inputs[sel] == 3).float().mean().item()
    kept = (inputs[sel] == ids[sel]).float().mean().item()
    sd = math.sqrt(0.25 / k)
    assert abs(masked - 0.8) < 4 * sd
    # kept: 10 % untouched plus the random draws that hit the same id (1/1000 of 10 %)
    assert abs(kept - (0.1 + 0.1 / 1000)) < 4 * sd
    assert abs((1 - masked - kept) - 0.1) < 4 * sd
    assert not sel[:, 0].any() and not sel[:, -1].any()
    assert torch.equal(labels[sel], ids[sel])
    assert torch.equal(inputs[~sel], ids[~sel])  # nothing outside the selection changes


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 4), T=st.integers(1, 40),
       p=st.sampled_from([0.0, 0.15, 0.5, 1.0]))
def test_mlm_mask_properties(seed, B, T, p):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (B, T), generator=g)
    special = [0, 1]
    inputs, labels = mlm_mask(ids, mask_id=19, vocab_size=17, special_ids=special, p=p,
                              generator=torch.Generator().manual_seed(seed))
    again = mlm_mask(ids, mask_id=19, vocab_size=17, special_ids=special, p=p,
                     generator=torch.Generator().manual_seed(seed))
    assert torch.equal(inputs, again[0]) and torch.equal(labels, again[1])  # seeded
    is_special = (ids == 0) | (ids == 1)
    assert (labels[is_special] == IGNORE_INDEX).all()
    assert torch.equal(inputs[is_special], ids[is_special])
    sel = labels != IGNORE_INDEX
    if p == 1.0:
        assert torch.equal(sel, ~is_special)
    if p == 0.0:
        assert not sel.any() and torch.equal(inputs, ids)
    changed = inputs != ids
    assert not (changed & ~sel).any()
    assert ((inputs[changed] == 19) | (inputs[changed] < 17)).all()


def test_mlm_mask_bad_inputs():
    with pytest.raises(TypeError, match="ids"):
        mlm_mask(torch.zeros(2, 3), mask_id=1, vocab_size=5)
    with pytest.raises(ValueError, match="ids must have 2"):
        mlm_mask(torch.zeros(3, dtype=torch.long), mask_id=1, vocab_size=5)
    with pytest.raises(ValueError, match="p must be"):
        mlm_mask(torch.zeros(2, 3, dtype=torch.long), mask_id=1, vocab_size=5, p=1.5)


def test_span_corruption_round_trip():
    words = "the quick brown fox jumps over the lazy dog and runs far away".split()
    inputs, targets = span_corruption(words, noise_density=0.3, seed=1)
    # filling each sentinel of the input with its span from the target gives the text back
    spans, current = {}, None
    for t in targets:
        if t.startswith("<extra_id_"):
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    rebuilt = [w for t in inputs for w in (spans[t] if t in spans else [t])]
    assert rebuilt == words
    assert sum(len(v) for v in spans.values()) == round(0.3 * len(words))
    with pytest.raises(ValueError, match="noise_density"):
        span_corruption(words, noise_density=1.0)


# --------------------------------------------------------------------------- chat and SFT


def test_sft_labels_mask_and_shift():
    inputs, labels = sft_labels([5, 6, 7], [8, 9, 2])
    assert inputs.tolist() == [5, 6, 7, 8, 9]
    assert labels.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 8, 9, 2]
    inputs, labels = sft_labels(torch.tensor([4]), torch.tensor([1]), ignore_index=-1)
    assert inputs.tolist() == [4] and labels.tolist() == [1]
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        sft_labels([], [1])
    with pytest.raises(ValueError, match="response_ids"):
        sft_labels([1], [[1, 2]])


@settings(max_examples=40, deadline=None)
@given(P=st.integers(1, 12), R=st.integers(1, 12))
def test_sft_labels_property(P, R):
    prompt, response = list(range(100, 100 + P)), list(range(200, 200 + R))
    inputs, labels = sft_labels(prompt, response)
    assert len(inputs) == len(labels) == P + R - 1
    kept = labels[labels != IGNORE_INDEX].tolist()
    assert kept == response  # every response token is a target, no prompt token is
    first = P - 1
    assert inputs[first].item() == prompt[-1] and labels[first].item() == response[0]


def test_chat_template_special_tokens_are_single_ids():
    from lmlab.tokenizer import BPETokenizer, CharTokenizer

    text = "What does str.split do? Return a list of the words."
    for base in (CharTokenizer.from_text(text + "<|>"), BPETokenizer.train(text * 3, 270)):
        tok = SpecialTokenizer(base, CHAT_TOKENS)
        chat = format_chat("What does str.split do?", "Return a list of the words.")
        ids = tok.encode(chat)
        assert tok.decode(ids) == chat
        for s in CHAT_TOKENS:
            assert ids.count(tok[s]) == chat.count(s)
            assert tok[s] >= base.vocab_size
        assert tok.vocab_size == base.vocab_size + 3
    assert format_chat("hi") == "<|user|>hi<|end|><|assistant|>"
    assert format_chat("hi", "yo").startswith(format_chat("hi"))
    with pytest.raises(TypeError, match="instruction"):
        format_chat(3)


# --------------------------------------------------------------------------- evaluation


def test_mc_score_sum_and_mean():
    lps = [torch.tensor([-1.0, -1.0, -1.0]), torch.tensor([-2.5]), torch.tensor([-0.5, -3.0])]
    torch.testing.assert_close(mc_score(lps), torch.tensor([-3.0, -2.5, -3.5]))
    torch.testing.assert_close(mc_score(lps, normalize=True), torch.tensor([-1.0, -2.5, -1.75]))
    assert mc_score(lps).argmax() == 1 and mc_score(lps, normalize=True).argmax() == 0
    with pytest.raises(ValueError, match="empty"):
        mc_score([])
    with pytest.raises(ValueError, match=r"token_logprobs\[1\]"):
        mc_score([torch.tensor([-1.0]), torch.tensor([])])
    with pytest.raises(TypeError, match="list"):
        mc_score(torch.zeros(3))


def test_wilson_interval_known_values():
    # Brown, Cai & DasGupta (2001): x = 0 of n = 20 -> (0, 0.161); 81 of 263 (Wilson 1927 style)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson_interval(81, 263)
    assert (lo, hi) == (pytest.approx(0.2553, abs=1e-3), pytest.approx(0.3662, abs=1e-3))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)


def test_ngram_overlap():
    train = "the cat sat on the mat and then it slept"
    fr = ngram_overlap(["the cat sat on", "a dog ran off", "cat"], train, n=2)
    assert fr == [1.0, 0.0, 0.0]
    assert ngram_overlap(["sat on the rug"], [train], n=2) == [2 / 3]


# --------------------------------------------------------------------------- the encoder


def _encoder(fused=True, seed=0):
    from lmlab.finetune import Encoder

    torch.manual_seed(seed)
    return Encoder(GPTConfig(vocab_size=17, block_size=12, n_layer=2, n_head=2, n_embd=16,
                             fused=fused)).eval()


def test_encoder_is_bidirectional_and_built_from_block():
    from lmlab.transformer import Block

    enc = _encoder()
    assert all(isinstance(b, Block) for b in enc.transformer.h)
    ids = torch.randint(0, 17, (2, 9), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 17
    with torch.no_grad():
        a, b = enc.features(ids), enc.features(changed)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4  # the first token sees the last one


def test_encoder_padding_is_invisible_and_fused_equals_written_out():
    fused, plain = _encoder(True), _encoder(False)
    plain.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 17, (1, 7), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.tensor([[True] * 7 + [False] * 5])
    with torch.no_grad():
        alone = fused.features(ids)
        with_pad = fused.features(padded, mask)[:, :7]
        written = plain.features(padded, mask)[:, :7]
    torch.testing.assert_close(with_pad, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(written, with_pad, rtol=1e-5, atol=1e-5)


def test_encoder_mlm_loss_and_classifier_pooling():
    from lmlab.finetune import Classifier

    enc = _encoder()
    ids = torch.randint(0, 17, (3, 10), generator=torch.Generator().manual_seed(2))
    inputs, labels = mlm_mask(ids, mask_id=16, vocab_size=14, p=0.5,
                              generator=torch.Generator().manual_seed(3))
    logits, loss = enc(inputs, labels)
    keep = labels != IGNORE_INDEX
    want = F.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(loss, want)
    clf = Classifier(enc, 4).eval()
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, 6:] = False
    with torch.no_grad():
        pooled = clf.pooled(ids, mask)
        torch.testing.assert_close(pooled[0], enc.features(ids[:1, :6])[0].mean(0),
                                   rtol=1e-5, atol=1e-5)
    assert clf(ids, mask).shape == (3, 4)
    with pytest.raises(ValueError, match="pool"):
        Classifier(enc, 4, pool="max")
    with pytest.raises(ValueError, match="block_size"):
        enc.features(torch.zeros(1, 13, dtype=torch.long))


def test_answer_f1_and_preference_pairs():
    from lmlab.finetune import Instruction, answer_f1, preference_pairs

    assert answer_f1("Return the sum.", "return the SUM") == 1.0
    assert answer_f1("nothing here", "Return the sum.") == 0.0
    # predicted {return, a, list}, reference {return, a, list, of, words}: P=1, R=3/5
    assert answer_f1("Return a list.", "Return a list of words.") == pytest.approx(0.75)
    examples = [Instruction(f"f{i}", f"m{i % 3}", f"q{i}", f"a{i}") for i in range(9)]
    pairs = preference_pairs(examples, seed=0)
    for ex, rejected in pairs:
        owner = next(e for e in examples if e.response == rejected)
        assert owner.module != ex.module
    assert pairs == preference_pairs(examples, seed=0)


def test_task_and_instruction_splits_are_fixed_and_disjoint():
    from lmlab.finetune import TASK_MODULES, instruction_set, module_task

    task = module_task(seed=0)
    assert task.classes == list(TASK_MODULES)
    parts = [set(task.train_texts), set(task.val_texts), set(task.test_texts)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for labels in (task.train_labels, task.val_labels, task.test_labels):
        assert set(labels) == set(range(len(TASK_MODULES)))  # every class in every split
    assert module_task(seed=0).test_texts == task.test_texts
    assert module_task(seed=1).test_texts != task.test_texts
    train, test = instruction_set(seed=0)
    assert not {e.name for e in train} & {e.name for e in test}
    assert len(test) == round(0.15 * (len(train) + len(test)))
    assert all(e.instruction == f"What does `{e.name}` do?" and len(e.response) <= 64
               for e in train + test)


def test_lora_parameter_count_and_memory():
    from lmlab.finetune import lora_parameter_count, training_memory_bytes

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    predicted = lora_parameter_count(model, ["c_attn", "c_fc"], r=3)
    apply_lora(model, ["c_attn", "c_fc"], r=3)
    assert predicted == count_parameters(model, trainable_only=True) == 2 * 3 * (8 + 24 + 8 + 32)
    mem = training_memory_bytes(1000, 10)
    assert mem == {"weights": 4000, "gradients": 40, "optimizer": 80, "total": 4120}


def test_sft_loss_counts_response_tokens_only():
    from lmlab.finetune import pad_batch, sft_loss

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, block_size=16, n_layer=1, n_head=2, n_embd=8))
    pairs = [sft_labels([1, 2, 3, 4], [5, 6, 11]), sft_labels([7], [8, 11])]
    inputs = pad_batch([p[0] for p in pairs], pad_value=0)
    labels = pad_batch([p[1] for p in pairs], pad_value=IGNORE_INDEX)
    logits, _ = model(inputs)
    keep = labels != IGNORE_INDEX
    assert keep.sum() == 5  # 3 + 2 response tokens, <|end|> (11) included
    want = -F.log_softmax(logits, -1)[keep].gather(-1, labels[keep][:, None]).mean()
    torch.testing.assert_close(sft_loss(model, inputs, labels), want)
