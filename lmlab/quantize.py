"""Quantization: store weights as small integers plus a few floating-point scales.

A float ``w`` becomes an integer ``q`` on a grid of step ``scale``; reading it back gives
``w_hat = (q - zero) * scale``. Round to nearest and the error is at most ``scale / 2`` per
element, so everything in this module is about choosing ``scale`` (and ``zero``) well:

* **absmax** (symmetric): ``scale = max|w| / qmax`` with ``qmax = 2^(b-1) - 1`` and
  ``q`` in ``[-qmax, qmax]`` (``-2^(b-1)`` is left unused so the grid is symmetric).
* **zero-point** (asymmetric): the range ``[min, max]`` (extended to contain 0, so that 0
  is exact) is spread over the unsigned levels ``0 .. 2^b - 1``:
  ``scale = (max - min) / (2^b - 1)``, ``zero = round(-min / scale)``.
* **granularity**: one scale for the whole tensor (``dim=None``), one per channel along
  ``dim`` (one per output row of a Linear weight: ``dim=0``), or one per group of
  ``group_size`` consecutive weights along the last (input) axis.

:class:`QuantLinear` keeps int8 (or int4 packed two per byte) weights and their scales,
and either dequantizes them on the fly or, for int8 per-channel weights, runs an integer
matmul (``torch._int_mm``) on dynamically quantized activations.
:func:`quantize_model` swaps every ``nn.Linear`` of a model for one.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "qrange",
    "quantize_absmax",
    "quantize_zeropoint",
    "quantize_groupwise",
    "dequantize",
    "fake_quantize",
    "pack_int4",
    "unpack_int4",
    "QuantLinear",
    "quantize_model",
    "model_size_bytes",
    "has_int8_kernel",
]


# --------------------------------------------------------------------------- checks


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an integer from 2 to 8, got {bits!r}")


def _check_float(w: torch.Tensor, name: str = "w") -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"{name} has dtype {w.dtype}: quantize a floating-point tensor")
    if w.numel() == 0:
        raise ValueError(f"{name} has shape {tuple(w.shape)}: there is nothing to quantize")


def _reduce_dims(w: torch.Tensor, dim: int | None) -> tuple[int, ...]:
    """The axes a scale is shared over: all of them (per tensor) or all but ``dim``."""
    if dim is None:
        return tuple(range(w.dim()))
    if not -w.dim() <= dim < w.dim() or w.dim() == 0:
        raise ValueError(f"dim={dim} is out of range for w of shape {tuple(w.shape)}")
    dim = dim % w.dim()
    return tuple(d for d in range(w.dim()) if d != dim)


def qrange(bits: int, signed: bool = True) -> tuple[int, int]:
    """The integer levels used: ``(-(2^(b-1)-1), 2^(b-1)-1)`` signed, ``(0, 2^b-1)`` unsigned."""
    _check_bits(bits)
    if signed:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


# --------------------------------------------------------------------------- quantizers


def quantize_absmax(
    w: torch.Tensor, bits: int = 8, dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest quantization.

    w: any shape. Returns ``q`` (int8, shape of ``w``, values in ``[-qmax, qmax]``) and
    ``scale`` (float, shape of ``w`` with the shared axes reduced to 1: ``()`` per tensor,
    ``(out, 1)`` for a ``(out, in)`` weight with ``dim=0``). ``w ≈ q * scale``.
    A channel that is all zeros gets ``scale = 1`` (any scale represents it exactly).
    """
    _check_float(w)
    _, qmax = qrange(bits)
    dims = _reduce_dims(w, dim)
    absmax = w.abs().amax(dim=dims, keepdim=dim is not None) if dims else w.abs()
    scale = absmax / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w / scale), -qmax, qmax).to(torch.int8)
    return q, scale


