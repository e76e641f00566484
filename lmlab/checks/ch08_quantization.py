"""Checks for exercise ch08_quantization: absmax, dequantize, zero-point, group-wise."""

from __future__ import annotations

import random
from typing import Any

import torch

from lmlab import quantize
from lmlab.checks.core import Case, Mistake, Part, close, describe, make_check

__all__ = [
    "check_quantize_absmax",
    "check_dequantize",
    "check_quantize_zeropoint",
    "check_quantize_groupwise",
]

CHAPTER = "ch08_quantization"
_REFERENCES = ["quantize_absmax", "quantize_zeropoint", "quantize_groupwise", "dequantize",
               "fake_quantize"]


# torch's own quantizers do the whole job too; the exercise text forbids them
_TORCH_QUANTIZERS = [
    "torch.quantize_per_tensor", "torch.quantize_per_channel", "torch.quantize_per_tensor_dynamic",
    "torch.fake_quantize_per_tensor_affine", "torch.fake_quantize_per_channel_affine",
    "torch.Tensor.dequantize", "torch.dequantize",
    "torch.ao.quantization.observer.MinMaxObserver",
    "torch.ao.quantization.observer.PerChannelMinMaxObserver",
    "torch.ao.quantization.observer.MovingAverageMinMaxObserver",
    "torch.ao.quantization.observer.HistogramObserver",
    "torch.ao.quantization.quantize_dynamic",
]


def _guard(own: str) -> list[str]:
    """Every lmlab quantizer is off limits; the part's own reference is listed first."""
    own_first = [own] + [r for r in _REFERENCES if r != own]
    return [f"lmlab.quantize.{name}" for name in own_first] + _TORCH_QUANTIZERS



# --------------------------------------------------------------------------- comparing


def _as_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return torch.tensor(float(x))
    return None


def compare_quantized(expected: tuple, got: Any) -> str | None:
    """``(q, scale[, zero])``: q integer and equal (a rare off-by-one at a rounding tie is
    forgiven), scale and zero equal up to float error in any shape with the same entries."""
    n = len(expected)
    names = ["q", "scale", "zero"][:n]
    if not isinstance(got, (tuple, list)):
        return f"result is {describe(got)}, expected a tuple ({', '.join(names)})"
    if len(got) != n:
        return f"result has {len(got)} items, expected {n}: ({', '.join(names)})"
    q, q_ref = got[0], expected[0]
    if not isinstance(q, torch.Tensor):
        return f"q is {describe(q)}, expected an integer tensor of shape {tuple(q_ref.shape)}"
    if q.dtype.is_floating_point or q.dtype == torch.bool:
        return f"q has dtype {q.dtype}: store the levels as integers, e.g. .to({q_ref.dtype})"
    if q.shape != q_ref.shape:
        return f"q has shape {tuple(q.shape)}, expected {tuple(q_ref.shape)} (the shape of w)"
    diff = (q.long() - q_ref.long()).abs()
    if diff.max() > 1 or int((diff > 0).sum()) > q_ref.numel() // 500:
        where = tuple(int(i) for i in (diff == diff.max()).nonzero()[0])
        return (f"q differs at {int((diff > 0).sum())} of {q_ref.numel()} positions; at index "
                f"{where} got {int(q[where])}, expected {int(q_ref[where])}")
    for name, e, g in zip(names[1:], expected[1:], got[1:], strict=True):
        t = _as_tensor(g)
        if t is None:
            return f"{name} is {describe(g)}, expected a tensor like {describe(e)}"
        if t.numel() != e.numel():
            return f"{name} has shape {tuple(t.shape)}, expected {tuple(e.shape)}"
        t = t.reshape(e.shape)  # (out,) and (out, 1) hold the same scales
        problem = close(rtol=1e-5, atol=1e-12)(e.double(), t.double(), name)
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------- inputs


