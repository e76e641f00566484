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

The experiments the chapter runs (an encoder pretrained with MLM, a downstream task from
the corpus, probe / full fine-tuning / LoRA, SFT, DPO, distillation, pruning) are the
``run_*`` functions further down; each caches its result under ``$LMLAB_CACHE``.
"""

from __future__ import annotations

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
