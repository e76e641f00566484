"""lmlab's GPT against the same architecture built from torch built-ins: forward + backward.

The peer is a nanoGPT-style model written with ``torch.nn.LayerNorm``, ``nn.GELU`` and
``torch.nn.functional.scaled_dot_product_attention`` (PyTorch's fused attention kernel),
loaded with the very same weights, so both compute the same function (checked: the losses
agree to 1e-5) and the ratio measures only the implementation. Case: nanoGPT's CPU
configuration (4 layers, 4 heads, 128 wide, block 64, batch 12). Two lines: lmlab's GPT
with ``fused=True`` (goal ≤ 1.05×) and with its readable, written-out LayerNorm and
attention (``fused=False``, the version the book teaches: reported, no goal).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import Result, compare, threads
from lmlab.transformer import GPT, GPTConfig

NAME = "gpt"


class _PeerBlock(nn.Module):
    def __init__(self, C: int, H: int) -> None:
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.attn_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.mlp = nn.Sequential(nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln_2(x))


class _PeerGPT(nn.Module):
    """nanoGPT's model.py in miniature, on torch built-ins."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.h = nn.ModuleList([_PeerBlock(c.n_embd, c.n_head) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    @classmethod
    def copy_of(cls, model: GPT) -> _PeerGPT:
        peer = cls(model.config)
        t = model.transformer
        with torch.no_grad():
            peer.wte.weight.copy_(t.wte.weight)
            peer.wpe.weight.copy_(t.wpe.weight)
            peer.ln_f.load_state_dict(t.ln_f.state_dict())
            for ours, theirs in zip(t.h, peer.h, strict=True):
                theirs.ln_1.load_state_dict(ours.ln_1.state_dict())
                theirs.ln_2.load_state_dict(ours.ln_2.state_dict())
                theirs.c_attn.load_state_dict(ours.attn.c_attn.state_dict())
                theirs.attn_proj.load_state_dict(ours.attn.c_proj.state_dict())
                theirs.mlp[0].load_state_dict(ours.mlp.c_fc.state_dict())
                theirs.mlp[2].load_state_dict(ours.mlp.c_proj.state_dict())
        return peer


def _step(model, idx, targets):
    def step():
        model.zero_grad(set_to_none=True)
        _, loss = model(idx, targets)
        loss.backward()

    return step


def run(quick: bool = False) -> list[Result]:
    # One thread: on a shared 2-core machine two intra-op threads spend their time waiting
    # for each other and the ratio drowns in noise (IQR 0.4 with two, 0.004 with one).
    with threads(1):
        return _run(quick)


def _run(quick: bool) -> list[Result]:
    if quick:
        config, batch = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32), 4
    else:
        config, batch = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128), 12
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, config.vocab_size, (batch, config.block_size), generator=g)
    targets = torch.randint(0, config.vocab_size, (batch, config.block_size), generator=g)
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        ours = GPT(replace(config, fused=fused))
        peer = _PeerGPT.copy_of(ours)
        loss_gap = abs(ours(idx, targets)[1].item() - peer(idx, targets)[1].item())
        ratio, iqr, t_ours, t_peer = compare(
            _step(ours, idx, targets), _step(peer, idx, targets),
            rounds=2 if quick else 5, warmup=1 if quick else 2, repeat=2 if quick else 5,
            desc=f"GPT fwd+bwd fused={fused}",
        )
        kind = "fused=True (F.layer_norm, F.scaled_dot_product_attention)" if fused else \
            "fused=False (lmlab's written-out LayerNorm and attention)"
        results.append(
            Result(
                benchmark=NAME,
                case=(f"forward+backward, L={config.n_layer} H={config.n_head} C={config.n_embd} "
                      f"T={config.block_size} B={batch}: lmlab GPT {kind} vs torch built-ins"),
                metric="time ratio lmlab/torch",
                value=ratio,
                iqr=iqr,
                goal="≤ 1.05×" if fused else "reported (readable path)",
                met=(ratio <= 1.05 and loss_gap < 1e-5) if fused else None,
                details={
                    "ms_lmlab": 1e3 * min(t.median for t in t_ours),
                    "ms_torch": 1e3 * min(t.median for t in t_peer),
                    "loss_gap": loss_gap,
                    "threads": torch.get_num_threads(),
                },
            )
        )
    return results


if __name__ == "__main__":
    for result in run(quick="--quick" in __import__("sys").argv):
        print(result)