def _weight(gen: torch.Generator, shape: tuple[int, ...], heavy: bool) -> torch.Tensor:
    w = torch.randn(shape, generator=gen) * 0.02
    if heavy:
        w = w * torch.exp(torch.randn(shape, generator=gen))  # a few large weights
    return w


def _dim_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(8):
        shape = (rng.randint(2, 12), rng.randint(4, 40))
        bits = rng.choice([8, 8, 4, 3, 2, 6])
        dim = [None, 0, 1, None, 0, -1, 0, None][i]
        cases.append(Case((_weight(gen, shape, heavy=i % 2 == 1), bits), {"dim": dim},
                          label=f"random, {bits} bits, dim={dim}"))
    neg = torch.tensor([[0.3, -1.2, 0.5, 0.1], [-0.2, 0.4, -2.0, 0.9]])
    cases += [
        Case((neg, 8), {"dim": None}, label="edge: the largest magnitude is negative"),
        Case((neg, 4), {"dim": 0}, label="edge: per row, negative extremes"),
        Case((torch.linspace(-1, 1.3, 24), 8), {"dim": None}, label="edge: a 1-d ramp"),
    ]
    return cases


def _zeropoint_cases(seed: int) -> list[Case]:
    cases = _dim_cases(seed + 17)
    gen = torch.Generator().manual_seed(seed + 5)
    positive = 1.0 + 0.1 * torch.randn(6, 16, generator=gen)  # LayerNorm gains sit near 1
    shifted = torch.randn(5, 12, generator=gen) * 0.5 + 0.8
    cases += [
        Case((positive, 8), {"dim": None}, label="edge: all weights positive"),
        Case((-positive, 4), {"dim": 0}, label="edge: all weights negative, per row"),
        Case((shifted, 8), {"dim": 0}, label="edge: off-centre rows"),
    ]
    return cases


def _group_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(7):
        group = rng.choice([4, 8, 16, 32])
        rows = group * rng.randint(1, 3)
        cols = group * rng.randint(2, 5)
        bits = rng.choice([4, 4, 8, 3, 2])
        cases.append(Case((_weight(gen, (rows, cols), heavy=True), bits, group),
                          label=f"random, {bits} bits, group {group}"))
    w = torch.zeros(4, 8)
    w[0, 0], w[1, 5], w[2, 2], w[3, 7] = 5.0, -3.0, 1.0, 0.5
    w += 0.01 * torch.randn(4, 8, generator=gen)
    cases += [
        Case((w, 4, 4), label="edge: one outlier per row"),
        Case((_weight(gen, (8, 8), heavy=False), 4, 8), label="edge: group = whole row"),
    ]
    return cases


