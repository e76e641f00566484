"""Speculative decoding: a small draft model guesses, the big target model checks.

Decoding a large model at batch 1 is limited by reading its weights once per token, not
by arithmetic: checking k + 1 positions in one forward pass costs about as much as
producing one. Speculative decoding (Leviathan et al. 2023, "Fast Inference from
Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language
Model Decoding with Speculative Sampling") exploits that:

1. a cheap *draft* model q proposes k tokens ``x_1..x_k``, one at a time;
2. the *target* model p scores all of them in one pass, which gives its distributions
   ``p_1..p_{k+1}`` at the k proposed positions and the one after;
3. :func:`speculative_accept` keeps draft token ``x_i`` with probability
   ``min(1, p_i(x_i) / q_i(x_i))``; at the first rejection it draws the replacement from
   the residual ``norm(max(0, p_i - q_i))``; when all k are kept it draws one bonus
   token from ``p_{k+1}``.

Every token that comes out is distributed exactly as if the target had sampled it
alone: a draft token x survives with probability ``q(x) · min(1, p(x)/q(x)) =
min(q(x), p(x))``, and the residual hands out the missing ``p(x) - min(q(x), p(x))``.
Each target pass yields between 1 and k + 1 tokens.

:func:`speculative_generate` runs the loop with a KV cache for each model. Rejected
positions are rolled back by shortening the caches (their buffers stay; the next tokens
overwrite them).

Shapes: ``k`` draft tokens per round, ``V`` vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lmlab.generate import KVCache, _check_model, _logits_of

__all__ = [
    "speculative_accept",
    "sample_from",
    "SpeculativeStats",
    "speculative_generate",
    "char_gpt",
]


# --------------------------------------------------------------------------- accept/reject


def sample_from(probs: torch.Tensor, u: float | torch.Tensor) -> int:
    """Inverse-CDF sampling: the first token whose cumulative probability exceeds ``u``.

    probs: (V,) non-negative, summing to 1; u in [0, 1). With ``u`` uniform this draws a
    token with probability ``probs[token]``. Tokens of probability 0 are never picked,
    even when float rounding leaves the total a hair below ``u``.
    """
    cdf = torch.cumsum(probs, dim=-1)
    token = int(torch.searchsorted(cdf, torch.as_tensor(u, dtype=cdf.dtype).reshape(1),
                                   right=True))
    last_possible = int(probs.nonzero().max())
    return min(token, last_possible)


def _check_accept_inputs(draft_probs, target_probs, draft_tokens) -> None:
    for name, t in (("draft_probs", draft_probs), ("target_probs", target_probs)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() != 2:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a 2-D float tensor of probabilities, got {got}")
    k, V = draft_probs.shape
    if target_probs.shape != (k + 1, V):
        raise ValueError(
            f"target_probs has shape {tuple(target_probs.shape)} but draft_probs has "
            f"{(k, V)}: expected ({k + 1}, {V}), the target's k proposed positions and one more"
        )
    if not isinstance(draft_tokens, torch.Tensor) or draft_tokens.shape != (k,) \
            or draft_tokens.is_floating_point():
        got = tuple(draft_tokens.shape) if isinstance(draft_tokens, torch.Tensor) else \
            type(draft_tokens).__name__
        raise ValueError(f"draft_tokens must be an integer tensor of shape ({k},), got {got}")
    if k and (draft_tokens.min() < 0 or draft_tokens.max() >= V):
        raise ValueError(f"draft_tokens must be token ids in [0, {V}), got {draft_tokens.tolist()}")


def speculative_accept(
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    draft_tokens: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    uniforms: torch.Tensor | None = None,
) -> tuple[int, int]:
    """The accept/reject step of speculative sampling: -> ``(n_accepted, next_token)``.

    draft_probs: (k, V), the draft's distribution q_i at each proposed position;
    target_probs: (k + 1, V), the target's p_i at the same positions plus the next one;
    draft_tokens: (k,), the proposals x_i (drawn from q_i).

    Draft token i is kept when ``u_i < p_i(x_i) / q_i(x_i)`` (probability
    ``min(1, p/q)``); the first rejection stops the round and ``next_token`` is drawn from
    ``max(0, p_i - q_i)`` renormalized. If all k are kept, ``next_token`` is drawn from
    ``p_{k+1}`` (the bonus). The new tokens are ``draft_tokens[:n_accepted]`` then
    ``next_token``.

    ``uniforms`` (k + 1,): the random numbers in [0, 1) to use, ``u_0..u_{k-1}`` for the
    tests and ``u_k`` for :func:`sample_from`; drawn from ``generator`` when not given.
    With them the step is a deterministic function (that is how the exercise grades it).
    """
    _check_accept_inputs(draft_probs, target_probs, draft_tokens)
    k = draft_probs.shape[0]
    if uniforms is None:
        uniforms = torch.rand(k + 1, generator=generator, dtype=torch.float64)
    elif not isinstance(uniforms, torch.Tensor) or uniforms.shape != (k + 1,):
        got = tuple(uniforms.shape) if isinstance(uniforms, torch.Tensor) else type(uniforms).__name__
        raise ValueError(f"uniforms must be a tensor of shape ({k + 1},), got {got}")
    rows = torch.arange(k)
    p = target_probs[rows, draft_tokens].double()
    q = draft_probs[rows, draft_tokens].double()
    # u < p/q written without the division: q(x) = 0 (never drawn) cannot divide by zero
    kept = uniforms[:k].double() * q < p
    n = int(kept.long().cumprod(0).sum())  # the kept ones before the first rejection
    if n == k:
        return k, sample_from(target_probs[k].double(), uniforms[k])
    residual = (target_probs[n].double() - draft_probs[n].double()).clamp(min=0)
    if residual.sum() <= 0:  # p == q up to rounding: a rejection had probability 0
        residual = target_probs[n].double()
    return n, sample_from(residual / residual.sum(), uniforms[k])


# --------------------------------------------------------------------------- the loop


@dataclass
class SpeculativeStats:
    """What one :func:`speculative_generate` run did.

    ``accepted``: draft tokens kept in each target pass (each pass also yields one token
    of its own). ``proposed``: draft tokens proposed in each pass.
    """

    accepted: list[int] = field(default_factory=list)
    proposed: list[int] = field(default_factory=list)
    draft_passes: int = 0

    @property
    def target_passes(self) -> int:
        return len(self.accepted)

    @property
    def new_tokens(self) -> int:
        return sum(self.accepted) + len(self.accepted)

    @property
    def tokens_per_pass(self) -> float:
        """New tokens per target forward pass (plain decoding: 1)."""
        return self.new_tokens / max(1, self.target_passes)

    @property
    def acceptance_rate(self) -> float:
        """Fraction of proposed draft tokens the target kept."""
        return sum(self.accepted) / max(1, sum(self.proposed))


def _as_prompt(ids, device) -> torch.Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1 or ids.numel() == 0:
        raise ValueError(
            f"ids must be one prompt, (T,) or (1, T) with T >= 1, got shape {tuple(ids.shape)}"
        )
    return ids


def _check_generate_args(target, draft, ids, max_new_tokens, k, temperature) -> None:
    _check_model(target)
    _check_model(draft)
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(
            f"draft has vocab_size={draft.config.vocab_size} but target has "
            f"{target.config.vocab_size}: both must use the same tokenizer"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int (draft tokens per round), got {k!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    room = min(target.config.block_size, draft.config.block_size)
    if ids.numel() + max_new_tokens > room:
        raise ValueError(
            f"prompt ({ids.numel()} tokens) + max_new_tokens={max_new_tokens} must fit in "
            f"block_size={room}: speculative decoding does not slide the context window"
        )


def _distributions(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits (T, V) -> next-token distributions (T, V), in float64 for the ratios."""
    return torch.softmax(logits.double() / temperature, dim=-1)


