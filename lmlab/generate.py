"""Inference as a clock: turning a trained GPT into text, one token per tick.

A language model maps a context to a distribution over the next token. Generation is a
loop around that map, and each turn of the loop is one *tick* of a clock:

1. *Sampling* (:func:`sample_next`): pick the next token from the logits. Greedy takes the
   arg-max; otherwise divide the logits by a temperature (:func:`apply_temperature`), keep
   only the ``k`` most likely tokens (:func:`top_k_filter`) and/or the smallest set whose
   probability reaches ``p`` (:func:`top_p_filter`, "nucleus" sampling, Holtzman et al.
   2020), then draw from what is left.
2. *The KV cache* (:class:`KVCache`): the keys and values of tokens already seen never
   change, so each layer keeps them in a preallocated buffer. The first tick (*prefill*)
   runs the whole prompt at once and fills the cache; every later tick (*decode*) feeds
   only the newest token, whose query attends to the cached keys (:func:`attend_with_cache`).
3. *The loop* (:func:`generate`, :func:`generate_batch`): prefill, then decode ticks until
   ``max_new_tokens`` tokens came out. Batches of prompts of different lengths are padded
   on the left so that every row's newest token sits in the same column.
4. *Measuring* (:func:`perplexity`, :func:`time_generation`): how good the model is on a
   text, and how long a tick takes.

Shapes: ``B`` batch, ``T`` tokens, ``V`` vocabulary, ``H`` heads, ``D`` head size,
``L`` layers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = [
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "entropy",
    "KVCache",
    "kv_cache_bytes",
    "attend_with_cache",
    "generate",
    "generate_batch",
    "left_pad",
    "perplexity",
    "GenerationTiming",
    "time_generation",
]


# --------------------------------------------------------------------------- checking


def _check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., V), got {type(logits).__name__}")
    if logits.dim() == 0 or logits.shape[-1] == 0:
        raise ValueError(f"{name} has shape {tuple(logits.shape)}, expected (..., V) with V >= 1")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {logits.dtype}")


def _check_number(name: str, value, low: float, high: float = math.inf, *, low_open=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    below = value <= low if low_open else value < low
    if below or value > high or math.isnan(value):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value!r}")


# --------------------------------------------------------------------------- sampling


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The next-token distribution at a temperature: ``softmax(logits / temperature)``.

    logits: (..., V) -> probabilities (..., V), each row summing to 1. ``temperature``
    must be > 0: below 1 the distribution sharpens towards the arg-max (greedy is the limit
    ``t -> 0``), above 1 it flattens towards uniform. The division happens *before* the
    softmax; dividing probabilities afterwards does not give a distribution.
    """
    _check_logits(logits)
    _check_number("temperature", temperature, 0.0, low_open=True)
    return torch.softmax(logits / temperature, dim=-1)


