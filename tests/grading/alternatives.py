"""Correct but different implementations of graded parts, as a student might write them
(loops instead of vectorized code, other library calls). Keyed by chapter and part."""

ALTERNATIVES = {
    "ch01_chips": {
        "matmul_flops": (
            "def matmul_flops(m, n, k):\n"
            "    total = 0\n"
            "    for _ in range(m):\n"
            "        total += n * (k + k)  # k multiplies and k adds per output\n"
            "    return total\n"
        ),
        "arithmetic_intensity": (
            "import torch\n"
            "def arithmetic_intensity(m, n, k, bytes_per_element):\n"
            "    elements = torch.tensor([m * k, k * n, m * n], dtype=torch.float64).sum()\n"
            "    return float(2.0 * m * n * k / (elements * bytes_per_element))\n"
        ),
        "roofline_time": (
            "def roofline_time(flops, nbytes, peak_flops, bandwidth):\n"
            "    compute, memory = flops / peak_flops, nbytes / bandwidth\n"
            "    return compute if compute > memory else memory\n"
        ),
        "median_time": (
            "def median_time(fn, warmup, repeat, clock):\n"
            "    [fn() for _ in range(warmup)]\n"
            "    samples = []\n"
            "    for _ in range(repeat):\n"
            "        t0 = clock(); fn(); samples.append(clock() - t0)\n"
            "    samples.sort()\n"
            "    mid = repeat // 2\n"
            "    return samples[mid] if repeat % 2 else (samples[mid - 1] + samples[mid]) / 2\n"
        ),
    },
    "ch02_text": {
        "pair_counts": """\
from collections import Counter

def pair_counts(chunks):
    counter = Counter()
    for ids in chunks:
        for i in range(len(ids) - 1):
            counter[(ids[i], ids[i + 1])] += 1
    return dict(counter)
""",
        "merge": """\
def merge(ids, pair, new_id):
    out = []
    just_merged = False  # the last item of out is new_id made here: it cannot start a pair
    for x in ids:
        if out and not just_merged and out[-1] == pair[0] and x == pair[1]:
            out[-1] = new_id
            just_merged = True
        else:
            out.append(x)
            just_merged = False
    return out
""",
        "sgns_loss": """\
import torch
import torch.nn.functional as F

def sgns_loss(center, context, negatives):
    # -log sigmoid(x) = softplus(-x)
    pos = torch.einsum("bd,bd->b", center, context)
    neg = torch.bmm(negatives, center.unsqueeze(-1)).squeeze(-1)  # (B, K)
    return (F.softplus(-pos) + F.softplus(neg).sum(dim=1)).mean()
""",
        "cbow_hidden": """\
import torch

def cbow_hidden(context_vectors, mask):
    rows = []
    for vectors, keep in zip(context_vectors, mask):
        rows.append(vectors[keep].mean(dim=0))
    return torch.stack(rows)
""",
    },
    "ch03_rnn": {
        "rnn_cell": """\
import torch

def rnn_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    # one weight matrix acting on the concatenation [x, h]
    W = torch.cat([W_ih, W_hh], dim=1)   # (H, I + H)
    xh = torch.cat([x, h], dim=1)        # (B, I + H)
    return torch.tanh(torch.einsum("bk,hk->bh", xh, W) + (b_ih + b_hh))
""",
        "lstm_cell": """\
import torch

def lstm_cell(x, h, c, W_ih, W_hh, b_ih, b_hh):
    H = h.shape[1]

    def pre(k):  # pre-activation of gate k, from its own rows of the weights
        rows = slice(k * H, (k + 1) * H)
        return x @ W_ih[rows].T + h @ W_hh[rows].T + b_ih[rows] + b_hh[rows]

    def sig(z):
        return 1 / (1 + torch.exp(-z))

    i, f, g, o = sig(pre(0)), sig(pre(1)), torch.tanh(pre(2)), sig(pre(3))
    c_new = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c_new), c_new
""",
        "lstm_forward": """\
import torch

def lstm_forward(xs, h0, c0, params):
    W_ih, W_hh, b_ih, b_hh = params
    B, T, _ = xs.shape
    xw = torch.einsum("bti,gi->btg", xs, W_ih) + b_ih + b_hh  # input projection, all steps at once
    out = torch.zeros(B, T, h0.shape[1], dtype=xs.dtype)
    h, c = h0.clone(), c0.clone()
    for t in range(T):
        i, f, g, o = (xw[:, t] + h @ W_hh.T).chunk(4, dim=-1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
        out[:, t] = h
    return out, (h, c)
""",
        "clip_grad_norm": """\
import torch

def clip_grad_norm(grads, max_norm):
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [g * scale for g in grads]
""",
    },
    "ch04_attention": {
        "softmax": """\
import torch

def softmax(x, dim=-1):
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))
""",
        "causal_mask": """\
import torch

def causal_mask(T):
    idx = torch.arange(T)
    return idx[None, :] <= idx[:, None]
""",
        "attention": """\
import torch

def attention(q, k, v, mask=None):
    scores = torch.einsum("...id,...jd->...ij", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores + torch.where(mask, 0.0, float("-inf"))
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    return torch.einsum("...ij,...jd->...id", weights, v)
""",
        "split_heads": """\
import torch

def split_heads(x, n_heads):
    d = x.shape[-1] // n_heads
    return torch.stack([x[..., h * d:(h + 1) * d] for h in range(n_heads)], dim=1)
""",
        "merge_heads": """\
import torch

def merge_heads(x):
    return torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1)
""",
        "multi_head_attention": """\
import math
import torch

def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, mask=None):
    d = x.shape[-1] // n_heads
    outs = []
    for h in range(n_heads):
        cols = slice(h * d, (h + 1) * d)
        # (B, 1, T, d): keep a head axis of size 1 so that (B, 1, 1, T) masks broadcast
        q = (x @ W_q[:, cols]).unsqueeze(1)
        k = (x @ W_k[:, cols]).unsqueeze(1)
        v = (x @ W_v[:, cols]).unsqueeze(1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if mask is not None:
            m = mask[:, h:h + 1] if mask.dim() == 4 and mask.shape[1] > 1 else mask
            scores = scores.masked_fill(~m, float("-inf"))
        w = torch.exp(scores - scores.amax(-1, keepdim=True))
        outs.append(((w / w.sum(-1, keepdim=True)) @ v).squeeze(1))
    return torch.cat(outs, dim=-1) @ W_o
""",
        "online_softmax_step": """\
import torch

def online_softmax_step(m, l, acc, s, v):
    block_max = s.amax(-1, keepdim=True)
    m_new = torch.where(block_max > m, block_max, m)
    p = (s - m_new).exp()
    r = (m - m_new).exp()
    acc_new = acc * r + torch.einsum("...nb,...bd->...nd", p, v)
    return m_new, l * r + p.sum(-1, keepdim=True), acc_new
""",
    },
    "ch05_transformer": {
        "layer_norm": """\
import torch

def layer_norm(x, weight, bias, eps=1e-5):
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return torch.addcmul(bias, (x - mean) / (var + eps).sqrt(), weight)
""",
        "feed_forward": """\
import math
import torch

def feed_forward(x, W1, b1, W2, b2):
    h = torch.einsum("...c,ch->...h", x, W1) + b1
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU: x * Phi(x)
    return torch.einsum("...h,hc->...c", h, W2) + b2
""",
        "block_forward": """\
import math
import torch

def block_forward(x, params, n_heads):
    p = params
    B, T, C = x.shape
    D = C // n_heads
    h = layer_norm(x, p["ln1_weight"], p["ln1_bias"])
    qkv = h @ p["W_qkv"] + p["b_qkv"]
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    heads = []
    for i in range(n_heads):
        cols = slice(i * D, (i + 1) * D)
        out = torch.zeros(B, T, D, dtype=x.dtype)
        for t in range(T):  # query t sees keys 0..t
            scores = torch.einsum("bd,bsd->bs", q[:, t, cols], k[:, :t + 1, cols]) / math.sqrt(D)
            w = torch.exp(scores - scores.max(-1, keepdim=True).values)
            w = w / w.sum(-1, keepdim=True)
            out[:, t] = torch.einsum("bs,bsd->bd", w, v[:, :t + 1, cols])
        heads.append(out)
    x = x + torch.cat(heads, dim=-1) @ p["W_o"] + p["b_o"]
    h2 = layer_norm(x, p["ln2_weight"], p["ln2_bias"])
    return x + feed_forward(h2, p["W1"], p["b1"], p["W2"], p["b2"])
""",
        "gpt_param_count": """\
def gpt_param_count(vocab_size, block_size, n_layer, n_embd, tied=True):
    C = n_embd
    per_layer = 12 * C * C + 13 * C  # qkv + proj (4C^2 + 4C), MLP (8C^2 + 5C), two LayerNorms (4C)
    embeddings = (1 if tied else 2) * vocab_size * C + block_size * C
    return embeddings + n_layer * per_layer + 2 * C
""",
    },
    "ch06_training": {
        "cross_entropy": """\
import torch

def cross_entropy(logits, targets):
    c = logits.amax(dim=-1, keepdim=True)
    lse = c + torch.log(torch.exp(logits - c).sum(dim=-1, keepdim=True))  # (N, 1)
    picked = logits.gather(1, targets.unsqueeze(1))                     # (N, 1)
    return (lse - picked).squeeze(1).mean()
""",
        "adamw_step": """\
import math

def adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay):
    # in place, bias corrections folded into the step size (torch's arrangement)
    b1, b2 = betas
    p.mul_(1 - lr * weight_decay)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    step = lr / (1 - b1**t)
    denom = v.sqrt() / math.sqrt(1 - b2**t) + eps
    p.addcdiv_(m, denom, value=-step)
    return p, m, v
""",
        "cosine_lr": """\
import math

def cosine_lr(step, warmup, total, lr_max, lr_min):
    if step < warmup:
        return lr_max * (step + 1) / warmup
    progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return lr_min + (lr_max - lr_min) * (math.cos(math.pi * progress) + 1) / 2
""",
        "clip_grad_norm_global": """\
import torch

def clip_grad_norm_global(grads, max_norm):
    total = float(torch.cat([g.reshape(-1) for g in grads]).norm())
    if total <= max_norm:
        return [g.clone() for g in grads], total
    return [g * (max_norm / total) for g in grads], total
""",
    },
    "ch07_inference": {
        "apply_temperature": """\
import torch

def apply_temperature(logits, t):
    return torch.softmax(logits / t, dim=-1)
""",
        "top_k_filter": """\
import math
import torch

def top_k_filter(logits, k):
    rows = logits.reshape(-1, logits.shape[-1]).tolist()
    out = []
    for row in rows:
        order = sorted(range(len(row)), key=lambda i: row[i], reverse=True)
        keep = set(order[:k])
        out.append([x if i in keep else -math.inf for i, x in enumerate(row)])
    return torch.tensor(out, dtype=logits.dtype).reshape(logits.shape)
""",
        "top_p_filter": """\
import torch

def top_p_filter(logits, p):
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.full_like(flat, float("-inf"))
    for r in range(flat.shape[0]):
        probs = torch.softmax(flat[r], dim=-1).tolist()
        mass = 0.0
        for i in sorted(range(len(probs)), key=lambda i: -probs[i]):
            out[r, i] = flat[r, i]  # most likely first, until the mass reaches p
            mass += probs[i]
            if mass >= p:
                break
    return out.reshape(logits.shape)
""",
        "attend_with_cache": """\
import torch

def attend_with_cache(q_new, k_cache, v_cache, k_new, v_new):
    B, H, T_old, D = k_cache.shape
    T_new = q_new.shape[2]
    k_all = torch.empty(B, H, T_old + T_new, D, dtype=k_cache.dtype)
    v_all = torch.empty(B, H, T_old + T_new, v_cache.shape[-1], dtype=v_cache.dtype)
    k_all[:, :, :T_old], k_all[:, :, T_old:] = k_cache, k_new
    v_all[:, :, :T_old], v_all[:, :, T_old:] = v_cache, v_new
    outs = []
    for i in range(T_new):  # new query i sees the cache and new positions up to its own
        seen = T_old + i + 1
        scores = q_new[:, :, i:i + 1] @ k_all[:, :, :seen].transpose(-1, -2) / D**0.5
        w = torch.softmax(scores, dim=-1)
        outs.append(w @ v_all[:, :, :seen])
    return torch.cat(outs, dim=2), k_all, v_all
""",
        "kv_cache_bytes": """\
import math

def kv_cache_bytes(n_layer, batch_size, n_head, seq_len, head_dim, bytes_per_element):
    per_tensor = math.prod((batch_size, n_head, seq_len, head_dim)) * bytes_per_element
    return sum(per_tensor for _layer in range(n_layer) for _kv in ("k", "v"))
""",
    },
    "ch08_quantization": {
        "quantize_absmax": """\
import torch

def quantize_absmax(w, bits, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        scale = w.abs().max() / qmax
        return torch.round(w / scale).clamp(-qmax, qmax).to(torch.int8), scale
    moved = w.movedim(dim, 0)  # one channel per row, quantized in a loop
    q = torch.empty(moved.shape, dtype=torch.int8)
    scales = []
    for c in range(moved.shape[0]):
        s = moved[c].abs().max() / qmax
        q[c] = torch.round(moved[c] / s).clamp(-qmax, qmax).to(torch.int8)
        scales.append(s)
    return q.movedim(0, dim), torch.stack(scales)  # one scale per channel
""",
        "dequantize": """\
import torch

def dequantize(q, scale, zero=None):
    z = 0 if zero is None else zero.double()
    return ((q.double() - z) * torch.as_tensor(scale).double()).float()
""",
        "quantize_zeropoint": """\
import torch

def quantize_zeropoint(w, bits, dim=None):
    qmin, qmax = 0, 2**bits - 1
    channels = [w] if dim is None else list(w.movedim(dim, 0))
    qs, scales, zeros = [], [], []
    for c in channels:
        lo = torch.clamp(c.min(), max=0.0)  # the range must hold 0
        hi = torch.clamp(c.max(), min=0.0)
        scale = (hi - lo) / (qmax - qmin)
        zero = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
        qs.append(torch.clamp(torch.round(c / scale) + zero, qmin, qmax).to(torch.uint8))
        scales.append(scale)
        zeros.append(zero.to(torch.int32))
    if dim is None:
        return qs[0], scales[0], zeros[0]
    return torch.stack(qs).movedim(0, dim), torch.stack(scales), torch.stack(zeros)
""",
        "quantize_groupwise": """\
import torch

def quantize_groupwise(w, bits, group_size):
    qmax = 2 ** (bits - 1) - 1
    qs, scales = [], []
    for block in torch.split(w, group_size, dim=1):  # column blocks, each quantized per row
        s = block.abs().amax(dim=1, keepdim=True) / qmax
        qs.append(torch.clamp(torch.round(block / s), -qmax, qmax).to(torch.int8))
        scales.append(s)
    return torch.cat(qs, dim=1), torch.cat(scales, dim=1)
""",
    },
    "ch09_scale": {
        "training_flops": """\
def training_flops(n_params, n_tokens):
    forward = 2 * n_params    # per token: a multiply and an add per weight
    backward = 2 * forward    # gradients for the inputs and for the weights
    return float((forward + backward) * n_tokens)
""",
        "chinchilla_optimal": """\
import math

def chinchilla_optimal(compute):
    # find N with 6 * N * (20 * N) = compute by bisection on a log scale
    lo, hi = 1e-30, 1e60
    for _ in range(300):
        mid = math.sqrt(lo * hi)
        if 6 * mid * (20 * mid) < compute:
            lo = mid
        else:
            hi = mid
    n = math.sqrt(lo * hi)
    return n, compute / (6 * n)
""",
        "adam_memory_bytes": """\
def adam_memory_bytes(n_params, precision):
    size = 4 if precision == "fp32" else 2            # weights and gradients
    weights = grads = n_params * size
    moments = 2 * n_params * (2 if precision == "bf16" else 4)
    master = 4 * n_params if precision == "mixed" else 0
    return weights + grads + moments + master
""",
        "pipeline_bubble": """\
def pipeline_bubble(p, m):
    # count the busy (stage, slot) pairs of a GPipe schedule
    slots = m + p - 1
    busy = sum(1 for s in range(p) for t in range(slots) if 0 <= t - s < m)
    return 1 - busy / (p * slots)
""",
        "gpu_hours": """\
def gpu_hours(flops, peak_flops, mfu):
    sustained = peak_flops * mfu  # FLOP/s really delivered
    seconds = flops / sustained
    return seconds / 60 / 60
""",
    },
}


# Parts added later keep their alternatives in files of their own (alternatives_<topic>.py,
# each defining EXTRA = {chapter: {part: source}}), merged here.
def _merge_extra_files() -> None:
    from importlib import import_module
    from pathlib import Path

    for path in sorted(Path(__file__).parent.glob("alternatives_*.py")):
        extra = import_module(f"{__package__}.{path.stem}").EXTRA
        for chapter, parts in extra.items():
            clash = set(parts) & set(ALTERNATIVES.get(chapter, {}))
            if clash:
                raise ValueError(f"{path.name} redefines alternatives for {sorted(clash)}")
            ALTERNATIVES.setdefault(chapter, {}).update(parts)


_merge_extra_files()
