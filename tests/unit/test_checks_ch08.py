"""The ch08_quantization checks accept different correct solutions and name the mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.checks.ch08_quantization import (
    check_dequantize,
    check_quantize_absmax,
    check_quantize_groupwise,
    check_quantize_zeropoint,
)

# --------------------------------------------------------------------------- absmax


def absmax_vectorized(w, bits, dim=None):
    qmax = 2 ** (bits - 1) - 1
    if dim is None:
        scale = w.abs().max() / qmax
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        scale = w.abs().amax(dim=others, keepdim=True) / qmax
    return torch.clamp(torch.round(w / scale), -qmax, qmax).to(torch.int8), scale


def absmax_loops(w, bits, dim=None):
    """Per channel with a Python loop over the channels, via NumPy (rint = half to even)."""
    qmax = 2 ** (bits - 1) - 1
    a = w.numpy().astype(np.float64)
    if dim is None:
        scale = np.abs(a).max() / qmax
        return torch.from_numpy(np.rint(a / scale).astype(np.int8)), float(scale)
    moved = np.moveaxis(a, dim, 0)
    q = np.empty_like(moved, dtype=np.int8)
    scales = []
    for c in range(moved.shape[0]):
        s = np.abs(moved[c]).max() / qmax
        scales.append(s)
        q[c] = np.clip(np.rint(moved[c] / s), -qmax, qmax)
    return torch.from_numpy(np.moveaxis(q, 0, dim).copy()), torch.tensor(scales)  # flat scales


@pytest.mark.parametrize("fn", [absmax_vectorized, absmax_loops])
def test_absmax_accepts_correct_solutions(fn):
    check_quantize_absmax(fn)
    check_quantize_absmax(fn, seed=3)


def test_absmax_names_truncation():
    def truncating(w, bits, dim=None):
        q, scale = absmax_vectorized(w, bits, dim)
        return (w / scale).to(torch.int8), scale

    with pytest.raises(AssertionError, match="truncated"):
        check_quantize_absmax(truncating)


def test_absmax_names_qmax_128():
    def qmax_128(w, bits, dim=None):
        q, scale = absmax_vectorized(w, bits, dim)
        scale = scale * (2 ** (bits - 1) - 1) / 2 ** (bits - 1)
        return torch.clamp(torch.round(w / scale), -(2 ** (bits - 1)), 2 ** (bits - 1)).to(torch.int8), scale

    with pytest.raises(AssertionError, match=r"2\^\(b−1\) − 1"):
        check_quantize_absmax(qmax_128)


def test_absmax_rejects_float_q():
    def float_q(w, bits, dim=None):
        q, scale = absmax_vectorized(w, bits, dim)
        return q.float(), scale

    with pytest.raises(AssertionError, match="integers"):
        check_quantize_absmax(float_q)


# --------------------------------------------------------------------------- dequantize


def dequantize_simple(q, scale, zero=None):
    x = q.to(torch.float32)
    if zero is not None:
        x = x - zero.to(torch.float32)
    return x * scale


def dequantize_double(q, scale, zero=None):
    z = 0 if zero is None else zero.double()
    return ((q.double() - z) * scale.double()).float()


@pytest.mark.parametrize("fn", [dequantize_simple, dequantize_double])
def test_dequantize_accepts_correct_solutions(fn):
    check_dequantize(fn)
    check_dequantize(fn, seed=5)


def test_dequantize_names_wraparound():
    def in_uint8(q, scale, zero=None):
        return (q - zero) * scale if zero is not None else q * scale

    with pytest.raises(AssertionError, match="wraps around"):
        check_dequantize(in_uint8)


# --------------------------------------------------------------------------- zero-point


def zeropoint_vectorized(w, bits, dim=None):
    qmax = 2**bits - 1
    if dim is None:
        lo, hi = w.min(), w.max()
    else:
        others = [d for d in range(w.dim()) if d != dim % w.dim()]
        lo, hi = w.amin(dim=others, keepdim=True), w.amax(dim=others, keepdim=True)
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    scale = (hi - lo) / qmax
    zero = torch.clamp(torch.round(-lo / scale), 0, qmax)
    q = torch.clamp(torch.round(w / scale) + zero, 0, qmax).to(torch.uint8)
    return q, scale, zero.to(torch.int32)


def zeropoint_loops(w, bits, dim=None):
    """Loops over channels, qmin-based formula zero = qmin - round(min/scale)."""
    qmin, qmax = 0, 2**bits - 1
    channels = [w] if dim is None else list(w.movedim(dim, 0))
    qs, scales, zeros = [], [], []
    for c in channels:
        lo, hi = min(c.min().item(), 0.0), max(c.max().item(), 0.0)
        scale = (hi - lo) / (qmax - qmin)
        zero = min(max(qmin - round(lo / scale), qmin), qmax)
        qs.append(torch.clamp(torch.round(c / scale) + zero, qmin, qmax).to(torch.int32))
        scales.append(scale)
        zeros.append(zero)
    if dim is None:
        return qs[0], scales[0], zeros[0]
    return torch.stack(qs).movedim(0, dim), torch.tensor(scales), torch.tensor(zeros)


@pytest.mark.parametrize("fn", [zeropoint_vectorized, zeropoint_loops])
def test_zeropoint_accepts_correct_solutions(fn):
    check_quantize_zeropoint(fn)
    check_quantize_zeropoint(fn, seed=9)


def test_zeropoint_names_unrounded_zero():
    def unrounded(w, bits, dim=None):
        q, scale, zero = zeropoint_vectorized(w, bits, dim)
        lo = torch.clamp(w.min() if dim is None else w.amin(dim=1 - dim % 2, keepdim=True), max=0)
        zero = -lo / scale
        return torch.clamp(torch.round(w / scale + zero), 0, 2**bits - 1).to(torch.uint8), scale, zero

    with pytest.raises(AssertionError, match="not an integer"):
        check_quantize_zeropoint(unrounded)


# --------------------------------------------------------------------------- group-wise


def groupwise_reshape(w, bits, group_size):
    qmax = 2 ** (bits - 1) - 1
    rows, cols = w.shape
    g = w.reshape(rows, cols // group_size, group_size)
    scale = g.abs().amax(dim=-1) / qmax
    q = torch.clamp(torch.round(g / scale[..., None]), -qmax, qmax)
    return q.reshape(rows, cols).to(torch.int8), scale


def groupwise_loops(w, bits, group_size):
    qmax = 2 ** (bits - 1) - 1
    rows, cols = w.shape
    q = torch.empty(rows, cols, dtype=torch.int8)
    scale = torch.empty(rows, cols // group_size)
    for r in range(rows):
        for g in range(cols // group_size):
            block = w[r, g * group_size:(g + 1) * group_size]
            s = block.abs().max() / qmax
            scale[r, g] = s
            q[r, g * group_size:(g + 1) * group_size] = torch.round(block / s).clamp(-qmax, qmax)
    return q, scale


def groupwise_split(w, bits, group_size):
    """torch.split into column blocks, each quantized per row."""
    qmax = 2 ** (bits - 1) - 1
    qs, scales = [], []
    for block in torch.split(w, group_size, dim=1):
        s = block.abs().amax(dim=1, keepdim=True) / qmax
        qs.append(torch.clamp(torch.round(block / s), -qmax, qmax).to(torch.int8))
        scales.append(s)
    return torch.cat(qs, dim=1), torch.cat(scales, dim=1)


@pytest.mark.parametrize("fn", [groupwise_reshape, groupwise_loops, groupwise_split])
def test_groupwise_accepts_correct_solutions(fn):
    check_quantize_groupwise(fn)
    check_quantize_groupwise(fn, seed=11)


def test_groupwise_names_wrong_axis():
    def down_columns(w, bits, group_size):
        q, scale = groupwise_reshape(w.T.contiguous(), bits, group_size)
        return q.T, scale

    with pytest.raises(AssertionError, match="run down the columns"):
        check_quantize_groupwise(down_columns)


def test_groupwise_reports_wrong_return_type():
    with pytest.raises(AssertionError, match="expected a tuple"):
        check_quantize_groupwise(lambda w, bits, group_size: w)
