"""The training loop: batches in, loss down, checkpoints out.

``train(model, data, steps=..., batch_size=..., lr=...)`` is the loop every chapter after
this one uses. Per step it draws ``grad_accum`` random windows of ``model.config.block_size``
tokens, runs forward and backward (in fp32, bf16 or fp16), clips the global gradient norm,
sets the learning rate from a schedule and takes an optimizer step. It evaluates on
held-out tokens now and then, shows a progress bar, and records everything in a
:class:`History` that plots itself.

A checkpoint holds everything the next step depends on (model, optimizer moments, step,
the batch sampler's random state, the dropout random state, the history), written to a
temporary file and renamed into place, so a crash never leaves half a file. Ctrl-C
finishes the current step, writes one and returns; ``resume=True`` then continues
bit-identically to a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from lmlab.data import get_batch
from lmlab.optim import SGD, Adam, AdamW, clip_grad_norm_, cosine_schedule

__all__ = [
    "cross_entropy",
    "History",
    "train",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "native_bf16",
    "autocast",
    "make_optimizer",
    "small_char_gpt",
    "SMALL_CHAR_GPT",
]

PRECISIONS = ("fp32", "bf16", "fp16")


# --------------------------------------------------------------------------- the loss


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits)``, computed stably.

    logits: (N, V) float scores; targets: (N,) class ids in [0, V). Returns a 0-d tensor.
    ``log softmax(x)_i = x_i - logsumexp(x)``, and ``logsumexp(x) = c + log Σ exp(x_j - c)``
    with ``c = max(x)``: every exponent is <= 0, so nothing overflows, and the log is never
    taken of a probability that underflowed to 0 (``log(softmax(x))`` does both).
    """
    if logits.dim() != 2 or targets.dim() != 1 or len(targets) != len(logits):
        raise ValueError(
            f"logits must be (N, V) and targets (N,), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    shifted = logits - logits.max(dim=-1, keepdim=True).values  # (N, V), max 0 per row
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()  # (N, V)
    return -log_probs.gather(-1, targets.long()[:, None]).mean()


# --------------------------------------------------------------------------- history


@dataclass
class History:
    """What happened during training, one entry per step (and per evaluation)."""

    step: list[int] = field(default_factory=list)  # 1-based: the step just finished
    loss: list[float] = field(default_factory=list)  # training loss of that step's batch
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    tokens_per_s: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    interrupted: bool = False

    @property
    def final_val_loss(self) -> float | None:
        return self.val_loss[-1] if self.val_loss else None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**d)

    def plot(self, ax=None, *, smooth: int = 20):
        """Training loss (raw and smoothed), validation loss and the learning rate."""
        from lmlab.viz.ch06_training import loss_curves

        return loss_curves(self, ax=ax, smooth=smooth)


# --------------------------------------------------------------------------- precision


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 matmuls in hardware.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and later). CPU: the ``avx512_bf16``
    or ``amx_bf16`` instruction-set flags (Cooper Lake, Sapphire Rapids, Zen 4 and later).
    Without them PyTorch converts bf16 to fp32 and back around every operation, which on
    an AVX2 laptop makes a bf16 matmul hundreds of times slower than fp32.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return device.type == "mps"


