"""Correct but different implementations of chapter 5's modern-block parts (RMSNorm, RoPE,
SwiGLU, grouped-query heads, MoE routing), as a student might write them."""

EXTRA = {
    "ch05_transformer": {
        "rms_norm": """\
import math
import torch

def rms_norm(x, weight, eps=1e-6):
    flat = x.reshape(-1, x.shape[-1])
    rows = []
    for row in flat:
        rms = math.sqrt(float((row * row).sum()) / row.numel() + eps)
        rows.append(row / rms * weight)
    return torch.stack(rows).reshape(x.shape)
""",
        "apply_rope": """\
import torch

def apply_rope(x, offset=0, theta=10000.0):
    # pairs (i, i + D/2) as complex numbers, turned by e^{i·angle}
    T, D = x.shape[-2], x.shape[-1]
    freq = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = torch.outer(torch.arange(T, dtype=torch.float64) + offset, freq)
    z = torch.complex(x[..., : D // 2].double(), x[..., D // 2:].double())
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)
""",
        "swiglu": """\
import torch
import torch.nn.functional as F

def swiglu(x, w1, w2, w3):
    gate = F.linear(x, w1)
    gate = gate * torch.sigmoid(gate)
    return F.linear(gate * F.linear(x, w3), w2)
""",
        "repeat_kv": """\
import torch

def repeat_kv(x, n_rep):
    B, H, T, D = x.shape
    return x[:, :, None, :, :].expand(B, H, n_rep, T, D).reshape(B, H * n_rep, T, D)
""",
        "moe_route": """\
import torch

def moe_route(router_logits, k, renormalize=True):
    probs = router_logits.softmax(dim=-1)
    order = probs.argsort(dim=-1, descending=True)[:, :k]
    weights = probs.gather(-1, order)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, order
""",
    },
}