@torch.no_grad()
def speculative_generate(
    target,
    draft,
    ids: torch.Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    k: int = 4,
    temperature: float = 1.0,
    seed: int | None = None,
    greedy: bool = False,
) -> tuple[torch.Tensor, SpeculativeStats]:
    """Continue one prompt by ``max_new_tokens`` tokens of ``target``, drafted by ``draft``.

    ids: (T,) or (1, T) token ids, or a list. Returns ``(tokens, stats)``: tokens (T +
    max_new_tokens,), the prompt then the new tokens, and a :class:`SpeculativeStats`.
    Each round the draft proposes ``k`` tokens (fewer at the end), the target scores them
    in one forward pass and :func:`speculative_accept` decides. ``greedy=True`` (or
    ``temperature=0``) gives exactly the tokens of ``generate(target, ids, n,
    temperature=0)``: the draft proposes its arg-max and the target keeps a proposal
    while it equals its own arg-max. Both models share the vocabulary and are put in eval
    mode; the prompt and the new tokens must fit in both models' ``block_size``.
    """
    device = next(target.parameters()).device
    ids = _as_prompt(ids, device)
    _check_generate_args(target, draft, ids, max_new_tokens, k, temperature)
    greedy = greedy or temperature == 0
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    target.eval()
    draft.eval()
    t_cache, d_cache = KVCache.for_model(target, 1), KVCache.for_model(draft, 1)
    tokens, stats = ids.tolist(), SpeculativeStats()
    end = len(tokens) + max_new_tokens
    while len(tokens) < end:
        k_round = min(k, end - len(tokens) - 1)  # the target always adds one token itself
        proposal, q = _draft_round(draft, d_cache, tokens, k_round, temperature, greedy,
                                   generator)
        stats.draft_passes += k_round
        # one target pass over the tokens it has not seen and the k_round proposals
        fed = torch.tensor([tokens[t_cache.length:] + proposal], device=device)
        logits = _logits_of(target(fed, kv_cache=t_cache))[0, -(k_round + 1):]
        if greedy:  # speculative_accept on one-hot p and q, without building them
            choice = logits.argmax(-1).tolist()
            n = next((i for i, x in enumerate(proposal) if x != choice[i]), k_round)
            next_token = choice[n]
        else:
            p = _distributions(logits, temperature).cpu()
            n, next_token = speculative_accept(q, p, torch.tensor(proposal, dtype=torch.long),
                                               generator)
        tokens += proposal[:n] + [next_token]
        stats.accepted.append(n)
        stats.proposed.append(k_round)
        # roll back: every cache holds all tokens but the newest, minus rejected proposals
        t_cache.truncate(len(tokens) - 1)
        d_cache.truncate(min(d_cache.length, len(tokens) - 1))
    return torch.tensor(tokens, device=device), stats