def autocast(device: str | torch.device, precision: str):
    """A context manager running the forward pass in ``precision`` ("fp32", "bf16", "fp16").

    fp32 is a no-op. bf16 and fp16 use ``torch.autocast``: matmuls run in half precision
    while reductions (softmax, layer norm, the loss) stay in fp32; the weights and the
    optimizer state stay fp32 ("mixed" precision, Micikevicius et al. 2018).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


def _warn_about_precision(device: torch.device, precision: str) -> None:
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"precision='bf16' on {device.type} without native bf16 support: this processor "
            f"has no bf16 instructions (no avx512_bf16/amx_bf16 flag), so every bf16 matmul "
            f"is emulated by converting to fp32 and back, typically far slower than plain "
            f"fp32. Use precision='fp32' here; bf16 pays off on GPUs from Ampere on and on "
            f"CPUs with AMX or AVX512-BF16.",
            RuntimeWarning,
            stacklevel=3,
        )
    if precision == "fp16" and device.type == "cpu":
        warnings.warn(
            "precision='fp16' on the CPU: CPUs have no fast fp16 matmul, so this is slower "
            "than fp32 and only useful to see fp16's narrow range at work (GradScaler "
            "rescales the loss so small gradients do not underflow to zero).",
            RuntimeWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- evaluation


def _as_ids(data, name: str, block_size: int) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D LongTensor of token ids, got {type(data).__name__}")
    if data.dim() != 1:
        raise ValueError(f"{name} must be 1-D token ids, got shape {tuple(data.shape)}")
    if data.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must hold integer token ids, got dtype {data.dtype}")
    if len(data) <= block_size:
        raise ValueError(
            f"{name} has {len(data)} tokens but the model's block_size is {block_size}: "
            f"need at least block_size + 1"
        )
    return data.long()


def _block_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "block_size"):
        raise TypeError(
            f"model must have .config.block_size (like lmlab.transformer.GPT), "
            f"got {type(model).__name__} without it"
        )
    return int(config.block_size)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: torch.Tensor,
    *,
    batch_size: int = 32,
    max_batches: int | None = 8,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[float, float]:
    """Mean next-token loss and perplexity ``exp(loss)`` of ``model`` on ``data``.

    data: (N,) token ids, cut into consecutive non-overlapping windows of
    ``block_size`` tokens (no randomness: the same data gives the same number), at most
    ``max_batches * batch_size`` of them (``None``: all). Dropout is off while evaluating.
    """
    T = _block_size(model)
    data = _as_ids(data, "data", T)
    if device is None:
        device = next(model.parameters()).device
    n_windows = (len(data) - 1) // T
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, n_windows, batch_size):
            rows = torch.arange(start, min(start + batch_size, n_windows))
            index = rows[:, None] * T + torch.arange(T)  # (B, T)
            x, y = data[index].to(device), data[index + 1].to(device)
            with autocast(device, precision):
                _, loss = model(x, y)
            total += float(loss) * len(rows)
            count += len(rows)
    finally:
        model.train(was_training)
    mean = total / count
    return mean, math.exp(min(mean, 700.0))


# --------------------------------------------------------------------------- optimizer


def make_optimizer(
    model: nn.Module,
    optimizer: str | torch.optim.Optimizer | None = "adamw",
    *,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.99),
) -> torch.optim.Optimizer:
    """lmlab's AdamW (default), Adam or SGD over ``model``'s parameters.

    As in GPT-2 and nanoGPT, only matrices (embeddings, linear weights) are decayed;
    biases and LayerNorm gains are not: shrinking a gain towards 0 has no regularizing use.
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    name = "adamw" if optimizer is None else optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return AdamW(groups, lr=lr, betas=betas)
    if name == "adam":
        return Adam(params, lr=lr, betas=betas)
    if name == "sgd":
        return SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"optimizer must be 'adamw', 'adam', 'sgd' or an Optimizer, got {optimizer!r}")


