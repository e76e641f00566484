"""From a language model to an assistant: pretraining objectives, fine-tuning, evaluation.

Chapter 10 reads this module top to bottom:

* **objectives**: BERT's masked-LM corruption (:func:`mlm_mask`, Devlin et al. 2019,
  section 3.1) and T5's span corruption (:func:`span_corruption`, Raffel et al. 2020);
* **LoRA** (Hu et al. 2021): :func:`lora_forward`, :func:`lora_merge`, :class:`LoRALinear`
  and :func:`apply_lora`, laid out like Hugging Face ``peft`` (``A``: (r, in), ``B``:
  (out, r), ``B`` starts at zero, scale ``alpha / r``);
* **instruction tuning**: a chat template with special tokens (:data:`CHAT_TEMPLATE`,
  :func:`format_chat`, :class:`SpecialTokenizer`) and the masked labels
  (:func:`sft_labels`);
* **preference tuning**: :func:`sequence_logprob`, :func:`dpo_loss` and
  :func:`dpo_rewards` (Rafailov et al. 2023, eq. 7);
* **evaluation**: :func:`mc_score` (multiple choice by log-likelihood),
  :func:`wilson_interval`, :func:`ngram_overlap` (contamination).

Then the chapter's experiments, each trained once on one thread and cached under
``$LMLAB_CACHE`` (later calls load in a moment):

* data: :func:`chapter_tokenizer` (characters + :data:`SPECIAL_TOKENS`),
  :func:`module_task` ("which package is this docstring from?", labels from the data,
  seeded split) with :func:`baselines` (majority class, bag of words),
  :func:`instruction_set` ("What does `str.split` do?" -> the docstring's first
  sentence, held-out functions), :func:`pretraining_text` (the corpus minus all of that);
* models: :class:`Encoder` (lmlab's :class:`~lmlab.transformer.Block` without the causal
  mask) pretrained by :func:`pretrain_encoder`, :class:`Classifier`, and a character GPT
  from :func:`pretrain_gpt`;
* runs: :func:`run_finetune` (probe / full / LoRA), :func:`run_sft`, :func:`run_dpo`,
  :func:`run_distillation`, :func:`run_pruning`, and the (uncached) timing
  :func:`sparse_matmul_timing`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.generate import _logits_of

__all__ = [
    # objectives
    "IGNORE_INDEX",
    "mlm_mask",
    "span_corruption",
    # LoRA
    "lora_forward",
    "lora_merge",
    "LoRALinear",
    "apply_lora",
    "mark_only_lora_trainable",
    "lora_state_dict",
    "lora_parameter_count",
    "training_memory_bytes",
    # chat / SFT
    "SpecialTokenizer",
    "CHAT_TEMPLATE",
    "CHAT_TOKENS",
    "format_chat",
    "sft_labels",
    "pad_batch",
    "resize_token_embeddings",
    # preferences
    "sequence_logprob",
    "token_logprobs",
    "dpo_loss",
    "dpo_rewards",
    "DPORewards",
    # evaluation
    "mc_score",
    "wilson_interval",
    "ngram_overlap",
    "answer_f1",
    # models, data and the chapter's experiments
    "Encoder",
    "Classifier",
    "SPECIAL_TOKENS",
    "chapter_tokenizer",
    "TaskData",
    "module_task",
    "Instruction",
    "instruction_set",
    "pretraining_text",
    "encode_texts",
    "baselines",
    "pretrain_encoder",
    "run_finetune",
    "pretrain_gpt",
    "gpt_from_state",
    "chat_example",
    "sft_loss",
    "answer",
    "answer_scores",
    "run_sft",
    "preference_pairs",
    "run_dpo",
    "run_distillation",
    "run_pruning",
    "sparse_matmul_timing",
]

IGNORE_INDEX = -100  # PyTorch's cross_entropy default: targets equal to it add no loss


# =========================================================================== objectives


def _check_ids(ids, name: str = "ids", dim: int | None = 2) -> None:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of token ids, got {type(ids).__name__}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}")
    if dim is not None and ids.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(ids.shape)}")


def mlm_mask(
    ids: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    p: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption: ``(inputs, labels)`` from token ids (B, T).

    Each position whose id is not in ``special_ids`` is *selected* with probability ``p``
    (independently; 15 % in BERT). A selected position's input becomes ``mask_id`` with
    probability 0.8, a random id drawn uniformly from ``[0, vocab_size)`` with probability
    0.1, and stays unchanged with probability 0.1 (so the model cannot tell which inputs to
    trust, and learns a representation of every token). ``labels`` holds the original id at
    the selected positions and ``-100`` (ignored by ``F.cross_entropy``) everywhere else.
    Put special tokens after the ordinary ones and pass the number of ordinary tokens as
    ``vocab_size``, so that a random replacement is never a special token.

    Random draws, in this order from ``generator``: ``rand(B, T)`` (selection),
    ``rand(B, T)`` (80/10/10), ``randint(vocab_size, (B, T))`` (replacements).
    Returns two new (B, T) long tensors; ``ids`` is not changed.
    """
    _check_ids(ids)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if isinstance(mask_id, bool) or not isinstance(mask_id, int):
        raise TypeError(f"mask_id must be an int, got {type(mask_id).__name__}")
    kw = dict(generator=generator, device=ids.device)
    special = torch.isin(ids, torch.as_tensor(list(special_ids), dtype=ids.dtype,
                                              device=ids.device))
    selected = (torch.rand(ids.shape, **kw) < p) & ~special
    action = torch.rand(ids.shape, **kw)  # < 0.8: [MASK]; < 0.9: random; else keep
    random_ids = torch.randint(vocab_size, ids.shape, **kw, dtype=ids.dtype)
    inputs = ids.clone()
    inputs[selected & (action < 0.8)] = mask_id
    swap = selected & (action >= 0.8) & (action < 0.9)
    inputs[swap] = random_ids[swap]
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs, labels


def span_corruption(
    tokens: Sequence,
    *,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
    sentinel: str = "<extra_id_{}>",
    seed: int = 0,
) -> tuple[list, list]:
    """T5's pretraining objective (Raffel et al. 2020, section 3.1.4): drop spans, name them.

    ``tokens``: a sequence (words, ids, ...). About ``noise_density`` of them, in spans of
    mean length ``mean_span``, are cut out. The input keeps the rest with each cut span
    replaced by one sentinel (``<extra_id_0>``, ``<extra_id_1>``, ...); the target lists
    each sentinel followed by the tokens it hides, and one closing sentinel. Returns
    ``(inputs, targets)``. Shown, not trained, in the book.
    """
    n = len(tokens)
    if n < 2:
        raise ValueError(f"tokens must hold at least 2 items, got {n}")
    if not 0 < noise_density < 1:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density!r}")
    if mean_span < 1:
        raise ValueError(f"mean_span must be >= 1, got {mean_span!r}")
    g = torch.Generator().manual_seed(seed)
    n_noise = min(n - 1, max(1, round(n * noise_density)))
    n_spans = max(1, min(n_noise, round(n_noise / mean_span)))
    # split n_noise noise tokens into n_spans non-empty spans, and the rest around them
    noise_lengths = _random_split(n_noise, n_spans, g)
    keep_lengths = _random_split(n - n_noise, n_spans, g)
    inputs, targets, pos = [], [], 0
    for i, (keep, noise) in enumerate(zip(keep_lengths, noise_lengths)):
        inputs.extend(tokens[pos:pos + keep])
        pos += keep
        inputs.append(sentinel.format(i))
        targets.append(sentinel.format(i))
        targets.extend(tokens[pos:pos + noise])
        pos += noise
    inputs.extend(tokens[pos:])
    targets.append(sentinel.format(n_spans))
    return inputs, targets


def _random_split(total: int, parts: int, g: torch.Generator) -> list[int]:
    """``total`` split into ``parts`` positive integers (if total >= parts), at random."""
    if total < parts:
        return [1] * total + [0] * (parts - total)
    cuts = (torch.randperm(total - 1, generator=g)[: parts - 1] + 1).sort().values.tolist()
    edges = [0, *cuts, total]
    return [b - a for a, b in zip(edges, edges[1:])]


# =========================================================================== LoRA


