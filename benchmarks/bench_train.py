"""Training: lmlab's ``train`` loop vs a minimal plain-PyTorch loop, and nanoGPT's CPU recipe.

1. Overhead. The same GPT, the same batches, the same AdamW hyper-parameters, clipping and
   schedule: ``lmlab.train.train`` (lmlab's AdamW, History, checkpoint-ready loop) against
   ten lines of plain PyTorch with ``torch.optim.AdamW``. Goal: at most 1.05× the time.
2. nanoGPT's CPU recipe for character-level Shakespeare (4 layers, 4 heads, 128 wide,
   block 64, batch 12, 2000 iterations, lr 1e-3 with 100 warm-up steps and cosine to 1e-4,
   AdamW betas (0.9, 0.99), clip 1), here on the built-in pydoc corpus: ms per iteration and
   the final validation loss.
"""

from __future__ import annotations

import math
import time

import torch

from benchmarks.harness import Result, compare
from lmlab.data import get_batch, load_corpus, train_val_split
from lmlab.optim import cosine_schedule
from lmlab.tokenizer import CharTokenizer
from lmlab.train import evaluate, train
from lmlab.transformer import GPT, GPTConfig

NAME = "train"

RECIPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, lr=1e-3,
              warmup=100, lr_min=1e-4, betas=(0.9, 0.99), weight_decay=0.1, clip=1.0)


def _data(chars: int | None = None):
    text = load_corpus("pydoc")
    if chars is not None:
        text = text[:chars]
    tok = CharTokenizer.from_text(text)
    return tok, *train_val_split(torch.tensor(tok.encode(text)), 0.1)


def _model(vocab: int, n_layer: int, n_head: int, n_embd: int, block_size: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=n_layer,
                         n_head=n_head, n_embd=n_embd, dropout=0.0))


def plain_loop(model: GPT, data: torch.Tensor, *, steps: int, batch_size: int, lr: float,
               warmup: int, lr_min: float, betas, weight_decay: float, clip: float, seed: int = 0) -> None:
    """The peer: the shortest correct loop, with torch.optim.AdamW and the same decay groups."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=lr, betas=betas)
    gen = torch.Generator().manual_seed(seed)
    T = model.config.block_size
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_schedule(step, warmup=warmup, total=steps, lr_max=lr, lr_min=lr_min)
        x, y = get_batch(data, T, batch_size, generator=gen)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)


def _overhead(quick: bool) -> Result:
    shape = (dict(n_layer=1, n_head=2, n_embd=32, block_size=16) if quick else
             {k: RECIPE[k] for k in ("n_layer", "n_head", "n_embd", "block_size")})
    tok, train_ids, _ = _data(200_000 if quick else None)
    hp = {k: RECIPE[k] for k in ("lr", "lr_min", "betas", "weight_decay", "clip")}
    steps = 3 if quick else 10
    batch = 4 if quick else RECIPE["batch_size"]
    model_a = _model(tok.vocab_size, **shape)
    model_b = _model(tok.vocab_size, **shape)

    def ours():
        train(model_a, train_ids, steps=steps, batch_size=batch, warmup=2, progress=False, **hp)

    def peer():
        plain_loop(model_b, train_ids, steps=steps, batch_size=batch, warmup=2, **hp)

    ratio, iqr, _, _ = compare(ours, peer, rounds=2 if quick else 7, warmup=1,
                               repeat=1 if quick else 3, desc="train vs plain loop")
    return Result(NAME, f"lmlab train() vs plain PyTorch loop, GPT {shape['n_layer']}×{shape['n_embd']}, "
                        f"batch {batch}×{shape['block_size']}", "time ratio lmlab/plain", ratio, iqr,
                  goal="≤ 1.05×", met=ratio <= 1.05, details={"steps_per_call": steps})


def _recipe(quick: bool) -> list[Result]:
    iters = 10 if quick else 2000
    tok, train_ids, val_ids = _data(200_000 if quick else None)
    shape = {k: RECIPE[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}
    if quick:
        shape.update(n_layer=1, n_embd=32, n_head=2, block_size=16)
    model = _model(tok.vocab_size, **shape)
    hp = {k: RECIPE[k] for k in ("lr", "warmup", "lr_min", "betas", "weight_decay", "clip")}
    hp["warmup"] = min(hp["warmup"], iters // 10)
    start, cpu_start = time.perf_counter(), time.process_time()
    history = train(model, train_ids, steps=iters, batch_size=RECIPE["batch_size"], progress=not quick, **hp)
    ms = (time.perf_counter() - start) / iters * 1e3
    cpu_ms = (time.process_time() - cpu_start) / iters * 1e3  # robust to other processes
    val, ppl = evaluate(model, val_ids, batch_size=64, max_batches=20)
    case = (f"nanoGPT CPU recipe ({shape['n_layer']}×{shape['n_embd']}, block {shape['block_size']}, "
            f"batch {RECIPE['batch_size']}), {iters} iters, pydoc chars")
    details = {"threads": torch.get_num_threads(), "cpu_ms_per_iter": cpu_ms,
               "final_train_loss": history.loss[-1],
               "val_perplexity": ppl}
    return [
        Result(NAME, case, "ms per iteration", ms, details=details),
        Result(NAME, case, "validation loss (nats/char)", val, details={"uniform": math.log(tok.vocab_size)}),
    ]


def run(quick: bool = False) -> list[Result]:
    return [_overhead(quick), *_recipe(quick)]


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(f"{r.case:75s} {r.metric:30s} {r.value:10.4g} {r.goal} {r.details}")