def _make_schedule(schedule, *, lr: float, steps: int, warmup: int | None, lr_min: float | None):
    if callable(schedule):
        return schedule
    if schedule == "constant":
        return lambda step: lr
    if schedule == "cosine":
        w = min(100, steps // 10) if warmup is None else warmup
        low = lr / 10 if lr_min is None else lr_min
        return lambda step: cosine_schedule(step, warmup=w, total=steps, lr_max=lr, lr_min=low)
    raise ValueError(f"schedule must be 'cosine', 'constant' or a function step -> lr, got {schedule!r}")


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """``torch.save(state)`` to a temporary file next to ``path``, then rename it into place.

    The rename is atomic: whoever reads ``path`` sees the old checkpoint or the new one,
    never a half-written file, even if the process dies mid-write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The state dict written by :func:`save_checkpoint` (tensors on the CPU)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


class _DeferredInterrupt:
    """Turn Ctrl-C (SIGINT) into a flag the loop checks between steps.

    An interrupt in the middle of ``optimizer.step()`` would leave half the parameters
    updated; deferring it to the end of the step keeps every checkpoint consistent.
    A second Ctrl-C interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._installed = False
        self._previous = signal.default_int_handler

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            previous = signal.signal(signal.SIGINT, self._handler)
            self._previous = previous if previous is not None else signal.default_int_handler
            self._installed = True
        return self

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C stops immediately

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
        return False


# --------------------------------------------------------------------------- train


def train(
    model: nn.Module,
    data: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    val_data: torch.Tensor | None = None,
    eval_every: int | None = None,
    eval_batches: int = 8,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    grad_accum: int = 1,
    optimizer: str | torch.optim.Optimizer | None = "adamw",
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.99),
    schedule: str | Callable[[int], float] = "cosine",
    warmup: int | None = None,
    lr_min: float | None = None,
    clip: float | None = 1.0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[History], None] | None = None,
) -> History:
    """Train ``model`` (``model(x, y) -> (logits, loss)``) on the token ids ``data``.

    data, val_data: (N,) LongTensors of token ids; windows of ``model.config.block_size``.
    One step = ``grad_accum`` micro-batches of ``batch_size`` windows, their gradients
    summed (each loss divided by ``grad_accum``), then one optimizer step.
    ``schedule``: ``"cosine"`` (linear warm-up over ``warmup`` steps, default
    ``min(100, steps // 10)``, then cosine to ``lr_min``, default ``lr / 10``),
    ``"constant"`` or a function ``step -> lr``. ``clip``: max global gradient norm
    (``None``: no clipping). ``eval_every``: steps between evaluations on ``val_data``
    (default ``steps // 10``; the last step is always evaluated). ``checkpoint``: a file
    written every ``checkpoint_every`` steps (default: at each evaluation), at the end and
    on Ctrl-C; ``resume=True`` continues from it if it exists. ``callback(history)`` runs
    after each evaluation (live plots). Returns the :class:`History`; after Ctrl-C its
    ``interrupted`` is True.

    ``model`` is moved to ``device`` (the one you ask for) and trained in place. ``seed``
    seeds the batch sampler and torch's global generator (dropout), so two calls with the
    same arguments train identically.
    """
    _check_train_args(steps, batch_size, lr, grad_accum, eval_every, clip)
    T = _block_size(model)
    data = _as_ids(data, "data", T)
    if val_data is not None:
        val_data = _as_ids(val_data, "val_data", T)
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    _warn_about_precision(device, precision)
    eval_every = eval_every or max(1, steps // 10)
    checkpoint_every = checkpoint_every or eval_every

    model.to(device)
    opt = make_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay, betas=betas)
    lr_at = _make_schedule(schedule, lr=lr, steps=steps, warmup=warmup, lr_min=lr_min)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    batches = torch.Generator().manual_seed(seed)  # the data position: which windows come next
    history = History()
    done = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        done, history = _restore(load_checkpoint(checkpoint), model, opt, scaler, batches, device)
        if done > steps:
            raise ValueError(f"the checkpoint is at step {done}, beyond steps={steps}: pass steps >= {done}")
    else:
        torch.manual_seed(seed)  # dropout masks
    history.interrupted = False

    def snapshot() -> dict:
        return {
            "format": 1,
            "step": done,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "data_rng": batches.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "history": history.as_dict(),
        }

    params = [p for group in opt.param_groups for p in group["params"]]
    bar = tqdm(total=steps, initial=done, disable=not progress, desc="training", unit="step")
    model.train()
    start_state = None
    with _DeferredInterrupt() as interrupt:
        try:
            while done < steps:
                start_state = (batches.get_state(), torch.get_rng_state())
                step_lr = lr_at(done)
                for group in opt.param_groups:
                    group["lr"] = step_lr
                t0 = time.perf_counter()
                loss = _forward_backward(model, data, T, batch_size, grad_accum, batches,
                                         device, precision, scaler)
                if scaler.is_enabled():
                    scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
                norm = clip_grad_norm_(params, clip) if clip else _grad_norm(params)
                start_state = None  # from here on the step must finish
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                done += 1
                dt = time.perf_counter() - t0
                _record(history, done, loss, step_lr, float(norm), batch_size * grad_accum * T / dt)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{history.tokens_per_s[-1]:,.0f}")
                if val_data is not None and (done % eval_every == 0 or done == steps):
                    val, _ = evaluate(model, val_data, batch_size=batch_size,
                                      max_batches=eval_batches, device=device, precision=precision)
                    history.val_step.append(done)
                    history.val_loss.append(val)
                    model.train()
                    if callback is not None:
                        callback(history)
                if checkpoint is not None and (done % checkpoint_every == 0 or done == steps):
                    save_checkpoint(checkpoint, snapshot())
                if interrupt.requested:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if start_state is not None:  # interrupted before the update: replay this step later
                batches.set_state(start_state[0])
                torch.set_rng_state(start_state[1])
            opt.zero_grad(set_to_none=True)
            history.interrupted = True
            where = f"; checkpoint written to {Path(checkpoint).name}, continue with resume=True" if checkpoint else ""
            if checkpoint is not None:
                save_checkpoint(checkpoint, snapshot())
            warnings.warn(f"training interrupted after step {done} of {steps}{where}", stacklevel=2)
        finally:
            bar.close()
    return history