def lora_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 A: torch.Tensor, B: torch.Tensor, *, alpha: float, r: int) -> torch.Tensor:
    """A linear layer with a low-rank update: ``x Wᵀ + b + (alpha / r) · x Aᵀ Bᵀ``.

    x: (..., in); weight: (out, in); bias: (out,) or None; A: (r, in); B: (out, r) (the
    layout of ``peft``'s ``lora_A``/``lora_B``). Returns (..., out). The update goes
    through the rank-r bottleneck ``x Aᵀ`` (..., r) first: never form the (out, in) product
    ``B A`` in the forward pass, it costs ``out · in`` memory and FLOPs for nothing.
    """
    if A.dim() != 2 or B.dim() != 2 or A.shape[0] != r or B.shape[1] != r:
        raise ValueError(f"A must be (r, in) and B (out, r) with r={r}, got A "
                         f"{tuple(A.shape)} and B {tuple(B.shape)}")
    if A.shape[1] != weight.shape[1] or B.shape[0] != weight.shape[0]:
        raise ValueError(f"weight is {tuple(weight.shape)} (out, in) but A is {tuple(A.shape)} "
                         f"and B {tuple(B.shape)}: need A (r, in) and B (out, r)")
    return F.linear(x, weight, bias) + (alpha / r) * ((x @ A.T) @ B.T)


def lora_merge(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, *, alpha: float,
               r: int) -> torch.Tensor:
    """The merged weight ``W + (alpha / r) · B A``: (out, in), one matmul at inference."""
    if A.dim() != 2 or B.dim() != 2 or A.shape[0] != r or B.shape[1] != r:
        raise ValueError(f"A must be (r, in) and B (out, r) with r={r}, got A "
                         f"{tuple(A.shape)} and B {tuple(B.shape)}")
    if (B.shape[0], A.shape[1]) != tuple(weight.shape):
        raise ValueError(f"B @ A is {(B.shape[0], A.shape[1])} but weight is "
                         f"{tuple(weight.shape)}: they must match")
    return weight + (alpha / r) * (B @ A)


class LoRALinear(nn.Module):
    """Wrap a frozen ``nn.Linear`` with a trainable low-rank update (Hu et al. 2021).

    ``y = base(x) + (alpha / r) · B(A(dropout(x)))`` with ``A``: (r, in) initialised like
    ``peft`` (Kaiming-uniform with ``a = √5``, the ``nn.Linear`` default) and ``B``: (out, r)
    zeros, so the wrapped layer computes exactly what ``base`` did until training moves B.
    ``merge()`` folds ``(alpha / r) · B A`` into ``base.weight`` (no extra cost at
    inference); ``unmerge()`` restores the weight saved by ``merge()`` bit for bit
    (subtracting the update again would leave float rounding behind).
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"r must be a positive int, got {r!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._saved_weight: torch.Tensor | None = None

    @property
    def merged(self) -> bool:
        return self._saved_weight is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * ((self.dropout(x) @ self.lora_A.T) @ self.lora_B.T)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``base.weight`` (keeps a copy of the old weight)."""
        if self.merged:
            return
        self._saved_weight = self.base.weight.detach().clone()
        self.base.weight.copy_(lora_merge(self.base.weight, self.lora_A, self.lora_B,
                                          alpha=self.alpha, r=self.r))

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put back the exact weight ``merge()`` replaced."""
        if not self.merged:
            return
        self.base.weight.copy_(self._saved_weight)
        self._saved_weight = None

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, target_modules: str | Sequence[str]) -> bool:
    """peft's rule: a str is a regular expression the full name must match; a list names
    modules by their last name components (``"c_attn"`` matches ``h.0.attn.c_attn``)."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def apply_lora(model: nn.Module, target_modules: str | Sequence[str], r: int = 8,
               alpha: float = 16, dropout: float = 0.0, *,
               trainable: Sequence[str] = ()) -> nn.Module:
    """Wrap every ``nn.Linear`` of ``model`` whose name matches in a :class:`LoRALinear`.

    ``target_modules``: a regular expression for the full module name, or a list of name
    endings (``["c_attn", "c_proj"]``), as in ``peft.LoraConfig``. Afterwards only the LoRA
    matrices, and the modules whose name ends with an entry of ``trainable`` (a new task
    head, say), require gradients. Works on any lmlab model (GPT, :class:`Encoder`, ...).
    Changes ``model`` in place and returns it.
    """
    if not isinstance(target_modules, (str, list, tuple)):
        raise TypeError(f"target_modules must be a str or a list of str, got "
                        f"{type(target_modules).__name__}")
    chosen = [name for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and _matches(name, target_modules)]
    if not chosen:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"target_modules={target_modules!r} matches no nn.Linear of the model; "
                         f"its linear layers are {linears[:8]}{' ...' if len(linears) > 8 else ''}")
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r=r, alpha=alpha,
                                          dropout=dropout))
    mark_only_lora_trainable(model, trainable=trainable)
    return model


def mark_only_lora_trainable(model: nn.Module, *, trainable: Sequence[str] = ()) -> nn.Module:
    """Freeze every parameter except ``lora_A``/``lora_B`` and those of modules named in
    ``trainable`` (name endings)."""
    keep = {id(p) for name, m in model.named_modules()
            if trainable and any(name == t or name.endswith("." + t) for t in trainable)
            for p in m.parameters()}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        p.requires_grad_(leaf in ("lora_A", "lora_B") or id(p) in keep)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the trainable tensors (the LoRA matrices and any trainable head): what a LoRA
    checkpoint stores, a tiny fraction of the model."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def lora_parameter_count(model: nn.Module, target_modules: str | Sequence[str], r: int) -> int:
    """How many parameters :func:`apply_lora` would add: ``r · (in + out)`` per matched
    ``nn.Linear`` (the model is not changed)."""
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and _matches(name, target_modules))


def training_memory_bytes(total: int, trainable: int, *, bytes_per_value: int = 4) -> dict:
    """Memory for the model's state while training with Adam(W), activations not counted:
    ``weights`` (every parameter), ``gradients`` (trainable ones), ``optimizer`` (Adam's
    two moments per trainable parameter) and their ``total``, in bytes."""
    out = {"weights": total * bytes_per_value, "gradients": trainable * bytes_per_value,
           "optimizer": 2 * trainable * bytes_per_value}
    out["total"] = sum(out.values())
    return out


# =========================================================================== chat and SFT


class SpecialTokenizer:
    """A tokenizer plus special tokens that always encode to one id each.

    ``base``: a :class:`lmlab.tokenizer.CharTokenizer` or ``BPETokenizer`` (anything with
    ``encode``, ``decode`` and ``vocab_size``). The special tokens get the ids
    ``base.vocab_size, base.vocab_size + 1, ...``, after every ordinary id, so a model
    trained on ``base`` only needs new rows in its embedding
    (:func:`resize_token_embeddings`). Text that spells a special token is split there.
    """

    def __init__(self, base, special_tokens: Sequence[str]):
        if len(set(special_tokens)) != len(special_tokens) or "" in special_tokens:
            raise ValueError(f"special_tokens must be distinct non-empty strings, got "
                             f"{list(special_tokens)}")
        self.base = base
        self.special_tokens = {s: base.vocab_size + i for i, s in enumerate(special_tokens)}
        self.id_to_special = {i: s for s, i in self.special_tokens.items()}
        longest_first = sorted(self.special_tokens, key=len, reverse=True)
        self._splitter = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")")

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __getitem__(self, token: str) -> int:
        return self.special_tokens[token]

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out: list[int] = []
        for piece in self._splitter.split(text):
            if piece in self.special_tokens:
                out.append(self.special_tokens[piece])
            elif piece:
                out.extend(self.base.encode(piece))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        parts, run = [], []
        for i in ids:
            if i in self.id_to_special:
                if run:
                    parts.append(self.base.decode(run))
                    run = []
                parts.append(self.id_to_special[i])
            else:
                run.append(i)
        if run:
            parts.append(self.base.decode(run))
        return "".join(parts)

    def __repr__(self) -> str:
        return f"SpecialTokenizer({self.base!r}, special_tokens={list(self.special_tokens)})"


#: The special tokens of the chat template, each one id.
CHAT_TOKENS = ("<|user|>", "<|assistant|>", "<|end|>")
#: A conversation turn: the user's message, then the assistant's, each closed by <|end|>.
CHAT_TEMPLATE = "<|user|>{instruction}<|end|><|assistant|>{response}<|end|>"