def _sort_descending(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # stable: among equal logits the lower token id comes first, so ties break the same
    # way on every machine (torch.topk makes no such promise)
    return torch.sort(logits, dim=-1, descending=True, stable=True)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row, set the others to ``-inf``.

    logits: (..., V) -> (..., V). Exactly ``min(k, V)`` entries per row stay finite, even
    when several logits tie with the k-th largest (the lower token id wins the tie).
    ``-inf`` (not 0) is what removes a token: ``exp(-inf) = 0`` after the softmax.
    """
    _check_logits(logits)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k >= logits.shape[-1]:
        return logits.clone()
    _, order = _sort_descending(logits)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order[..., :k], True)
    return logits.masked_fill(~keep, -math.inf)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability
    reaches ``p``; set the others to ``-inf``.

    logits: (..., V) -> (..., V). Sort the probabilities in decreasing order and keep a
    token when the probability of the tokens *before* it is still below ``p``: the token
    that crosses the threshold is kept, so at least one token always survives. ``p = 1``
    keeps every token.
    """
    _check_logits(logits)
    _check_number("p", p, 0.0, 1.0, low_open=True)
    if p >= 1.0:
        return logits.clone()
    sorted_logits, order = _sort_descending(logits)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass ahead of each token
    keep_sorted = before < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -math.inf)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """The entropy (in nats) of ``softmax(logits)`` along the last axis: (..., V) -> (...)."""
    _check_logits(logits)
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(dim=-1)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token of each row: logits (B, V) -> token ids (B,) (or (V,) -> ()).

    ``temperature = 0`` is greedy decoding (arg-max; the lower id wins a tie). Otherwise
    the logits are divided by the temperature, filtered by top-k then top-p (either may be
    None), and one token is drawn from the softmax of what is left with ``generator``.
    """
    _check_logits(logits)
    _check_number("temperature", temperature, 0.0)
    if logits.dim() == 1:
        return sample_next(logits[None], temperature=temperature, top_k=top_k, top_p=top_p,
                           generator=generator)[0]
    if logits.dim() != 2:
        raise ValueError(f"logits has shape {tuple(logits.shape)}, expected (B, V) or (V,)")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------- KV cache


def kv_cache_bytes(
    n_layer: int, batch_size: int, n_head: int, seq_len: int, head_dim: int, bytes_per_element: int = 4
) -> int:
    """Bytes a KV cache needs: a key *and* a value vector per layer, head and position,
    ``2 · L · B · H · T · D · bytes_per_element``."""
    return 2 * n_layer * batch_size * n_head * seq_len * head_dim * bytes_per_element


class KVCache:
    """The keys and values of every layer for the positions already processed.

    One buffer per layer of shape (B, H, max_len, D) is allocated up front (H: the
    model's *key/value* heads, fewer than its query heads with grouped-query attention;
    with RoPE the keys are stored already rotated to their positions), so a decode
    step writes into memory that already exists instead of growing tensors (which would
    copy the whole cache every step). ``update(layer, k, v)`` writes the new positions
    after the cached ones and returns views of everything cached so far.

    ``length`` is the number of positions cached in *every* layer. A model reads it once at
    the start of its forward pass, where the new tokens' positions start; during that pass
    the layers fill in one after another and ``length`` only moves once the last layer
    has its share.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        dims = dict(n_layer=n_layer, batch_size=batch_size, n_head=n_head, max_len=max_len,
                    head_dim=head_dim)
        for name, value in dims.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"KVCache {name} must be a positive int, got {value!r}")
        shape = (batch_size, n_head, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.lengths = [0] * n_layer  # positions written, per layer
        self.max_len = max_len

    @classmethod
    def for_model(cls, model, batch_size: int, max_len: int | None = None) -> KVCache:
        """A cache shaped for a :class:`lmlab.transformer.GPT` (``max_len`` defaults to its
        ``block_size``), on the device and in the dtype of its weights.

        It holds the model's *key/value* heads: ``n_kv_head`` of them with grouped-query
        attention, which is where GQA saves memory."""
        cfg = model.config
        weight = next(model.parameters())
        kv_heads = getattr(cfg, "n_kv_head", None) or cfg.n_head
        return cls(cfg.n_layer, batch_size, kv_heads, max_len or cfg.block_size,
                   cfg.n_embd // cfg.n_head, dtype=weight.dtype, device=weight.device)

    @property
    def length(self) -> int:
        """Positions cached in every layer."""
        return min(self.lengths)

    @property
    def nbytes(self) -> int:
        """Memory held by the buffers (the whole ``max_len``, used or not)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def update(self, layer_index: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H, T_new, D) to layer ``layer_index``; return (k_all, v_all),
        views of shape (B, H, length + T_new, D)."""
        if not 0 <= layer_index < len(self.keys):
            raise IndexError(f"layer_index {layer_index} out of range for {len(self.keys)} layers")
        buf_k, buf_v = self.keys[layer_index], self.values[layer_index]
        expected = buf_k.shape[:2] + buf_k.shape[3:]
        for name, t in (("k", k), ("v", v)):
            if t.dim() != 4 or t.shape[:2] + t.shape[3:] != expected:
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)}, expected (B, H, T_new, D) = "
                    f"({expected[0]}, {expected[1]}, T_new, {expected[2]})"
                )
        start = self.lengths[layer_index]
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"the cache holds at most max_len={self.max_len} positions; layer {layer_index} "
                f"has {start} and got {k.shape[2]} more"
            )
        buf_k[:, :, start:end] = k
        buf_v[:, :, start:end] = v
        self.lengths[layer_index] = end
        return buf_k[:, :, :end], buf_v[:, :, :end]

    def reset(self) -> None:
        """Forget every cached position (the buffers stay allocated)."""
        self.truncate(0)

    def truncate(self, length: int) -> None:
        """Forget every cached position from ``length`` on (the buffers stay allocated):
        how speculative decoding drops the keys and values of rejected draft tokens."""
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= self.length:
            raise ValueError(f"length must be an int in [0, {self.length}], got {length!r}")
        self.lengths = [length] * len(self.lengths)