def _check_train_args(steps, batch_size, lr, grad_accum, eval_every, clip) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size), ("grad_accum", grad_accum)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every must be a positive int or None, got {eval_every!r}")
    if not isinstance(lr, (int, float)) or lr < 0:
        raise ValueError(f"lr must be a number >= 0, got {lr!r}")
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")


def _forward_backward(model, data, T, batch_size, grad_accum, batches, device, precision, scaler) -> float:
    """Accumulate the gradient of the mean loss over ``grad_accum`` micro-batches."""
    total = 0.0
    for _ in range(grad_accum):
        x, y = get_batch(data, T, batch_size, generator=batches, device=device)  # (B, T) each
        with autocast(device, precision):
            _, loss = model(x, y)
        scaler.scale(loss / grad_accum).backward()
        total += loss.item() / grad_accum
    if not math.isfinite(total):
        raise FloatingPointError(
            f"the training loss is {total}: lower lr, keep clip on, or use fp32/bf16 instead of fp16"
        )
    return total


def _grad_norm(params) -> torch.Tensor:
    grads = [p.grad.detach() for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _record(history: History, step: int, loss: float, lr: float, norm: float, tok_s: float) -> None:
    history.step.append(step)
    history.loss.append(loss)
    history.lr.append(lr)
    history.grad_norm.append(norm)
    history.tokens_per_s.append(tok_s)


def _restore(state, model, opt, scaler, batches, device) -> tuple[int, History]:
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    batches.set_state(state["data_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"]), History.from_dict(state["history"])


# --------------------------------------------------------------------------- a small char GPT

# nanoGPT's shakespeare_char CPU recipe (4 layers, 4 heads, 128 wide, block 64, batch 12),
# trained for fewer steps so the default finishes in about a minute on two cores.
SMALL_CHAR_GPT = dict(
    n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0,
    batch_size=12, lr=2e-3, warmup=50, val_fraction=0.1,
)


def small_char_gpt(
    steps: int = 600,
    *,
    seed: int = 0,
    cache: bool = True,
    progress: bool = False,
    callback: Callable[[History], None] | None = None,
    return_history: bool = False,
):
    """A small character-level GPT trained on ``load_corpus("pydoc")``.

    Returns ``(model, tokenizer, train_ids, val_ids)``: the trained ``GPT`` (eval mode, on
    the CPU), its ``CharTokenizer`` and the 1-D token ids of the train/validation split
    (``(..., history)`` with ``return_history=True``). The weights and the training history
    are cached under ``$LMLAB_CACHE`` (default ``~/.cache/lmlab``), keyed by every
    hyper-parameter and the corpus, so later calls load in a moment. ``callback(history)``
    runs after each of the 10 evaluations while training (not when loading from the cache).
    """
    from lmlab.data import cache_dir, load_corpus, train_val_split
    from lmlab.tokenizer import CharTokenizer
    from lmlab.transformer import GPT, GPTConfig

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    text = load_corpus("pydoc")
    tokenizer = CharTokenizer.from_text(text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids, val_ids = train_val_split(ids, SMALL_CHAR_GPT["val_fraction"])
    h = SMALL_CHAR_GPT
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=h["block_size"],
                       n_layer=h["n_layer"], n_head=h["n_head"], n_embd=h["n_embd"],
                       dropout=h["dropout"])
    key = json.dumps({**h, "steps": steps, "seed": seed, "vocab": tokenizer.vocab_size,
                      "corpus": hashlib.sha1(text.encode()).hexdigest()}, sort_keys=True)
    path = cache_dir() / "small_char_gpt" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"

    torch.manual_seed(seed)
    model = GPT(config)
    if cache and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        history = History.from_dict(saved["history"])
    else:
        # One thread: matmul blocking (and so float summation order) depends on the thread
        # count, and the book's stored outputs must not depend on how many cores trained it.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            history = train(model, train_ids, steps=steps, batch_size=h["batch_size"], lr=h["lr"],
                            warmup=min(h["warmup"], steps // 10), seed=seed, progress=progress,
                            val_data=val_ids, eval_every=max(1, steps // 10), eval_batches=4,
                            callback=callback)
        finally:
            torch.set_num_threads(threads)
        if cache:
            save_checkpoint(path, {"model": model.state_dict(), "history": history.as_dict()})
    model.eval()
    if return_history:
        return model, tokenizer, train_ids, val_ids, history
    return model, tokenizer, train_ids, val_ids