def format_chat(instruction: str, response: str | None = None) -> str:
    """Fill :data:`CHAT_TEMPLATE`. Without ``response`` return the prompt only, ending with
    ``<|assistant|>``: what the model sees before it answers."""
    if not isinstance(instruction, str):
        raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
    prompt = CHAT_TEMPLATE.split("{response}")[0].format(instruction=instruction)
    if response is None:
        return prompt
    if not isinstance(response, str):
        raise TypeError(f"response must be a str or None, got {type(response).__name__}")
    return CHAT_TEMPLATE.format(instruction=instruction, response=response)


def _as_1d_ids(ids, name: str) -> torch.Tensor:
    t = torch.as_tensor(ids)
    if t.dim() != 1 or (t.numel() and t.dtype not in (torch.int64, torch.int32)):
        raise ValueError(f"{name} must be a 1-D sequence of token ids, got shape "
                         f"{tuple(t.shape)} and dtype {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: it needs at least one token")
    return t.long()


def sft_labels(prompt_ids, response_ids, *, ignore_index: int = IGNORE_INDEX
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token labels for supervised fine-tuning, loss on the response only.

    prompt_ids: (P,), response_ids: (R,) token ids (lists or 1-D tensors; the response
    includes the closing ``<|end|>``, which the model must learn to emit to stop). The
    sequence ``s = prompt + response`` has P + R tokens; ``inputs = s[:-1]`` and
    ``labels = s[1:]``, both (P + R - 1,). ``labels[j]`` is the token to predict after
    ``inputs[: j + 1]``; it is set to ``ignore_index`` for ``j < P - 1``, where the target
    is a prompt token. So the first kept label is ``response[0]``, predicted from the
    whole prompt, and the last is the response's final token.
    """
    prompt = _as_1d_ids(prompt_ids, "prompt_ids")
    response = _as_1d_ids(response_ids, "response_ids")
    seq = torch.cat([prompt, response])
    inputs, labels = seq[:-1].clone(), seq[1:].clone()
    labels[: len(prompt) - 1] = ignore_index
    return inputs, labels


def pad_batch(rows: Sequence[torch.Tensor], *, pad_value: int) -> torch.Tensor:
    """Right-pad 1-D tensors to the longest: (N, T_max)."""
    if not rows:
        raise ValueError("rows is empty")
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), pad_value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


@torch.no_grad()
def resize_token_embeddings(model: nn.Module, vocab_size: int) -> nn.Module:
    """Grow a GPT's token embedding (and its tied output head) to ``vocab_size`` rows.

    New rows start at the mean of the old ones (a new token then scores like an average
    token instead of at random; Hewitt 2021). Changes ``model`` in place and returns it.
    """
    wte = model.transformer.wte
    old, C = wte.weight.shape
    if vocab_size < old:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the current {old}")
    if vocab_size == old:
        return model
    new = nn.Embedding(vocab_size, C, dtype=wte.weight.dtype, device=wte.weight.device)
    new.weight[:old] = wte.weight
    new.weight[old:] = wte.weight.mean(dim=0)
    model.transformer.wte = new
    if model.config.tie_weights:
        model.lm_head = nn.Linear(C, vocab_size, bias=False)
        model.lm_head.weight = new.weight
    else:
        head = nn.Linear(C, vocab_size, bias=False)
        head.weight[:old] = model.lm_head.weight
        head.weight[old:] = model.lm_head.weight.mean(dim=0)
        model.lm_head = head
    model.config.vocab_size = vocab_size
    return model


# =========================================================================== preferences


def token_logprobs(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log p(labels[b, t] | ids[b, : t + 1])`` under ``model``: (B, T), 0 where ignored.

    ids, labels: (B, T) as :func:`sft_labels` makes them (labels already shifted; entries
    equal to -100 are ignored). ``model(ids)`` must return logits (B, T, V) or a tuple
    starting with them (lmlab's GPT).
    """
    _check_ids(ids, "ids")
    _check_ids(labels, "labels")
    if ids.shape != labels.shape:
        raise ValueError(f"ids has shape {tuple(ids.shape)} but labels has shape "
                         f"{tuple(labels.shape)}: they must match")
    logits = _logits_of(model(ids))  # (B, T, V)
    keep = labels != IGNORE_INDEX
    logp = F.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).long()[..., None]).squeeze(-1)  # (B, T)
    return picked * keep


def sequence_logprob(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log π(response | prompt)``: the label log-probabilities summed over the kept
    positions (the response tokens), (B,). See :func:`token_logprobs`. DPO needs the sum,
    not the mean: the policy ratio of a sequence is the product of its tokens' ratios."""
    return token_logprobs(model, ids, labels).sum(dim=-1)


def _check_logps(*tensors) -> None:
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps",
             "ref_rejected_logps")
    shape = tensors[0].shape if isinstance(tensors[0], torch.Tensor) else None
    for name, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 1 or t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; all four must be (B,) "
                             f"with the same B, the first is {tuple(shape)}")


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
             beta: float = 0.1) -> torch.Tensor:
    """Direct preference optimization (Rafailov et al. 2023, eq. 7), mean over the batch.

    ``L = -log σ(β · [(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])``

    Each argument: (B,) sequence log-probabilities (:func:`sequence_logprob`) of the chosen
    (``y_w``) and rejected (``y_l``) responses under the policy being trained and under the
    frozen reference. ``-log σ(z)`` is computed by ``F.logsigmoid``, which never overflows
    (``F.softplus(-z)`` would too, but it returns ``-z`` itself beyond its threshold of 20,
    an error of up to e⁻²⁰ ≈ 2e-9).
    Returns a 0-d tensor.
    """
    _check_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
        raise ValueError(f"beta must be a number > 0, got {beta!r}")
    margin = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    return -F.logsigmoid(beta * margin).mean()


@dataclass
class DPORewards:
    """DPO's implicit rewards ``β (log π - log π_ref)``, each (B,)."""

    chosen: torch.Tensor
    rejected: torch.Tensor

    @property
    def margin(self) -> torch.Tensor:
        """``chosen - rejected``: how much more the policy prefers y_w than the reference."""
        return self.chosen - self.rejected

    @property
    def accuracy(self) -> float:
        """The fraction of pairs whose chosen reward is higher (a win rate against the
        reference's own preferences)."""
        return float((self.margin > 0).float().mean())


def dpo_rewards(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *,
                beta: float = 0.1) -> DPORewards:
    """The implicit rewards of the chosen and rejected responses (detached), see
    :class:`DPORewards`; the loss is ``-log σ(margin)``."""
    _check_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    with torch.no_grad():
        return DPORewards(beta * (policy_chosen_logps - ref_chosen_logps),
                          beta * (policy_rejected_logps - ref_rejected_logps))


# =========================================================================== evaluation


def mc_score(token_logprobs: Sequence[torch.Tensor], *, normalize: bool = False) -> torch.Tensor:
    """Score each choice of a multiple-choice question by its continuation's log-likelihood.

    ``token_logprobs[i]``: (L_i,) the log-probabilities of choice i's tokens given the
    question. Returns (n_choices,): the sum ``Σ_t log p`` (``normalize=False``; favours
    short answers) or the mean per token ``(1 / L_i) Σ_t log p`` (``normalize=True``; the
    length-normalized score some benchmarks report as ``acc_norm``). The prediction is
    the ``argmax``.
    """
    if isinstance(token_logprobs, torch.Tensor) or not isinstance(token_logprobs, Sequence):
        raise TypeError("token_logprobs must be a list of 1-D tensors, one per choice, got "
                        f"{type(token_logprobs).__name__}")
    if len(token_logprobs) == 0:
        raise ValueError("token_logprobs is empty: there must be at least one choice")
    scores = []
    for i, lp in enumerate(token_logprobs):
        if not isinstance(lp, torch.Tensor) or lp.dim() != 1 or lp.numel() == 0:
            got = tuple(lp.shape) if isinstance(lp, torch.Tensor) else type(lp).__name__
            raise ValueError(f"token_logprobs[{i}] must be a non-empty 1-D tensor, got {got}")
        scores.append(lp.mean() if normalize else lp.sum())
    return torch.stack(scores)