def _draft_round(draft, cache, tokens, k, temperature, greedy, generator):
    """Let the draft propose k tokens: -> (proposal list of k ids, q (k, V) probabilities;
    zeros when greedy, where only the arg-max tokens matter)."""
    device = next(draft.parameters()).device
    proposal, rows = [], []
    feed = tokens[cache.length:]
    for _ in range(k):
        logits = _logits_of(draft(torch.tensor([feed], device=device), kv_cache=cache))[0, -1]
        if greedy:
            token = int(logits.argmax())
        else:
            q = _distributions(logits[None], temperature)[0].cpu()
            token = int(torch.multinomial(q, 1, generator=generator))
            rows.append(q)
        proposal.append(token)
        feed = [token]
    V = draft.config.vocab_size
    return proposal, torch.stack(rows) if rows else torch.zeros(len(proposal), V)


# --------------------------------------------------------------------------- models to try it on


def char_gpt(n_layer: int, n_head: int, n_embd: int, steps: int, *, seed: int = 0,
             fused: bool = False, progress: bool = False):
    """A character GPT of the given size trained on ``load_corpus("pydoc")`` with the
    recipe of :func:`lmlab.train.small_char_gpt` (same tokenizer, split, block size, batch
    and learning rate), so models of different sizes can draft for each other.

    ``steps = 0`` returns the untrained model; ``fused=True`` builds (and trains) it on
    PyTorch's fused kernels (:class:`lmlab.transformer.GPTConfig`). Weights are cached under ``$LMLAB_CACHE``
    (``speculative_char_gpt/``), keyed by every setting and the corpus. Returns the model
    in eval mode on the CPU.
    """
    from lmlab.data import cache_dir, load_corpus, train_val_split
    from lmlab.tokenizer import CharTokenizer
    from lmlab.train import SMALL_CHAR_GPT as h
    from lmlab.train import load_checkpoint, save_checkpoint, train
    from lmlab.transformer import GPT, GPTConfig

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    text = load_corpus("pydoc")
    tokenizer = CharTokenizer.from_text(text)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=h["block_size"],
                       n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=0.0,
                       fused=fused)
    torch.manual_seed(seed)
    model = GPT(config)
    if steps == 0:
        return model.eval()
    key = json.dumps({**h, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd,
                      "steps": steps, "seed": seed,
                      **({"fused": True} if fused else {}),
                      "corpus": hashlib.sha1(text.encode()).hexdigest()}, sort_keys=True)
    path = cache_dir() / "speculative_char_gpt" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if path.exists():
        model.load_state_dict(load_checkpoint(path)["model"])
        return model.eval()
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids, _ = train_val_split(ids, h["val_fraction"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as small_char_gpt: results must not depend on the core count
    try:
        train(model, train_ids, steps=steps, batch_size=h["batch_size"], lr=h["lr"],
              warmup=min(h["warmup"], steps // 10), seed=seed, progress=progress)
    finally:
        torch.set_num_threads(threads)
    save_checkpoint(path, {"model": model.state_dict()})
    return model.eval()