def quantize_zeropoint(
    w: torch.Tensor, bits: int = 8, dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric (affine) quantization onto the unsigned levels ``0 .. 2^b - 1``.

    The range ``[min(w), max(w)]`` is first extended to contain 0 (as PyTorch's observers
    do) so that 0 is represented exactly. Returns ``q`` (uint8, shape of ``w``), ``scale``
    (float) and ``zero`` (int32), both shaped like :func:`quantize_absmax`'s scale.
    ``w ≈ (q - zero) * scale``.
    """
    _check_float(w)
    qmin, qmax = qrange(bits, signed=False)
    dims = _reduce_dims(w, dim)
    keep = dim is not None
    lo = (w.amin(dim=dims, keepdim=keep) if dims else w).clamp(max=0)
    hi = (w.amax(dim=dims, keepdim=keep) if dims else w).clamp(min=0)
    scale = (hi - lo) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    q = torch.clamp(torch.round(w / scale) + zero, qmin, qmax).to(torch.uint8)
    return q, scale, zero.to(torch.int32)


def quantize_groupwise(
    w: torch.Tensor, bits: int = 4, group_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax quantization with one scale per ``group_size`` consecutive weights of the last axis.

    w: ``(..., K)`` with ``K % group_size == 0`` (for a Linear weight ``(out, in)`` the groups
    run along the input axis, the one a matmul sums over). Returns ``q`` (int8, shape of
    ``w``) and ``scale`` (float, ``(..., K // group_size)``); group ``g`` of row ``r`` is
    ``w[r, g*group_size:(g+1)*group_size] ≈ q[...] * scale[r, g]``.
    """
    _check_float(w)
    if w.dim() == 0:
        raise ValueError("w is a scalar: group-wise quantization needs at least one axis")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    k = w.shape[-1]
    if k % group_size:
        raise ValueError(
            f"w has shape {tuple(w.shape)}: its last dimension {k} is not a multiple of "
            f"group_size={group_size}"
        )
    groups = w.reshape(*w.shape[:-1], k // group_size, group_size)  # (..., G, group_size)
    q, scale = _absmax_last(groups, bits)
    return q.reshape(w.shape), scale.squeeze(-1)


def _absmax_last(groups: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax over the last axis only: groups (..., G, n) -> q (..., G, n), scale (..., G, 1)."""
    _, qmax = qrange(bits)
    scale = groups.abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(groups / scale), -qmax, qmax).to(torch.int8)
    return q, scale


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None
) -> torch.Tensor:
    """``(q - zero) * scale`` in the float dtype of ``scale``.

    ``scale`` (and ``zero``) either broadcast against ``q`` (per tensor, per channel) or
    have one entry per group of the last axis (group-wise: ``(..., K // group_size)``),
    in which case each is repeated ``group_size`` times.
    """
    if not isinstance(q, torch.Tensor) or not isinstance(scale, torch.Tensor):
        raise TypeError("q and scale must be torch.Tensors")
    scale = _expand_groups(q, scale, "scale")
    values = q.to(scale.dtype)  # convert first: uint8 - int would wrap around
    if zero is not None:
        values = values - _expand_groups(q, zero, "zero").to(scale.dtype)
    return values * scale


def _expand_groups(q: torch.Tensor, s: torch.Tensor, name: str) -> torch.Tensor:
    try:
        torch.broadcast_shapes(q.shape, s.shape)
        return s
    except RuntimeError:
        pass
    k = q.shape[-1] if q.dim() else 0
    if s.dim() == q.dim() and s.shape[:-1] == q.shape[:-1] and s.shape[-1] and k % s.shape[-1] == 0:
        return s.repeat_interleave(k // s.shape[-1], dim=-1)
    raise ValueError(
        f"{name} has shape {tuple(s.shape)}, which neither broadcasts against q of shape "
        f"{tuple(q.shape)} nor has one entry per group of its last axis"
    )


def fake_quantize(
    w: torch.Tensor, bits: int, *, dim: int | None = None, group_size: int | None = None,
    scheme: str = "absmax",
) -> torch.Tensor:
    """Quantize then dequantize: the float tensor a quantized model actually computes with.

    ``group_size`` (absmax only) overrides ``dim``; ``scheme`` is ``"absmax"`` or ``"zeropoint"``.
    """
    if group_size is not None:
        if scheme != "absmax":
            raise ValueError(f"group-wise quantization is absmax only, got scheme={scheme!r}")
        return dequantize(*quantize_groupwise(w, bits, group_size)).to(w.dtype)
    if scheme == "absmax":
        return dequantize(*quantize_absmax(w, bits, dim)).to(w.dtype)
    if scheme == "zeropoint":
        return dequantize(*quantize_zeropoint(w, bits, dim)).to(w.dtype)
    raise ValueError(f"scheme must be 'absmax' or 'zeropoint', got {scheme!r}")


# --------------------------------------------------------------------------- int4 packing


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack signed 4-bit values two per byte: q (..., K) int in [-8, 7], K even -> (..., K/2) uint8.

    Element ``2i`` goes in the low nibble of byte ``i``, element ``2i+1`` in the high nibble,
    each as a 4-bit two's complement number.
    """
    if q.dtype.is_floating_point or q.dtype == torch.bool:
        raise TypeError(f"q has dtype {q.dtype}: pack integer values")
    if q.dim() == 0 or q.shape[-1] % 2:
        raise ValueError(f"q has shape {tuple(q.shape)}: its last dimension must be even to pack pairs")
    if q.numel() and (q.min() < -8 or q.max() > 7):
        raise ValueError(
            f"q holds values from {int(q.min())} to {int(q.max())}: int4 holds -8 .. 7"
        )
    nibbles = (q.to(torch.int16) & 0xF).to(torch.uint8)
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: (..., K/2) uint8 -> (..., K) int8."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed has dtype {packed.dtype}, expected torch.uint8 from pack_int4")
    as_signed = packed.view(torch.int8)
    low = (as_signed << 4) >> 4  # arithmetic shift sign-extends the low nibble
    high = as_signed >> 4
    return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


# --------------------------------------------------------------------------- QuantLinear


def has_int8_kernel() -> bool:
    """Whether this machine has fast int8 dot products (x86 VNNI/AMX, or a CUDA GPU)."""
    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


class QuantLinear(nn.Module):
    """A Linear layer whose weight is stored as integers plus scales.

    Buffers: ``qweight`` (``(out, in)`` int8, or ``(out, in/2)`` uint8 packed two per byte
    when ``bits <= 4``), ``scale`` (``(out, in // group_size)``; ``(out, 1)`` per channel,
    ``(1, 1)`` per tensor) and ``bias``. ``kernel="dequant"`` rebuilds the float weight at
    each call; ``kernel="int8"`` (8 bits, not group-wise) quantizes the input per row (absmax) and
    multiplies integers with ``torch._int_mm``, accumulating in int32.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 8,
        group_size: int | str | None = None, kernel: str = "dequant",
    ) -> None:
        super().__init__()
        _check_bits(bits)
        if group_size == "tensor":
            scale_shape = (1, 1)
        elif group_size is None:
            scale_shape = (out_features, 1)
        elif isinstance(group_size, int) and not isinstance(group_size, bool) and group_size > 0:
            if in_features % group_size:
                raise ValueError(
                    f"in_features={in_features} is not a multiple of group_size={group_size}"
                )
            scale_shape = (out_features, in_features // group_size)
        else:
            raise ValueError(
                f"group_size must be None (per channel), 'tensor' or a positive int, got {group_size!r}"
            )
        if bits <= 4 and in_features % 2:
            raise ValueError(f"in_features={in_features} must be even to pack {bits}-bit weights")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        self.kernel = kernel
        cols = in_features // 2 if bits <= 4 else in_features
        dtype = torch.uint8 if bits <= 4 else torch.int8
        self.register_buffer("qweight", torch.zeros(out_features, cols, dtype=dtype))
        self.register_buffer("scale", torch.ones(scale_shape))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @property
    def kernel(self) -> str:
        return self._kernel

    @kernel.setter
    def kernel(self, value: str) -> None:
        if value not in ("dequant", "int8"):
            raise ValueError(f"kernel must be 'dequant' or 'int8', got {value!r}")
        if value == "int8" and (self.bits != 8 or self.group_size not in (None, "tensor")):
            raise ValueError(
                f"kernel='int8' needs 8-bit per-channel or per-tensor weights, got bits={self.bits}, "
                f"group_size={self.group_size}"
            )
        self._kernel = value

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, bits: int = 8, group_size: int | str | None = None,
        kernel: str = "dequant",
    ) -> QuantLinear:
        """Quantize ``linear.weight`` with absmax: per output channel (``group_size=None``),
        per group of ``group_size`` inputs, or with one scale (``group_size="tensor"``)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    bits=bits, group_size=group_size, kernel=kernel).to(w.device)
        if group_size is None:
            q, scale = quantize_absmax(w.float(), bits, dim=0)  # scale (out, 1)
        elif group_size == "tensor":
            q, scale = quantize_absmax(w.float(), bits)
            scale = scale.reshape(1, 1)
        else:
            q, scale = quantize_groupwise(w.float(), bits, group_size)  # scale (out, G)
        layer.qweight = pack_int4(q) if bits <= 4 else q
        layer.scale = scale.to(w.dtype)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    def int_weight(self) -> torch.Tensor:
        """The integer weight, unpacked: (out, in) int8."""
        return unpack_int4(self.qweight) if self.bits <= 4 else self.qweight

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float weight this layer computes with: (out, in)."""
        return dequantize(self.int_weight(), self.scale).to(dtype or self.scale.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"x has shape {tuple(x.shape)}, expected (..., {self.in_features}) for this layer"
            )
        if self.kernel == "int8":
            return self._forward_int8(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def _forward_int8(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (N, in)
        xq, xscale = quantize_absmax(rows.float(), 8, dim=0)  # per row: (N, in), (N, 1)
        n = xq.shape[0]
        if xq.is_cuda and n <= 16:  # CUDA's int8 GEMM wants more than 16 rows: pad with zeros
            xq = F.pad(xq, (0, 0, 0, 17 - n))
        acc = torch._int_mm(xq, self.qweight.t())[:n]  # (N, out) int32, exact
        y = acc.float().mul_(xscale).mul_(self.scale.t())  # scale: (out, 1) -> (1, out)
        if self.bias is not None:
            y.add_(self.bias.float())
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        grouping = {None: "per channel", "tensor": "per tensor"}.get(
            self.group_size, f"group_size={self.group_size}")
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, {grouping}, kernel={self.kernel}")


# --------------------------------------------------------------------------- whole models


def _skipped(name: str, skip: Iterable[str] | Callable[[str], bool]) -> bool:
    if callable(skip):
        return bool(skip(name))
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in skip)


def quantize_model(
    model: nn.Module, bits: int, group_size: int | str | None = None, *,
    skip: Iterable[str] | Callable[[str], bool] = (), kernel: str = "dequant",
    inplace: bool = False,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` with a :class:`QuantLinear`.

    ``group_size``: ``None`` (one scale per output channel), an int (one per group of that
    many inputs) or ``"tensor"`` (one scale per matrix).
    ``skip`` holds glob patterns of module names to keep in float (``["lm_head", "*.attn.*"]``)
    or a predicate on the name. Works on a deep copy unless ``inplace``. A Linear whose
    ``in_features`` is not a multiple of ``group_size`` raises ``ValueError``.
    """
    _check_bits(bits)
    if isinstance(skip, str):
        skip = [skip]
    target = model if inplace else copy.deepcopy(model)
    linears = [(name, m) for name, m in target.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in linears:
        if _skipped(name, skip):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        setattr(parent, child, QuantLinear.from_linear(linear, bits, group_size, kernel))
    return target


def model_size_bytes(model: nn.Module) -> int:
    """Bytes taken by a model's parameters and buffers, each shared tensor counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total