def attend_with_cache(
    q_new: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One attention step with a cache, written out: what a layer does at each tick.

    q_new, k_new, v_new: (B, H, T_new, D), the new tokens; k_cache, v_cache:
    (B, H, T_old, D), the earlier ones (T_old may be 0). Returns ``(out, k_all, v_all)``:
    the keys and values appended along the *time* axis (B, H, T_old + T_new, D), and
    ``out = softmax(q kᵀ / √D + causal) v`` (B, H, T_new, D), where new token i sits at
    position T_old + i and sees every cached token and the new tokens up to itself.
    """
    k_all = torch.cat([k_cache, k_new], dim=2)
    v_all = torch.cat([v_cache, v_new], dim=2)
    T_old, T_new = k_cache.shape[2], q_new.shape[2]
    scores = q_new @ k_all.transpose(-2, -1) / math.sqrt(q_new.shape[-1])  # (B, H, T_new, T_all)
    visible = torch.ones(T_new, T_old + T_new, dtype=torch.bool, device=q_new.device).tril(T_old)
    scores = scores.masked_fill(~visible, -math.inf)
    return torch.softmax(scores, dim=-1) @ v_all, k_all, v_all


# --------------------------------------------------------------------------- generation


def _check_model(model) -> None:
    config = getattr(model, "config", None)
    needed = ("n_layer", "n_head", "n_embd", "block_size")
    if config is None or not all(hasattr(config, n) for n in needed):
        raise TypeError(
            f"model must be a GPT-like module with a .config holding {', '.join(needed)} "
            f"(lmlab.transformer.GPT), got {type(model).__name__}"
        )


def _logits_of(output) -> torch.Tensor:
    # lmlab's GPT returns (logits, loss); accept a bare logits tensor too
    return output[0] if isinstance(output, tuple) else output


def _window_start(total: int, start: int, block_size: int) -> int:
    """Where the context window starts once it would exceed ``block_size`` tokens.

    With absolute positions a cached key belongs to its position, so the window cannot
    slide by one token per tick without recomputing every key. Instead, when the window
    is full, it restarts with the most recent half of the tokens (one new prefill).
    Generation with and without the cache follow the same rule, so they see the same
    context and greedy decoding gives the same tokens.
    """
    if total - start <= block_size:
        return start
    return total - max(1, block_size // 2)


def _sampling_args(temperature, top_k, top_p) -> None:
    _check_number("temperature", temperature, 0.0)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
    if top_p is not None:
        _check_number("top_p", top_p, 0.0, 1.0, low_open=True)


@torch.no_grad()
def _decode(model, ids, mask, max_new_tokens, *, temperature, top_k, top_p, use_cache, seed,
            progress):
    """The shared loop: ids (B, T) and mask (B, T) or None -> (B, T + max_new_tokens)."""
    block_size = model.config.block_size
    device = ids.device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    B = ids.shape[0]
    cache = KVCache.for_model(model, B) if use_cache else None
    start = max(0, ids.shape[1] - block_size)
    fed = 0  # tokens of the current window already in the cache
    for _ in tqdm(range(max_new_tokens), desc="decode", disable=not progress, leave=False):
        new_start = _window_start(ids.shape[1], start, block_size)
        if new_start != start and cache is not None:
            cache.reset()
            fed = 0
        start = new_start
        window = ids[:, start:]
        window_mask = None if mask is None else mask[:, start:]
        if cache is None:
            logits = _logits_of(model(window, attention_mask=window_mask))
        else:
            # prefill feeds the whole window, each decode tick only the newest token
            logits = _logits_of(model(window[:, fed:], kv_cache=cache, attention_mask=window_mask))
            fed = window.shape[1]
        token = sample_next(logits[:, -1, :], temperature=temperature, top_k=top_k, top_p=top_p,
                            generator=generator)
        ids = torch.cat([ids, token[:, None].to(ids.dtype)], dim=1)
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
    return ids


def generate(
    model,
    ids: torch.Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    seed: int | None = None,
    attention_mask: torch.Tensor | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Continue ``ids`` by ``max_new_tokens`` tokens, one tick at a time.

    ids: (B, T) token ids, or a list of ids for one prompt (then (T,) comes back as
    (T + max_new_tokens,)). Returns the prompt followed by the new tokens,
    (B, T + max_new_tokens). ``temperature = 0`` is greedy; ``top_k``/``top_p`` filter as
    in :func:`sample_next`; ``seed`` makes sampling repeatable. ``use_cache=False``
    recomputes the whole context every tick (same tokens, slower). ``attention_mask``
    (B, T) bool is False at left padding (see :func:`generate_batch`). The model is put in
    eval mode and left that way.
    """
    _check_model(model)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    _sampling_args(temperature, top_k, top_p)
    device = next(model.parameters()).device
    if isinstance(ids, torch.Tensor) and ids.device != device:
        raise ValueError(f"ids are on {ids.device} but the model is on {device}: move one of them")
    ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    single = ids.dim() == 1
    if single:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(f"ids must be (B, T) with T >= 1 (or a non-empty list), got shape {tuple(ids.shape)}")
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask, device=device).bool()
        if attention_mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected the shape "
                f"of ids {tuple(ids.shape)}"
            )
    model.eval()
    out = _decode(model, ids, attention_mask, max_new_tokens, temperature=temperature,
                  top_k=top_k, top_p=top_p, use_cache=use_cache, seed=seed, progress=progress)
    return out[0] if single else out


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad prompts of different lengths on the left: -> ids (B, T_max), mask (B, T_max).

    Left, not right: every row's last real token then sits in the last column, which is
    where the next token is read from and where the next one is appended.
    """
    if len(prompts) == 0 or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token lists")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt):] = True
    return ids, mask


def generate_batch(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad_id: int = 0,
    **kwargs,
) -> list[list[int]]:
    """Continue several prompts of different lengths at once (left padding, one forward
    pass per tick for the whole batch). Returns each prompt followed by its new tokens,
    without padding. ``kwargs`` go to :func:`generate`."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))
    out = generate(model, ids, max_new_tokens, attention_mask=mask, **kwargs)
    width = ids.shape[1]
    return [out[row, width - len(p):].tolist() for row, p in enumerate(prompts)]