def wilson_interval(successes: int, n: int, *, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval for a proportion (95 % with z = 1.96): (low, high).

    Unlike the normal approximation ``p ± z √(p(1-p)/n)`` it stays inside [0, 1] and does
    not collapse to a point at 0 % or 100 % (Wilson 1927; Brown, Cai & DasGupta 2001).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes!r}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(eval_texts: Sequence[str], train_text: str | Sequence[str], *, n: int = 8
                  ) -> list[float]:
    """Contamination check: for each evaluation text, the fraction of its word n-grams that
    also occur in the training text (GPT-3's paper used 13-grams, Brown et al. 2020,
    appendix C). 1.0 means every n-gram was seen in training; texts shorter than n words
    get 0.0. Returns one fraction per evaluation text.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(train_text, str):
        train_text = [train_text]
    seen: set[tuple[str, ...]] = set()
    for t in train_text:
        seen |= _ngrams(t.split(), n)
    out = []
    for t in eval_texts:
        grams = _ngrams(t.split(), n)
        out.append(len(grams & seen) / len(grams) if grams else 0.0)
    return out


# =========================================================================== the encoder


class Encoder(nn.Module):
    """A BERT-style encoder: the GPT blocks of :mod:`lmlab.transformer`, attention not causal.

    Every token attends to every other (non-padding) token: the same :class:`Block`, given a
    mask that is True everywhere except at padding keys. ``config``: a
    :class:`lmlab.transformer.GPTConfig` (``vocab_size`` counts the special tokens). The
    masked-LM head shares its matrix with the token embedding, as BERT's does, plus a bias.
    """

    def __init__(self, config) -> None:
        super().__init__()
        from lmlab.transformer import GPT, Block, LayerNorm

        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias, fused=config.fused),
        ))
        self.mlm_head = nn.Linear(config.n_embd, config.vocab_size)
        self.mlm_head.weight = self.transformer.wte.weight
        self.apply(GPT._init_weights)

    def features(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """idx: (B, T) ids; attention_mask: (B, T) bool, False at padding -> (B, T, C)."""
        _check_ids(idx, "idx")
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"idx has {T} tokens but block_size is {self.config.block_size}")
        if attention_mask is None:
            mask = torch.ones(1, 1, T, T, dtype=torch.bool, device=idx.device)  # all see all
        else:
            if attention_mask.shape != idx.shape:
                raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                                 f"expected {tuple(idx.shape)}")
            # (B, 1, T, T): any query may look at every real key, never at padding
            mask = attention_mask.bool()[:, None, None, :].expand(B, 1, T, T)
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x, mask=mask)
        return self.transformer.ln_f(x)

    def forward(self, idx: torch.Tensor, labels: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None):
        """Masked-LM logits (B, T, V) and, with ``labels`` (-100 = not predicted), the mean
        cross-entropy over the predicted positions."""
        logits = self.mlm_head(self.features(idx, attention_mask))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return logits, loss


class Classifier(nn.Module):
    """A task head on an :class:`Encoder`: pool the features, one linear layer to classes.

    ``pool="mean"`` averages the real tokens' features; ``"cls"`` takes position 0, BERT's
    choice, which only carries a summary after a sentence-level objective (BERT's next
    sentence prediction); after masked-LM alone the mean is the better summary (Reimers &
    Gurevych 2019).
    """

    def __init__(self, encoder: Encoder, n_classes: int, *, pool: str = "mean") -> None:
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        self.encoder, self.pool = encoder, pool
        self.head = nn.Linear(encoder.config.n_embd, n_classes)

    def pooled(self, idx: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, C)."""
        h = self.encoder.features(idx, attention_mask)
        if self.pool == "cls":
            return h[:, 0]
        w = attention_mask.float()[..., None]  # (B, T, 1)
        return (h * w).sum(1) / w.sum(1)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> class logits (B, n_classes)."""
        return self.head(self.pooled(idx, attention_mask))


# =========================================================================== data from the corpus

#: ids after the corpus' characters: BERT's four, then the chat template's three
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", *CHAT_TOKENS)
#: the downstream task's classes: standard-library packages whose docstrings are many and
#: about different things
TASK_MODULES = ("asyncio", "decimal", "email", "logging", "xml")
#: modules whose functions' first docstring sentences make the instruction set
SFT_MODULES = ("builtins", "os", "os.path", "math", "json", "re", "string", "random",
               "itertools", "functools", "collections", "shutil", "time", "datetime",
               "statistics", "textwrap", "heapq", "bisect", "operator", "glob", "fnmatch",
               "pathlib", "tempfile", "copy", "pprint", "base64", "zlib", "struct", "array",
               "csv", "difflib", "calendar", "fractions", "decimal", "inspect", "threading",
               "socket", "subprocess", "sys", "io", "codecs", "hashlib", "uuid", "urllib.parse")
_VERSION = 1  # bump when a cached experiment changes


@functools.lru_cache(maxsize=1)
def _corpus_key() -> str:
    import hashlib

    from lmlab.data import load_corpus

    return hashlib.sha1(load_corpus("pydoc").encode()).hexdigest()[:16]


def chapter_tokenizer() -> SpecialTokenizer:
    """The corpus' characters plus :data:`SPECIAL_TOKENS`, each one id."""
    from lmlab.data import load_corpus
    from lmlab.tokenizer import CharTokenizer

    return SpecialTokenizer(CharTokenizer.from_text(load_corpus("pydoc")), SPECIAL_TOKENS)


@dataclass
class TaskData:
    """A labelled text classification task with a fixed split (lists of str and int)."""

    classes: list[str]
    train_texts: list[str]
    train_labels: list[int]
    val_texts: list[str]
    val_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]


def _package_docstrings(package: str) -> list[str]:
    """The docstrings of a standard-library package and its public submodules (the
    submodules :func:`lmlab.data.load_corpus` reads, found without importing all others)."""
    import pkgutil
    import warnings

    from lmlab.data import _SKIP_PARTS, _docstrings, _try_import

    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated submodules warn when imported
        top = _try_import(package)
        if top is None:
            return docs
        names = [package] + sorted(
            info.name for info in pkgutil.walk_packages(getattr(top, "__path__", []),
                                                        package + ".", onerror=lambda _: None)
            if not any(p.startswith("_") or p in _SKIP_PARTS for p in info.name.split(".")))
        for name in names:
            module = _try_import(name)
            if module is not None:
                docs.extend(_docstrings(module))
    return docs


@functools.lru_cache(maxsize=1)
def _stdlib_docs() -> dict:
    """The docstrings the task and the instruction set are made of, read once in a fresh
    interpreter (as :func:`lmlab.data.load_corpus` does: what the caller has imported can
    add attributes to a module and change the lists) and cached as JSON.

    ``{"task": {package: [doc, ...]}, "named": {module: [[name, doc], ...]}}``.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lmlab.data import cache_dir

    v = sys.version_info
    path = cache_dir() / "finetune" / f"stdlib-docs-py{v.major}.{v.minor}.{v.micro}-v{_VERSION}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root, "PYTHONWARNINGS": "ignore", "PYTHONHASHSEED": "0"}
        code = "import sys, lmlab.finetune as f; f._write_stdlib_docs(sys.argv[1])"
        done = subprocess.run([sys.executable, "-c", code, str(tmp)], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=600)
        if done.returncode != 0:
            raise RuntimeError("reading the standard library's docstrings failed:\n"
                               + done.stderr.decode(errors="replace")[-2000:])
        os.replace(tmp, path)  # atomic: a reader sees no file or a whole one
    return json.loads(path.read_text(encoding="utf-8"))


def _write_stdlib_docs(out: str) -> None:
    """Run in a fresh interpreter by :func:`_stdlib_docs`."""
    import json

    from lmlab.data import _try_import

    named = {}
    for name in SFT_MODULES:
        module = _try_import(name)
        if module is not None:
            named[name] = [list(pair) for pair in _named_docstrings(module)]
    data = {"task": {m: _package_docstrings(m) for m in TASK_MODULES}, "named": named}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f)


def module_task(*, seed: int = 0, min_chars: int = 40, fractions=(0.6, 0.2, 0.2)) -> TaskData:
    """"Which standard-library package does this docstring come from?"

    The label of a docstring is the package (:data:`TASK_MODULES`) it was read from: it
    comes from the data, not from anyone's judgement. Docstrings shorter than ``min_chars``
    and those found in more than one package are dropped; the rest is shuffled with
    ``seed`` and split 60/20/20 into train/validation/test within each class (stratified).
    """
    per_class = _stdlib_docs()["task"]
    owners: dict[str, set[str]] = {}
    for m, docs in per_class.items():
        for d in docs:
            owners.setdefault(d, set()).add(m)
    g = torch.Generator().manual_seed(seed)
    split: dict[str, tuple[list, list]] = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for label, m in enumerate(TASK_MODULES):
        docs = sorted({d for d in per_class[m] if len(d) >= min_chars and len(owners[d]) == 1})
        order = torch.randperm(len(docs), generator=g).tolist()
        n_train = round(fractions[0] * len(docs))
        n_val = round(fractions[1] * len(docs))
        for i, j in enumerate(order):
            part = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            split[part][0].append(docs[j])
            split[part][1].append(label)
    return TaskData(list(TASK_MODULES), *split["train"], *split["val"], *split["test"])


def _first_sentence(doc: str) -> str | None:
    """The first sentence of a docstring's first paragraph, or None if it has none."""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    m = re.match(r"(.+?[.!?])(\s|$)", para)
    if m is None or "(" in m.group(1)[:1]:
        return None
    return m.group(1)


