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
import functools
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
    "QuantEmbedding",
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


# --------------------------------------------------------------------------- integer kernels


def has_int8_kernel() -> bool:
    """Whether this machine has fast int8 dot products (x86 VNNI/AMX, or a CUDA GPU)."""
    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@functools.cache
def _has_onednn_int8() -> bool:
    """Whether PyTorch ships oneDNN's int8 linear (x86 CPU builds do)."""
    try:
        torch.ops.onednn.qlinear_prepack  # noqa: B018 (looking the op up is the test)
        torch.ops.onednn.qlinear_pointwise  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available()


def _quantize_rows(x: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8 quantization of each row of activations: x (N, K) float ->
    q (N, K) and scale (N, 1) float32, with ``x ≈ (q - offset) * scale``.

    The levels and scales of ``quantize_absmax(x, 8, dim=0)``, in fewer operations: this
    runs on every forward of the int8 kernel, where each call costs a microsecond or two.
    ``offset=0`` gives int8 ``q`` in [-127, 127]; ``offset=128`` gives the same levels as
    uint8 in [1, 255] (oneDNN's fast int8 kernels want unsigned activations: VNNI's
    ``vpdpbusd`` multiplies unsigned by signed bytes).
    """
    x = x.float()
    scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-30).div_(127)  # 0 rows stay exact
    q = torch.div(x, scale).round_()  # |x / scale| <= 127: no clamp needed
    if offset:
        return q.add_(offset).to(torch.uint8), scale
    return q.to(torch.int8), scale


def _scale_and_shift(acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``acc * scale + bias`` as float32, in one pass where there is a bias."""
    return acc * scale if bias is None else torch.addcmul(bias, acc, scale)


def _int_mm_linear(x: torch.Tensor, weight_t: torch.Tensor, w_scale_t: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, K) float times an int8 weight given transposed, ``weight_t`` (K, out), with
    ``torch._int_mm``: int8 × int8 products summed exactly in int32, then times the row
    scales and the weight scales ``w_scale_t`` (1, out), plus ``bias`` (out,).
    Returns (N, out) float32."""
    xq, x_scale = _quantize_rows(x)
    n = xq.shape[0]
    if xq.is_cuda and n <= 16:  # CUDA's int8 GEMM wants more than 16 rows: pad with zeros
        acc = torch._int_mm(F.pad(xq, (0, 0, 0, 17 - n)), weight_t)[:n]
    else:
        acc = torch._int_mm(xq, weight_t)  # (N, out) int32
    return _scale_and_shift(acc, x_scale * w_scale_t, bias)  # (N, 1) * (1, out)


def _onednn_int8_linear(x: torch.Tensor, packed: tuple, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, K) float times a pre-packed int8 weight on oneDNN's u8 × s8 kernel, plus ``bias``.

    ``packed`` = (weight packed by ``qlinear_prepack``, weight scales (out,), zero points
    (out,)). oneDNN applies the weight scales; it takes one activation scale per call, so
    the per-row scales are applied after. Returns (N, out) float32.
    """
    weight, w_scale, w_zero = packed
    xq, x_scale = _quantize_rows(x, offset=128)
    y = torch.ops.onednn.qlinear_pointwise(
        xq, 1.0, 128, weight, w_scale, w_zero, None, 1.0, 0, torch.float32, "none", [], "")
    return _scale_and_shift(y, x_scale, bias)


def _identity(t: torch.Tensor) -> tuple[int, int]:
    """Where ``t``'s data lives and how often it was changed in place. (Tensors made under
    ``torch.inference_mode`` keep no version counter: for them only the address counts.)"""
    return t.data_ptr(), -1 if t.is_inference() else t._version


# --------------------------------------------------------------------------- integer storage


class _IntMatrix(nn.Module):
    """A ``(rows, cols)`` float matrix kept as integers plus scales; the storage shared by
    :class:`QuantLinear` (a row per output) and :class:`QuantEmbedding` (a row per token).

    Buffers: ``qweight`` (``(rows, cols)`` int8, or ``(rows, cols/2)`` uint8 packed two per
    byte when ``bits <= 4``) and ``scale`` (``(rows, cols // group_size)`` group-wise,
    ``(rows, 1)`` per row, ``(1, 1)`` per tensor), stored in ``float_dtype``.
    """

    def __init__(self, rows: int, cols: int, *, bits: int, group_size: int | str | None,
                 float_dtype: torch.dtype) -> None:
        super().__init__()
        _check_bits(bits)
        if group_size == "tensor":
            scale_shape = (1, 1)
        elif group_size is None:
            scale_shape = (rows, 1)
        elif isinstance(group_size, int) and not isinstance(group_size, bool) and group_size > 0:
            if cols % group_size:
                raise ValueError(f"the weight's {cols} columns are not a multiple of group_size={group_size}")
            scale_shape = (rows, cols // group_size)
        else:
            raise ValueError(
                f"group_size must be None (per channel), 'tensor' or a positive int, got {group_size!r}"
            )
        if bits <= 4 and cols % 2:
            raise ValueError(f"the weight has {cols} columns: it must be even to pack {bits}-bit values")
        self.bits, self.group_size = bits, group_size
        packed_cols, dtype = (cols // 2, torch.uint8) if bits <= 4 else (cols, torch.int8)
        self.register_buffer("qweight", torch.zeros(rows, packed_cols, dtype=dtype))
        self.register_buffer("scale", torch.ones(scale_shape, dtype=float_dtype))

    def _store(self, w: torch.Tensor) -> None:
        """Quantize the float matrix ``w`` (rows, cols) into ``qweight`` and ``scale``."""
        w = w.detach().float()
        if self.group_size is None:
            q, scale = quantize_absmax(w, self.bits, dim=0)  # scale (rows, 1)
        elif self.group_size == "tensor":
            q, scale = quantize_absmax(w, self.bits)
            scale = scale.reshape(1, 1)
        else:
            q, scale = quantize_groupwise(w, self.bits, self.group_size)  # scale (rows, G)
        self.qweight = pack_int4(q) if self.bits <= 4 else q
        self.scale = scale.to(self.scale.dtype)

    def _share(self, other: _IntMatrix) -> None:
        """Use ``other``'s integers and scales (a tied matrix is stored once)."""
        self.qweight, self.scale = other.qweight, other.scale

    def int_weight(self) -> torch.Tensor:
        """The integer matrix, unpacked: (rows, cols) int8."""
        return unpack_int4(self.qweight) if self.bits <= 4 else self.qweight

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The float matrix this layer computes with: (rows, cols), in ``dtype`` (default:
        the scales' dtype). The product is taken in ``dtype``, so fp16 scales lose nothing
        more than their own rounding."""
        dtype = dtype or self.scale.dtype
        return dequantize(self.int_weight(), self.scale.to(dtype))

    def _grouping(self) -> str:
        return {None: "per channel", "tensor": "per tensor"}.get(
            self.group_size, f"group_size={self.group_size}")


# --------------------------------------------------------------------------- QuantLinear


class QuantLinear(_IntMatrix):
    """A Linear layer whose weight is stored as integers plus scales.

    Buffers: ``qweight`` (``(out, in)`` int8, or ``(out, in/2)`` uint8 packed two per byte
    when ``bits <= 4``), ``scale`` (``(out, in // group_size)``; ``(out, 1)`` per channel,
    ``(1, 1)`` per tensor) and ``bias``, the last two in ``float_dtype``.

    ``kernel="dequant"`` rebuilds the float weight at each call. ``kernel="int8"`` (8 bits,
    not group-wise) quantizes each input row to int8 (absmax) and multiplies integers,
    accumulating in int32: with oneDNN's u8 × s8 kernel on a pre-packed copy of the
    weight on x86 CPUs (the packed copy is a cache, rebuilt when ``qweight`` changes, and
    takes as many bytes again), with ``torch._int_mm`` on GPUs, elsewhere, and for a
    single input row (where it measured faster here).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 8,
        group_size: int | str | None = None, kernel: str = "dequant",
        float_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(out_features, in_features, bits=bits, group_size=group_size,
                         float_dtype=float_dtype)
        self.in_features, self.out_features = in_features, out_features
        self.kernel = kernel
        self.register_buffer("bias", torch.zeros(out_features, dtype=float_dtype) if bias else None)
        self._packed: tuple | None = None  # (key, oneDNN's copy of the weight)
        self._views: tuple | None = None  # (qweight, scale, their transposes)

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
        kernel: str = "dequant", float_dtype: torch.dtype | None = None,
    ) -> QuantLinear:
        """Quantize ``linear.weight`` with absmax: per output channel (``group_size=None``),
        per group of ``group_size`` inputs, or with one scale (``group_size="tensor"``).
        Scales and bias are stored in ``float_dtype`` (default: the weight's dtype)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    bits=bits, group_size=group_size, kernel=kernel,
                    float_dtype=float_dtype or w.dtype).to(w.device)
        layer._store(w)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to(layer.scale.dtype, copy=True)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) -> (..., out)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"x has shape {tuple(x.shape)}, expected (..., {self.in_features}) for this layer"
            )
        if self.kernel == "dequant":
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self.dequantized_weight(x.dtype), bias)
        # Every call here costs a microsecond or two, a lot next to a 50 µs int8 matrix-vector
        # product: skip the reshapes and casts that would change nothing.
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)  # (N, in)
        bias = self._buffers["bias"]
        if rows.shape[0] > 1 and not rows.is_cuda and _has_onednn_int8():
            y = _onednn_int8_linear(rows, self._onednn_weight(), bias)
        else:
            y = _int_mm_linear(rows, *self._transposed(), bias)
        if x.dtype != torch.float32:
            y = y.to(x.dtype)
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], self.out_features)

    def _transposed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``qweightᵀ`` (in, out) and ``scaleᵀ`` (1, out), kept while the buffers stay
        the same tensors: an in-place update shows through a view, a replaced buffer gets
        new views."""
        qweight, scale = self._buffers["qweight"], self._buffers["scale"]
        views = self._views
        if views is None or views[0] is not qweight or views[1] is not scale:
            views = self._views = (qweight, scale, qweight.t(), scale.t())
        return views[2], views[3]

    def _onednn_weight(self) -> tuple:
        """:meth:`_pack_for_onednn`'s result, kept until ``qweight`` or ``scale`` change."""
        key = (_identity(self.qweight), _identity(self.scale))
        if self._packed is None or self._packed[0] != key:
            self._packed = (key, self._pack_for_onednn())
        return self._packed[1]

    def _pack_for_onednn(self) -> tuple:
        """oneDNN's packed copy of ``qweight``, its scales as float32 (out,), zero points (out,)."""
        weight = torch.ops.onednn.qlinear_prepack(self.qweight, None)
        scales = self.scale.float().reshape(-1).expand(self.out_features).contiguous()
        return weight, scales, torch.zeros(self.out_features, dtype=torch.int64)

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state["_packed"] = None  # oneDNN's packed tensor cannot be copied or pickled
        state["_views"] = None  # a copied view would no longer share its buffer's storage
        return state

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, {self._grouping()}, kernel={self.kernel}")


# --------------------------------------------------------------------------- QuantEmbedding


class QuantEmbedding(_IntMatrix):
    """An embedding table stored as integers plus scales; looks rows up, then dequantizes them.

    Same buffers as :class:`QuantLinear` with a row per token (``(num_embeddings,
    embedding_dim)``), so a table tied to an output head can share its integers with the
    head's ``QuantLinear``. Returns vectors in ``output_dtype``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, bits: int = 8,
                 group_size: int | str | None = None, float_dtype: torch.dtype = torch.float32,
                 output_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(num_embeddings, embedding_dim, bits=bits, group_size=group_size,
                         float_dtype=float_dtype)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.output_dtype = output_dtype

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, bits: int = 8,
                       group_size: int | str | None = None,
                       float_dtype: torch.dtype | None = None) -> QuantEmbedding:
        """Quantize ``embedding.weight`` row by row (or per group / per tensor, as QuantLinear)."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"embedding must be an nn.Embedding, got {type(embedding).__name__}")
        if embedding.max_norm is not None:
            raise ValueError("embedding has max_norm set: it rewrites rows on lookup, which "
                             "integer storage cannot do")
        w = embedding.weight
        table = cls(embedding.num_embeddings, embedding.embedding_dim, bits=bits,
                    group_size=group_size, float_dtype=float_dtype or w.dtype,
                    output_dtype=w.dtype).to(w.device)
        table._store(w)
        return table

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (...) integer ids -> (..., embedding_dim) vectors."""
        if idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise TypeError(f"idx has dtype {idx.dtype}: look up integer token ids")
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            raise IndexError(f"idx holds ids from {int(idx.min())} to {int(idx.max())}, "
                             f"expected 0 .. {self.num_embeddings - 1}")
        rows = self.qweight[idx]  # (..., cols or cols/2)
        q = unpack_int4(rows) if self.bits <= 4 else rows
        scale = self.scale[idx] if self.scale.shape[0] > 1 else self.scale[0]
        return dequantize(q, scale.to(self.output_dtype))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, {self._grouping()}"


# --------------------------------------------------------------------------- whole models


def _skipped(name: str, skip: Iterable[str] | Callable[[str], bool]) -> bool:
    if callable(skip):
        return bool(skip(name))
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in skip)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _cast_floats(model: nn.Module, dtype: torch.dtype) -> None:
    """Store every float parameter and buffer outside the integer layers in ``dtype``."""
    for module in model.modules():
        if isinstance(module, _IntMatrix):
            continue
        for p in module.parameters(recurse=False):
            if p.is_floating_point():
                p.data = p.data.to(dtype)
        for name, b in module.named_buffers(recurse=False):
            if b is not None and b.is_floating_point():
                setattr(module, name, b.to(dtype))


def quantize_model(
    model: nn.Module, bits: int, group_size: int | str | None = None, *,
    skip: Iterable[str] | Callable[[str], bool] = (), kernel: str = "dequant",
    embeddings: bool = True, float_dtype: torch.dtype | None = None, inplace: bool = False,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` with a :class:`QuantLinear` (and, with
    ``embeddings``, every ``nn.Embedding`` with a :class:`QuantEmbedding`).

    ``group_size``: ``None`` (one scale per output channel, per token for embeddings), an
    int (one per group of that many inputs) or ``"tensor"`` (one scale per matrix).
    ``skip`` holds glob patterns of module names to keep in float (``["lm_head", "*.attn.*"]``)
    or a predicate on the name. An output head tied to a quantized embedding shares its
    integers, so the tied matrix is still stored once.
    ``float_dtype`` (e.g. ``torch.float16``) stores everything that stays floating point
    (scales, biases, norms, other buffers) in that dtype, as deployment formats do;
    computation still runs in the input's dtype, so the model's modules must accept
    parameters of a smaller float type (lmlab's GPT does; ``torch.nn.LayerNorm`` does not).
    Works on a deep copy unless ``inplace``. A matrix whose columns are not a multiple of
    ``group_size`` raises ``ValueError``.
    """
    _check_bits(bits)
    if isinstance(skip, str):
        skip = [skip]
    target = model if inplace else copy.deepcopy(model)
    tables: dict[int, QuantEmbedding] = {}  # id of the float weight -> its integer table
    for name, module in list(target.named_modules()):
        if embeddings and isinstance(module, nn.Embedding) and not _skipped(name, skip):
            table = QuantEmbedding.from_embedding(module, bits, group_size, float_dtype)
            tables[id(module.weight)] = table
            _replace(target, name, table)
    for name, module in list(target.named_modules()):
        if isinstance(module, nn.Linear) and not _skipped(name, skip):
            layer = QuantLinear.from_linear(module, bits, group_size, kernel, float_dtype)
            if id(module.weight) in tables:  # an output head tied to the embedding
                layer._share(tables[id(module.weight)])
            _replace(target, name, layer)
    if float_dtype is not None:
        _cast_floats(target, float_dtype)
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