# --------------------------------------------------------------------------- measuring


@torch.no_grad()
def perplexity(model, data: str | Sequence[int] | torch.Tensor, *, tokenizer=None,
               batch_size: int = 16, progress: bool = False) -> float:
    """``exp`` of the mean next-token cross-entropy of ``model`` on ``data``.

    ``data``: a text (then ``tokenizer.encode`` turns it into ids) or token ids. The ids
    are cut into non-overlapping windows of ``block_size + 1`` tokens sharing one token at
    the seams, so every token after the first is predicted exactly once, from at most
    ``block_size`` tokens of context (the first tokens of each window see less context).
    """
    _check_model(model)
    if isinstance(data, str):
        if tokenizer is None:
            raise ValueError("data is a text: pass tokenizer=... to turn it into token ids")
        data = tokenizer.encode(data)
    ids = torch.as_tensor(data, dtype=torch.long).flatten()
    if ids.numel() < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {ids.numel()}")
    device = next(model.parameters()).device
    block = model.config.block_size
    starts = list(range(0, ids.numel() - 1, block))
    model.eval()
    total, count = 0.0, 0
    for i in tqdm(range(0, len(starts), batch_size), desc="perplexity", disable=not progress,
                  leave=False):
        chunk = starts[i:i + batch_size]
        width = min(block, ids.numel() - 1 - chunk[0])
        x = torch.full((len(chunk), width), 0, dtype=torch.long)
        y = torch.full((len(chunk), width), -1, dtype=torch.long)  # -1: not scored
        for row, s in enumerate(chunk):
            n = min(block, ids.numel() - 1 - s)
            x[row, :n], y[row, :n] = ids[s:s + n], ids[s + 1:s + 1 + n]
        logits = _logits_of(model(x.to(device)))
        y = y.to(device)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                              ignore_index=-1, reduction="sum")
        total += float(nll)
        count += int((y >= 0).sum())
    return math.exp(total / count)


@dataclass
class GenerationTiming:
    """Seconds spent by one :func:`generate` run: the prefill tick and every decode tick."""

    prompt_len: int
    batch_size: int
    prefill: float
    decode: list[float] = field(default_factory=list)

    @property
    def decode_per_token(self) -> float:
        """Median seconds per decode tick."""
        ordered = sorted(self.decode)
        return ordered[len(ordered) // 2] if ordered else float("nan")

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second over the whole run, counting every row of the batch."""
        return self.batch_size * (1 + len(self.decode)) / (self.prefill + sum(self.decode))


@torch.no_grad()
def time_generation(model, prompt_len: int, new_tokens: int, *, batch_size: int = 1,
                    use_cache: bool = True, seed: int = 0) -> GenerationTiming:
    """Time a greedy run on a random prompt: the prefill tick and each decode tick.

    The prompt (``batch_size`` rows of ``prompt_len`` random ids) plus ``new_tokens``
    must fit in the model's ``block_size``. Without the cache each "decode" tick reruns
    the whole context, which is what the cache saves.
    """
    _check_model(model)
    if prompt_len < 1 or new_tokens < 1 or prompt_len + new_tokens > model.config.block_size:
        raise ValueError(
            f"prompt_len={prompt_len} + new_tokens={new_tokens} must be >= 2 and fit in "
            f"block_size={model.config.block_size}"
        )
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, prompt_len), generator=g).to(device)
    model.eval()
    model(ids)  # warm-up: the first pass pays for one-off allocations, not for the model
    cache = KVCache.for_model(model, batch_size) if use_cache else None
    ticks = []
    feed = ids
    for _ in range(new_tokens):
        begin = time.perf_counter()
        logits = _logits_of(model(feed, kv_cache=cache))
        token = logits[:, -1].argmax(dim=-1, keepdim=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ticks.append(time.perf_counter() - begin)
        ids = torch.cat([ids, token], dim=1)
        feed = token if use_cache else ids
    return GenerationTiming(prompt_len, batch_size, ticks[0], ticks[1:])