def _named_docstrings(module) -> list[tuple[str, str]]:
    """(qualified name, docstring) of the public functions, methods and classes of
    ``module`` (the names :func:`lmlab.data._docstrings` reads, with the names kept)."""
    import inspect

    out = []
    prefix = "" if module.__name__ == "builtins" else module.__name__ + "."
    for attr in sorted(vars(module)):
        obj = vars(module)[attr]
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        members = [(attr, obj)]
        if inspect.isclass(obj):
            members += [(f"{attr}.{m}", v) for m, v in sorted(vars(obj).items())
                        if not m.startswith("_") and (inspect.isfunction(v) or inspect.isroutine(v))]
        elif not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        for name, member in members:
            doc = getattr(member, "__doc__", None)
            if isinstance(doc, str) and doc.strip():
                out.append((prefix + name, inspect.cleandoc(doc)))
    return out


@dataclass
class Instruction:
    """One instruction-tuning example: the function's name, the question, the answer."""

    name: str
    module: str
    instruction: str
    response: str


def instruction_set(*, seed: int = 0, max_chars: int = 64, max_name: int = 36,
                    test_fraction: float = 0.15) -> tuple[list[Instruction], list[Instruction]]:
    """Question/answer pairs made from the standard library: ``What does `str.split` do?``
    answered by the first sentence of its docstring (at most ``max_chars`` characters, names
    of at most ``max_name``: a whole example then fits in 128 characters of context).

    Returns ``(train, test)``, split by function with ``seed``; the test functions are
    never seen in fine-tuning (and their docstrings are removed from the chapter's
    pretraining text, see :func:`pretraining_text`).
    """
    seen, items = set(), []
    named = _stdlib_docs()["named"]
    for module_name in SFT_MODULES:
        for name, doc in named.get(module_name, []):
            answer = _first_sentence(doc)
            if (answer is None or len(answer) > max_chars or len(name) > max_name
                    or answer in seen or name in seen):
                continue
            seen.update((answer, name))
            items.append(Instruction(name, module_name, f"What does `{name}` do?", answer))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(items), generator=g).tolist()
    n_test = round(test_fraction * len(items))
    test = sorted((items[i] for i in order[:n_test]), key=lambda e: e.name)
    train = sorted((items[i] for i in order[n_test:]), key=lambda e: e.name)
    return train, test


@functools.lru_cache(maxsize=2)
def pretraining_text(*, seed: int = 0) -> str:
    """The pydoc corpus without the evaluation texts of this chapter: the task's test
    docstrings and the held-out instructions' answers are cut out, so the models never
    pretrain on what they are tested on (:func:`ngram_overlap` checks it)."""
    from lmlab.data import load_corpus

    text = load_corpus("pydoc")
    task = module_task(seed=seed)
    _, test = instruction_set(seed=seed)
    for doc in sorted(task.test_texts, key=len, reverse=True):
        text = text.replace(doc, "")
    for ex in test:
        text = text.replace(ex.response, "")
    return text


# =========================================================================== training and caching


def _cache_path(name: str, key: dict):
    import hashlib
    import json

    from lmlab.data import cache_dir

    key = {**key, "version": _VERSION, "corpus": _corpus_key(), "torch": torch.__version__}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "finetune" / f"{name}-{digest}.pt"


def _cached(name: str, key: dict, build, *, cache: bool = True) -> dict:
    """``build()`` once, then load its result (a dict of tensors, numbers, str, lists)."""
    from lmlab.train import save_checkpoint

    path = _cache_path(name, key)
    if cache and path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    # one thread: float summation order (and so every stored number) must not depend on
    # the machine's core count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = build()
    finally:
        torch.set_num_threads(threads)
    if cache:
        save_checkpoint(path, result)
    return result


def _defaults(fn) -> dict:
    """The training defaults of ``fn``: the part of a cache key that says which upstream
    model (the one made by a call with those defaults) a run was built on."""
    import inspect

    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if name in ("steps", "batch_size", "lr")}


def _upstream(name: str) -> dict:
    """What a cached run depends on, so that changing the model under it changes its key."""
    if name == "encoder":
        return {**ENCODER_CONFIG, **_defaults(pretrain_encoder)}
    if name == "gpt":
        return {**BASE_GPT_CONFIG, **_defaults(pretrain_gpt)}
    return {**_defaults(run_sft), "gpt": _upstream("gpt")}  # "sft"