def _dequant_cases(seed: int) -> list[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(4):
        shape = (rng.randint(2, 8), rng.randint(3, 20))
        q = torch.randint(-127, 128, shape, generator=gen, dtype=torch.int8)
        scale = torch.rand(shape[0], 1, generator=gen) * 0.01 + 1e-4 if i % 2 else torch.tensor(0.003)
        cases.append(Case((q, scale), label="symmetric: zero=None"))
    for _ in range(4):
        shape = (rng.randint(2, 8), rng.randint(3, 20))
        q = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
        scale = torch.rand(shape[0], 1, generator=gen) * 0.01 + 1e-4
        zero = torch.randint(40, 216, (shape[0], 1), generator=gen, dtype=torch.int32)
        cases.append(Case((q, scale, zero), label="asymmetric, int32 zero-points"))
    q = torch.tensor([[0, 5, 200, 255]], dtype=torch.uint8)
    cases += [
        Case((q, torch.tensor(0.5), torch.tensor(128, dtype=torch.uint8)),
             label="edge: uint8 q and uint8 zero"),
        Case((q, torch.tensor([[0.1]]), torch.tensor([[3]], dtype=torch.uint8)),
             label="edge: small uint8 zero"),
    ]
    return cases


# --------------------------------------------------------------------------- wrong variants


def _absmax(w, bits, dim, *, qmax=None, rounder=torch.round, signed_max=False, wrong_axis=False,
            ignore_dim=False):
    qmax = 2 ** (bits - 1) - 1 if qmax is None else qmax
    values = w if signed_max else w.abs()
    if dim is None or ignore_dim:
        top = values.max()
    elif wrong_axis:
        top = values.amax(dim=dim, keepdim=True)
    else:
        top = values.amax(dim=[d for d in range(w.dim()) if d != dim % w.dim()], keepdim=True)
    scale = top / qmax
    q = torch.clamp(rounder(w / scale), -qmax, qmax).to(torch.int8)
    return q, scale


def _truncate(x):
    return x.trunc()


ABSMAX_MISTAKES = [
    Mistake("truncation",
            "you truncated w/scale (int() or .to(torch.int8) cuts toward zero) instead of "
            "rounding to the nearest level: use torch.round before converting. Truncation "
            "doubles the worst-case error, from scale/2 to a whole scale.",
            lambda w, bits, dim=None: _absmax(w, bits, dim, rounder=_truncate)),
    Mistake("floor",
            "you used floor, which always rounds down (−0.2 becomes −1): round to the "
            "nearest level with torch.round.",
            lambda w, bits, dim=None: _absmax(w, bits, dim, rounder=torch.floor)),
    Mistake("qmax-2^(b-1)",
            "your largest level is 2^(b−1) (128 for 8 bits). A signed b-bit integer holds at "
            "most 2^(b−1) − 1 (127): scale = absmax / (2^(b−1) − 1), and q lies in "
            "[−(2^(b−1) − 1), 2^(b−1) − 1].",
            lambda w, bits, dim=None: _absmax(w, bits, dim, qmax=2 ** (bits - 1))),
    Mistake("qmax-2^b-1",
            "you used 2^b − 1 levels on each side (255 for 8 bits): that is the unsigned range. "
            "Symmetric quantization uses signed levels, qmax = 2^(b−1) − 1 (127 for 8 bits).",
            lambda w, bits, dim=None: _absmax(w, bits, dim, qmax=2**bits - 1)),
    Mistake("qmax-2^b",
            "you divided by 2^b (256 for 8 bits); symmetric quantization uses "
            "qmax = 2^(b−1) − 1 (127 for 8 bits).",
            lambda w, bits, dim=None: _absmax(w, bits, dim, qmax=2**bits)),
    Mistake("max-not-absmax",
            "your scale comes from max(w), not max(|w|): when the most extreme weight is "
            "negative it falls off the grid and is clamped. Use w.abs().max().",
            lambda w, bits, dim=None: _absmax(w, bits, dim, signed_max=True)),
    Mistake("reduced-over-dim",
            "you took the absmax along `dim` (giving one scale per position of the *other* "
            "axes). Per-channel along dim means one scale per index of dim: reduce over "
            "every axis except dim (for a 2-d w and dim=0: w.abs().amax(dim=1, keepdim=True)).",
            lambda w, bits, dim=None: _absmax(w, bits, dim, wrong_axis=True)),
    Mistake("ignored-dim",
            "you ignored `dim` and used one scale for the whole tensor; with dim given, "
            "each index of that axis (each row, for dim=0) needs its own scale.",
            lambda w, bits, dim=None: _absmax(w, bits, dim, ignore_dim=True)),
]


def _dq_plus(q, scale, zero=None):
    return (q.float() + (0 if zero is None else zero.float())) * scale


def _dq_uint8(q, scale, zero=None):
    return (q - zero) * scale if zero is not None else q * scale


DEQUANT_MISTAKES = [
    Mistake("plus-zero",
            "you added the zero-point; it was added when quantizing (q = round(w/scale) + zero), "
            "so dequantizing subtracts it: (q − zero) · scale.",
            _dq_plus),
    Mistake("integer-wraparound",
            "you subtracted in the integer dtype of q: uint8 − uint8 wraps around (3 − 128 "
            "gives 131, not −125). Convert to float first: (q.float() − zero.float()) · scale.",
            _dq_uint8),
    Mistake("divide",
            "you divided by scale; quantizing divides (w/scale), dequantizing multiplies.",
            lambda q, scale, zero=None: (q.float() - (0 if zero is None else zero.float())) / scale),
    Mistake("zero-after-scale",
            "you subtracted the zero-point after scaling (q·scale − zero); the zero-point is in "
            "integer units: (q − zero) · scale.",
            lambda q, scale, zero=None: q.float() * scale - (0 if zero is None else zero.float())),
    Mistake("zero-ignored",
            "you ignored the zero-point: with zero given the value is (q − zero) · scale.",
            lambda q, scale, zero=None: q.float() * scale),
]


def _zeropoint(w, bits, dim, *, levels=None, rounder=torch.round, round_zero=True,
               include_zero=True, clamp_zero=True, flip=False):
    qmax = 2**bits - 1
    levels = qmax if levels is None else levels
    if dim is None:
        lo, hi = w.min(), w.max()
    else:
        dims = [d for d in range(w.dim()) if d != dim % w.dim()]
        lo, hi = w.amin(dim=dims, keepdim=True), w.amax(dim=dims, keepdim=True)
    if include_zero:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / levels
    zero = (lo / scale) if flip else (-lo / scale)
    if round_zero:
        zero = torch.round(zero)
    if clamp_zero:
        zero = zero.clamp(0, qmax)
    q = torch.clamp(rounder(w / scale + zero), 0, qmax).to(torch.uint8)
    return q, scale, zero


ZEROPOINT_MISTAKES = [
    Mistake("zero-not-rounded",
            "your zero-point is not an integer: round it, zero = round(−min/scale). A "
            "fractional zero-point cannot be stored next to the integer levels, and 0.0 would "
            "no longer be exactly representable.",
            lambda w, bits, dim=None: _zeropoint(w, bits, dim, round_zero=False)),
    Mistake("truncation",
            "you truncated instead of rounding to the nearest level; use torch.round.",
            lambda w, bits, dim=None: _zeropoint(w, bits, dim, rounder=_truncate)),
    Mistake("levels-2^b",
            "you divided the range by 2^b; b bits give 2^b levels, i.e. 2^b − 1 steps "
            "between the lowest and the highest: scale = (max − min) / (2^b − 1).",
            lambda w, bits, dim=None: _zeropoint(w, bits, dim, levels=2**bits)),
    Mistake("zero-sign",
            "your zero-point has the wrong sign: zero = round(−min/scale), which is ≥ 0 "
            "because min ≤ 0; the level that represents 0.0.",
            lambda w, bits, dim=None: _zeropoint(w, bits, dim, flip=True)),
    Mistake("range-without-zero",
            "you quantized [min(w), max(w)] as is. Extend the range to contain 0 first "
            "(min = min(w.min(), 0), max = max(w.max(), 0)), as PyTorch's observers do: "
            "otherwise an all-positive tensor gets a negative zero-point, which, clamped "
            "to [0, 2^b − 1], pushes every weight off the grid.",
            lambda w, bits, dim=None: _zeropoint(w, bits, dim, include_zero=False)),
    Mistake("zero-not-clamped",
            "your zero-point falls outside [0, 2^b − 1] (here because the range was not "
            "extended to contain 0): the zero-point must be one of the unsigned levels. "
            "Use min = min(w.min(), 0), max = max(w.max(), 0), then clamp zero to [0, 2^b − 1].",
            lambda w, bits, dim=None: _zeropoint(w, bits, dim, include_zero=False,
                                                 clamp_zero=False)),
]


def _groups(w, bits, group_size, *, qmax=None, rounder=torch.round, layout="rows"):
    qmax = 2 ** (bits - 1) - 1 if qmax is None else qmax
    rows, cols = w.shape
    if layout == "strided":  # group g = columns g, g+G, g+2G, ...
        g = w.reshape(rows, group_size, cols // group_size).transpose(1, 2)
    elif layout == "columns":  # groups run down the columns
        g = w.T.reshape(cols, rows // group_size, group_size)
    else:
        g = w.reshape(rows, cols // group_size, group_size)
    scale = g.abs().amax(dim=-1, keepdim=True) / qmax
    q = torch.clamp(rounder(g / scale), -qmax, qmax).to(torch.int8)
    if layout == "strided":
        q = q.transpose(1, 2).reshape(rows, cols)
    elif layout == "columns":
        q = q.reshape(cols, rows).T
    else:
        q = q.reshape(rows, cols)
    return q, scale.squeeze(-1)


def _per_row(w, bits, group_size):
    q, scale = _absmax(w, bits, 0)
    return q, scale.expand(-1, w.shape[1] // group_size)


GROUP_MISTAKES = [
    Mistake("strided-groups",
            "your groups are strided (every G-th column) instead of runs of group_size "
            "consecutive columns. Reshape to (rows, cols // group_size, group_size) and take "
            "the absmax over the last axis.",
            lambda w, bits, group_size: _groups(w, bits, group_size, layout="strided")),
    Mistake("column-groups",
            "your groups run down the columns (along the output axis). Groups must be "
            "consecutive weights of a row (the input axis a matmul sums over): "
            "w.reshape(rows, cols // group_size, group_size).",
            lambda w, bits, group_size: _groups(w, bits, group_size, layout="columns")),
    Mistake("one-scale-per-row",
            "every group of a row has the same scale: you took the absmax of the whole row. "
            "Each group of group_size weights needs its own absmax.",
            _per_row),
    Mistake("truncation",
            "you truncated instead of rounding to the nearest level; use torch.round.",
            lambda w, bits, group_size: _groups(w, bits, group_size, rounder=_truncate)),
    Mistake("qmax-2^(b-1)",
            "your largest level is 2^(b−1) (8 for 4 bits); a signed b-bit integer "
            "symmetric grid stops at 2^(b−1) − 1 (7 for 4 bits).",
            lambda w, bits, group_size: _groups(w, bits, group_size, qmax=2 ** (bits - 1))),
]


# --------------------------------------------------------------------------- parts


def _absmax_reference(w, bits, dim=None):
    return quantize.quantize_absmax(w, bits, dim)


def _zeropoint_reference(w, bits, dim=None):
    return quantize.quantize_zeropoint(w, bits, dim)


def _dequantize_reference(q, scale, zero=None):
    return quantize.dequantize(q, scale, zero)


check_quantize_absmax = make_check(Part(
    name="quantize_absmax", chapter=CHAPTER, reference=_absmax_reference, cases=_dim_cases,
    compare=compare_quantized, mistakes=ABSMAX_MISTAKES, guard=_guard("quantize_absmax"),
    pure=True,
))

check_dequantize = make_check(Part(
    name="dequantize", chapter=CHAPTER, reference=_dequantize_reference, cases=_dequant_cases,
    compare=close(rtol=1e-5, atol=1e-7), mistakes=DEQUANT_MISTAKES,
    guard=_guard("dequantize"),
))

check_quantize_zeropoint = make_check(Part(
    name="quantize_zeropoint", chapter=CHAPTER, reference=_zeropoint_reference,
    cases=_zeropoint_cases, compare=compare_quantized, mistakes=ZEROPOINT_MISTAKES,
    guard=_guard("quantize_zeropoint"),
))

check_quantize_groupwise = make_check(Part(
    name="quantize_groupwise", chapter=CHAPTER, reference=quantize.quantize_groupwise,
    cases=_group_cases, compare=compare_quantized, mistakes=GROUP_MISTAKES,
    guard=_guard("quantize_groupwise"), pure=True,
))