def _fit(model: nn.Module, loss_on_batch, *, steps: int, lr: float, seed: int = 0,
         evaluate=None, eval_every: int | None = None, weight_decay: float = 0.01,
         progress: bool = False, desc: str = "training") -> dict:
    """The loop every experiment here shares: AdamW on the trainable parameters, linear
    warm-up then cosine decay, gradient clipping at 1.

    ``loss_on_batch(step, generator) -> loss``; ``evaluate() -> float`` runs every
    ``eval_every`` steps and at the end. Returns ``{"step", "loss", "val_step", "val",
    "step_time"}`` (lists; ``step_time``: median seconds per step).
    """
    import statistics
    import time

    from tqdm.auto import tqdm

    from lmlab.optim import clip_grad_norm_, cosine_schedule
    from lmlab.train import make_optimizer

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model, "adamw", lr=lr, weight_decay=weight_decay)
    params = [p for group in opt.param_groups for p in group["params"]]
    eval_every = eval_every or max(1, steps // 10)
    hist: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val": [], "times": []}
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = cosine_schedule(step, warmup=max(1, steps // 20), total=steps,
                                          lr_max=lr, lr_min=lr / 10)
        loss = loss_on_batch(step, g)
        loss.backward()
        clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        hist["times"].append(time.perf_counter() - t0)
        hist["step"].append(step + 1)
        hist["loss"].append(loss.item())
        if evaluate is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
            model.eval()
            with torch.no_grad():
                hist["val"].append(float(evaluate()))
            hist["val_step"].append(step + 1)
            model.train()
    model.eval()
    hist["step_time"] = statistics.median(hist.pop("times")[1:] or [0.0])
    return hist


#: the chapter's decoder: nanoGPT's small CPU recipe (4 layers, 4 heads, 128 wide) with 128
#: characters of context; the encoder has half the layers, so that it can take twice the
#: steps in the same time: masked LM learns from only 15 % of the positions of each batch,
#: next-token prediction from all of them
ENCODER_CONFIG = dict(n_layer=2, n_head=4, n_embd=128, block_size=128)
BASE_GPT_CONFIG = dict(n_layer=4, n_head=4, n_embd=128, block_size=128)


def _config(sizes: dict, vocab_size: int):
    from lmlab.transformer import GPTConfig

    return GPTConfig(vocab_size=vocab_size, dropout=0.0, fused=True, **sizes)


def _with_cls(windows: torch.Tensor, cls_id: int) -> torch.Tensor:
    return torch.cat([torch.full_like(windows[:, :1], cls_id), windows], dim=1)


def pretrain_encoder(steps: int = 1200, *, batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
                     cache: bool = True, progress: bool = False):
    """A BERT-style :class:`Encoder` pretrained with masked LM on :func:`pretraining_text`.

    Each example is ``[CLS]`` + 127 characters; :func:`mlm_mask` corrupts 15 % of them.
    Returns ``(encoder, tokenizer, history)``; ``history["val"]`` is the masked-LM loss on
    held-out windows (the last 10 % of the text). Cached.
    """
    from lmlab.data import get_batch, train_val_split

    tok = chapter_tokenizer()
    config = _config(ENCODER_CONFIG, tok.vocab_size)
    key = dict(ENCODER_CONFIG, steps=steps, batch_size=batch_size, lr=lr, seed=seed)

    def build() -> dict:
        ids = torch.tensor(tok.encode(pretraining_text(seed=seed)), dtype=torch.long)
        train_ids, val_ids = train_val_split(ids, 0.1)
        torch.manual_seed(seed)
        model = Encoder(config)
        T = config.block_size - 1
        kw = dict(mask_id=tok["[MASK]"], vocab_size=tok.base.vocab_size,
                  special_ids=[tok["[CLS]"]])

        def loss_on_batch(step, g):
            x, _ = get_batch(train_ids, T, batch_size, generator=g)
            inputs, labels = mlm_mask(_with_cls(x, tok["[CLS]"]), generator=g, **kw)
            return model(inputs, labels)[1]

        vg = torch.Generator().manual_seed(seed + 1)
        val_x = _with_cls(get_batch(val_ids, T, 64, generator=vg)[0], tok["[CLS]"])
        val_in, val_lab = mlm_mask(val_x, generator=vg, **kw)
        hist = _fit(model, loss_on_batch, steps=steps, lr=lr, seed=seed, progress=progress,
                    evaluate=lambda: model(val_in, val_lab)[1], desc="MLM pretraining")
        return {"model": model.state_dict(), "history": hist}

    saved = _cached("encoder", key, build, cache=cache)
    torch.manual_seed(seed)
    model = Encoder(config)
    model.load_state_dict(saved["model"])
    model.eval()
    return model, tok, saved["history"]


# =========================================================================== the downstream task


def encode_texts(texts: Sequence[str], tok: SpecialTokenizer, block_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS]`` + the first ``block_size - 1`` characters of each text, right-padded with
    ``[PAD]``: ids (N, block_size) and attention mask (N, block_size), False at padding."""
    rows = [torch.tensor([tok["[CLS]"], *tok.base.encode(t[: block_size - 1])]) for t in texts]
    ids = pad_batch(rows, pad_value=tok["[PAD]"])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, r in enumerate(rows):
        mask[i, : len(r)] = True
    return ids, mask


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def baselines(task: TaskData, *, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """Test accuracy of the two baselines every result is compared with.

    ``majority``: always answer the most common training class. ``bag_of_words``:
    logistic regression on word counts (the 2,000 commonest training words, log(1 + count)),
    trained with AdamW full-batch. Returns ``{"majority": acc, "bag_of_words": acc}``.
    """
    from collections import Counter

    majority = Counter(task.train_labels).most_common(1)[0][0]
    counts = Counter(w for t in task.train_texts for w in set(_words(t)))
    vocab = {w: i for i, (w, _) in enumerate(counts.most_common(2000))}

    def features(texts):
        x = torch.zeros(len(texts), len(vocab))
        for i, t in enumerate(texts):
            for w in _words(t):
                if w in vocab:
                    x[i, vocab[w]] += 1
        return x.log1p()

    x, y = features(task.train_texts), torch.tensor(task.train_labels)
    torch.manual_seed(seed)
    model = nn.Linear(len(vocab), len(task.classes))
    _fit(model, lambda step, g: F.cross_entropy(model(x), y), steps=steps, lr=0.05,
         weight_decay=0.01)
    with torch.no_grad():
        pred = model(features(task.test_texts)).argmax(-1)
    y_test = torch.tensor(task.test_labels)
    return {"majority": float((y_test == majority).float().mean()),
            "bag_of_words": float((pred == y_test).float().mean())}


FINETUNE_METHODS = ("probe", "full", "lora")


def run_finetune(method: str = "lora", *, r: int = 4, alpha: float = 8,
                 target_modules: Sequence[str] = ("c_attn",), steps: int = 150,
                 batch_size: int = 32, lr: float | None = None, seed: int = 0,
                 cache: bool = True, progress: bool = False) -> dict:
    """Fine-tune the pretrained encoder on :func:`module_task` one of three ways.

    ``"probe"``: freeze the encoder, train only the linear head (a linear probe: how much
    of the task the pretrained features already hold). ``"full"``: train every parameter.
    ``"lora"``: freeze the encoder, :func:`apply_lora` (rank ``r``, ``alpha``) on the
    ``target_modules`` (default: the query/key/value matrix ``c_attn`` of every block),
    train LoRA and the head. The probe trains its head on features computed once (the
    frozen encoder gives the same features every step), so its ``step_time`` is the head's.

    Returns (cached) a dict: ``method``, ``r``, ``alpha``, ``trainable`` and ``total``
    parameter counts, ``step``/``loss`` (training curve), ``val_step``/``val`` (validation
    accuracy), ``step_time`` (median seconds per step), ``test_acc``, ``test_n``,
    ``test_ci`` (Wilson 95 %), ``baselines`` (:func:`baselines`).
    """
    if method not in FINETUNE_METHODS:
        raise ValueError(f"method must be one of {FINETUNE_METHODS}, got {method!r}")
    # LoRA's few, zero-started parameters take a larger step than full fine-tuning's
    # (each rate picked on the validation split: LoRA at 3e-3 reached 0.40, at 1e-2 0.53)
    lr = lr if lr is not None else {"probe": 3e-3, "full": 5e-4, "lora": 1e-2}[method]
    lora = method == "lora"
    key = dict(method=method, r=r if lora else 0, alpha=alpha if lora else 0,
               target_modules=list(target_modules) if lora else [], steps=steps,
               batch_size=batch_size, lr=lr, seed=seed, encoder=_upstream("encoder"))

    def build() -> dict:
        from lmlab.transformer import count_parameters

        encoder, tok, _ = pretrain_encoder(seed=seed)
        task = module_task(seed=seed)
        T = encoder.config.block_size
        data = {part: (*encode_texts(getattr(task, f"{part}_texts"), tok, T),
                       torch.tensor(getattr(task, f"{part}_labels")))
                for part in ("train", "val", "test")}
        torch.manual_seed(seed)
        model = Classifier(encoder, len(task.classes))
        total = count_parameters(model)
        if lora:
            apply_lora(model, list(target_modules), r=r, alpha=alpha, trainable=["head"])
        elif method == "probe":
            mark_only_lora_trainable(model, trainable=["head"])
            with torch.no_grad():  # frozen features: compute them once
                pooled = {part: model.pooled(i, m) for part, (i, m, _) in data.items()}
        y = data["train"][2]

        def logits(part, rows=None):
            if method == "probe":
                x = pooled[part] if rows is None else pooled[part][rows]
                return model.head(x)
            ids, mask, _ = data[part]
            return model(ids, mask) if rows is None else model(ids[rows], mask[rows])

        def loss_on_batch(step, g):
            rows = torch.randint(len(y), (batch_size,), generator=g)
            return F.cross_entropy(logits("train", rows), y[rows])

        def accuracy(part):
            return float((logits(part).argmax(-1) == data[part][2]).float().mean())

        hist = _fit(model, loss_on_batch, steps=steps, lr=lr, seed=seed, progress=progress,
                    evaluate=lambda: accuracy("val"), desc=f"fine-tuning ({method})")
        with torch.no_grad():
            acc = accuracy("test")
        n = len(data["test"][2])
        return {**hist, "method": method, "r": key["r"], "alpha": key["alpha"],
                "trainable": count_parameters(model, trainable_only=True), "total": total,
                "test_acc": acc, "test_n": n,
                "test_ci": list(wilson_interval(round(acc * n), n)),
                "baselines": baselines(task, seed=seed)}

    return _cached("finetune", key, build, cache=cache)


# =========================================================================== a base GPT, SFT, DPO


def gpt_from_state(state: dict, *, sizes: dict | None = None):
    """Rebuild one of this chapter's GPTs from a cached ``state_dict``."""
    from lmlab.transformer import GPT

    vocab = state["transformer.wte.weight"].shape[0]
    model = GPT(_config(sizes or BASE_GPT_CONFIG, vocab))
    model.load_state_dict(state)
    return model.eval()


def pretrain_gpt(steps: int = 300, *, batch_size: int = 16, lr: float = 2e-3, seed: int = 0,
                 cache: bool = True, progress: bool = False):
    """The chapter's base model: a character GPT (:data:`BASE_GPT_CONFIG`) trained with
    :func:`lmlab.train.train` on :func:`pretraining_text`. Its vocabulary already holds
    :data:`SPECIAL_TOKENS` (never seen in pretraining; fine-tuning teaches them).
    Returns ``(model, tokenizer, history)`` (``history``: ``History.as_dict()``). Cached."""
    from lmlab.data import train_val_split
    from lmlab.train import train
    from lmlab.transformer import GPT

    tok = chapter_tokenizer()
    key = dict(BASE_GPT_CONFIG, steps=steps, batch_size=batch_size, lr=lr, seed=seed)

    def build() -> dict:
        ids = torch.tensor(tok.encode(pretraining_text(seed=seed)), dtype=torch.long)
        train_ids, val_ids = train_val_split(ids, 0.1)
        torch.manual_seed(seed)
        model = GPT(_config(BASE_GPT_CONFIG, tok.vocab_size))
        hist = train(model, train_ids, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                     val_data=val_ids, eval_batches=2, progress=progress,
                     warmup=max(1, steps // 10))
        return {"model": model.state_dict(), "history": hist.as_dict()}

    saved = _cached("gpt", key, build, cache=cache)
    return gpt_from_state(saved["model"]), tok, saved["history"]


def chat_example(ex: Instruction, tok: SpecialTokenizer) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one example; the response ends with ``<|end|>``."""
    return tok.encode(format_chat(ex.instruction)), tok.encode(ex.response + "<|end|>")


def _sft_batch(examples: Sequence[Instruction], tok: SpecialTokenizer):
    pairs = [sft_labels(*chat_example(ex, tok)) for ex in examples]
    inputs = pad_batch([p[0] for p in pairs], pad_value=tok["[PAD]"])
    labels = pad_batch([p[1] for p in pairs], pad_value=IGNORE_INDEX)
    return inputs, labels


def sft_loss(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the response tokens only (labels of -100 are skipped).
    inputs, labels: (B, T) from :func:`sft_labels`, right-padded."""
    logits = _logits_of(model(inputs))
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def _normalize_answer(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def answer_f1(prediction: str, reference: str) -> float:
    """SQuAD's word-overlap F1 (Rajpurkar et al. 2016): lower-cased words and numbers,
    punctuation dropped; harmonic mean of precision and recall of the shared words."""
    from collections import Counter

    p, r = _normalize_answer(prediction), _normalize_answer(reference)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


@torch.no_grad()
def answer(model: nn.Module, tok: SpecialTokenizer, instructions: Sequence[str], *,
           max_new_tokens: int = 72) -> list[str]:
    """Greedy answers to several instructions at once, cut at the first ``<|end|>``."""
    from lmlab.generate import generate_batch

    prompts = [tok.encode(format_chat(q)) for q in instructions]
    outs = generate_batch(model, prompts, max_new_tokens, pad_id=tok["[PAD]"], temperature=0.0)
    end = tok["<|end|>"]
    texts = []
    for p, o in zip(prompts, outs):
        new = o[len(p):]
        texts.append(tok.decode(new[: new.index(end)] if end in new else new))
    return texts


def answer_scores(model: nn.Module, tok: SpecialTokenizer, examples: Sequence[Instruction]
                  ) -> dict:
    """Greedy answers to ``examples`` and their scores: ``answers`` (list of str),
    ``exact`` (fraction equal to the reference after normalising), ``f1`` (mean
    :func:`answer_f1`)."""
    got = answer(model, tok, [e.instruction for e in examples])
    exact = [_normalize_answer(a) == _normalize_answer(e.response) for a, e in zip(got, examples)]
    f1 = [answer_f1(a, e.response) for a, e in zip(got, examples)]
    return {"answers": got, "exact": sum(exact) / len(exact), "f1": sum(f1) / len(f1)}


def run_sft(steps: int = 300, *, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
            cache: bool = True, progress: bool = False) -> dict:
    """Supervised fine-tuning of :func:`pretrain_gpt` on :func:`instruction_set`'s train
    part, loss on the response tokens only (:func:`sft_labels`).

    Returns (cached) a dict: ``step``/``loss`` and ``val_step``/``val`` (the masked loss on
    the held-out instructions), ``step_time``, ``n_train``, ``n_test``, ``before`` and
    ``after`` (:func:`answer_scores` on the held-out instructions for the base model and
    the tuned one), ``test`` (the held-out examples as ``[name, instruction, reference]``)
    and ``model`` (the tuned ``state_dict``; :func:`gpt_from_state` rebuilds it).
    """
    key = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, gpt=_upstream("gpt"))

    def build() -> dict:
        import copy

        base, tok, _ = pretrain_gpt(seed=seed)
        train_set, test_set = instruction_set(seed=seed)
        model = copy.deepcopy(base)
        val_in, val_lab = _sft_batch(test_set, tok)

        def loss_on_batch(step, g):
            rows = torch.randint(len(train_set), (batch_size,), generator=g).tolist()
            return sft_loss(model, *_sft_batch([train_set[i] for i in rows], tok))

        hist = _fit(model, loss_on_batch, steps=steps, lr=lr, seed=seed, progress=progress,
                    evaluate=lambda: sft_loss(model, val_in, val_lab), weight_decay=0.1,
                    desc="SFT")
        return {**hist, "n_train": len(train_set), "n_test": len(test_set),
                "before": answer_scores(base, tok, test_set),
                "after": answer_scores(model, tok, test_set),
                "test": [[e.name, e.instruction, e.response] for e in test_set],
                "model": model.state_dict()}

    return _cached("sft", key, build, cache=cache)


def preference_pairs(examples: Sequence[Instruction], *, seed: int = 0
                     ) -> list[tuple[Instruction, str]]:
    """Each example with a wrong answer: the answer of another function from another
    module, drawn with ``seed``. Returns ``[(example, rejected_response), ...]``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for ex in examples:
        others = [o for o in examples if o.module != ex.module]
        out.append((ex, others[int(torch.randint(len(others), (1,), generator=g))].response))
    return out


def _pair_batch(pairs, tok):
    chosen = _sft_batch([ex for ex, _ in pairs], tok)
    rejected = _sft_batch([Instruction(ex.name, ex.module, ex.instruction, r) for ex, r in pairs],
                          tok)
    return chosen, rejected


@torch.no_grad()
def _pair_logps(model, pairs, tok, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    c, r = [], []
    for i in range(0, len(pairs), chunk):
        (ci, cl), (ri, rl) = _pair_batch(pairs[i:i + chunk], tok)
        c.append(sequence_logprob(model, ci, cl))
        r.append(sequence_logprob(model, ri, rl))
    return torch.cat(c), torch.cat(r)


def run_dpo(beta: float = 0.1, *, steps: int = 150, batch_size: int = 16, lr: float = 2e-4,
            seed: int = 0, cache: bool = True, progress: bool = False) -> dict:
    """DPO on preference pairs made from the data (:func:`preference_pairs`), starting
    from the SFT model, which also serves as the frozen reference.

    Returns (cached) a dict: ``beta``, ``step``/``loss`` (DPO loss), ``val_step``/``val``
    (mean held-out reward margin ``β[(π_c - r_c) - (π_r - r_r)]``), ``step_time``,
    ``n_train``/``n_test`` pairs, ``win_rate`` (``{"base", "sft", "dpo"}``: the fraction
    of held-out pairs whose right answer gets the higher summed log-probability),
    ``margin`` (final held-out reward margin, mean), ``reward_chosen`` /
    ``reward_rejected`` (held-out means), ``kl_proxy`` (mean held-out
    ``log π - log π_ref`` of the chosen answers: how far the policy moved),
    ``after`` (:func:`answer_scores` of the DPO model on the held-out instructions).
    """
    key = dict(beta=beta, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
               sft=_upstream("sft"))

    def build() -> dict:
        import copy

        base, tok, _ = pretrain_gpt(seed=seed)
        sft = run_sft(seed=seed)
        reference = gpt_from_state(sft["model"])
        for p in reference.parameters():
            p.requires_grad_(False)
        policy = copy.deepcopy(reference)
        for p in policy.parameters():
            p.requires_grad_(True)
        train_set, test_set = instruction_set(seed=seed)
        train_pairs = preference_pairs(train_set, seed=seed)
        test_pairs = preference_pairs(test_set, seed=seed + 1)
        ref_c, ref_r = _pair_logps(reference, train_pairs, tok)
        test_ref = _pair_logps(reference, test_pairs, tok)

        def loss_on_batch(step, g):
            rows = torch.randint(len(train_pairs), (batch_size,), generator=g).tolist()
            (ci, cl), (ri, rl) = _pair_batch([train_pairs[i] for i in rows], tok)
            return dpo_loss(sequence_logprob(policy, ci, cl), sequence_logprob(policy, ri, rl),
                            ref_c[rows], ref_r[rows], beta=beta)

        def held_out_margin():
            return dpo_rewards(*_pair_logps(policy, test_pairs, tok), *test_ref,
                               beta=beta).margin.mean()

        hist = _fit(policy, loss_on_batch, steps=steps, lr=lr, seed=seed, progress=progress,
                    evaluate=held_out_margin, weight_decay=0.0, desc="DPO")
        pc, pr = _pair_logps(policy, test_pairs, tok)
        rewards = dpo_rewards(pc, pr, *test_ref, beta=beta)

        def win_rate(c, r):
            return float((c > r).float().mean())

        return {**hist, "beta": beta, "n_train": len(train_pairs), "n_test": len(test_pairs),
                "win_rate": {"base": win_rate(*_pair_logps(base, test_pairs, tok)),
                             "sft": win_rate(*test_ref), "dpo": win_rate(pc, pr)},
                "margin": float(rewards.margin.mean()),
                "reward_chosen": float(rewards.chosen.mean()),
                "reward_rejected": float(rewards.rejected.mean()),
                "kl_proxy": float((pc - test_ref[0]).mean()),
                "after": answer_scores(policy, tok, test_set)}

    return _cached("dpo", key, build, cache=cache)


# =========================================================================== distillation and pruning

#: the distilled student: half as deep and half as wide as the teacher (about 1/8 the size)
STUDENT_CONFIG = dict(n_layer=2, n_head=2, n_embd=64, block_size=128)


def run_distillation(temperature: float = 2.0, *, alpha: float = 1.0, steps: int = 300,
                     batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
                     cache: bool = True, progress: bool = False) -> dict:
    """Knowledge distillation (Hinton et al. 2015) against the hard-label baseline.

    The teacher is :func:`pretrain_gpt`; the student (:data:`STUDENT_CONFIG`) is trained
    twice from the same initialisation on the same batches for the same ``steps``: on the
    hard next tokens (cross-entropy), and on ``alpha · distill_loss(T) + (1 - alpha) · CE``
    (``alpha = 1``: the teacher's soft targets only). Both are scored by the ordinary
    next-token loss on held-out text.

    Returns (cached) a dict: ``temperature``, ``alpha``, ``teacher_params``,
    ``student_params``, ``teacher_val`` (the teacher's own validation loss), and for
    ``"hard"`` and ``"soft"`` each: ``step``, ``loss``, ``val_step``, ``val``,
    ``step_time``, ``final_val``.
    """
    from lmlab.compress import distill_loss
    from lmlab.data import get_batch, train_val_split
    from lmlab.train import evaluate
    from lmlab.transformer import GPT, count_parameters

    key = dict(STUDENT_CONFIG, temperature=temperature, alpha=alpha, steps=steps,
               batch_size=batch_size, lr=lr, seed=seed, teacher=_upstream("gpt"))

    def build() -> dict:
        teacher, tok, _ = pretrain_gpt(seed=seed)
        ids = torch.tensor(tok.encode(pretraining_text(seed=seed)), dtype=torch.long)
        train_ids, val_ids = train_val_split(ids, 0.1)
        T = STUDENT_CONFIG["block_size"]
        out = {"temperature": temperature, "alpha": alpha,
               "teacher_params": count_parameters(teacher),
               "teacher_val": evaluate(teacher, val_ids, batch_size=16, max_batches=4)[0]}
        for kind in ("hard", "soft"):
            torch.manual_seed(seed)
            student = GPT(_config(STUDENT_CONFIG, tok.vocab_size))
            out["student_params"] = count_parameters(student)

            def loss_on_batch(step, g, student=student, kind=kind):
                x, y = get_batch(train_ids, T, batch_size, generator=g)
                logits, hard = student(x, y)
                if kind == "hard":
                    return hard
                with torch.no_grad():
                    teacher_logits = teacher(x)[0]
                soft = distill_loss(logits, teacher_logits, temperature=temperature)
                return alpha * soft + (1 - alpha) * hard

            hist = _fit(student, loss_on_batch, steps=steps, lr=lr, seed=seed, weight_decay=0.1,
                        evaluate=lambda s=student: evaluate(s, val_ids, batch_size=16,
                                                            max_batches=4)[0],
                        progress=progress, desc=f"student ({kind})")
            out[kind] = {**hist, "final_val": hist["val"][-1]}
        return out

    return _cached("distill", key, build, cache=cache)


PRUNE_SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def run_pruning(sparsities: Sequence[float] = PRUNE_SPARSITIES, *, seed: int = 0,
                cache: bool = True) -> dict:
    """Validation loss of :func:`pretrain_gpt` after magnitude pruning, no retraining.

    Every ``nn.Linear`` weight in the blocks is pruned on its own (embeddings and the head
    are kept, see :func:`lmlab.compress.prune_model`). Returns (cached) a dict:
    ``sparsity`` (list), ``val`` (the loss at each, unstructured), ``val_2_4`` (the 2:4
    pattern, 50 %), ``val_dense`` (no pruning).
    """
    import copy

    from lmlab.compress import prune_model
    from lmlab.data import train_val_split
    from lmlab.train import evaluate

    key = dict(sparsities=list(sparsities), seed=seed, model=_upstream("gpt"))

    def build() -> dict:
        model, tok, _ = pretrain_gpt(seed=seed)
        ids = torch.tensor(tok.encode(pretraining_text(seed=seed)), dtype=torch.long)
        _, val_ids = train_val_split(ids, 0.1)

        def val(m):
            return evaluate(m, val_ids, batch_size=16, max_batches=4)[0]

        losses = [val(prune_model(copy.deepcopy(model), s)) for s in sparsities]
        return {"sparsity": list(sparsities), "val": losses, "val_dense": val(model),
                "val_2_4": val(prune_model(copy.deepcopy(model), pattern="2:4"))}

    return _cached("prune", key, build, cache=cache)


def sparse_matmul_timing(sparsities: Sequence[float] = (0.5, 0.7, 0.9, 0.95, 0.99), *,
                         n: int = 1024, batch: int = 64, repeat: int = 15) -> dict:
    """Why unstructured sparsity does not speed up a dense matmul on a CPU: time
    ``x @ W.T`` for a dense W, for W with a fraction of its entries set to zero but still
    stored densely (the kernel multiplies the zeros too), and for the same W in PyTorch's
    CSR sparse format (which skips them, at the price of an index per kept weight and
    irregular memory access). x: (batch, n), W: (n, n). Not cached: it is a timing.

    Returns ``{"sparsity": [...], "dense": s, "zeros_in_dense": [...], "csr": [...],
    "zeros_vs_dense": [...], "csr_vs_dense": [...]}``, seconds per call (medians) and
    ratios (> 1: slower than dense).
    """
    import warnings

    from lmlab.compress import magnitude_prune
    from lmlab.device import time_fn

    g = torch.Generator().manual_seed(0)
    w = torch.randn(n, n, generator=g)
    x = torch.randn(batch, n, generator=g)
    dense = time_fn(lambda: x @ w.T, repeat=repeat).median
    out: dict = {"sparsity": list(sparsities), "dense": dense, "n": n, "batch": batch,
                 "zeros_in_dense": [], "csr": []}
    for s in sparsities:
        pruned, _ = magnitude_prune(w, s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            csr = pruned.to_sparse_csr()
        out["zeros_in_dense"].append(time_fn(lambda p=pruned: x @ p.T, repeat=repeat).median)
        out["csr"].append(time_fn(lambda c=csr: (c @ x.T).T, repeat=repeat).median)
    out["zeros_vs_dense"] = [t / dense for t in out["zeros_in_dense"]]
    out["csr_vs_dense"] = [t / dense for t in out["csr"]]
    return out
