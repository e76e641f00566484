"""lmlab.quantize against hand-derived bounds and PyTorch's own quantizers."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lmlab import quantize
from lmlab.quantize import (
    QuantEmbedding,
    QuantLinear,
    dequantize,
    fake_quantize,
    has_int8_kernel,
    model_size_bytes,
    pack_int4,
    qrange,
    quantize_absmax,
    quantize_groupwise,
    quantize_model,
    quantize_zeropoint,
    unpack_int4,
)

FAST = settings(max_examples=40, deadline=None)


@st.composite
def weights(draw, min_dims=1, max_dims=3):
    """A float32 tensor with a random shape, seed and magnitude (1e-4 .. 1e4)."""
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=min_dims, max_size=max_dims)))
    seed = draw(st.integers(0, 2**16))
    magnitude = 10 ** draw(st.floats(-4, 4))
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen) * magnitude
    if draw(st.booleans()):  # heavy tails: a few outliers, as in real weights
        w = w * torch.exp(torch.randn(shape, generator=gen))
    return w


def _dim(draw, w):
    return draw(st.one_of(st.none(), st.integers(-w.dim(), w.dim() - 1)))


# --------------------------------------------------------------------------- absmax


@FAST
@given(data=st.data(), w=weights(), bits=st.integers(2, 8))
def test_absmax_error_at_most_half_a_step(data, w, bits):
    dim = _dim(data.draw, w)
    q, scale = quantize_absmax(w, bits, dim)
    qmin, qmax = qrange(bits)
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    err = (dequantize(q, scale) - w).abs()
    assert torch.all(err <= scale / 2 * (1 + 1e-5) + 1e-30)
    # the largest magnitude of each channel lands on the end of the grid
    assert int(q.abs().max()) == qmax


def test_absmax_scale_shapes():
    w = torch.randn(6, 10)
    assert quantize_absmax(w, 8)[1].shape == ()
    assert quantize_absmax(w, 8, dim=0)[1].shape == (6, 1)
    assert quantize_absmax(w, 8, dim=-1)[1].shape == (1, 10)
    torch.testing.assert_close(quantize_absmax(w, 8, dim=0)[1].squeeze(1), w.abs().amax(1) / 127)


def test_absmax_hand_example():
    w = torch.tensor([-2.0, -0.5, 0.0, 0.26, 1.0])
    q, scale = quantize_absmax(w, bits=3)  # qmax = 3, scale = 2/3
    assert scale.item() == pytest.approx(2 / 3)
    assert q.tolist() == [-3, -1, 0, 0, 2]  # -0.75 -> -1, 0.39 -> 0, 1.5 -> 2


def test_absmax_rounds_half_to_even():
    # scale = max|w| / qmax = 3 / 3 = 1 with bits=3: w/s lands exactly on halves, where rounding
    # modes differ. Half to even (torch.round, IEEE default): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2,
    # -0.5 -> 0, -1.5 -> -2; half up would give 1, 2, 3, 0, -1; half away from zero 1, 2, 3, -1, -2.
    w = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 3.0])
    q, scale = quantize_absmax(w, bits=3)
    assert scale.item() == 1.0
    assert q.tolist() == [0, 2, 2, 0, -2, 3]


@pytest.mark.parametrize("dim", [None, 0, 1])
def test_absmax_matches_torch_quantize(dim):
    torch.manual_seed(0)
    w = torch.randn(16, 48)
    q, scale = quantize_absmax(w, 8, dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantized tensors deprecated
        if dim is None:
            ref = torch.quantize_per_tensor(w, scale.item(), 0, torch.qint8)
        else:
            ref = torch.quantize_per_channel(
                w, scale.flatten(), torch.zeros(scale.numel(), dtype=torch.long), dim, torch.qint8
            )
    assert (ref.int_repr().int() - q.int()).abs().max() <= 1  # ties may round differently
    assert (ref.int_repr() != q).float().mean() < 1e-3


def test_absmax_scale_matches_torch_observer():
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    torch.manual_seed(1)
    w = torch.randn(12, 20)
    obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                   quant_min=-127, quant_max=127)
    obs(w)
    scale, zero = obs.calculate_qparams()
    torch.testing.assert_close(quantize_absmax(w, 8, dim=0)[1].flatten(), scale, rtol=1e-6, atol=0)
    assert torch.all(zero == 0)


def test_all_zero_channel_is_exact():
    w = torch.zeros(3, 4)
    w[1] = torch.tensor([1.0, -2.0, 0.5, 0.0])
    q, scale = quantize_absmax(w, 4, dim=0)
    assert torch.all(scale > 0)
    torch.testing.assert_close(dequantize(q, scale)[0], torch.zeros(4))
    q, scale, zero = quantize_zeropoint(torch.zeros(5), 8)
    assert torch.all(dequantize(q, scale, zero) == 0)
    assert scale.item() > 0 and zero.item() == 0 and torch.all(q == 0)


def test_all_zero_group_gets_a_positive_scale():
    """Group-wise too: a group of zeros gets scale 1 (not 0, which would divide 0 by 0)."""
    w = torch.tensor([[0.0, 0.0, 1.0, -0.25], [0.0, 0.0, 0.0, 0.0]])
    q, scale = quantize_groupwise(w, 4, 2)
    torch.testing.assert_close(scale, torch.tensor([[1.0, 1.0 / 7], [1.0, 1.0]]), rtol=0, atol=0)
    assert q.tolist() == [[0, 0, 7, -2], [0, 0, 0, 0]]  # -0.25 * 7 = -1.75


def test_defaults_are_the_documented_ones():
    """absmax and zero-point default to 8 bits per tensor, group-wise to 4 bits in groups of 128."""
    w = torch.randn(3, 256, generator=torch.Generator().manual_seed(15))
    for got, ref in ((quantize_absmax(w), quantize_absmax(w, 8, None)),
                     (quantize_zeropoint(w), quantize_zeropoint(w, 8, None)),
                     (quantize_groupwise(w), quantize_groupwise(w, 4, 128))):
        for a, b in zip(got, ref):
            assert torch.equal(a, b)
    assert int(quantize_absmax(w)[0].abs().max()) == 127
    assert int(quantize_zeropoint(w)[0].max()) == 255
    q, scale = quantize_groupwise(w)
    assert scale.shape == (3, 2) and int(q.abs().max()) == 7


def test_per_channel_on_a_1d_tensor_gives_each_element_its_own_scale():
    """dim=0 on a vector: every element is a channel, so it lands exactly on the end of the grid."""
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])
    q, scale = quantize_absmax(w, 8, dim=0)
    assert q.tolist() == [127, -127, 127, 0]
    torch.testing.assert_close(scale, torch.tensor([1.0, 2.0, 0.5, 127.0]) / 127, rtol=0, atol=0)
    q, scale, zero = quantize_zeropoint(w, 8, dim=0)  # range [min(w_i, 0), max(w_i, 0)]
    torch.testing.assert_close(scale, torch.tensor([1.0, 2.0, 0.5, 255.0]) / 255, rtol=0, atol=0)
    assert zero.tolist() == [0, 255, 0, 0] and q.tolist() == [255, 0, 255, 0]
    torch.testing.assert_close(dequantize(q, scale, zero), w, rtol=1e-6, atol=0)


def test_subnormal_scales_still_give_levels_on_the_grid():
    """fp16 weights so small that the scale underflows to a subnormal (and rounds, so w / scale
    overshoots the grid): q and zero are still clamped to the documented levels."""
    tiny = 2.0**-24  # fp16's smallest subnormal; 190 * tiny / 127 rounds down to tiny
    w = torch.tensor([190 * tiny, -190 * tiny], dtype=torch.float16)
    q, scale = quantize_absmax(w, 8)
    assert scale.dtype == torch.float16 and q.tolist() == [127, -127]
    q, scale = quantize_groupwise(w.reshape(1, 2), 8, 2)
    assert q.tolist() == [[127, -127]]
    # zero-point: 382 * tiny / 255 rounds down to tiny as well
    q, scale, zero = quantize_zeropoint(torch.tensor([-382 * tiny, 0.0], dtype=torch.float16), 8)
    assert zero.item() == 255 and q.tolist() == [0, 255]
    q, scale, zero = quantize_zeropoint(torch.tensor([0.0, 382 * tiny], dtype=torch.float16), 8)
    assert zero.item() == 0 and q.tolist() == [0, 255]


# --------------------------------------------------------------------------- zero-point


@FAST
@given(data=st.data(), w=weights(), bits=st.integers(2, 8))
def test_zeropoint_error_at_most_half_a_step(data, w, bits):
    dim = _dim(data.draw, w)
    q, scale, zero = quantize_zeropoint(w, bits, dim)
    assert q.dtype == torch.uint8 and zero.dtype == torch.int32
    assert int(q.max()) <= 2**bits - 1
    assert int(zero.min()) >= 0 and int(zero.max()) <= 2**bits - 1
    err = (dequantize(q, scale, zero) - w).abs()
    assert torch.all(err <= scale / 2 * (1 + 1e-4) + 1e-30)


def test_zeropoint_represents_zero_exactly_and_shifted_data():
    w = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # all >= 0: the range is [0, 4]
    q, scale, zero = quantize_zeropoint(w, 8)
    assert zero.item() == 0 and scale.item() == pytest.approx(4 / 255)
    w = torch.tensor([-1.0, 0.0, 3.0])
    q, scale, zero = quantize_zeropoint(w, 8)
    assert dequantize(q, scale, zero)[1].item() == 0.0
    assert zero.item() == round(255 / 4)


def test_zeropoint_matches_torch_observer_and_quantize():
    from torch.ao.quantization.observer import MinMaxObserver

    torch.manual_seed(2)
    w = torch.randn(30, 7) * 3 + 1.5  # off-centre: zero-point earns its keep
    obs = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    obs(w)
    ref_scale, ref_zero = obs.calculate_qparams()
    q, scale, zero = quantize_zeropoint(w, 8)
    assert scale.item() == pytest.approx(ref_scale.item(), rel=1e-6)
    assert zero.item() == ref_zero.item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.quantize_per_tensor(w, ref_scale.item(), int(ref_zero), torch.quint8)
    assert (ref.int_repr().int() - q.int()).abs().max() <= 1
    # asymmetric data: zero-point beats absmax at the same bit width
    assert (fake_quantize(w, 4, scheme="zeropoint") - w).abs().mean() < \
        (fake_quantize(w, 4) - w).abs().mean()


def test_dequantize_converts_before_subtracting():
    q = torch.tensor([0, 3, 255], dtype=torch.uint8)
    zero = torch.tensor(128, dtype=torch.int32)
    out = dequantize(q, torch.tensor(0.5), zero)
    assert out.tolist() == [-64.0, -62.5, 63.5]


def test_zeropoint_scale_shapes():
    """scale and zero are shaped like quantize_absmax's scale: (), (out, 1), (1, in)."""
    w = torch.randn(6, 10)
    for dim, shape in ((None, ()), (0, (6, 1)), (-1, (1, 10)), (1, (1, 10))):
        q, scale, zero = quantize_zeropoint(w, 8, dim)
        assert q.shape == w.shape and scale.shape == shape and zero.shape == shape, dim


def test_zeropoint_per_channel_matches_torch_observer():
    """Per-channel scale and zero point equal PyTorch's PerChannelMinMaxObserver (affine, quint8)."""
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    gen = torch.Generator().manual_seed(16)
    w = torch.randn(8, 24, generator=gen) * torch.rand(8, 1, generator=gen) * 4 \
        + torch.randn(8, 1, generator=gen)  # channels of different widths and centres
    for ch in (0, 1):
        obs = PerChannelMinMaxObserver(ch_axis=ch, dtype=torch.quint8,
                                       qscheme=torch.per_channel_affine)
        obs(w)
        ref_scale, ref_zero = obs.calculate_qparams()
        _, scale, zero = quantize_zeropoint(w, 8, dim=ch)
        torch.testing.assert_close(scale.flatten(), ref_scale, rtol=1e-6, atol=0)
        assert torch.equal(zero.flatten().long(), ref_zero.long())


def test_zeropoint_hand_example_with_a_narrow_range():
    """w in [-0.2, 0.3]: scale = 0.5 / 255 and zero = round(0.2 / scale) = 102."""
    w = torch.tensor([-0.2, 0.0, 0.1, 0.3])
    q, scale, zero = quantize_zeropoint(w, 8)
    assert scale.item() == pytest.approx(0.5 / 255, rel=1e-6)
    assert zero.item() == 102
    assert q.tolist() == [0, 102, 153, 255]


def test_fake_quantize_zeropoint_passes_dim_on():
    """fake_quantize(..., dim, scheme="zeropoint") is per channel along dim, not per tensor."""
    w = torch.randn(5, 12, generator=torch.Generator().manual_seed(17)) * torch.arange(1.0, 6.0)[:, None]
    for dim in (0, 1):
        ref = dequantize(*quantize_zeropoint(w, 4, dim))
        assert torch.equal(fake_quantize(w, 4, dim=dim, scheme="zeropoint"), ref)
    assert not torch.equal(fake_quantize(w, 4, dim=0, scheme="zeropoint"),
                           fake_quantize(w, 4, scheme="zeropoint"))


def test_dequantize_returns_the_dtype_of_scale():
    """The result is in scale's float dtype, whatever q and zero hold."""
    q = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert dequantize(q, torch.tensor(0.5)).dtype == torch.float32
    q8 = torch.tensor([1, 2, 3], dtype=torch.uint8)
    out = dequantize(q8, torch.tensor(0.5), torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    assert out.dtype == torch.float32 and out.tolist() == [0.0, 0.5, 1.0]
    assert dequantize(q8, torch.tensor(0.5, dtype=torch.float16)).dtype == torch.float16


def test_dequantize_rejects_bad_arguments():
    """Non-tensors, and scale or zero that neither broadcast nor hold one entry per group."""
    with pytest.raises(TypeError, match="q"):
        dequantize([1, 2], torch.tensor(1.0))
    with pytest.raises(TypeError, match="scale"):
        dequantize(torch.tensor([1, 2]), 1.0)
    q = torch.zeros(3, 4, dtype=torch.int8)
    with pytest.raises(ValueError, match="zero"):
        dequantize(q, torch.ones(3, 1), torch.zeros(5, dtype=torch.int32))
    with pytest.raises(ValueError, match="scale"):
        dequantize(q, torch.ones(2, 2))  # groups divide the last axis, but rows do not match
    with pytest.raises(ValueError, match="scale"):
        dequantize(torch.zeros(2, 3, 4, dtype=torch.int8), torch.ones(2, 3, 0))  # no groups
    # the group-wise path: one entry per group, repeated group_size times
    out = dequantize(torch.ones(2, 4, dtype=torch.int8), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert out.tolist() == [[1.0, 1.0, 2.0, 2.0], [3.0, 3.0, 4.0, 4.0]]


# --------------------------------------------------------------------------- group-wise


@FAST
@given(rows=st.integers(1, 6), groups=st.integers(1, 5), group_size=st.sampled_from([1, 2, 4, 8, 32]),
       bits=st.integers(2, 8), seed=st.integers(0, 1000))
def test_groupwise_is_absmax_per_group(rows, groups, group_size, bits, seed):
    w = torch.randn(rows, groups * group_size, generator=torch.Generator().manual_seed(seed))
    q, scale = quantize_groupwise(w, bits, group_size)
    assert q.shape == w.shape and scale.shape == (rows, groups)
    for g in range(groups):
        cols = slice(g * group_size, (g + 1) * group_size)
        q_ref, s_ref = quantize_absmax(w[:, cols], bits, dim=0)
        assert torch.equal(q[:, cols], q_ref)
        torch.testing.assert_close(scale[:, g], s_ref.squeeze(1), rtol=0, atol=0)
    err = (dequantize(q, scale) - w).abs()
    assert torch.all(err <= scale.repeat_interleave(group_size, 1) / 2 * (1 + 1e-5))


def test_groupwise_whole_row_is_per_channel_and_smaller_groups_help():
    torch.manual_seed(3)
    w = torch.randn(32, 256) * torch.exp(torch.randn(32, 256))  # heavy-tailed
    q, scale = quantize_groupwise(w, 4, 256)
    q_ch, s_ch = quantize_absmax(w, 4, dim=0)
    assert torch.equal(q, q_ch) and torch.equal(scale, s_ch)
    errors = [(fake_quantize(w, 4, group_size=g) - w).pow(2).mean().item() for g in (256, 64, 16)]
    assert errors[0] > errors[1] > errors[2]


def test_groupwise_batched_leading_axes():
    w = torch.randn(2, 3, 16)
    q, scale = quantize_groupwise(w, 4, 8)
    assert scale.shape == (2, 3, 2)
    assert torch.equal(q[1], quantize_groupwise(w[1], 4, 8)[0])


def test_groupwise_on_a_vector_and_bad_group_sizes():
    """A 1-D tensor is one row of groups; a scalar and non-positive or bool group sizes raise."""
    w = torch.randn(16, generator=torch.Generator().manual_seed(18))
    q, scale = quantize_groupwise(w, 4, 8)
    assert q.shape == (16,) and scale.shape == (2,)
    for g in range(2):
        q_ref, s_ref = quantize_absmax(w[8 * g:8 * (g + 1)], 4)
        assert torch.equal(q[8 * g:8 * (g + 1)], q_ref) and scale[g] == s_ref
    with pytest.raises(ValueError, match="scalar"):
        quantize_groupwise(torch.tensor(1.0), 4, 1)
    for bad in (0, -4, True, 2.0):
        with pytest.raises(ValueError, match="group_size"):
            quantize_groupwise(torch.randn(2, 8), 4, bad)


# --------------------------------------------------------------------------- int4 packing


@FAST
@given(shape=st.lists(st.integers(1, 6), min_size=0, max_size=2), half=st.integers(1, 8),
       seed=st.integers(0, 1000))
def test_int4_pack_round_trip(shape, half, seed):
    q = torch.randint(-8, 8, (*shape, 2 * half), generator=torch.Generator().manual_seed(seed),
                      dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (*shape, half)
    assert torch.equal(unpack_int4(packed), q)


def test_int4_pack_layout():
    packed = pack_int4(torch.tensor([1, 2, -1, 7, -8, 0], dtype=torch.int8))
    assert packed.tolist() == [0x21, 0x7F, 0x08]  # low nibble first, two's complement


def test_int4_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="even"):
        pack_int4(torch.zeros(3, dtype=torch.int8))
    with pytest.raises(ValueError, match="-8 .. 7"):
        pack_int4(torch.tensor([0, 8], dtype=torch.int8))
    with pytest.raises(ValueError, match="-8 .. 7"):
        pack_int4(torch.tensor([-9, 0], dtype=torch.int8))  # -9 & 0xF would read back as 7
    with pytest.raises(TypeError):
        pack_int4(torch.zeros(2))


# --------------------------------------------------------------------------- QuantLinear


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, None), (4, 16), (3, 8), (5, None), (6, 32)])
def test_quantlinear_equals_linear_with_dequantized_weight(bits, group_size):
    torch.manual_seed(4)
    linear = nn.Linear(64, 24)
    layer = QuantLinear.from_linear(linear, bits=bits, group_size=group_size)
    w_hat = fake_quantize(linear.weight.detach(), bits, dim=0 if group_size is None else None,
                          group_size=group_size)
    torch.testing.assert_close(layer.dequantized_weight(), w_hat, rtol=0, atol=0)
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(layer(x), nn.functional.linear(x, w_hat, linear.bias), rtol=0, atol=0)
    assert layer.qweight.dtype == (torch.uint8 if bits <= 4 else torch.int8)
    assert layer.qweight.shape == (24, 32 if bits <= 4 else 64)


def test_quantlinear_per_tensor():
    torch.manual_seed(8)
    linear = nn.Linear(32, 12)
    x = torch.randn(4, 32)
    w_hat = fake_quantize(linear.weight.detach(), 8)
    for kernel in ("dequant", "int8"):
        layer = QuantLinear.from_linear(linear, 8, group_size="tensor", kernel=kernel)
        assert layer.scale.shape == (1, 1)
        torch.testing.assert_close(layer.dequantized_weight(), w_hat)
        out = layer(x)
        if kernel == "dequant":  # exactly the float layer with the fake-quantized weight
            torch.testing.assert_close(out, nn.functional.linear(x, w_hat, linear.bias), rtol=0, atol=0)
        else:  # int8 also rounds each input row to 8 bits (absmax per row)
            xq = fake_quantize(x.double(), 8, dim=0)
            expected = xq @ w_hat.double().T + linear.bias.double()
            torch.testing.assert_close(out, expected.float(), rtol=1e-5, atol=1e-5)
        # and both stay close to the unquantized layer (8 bits: ~1 % of the output scale)
        ref = linear(x)
        assert (out - ref).abs().max() < 0.02 * ref.abs().max()
    layer = QuantLinear.from_linear(linear, 4, group_size="tensor")
    fresh = QuantLinear(32, 12, bits=4, group_size="tensor")
    fresh.load_state_dict(layer.state_dict())
    for name, tensor in layer.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="group_size"):
        QuantLinear(32, 12, group_size="row")


def test_quantlinear_int8_kernel_matches_its_float_definition():
    torch.manual_seed(5)
    linear = nn.Linear(96, 40)
    layer = QuantLinear.from_linear(linear, 8, kernel="int8")
    x = torch.randn(3, 7, 96)
    # what the integer kernel computes, written in float64: both operands fake-quantized
    xq = fake_quantize(x.double().reshape(-1, 96), 8, dim=0).reshape(x.shape)
    expected = xq @ layer.dequantized_weight(torch.float64).T + linear.bias.double()
    torch.testing.assert_close(layer(x), expected.float(), rtol=1e-5, atol=1e-5)
    assert (layer(x) - linear(x)).abs().max() < 0.05


@pytest.mark.parametrize("rows", [1, 2, 33])
def test_int8_kernels_agree_with_exact_integer_arithmetic(rows):
    """oneDNN's u8 x s8 kernel (activations shifted by 128) and torch._int_mm both give
    sum(q_x q_w) * scale_x * scale_w, checked against the same sum in float64."""
    torch.manual_seed(rows)
    layer = QuantLinear.from_linear(nn.Linear(64, 48), 8, kernel="int8")
    x = torch.randn(rows, 64)
    xq, x_scale = quantize._quantize_rows(x)
    exact = (xq.double() @ layer.qweight.double().T) * x_scale.double() * layer.scale.double().T
    via_int_mm = quantize._int_mm_linear(x, layer.qweight.T, layer.scale.T)
    torch.testing.assert_close(via_int_mm.double(), exact, rtol=1e-6, atol=1e-6)
    if quantize._has_onednn_int8():
        via_onednn = quantize._onednn_int8_linear(x, layer._pack_for_onednn())
        torch.testing.assert_close(via_onednn.double(), exact, rtol=1e-6, atol=1e-6)
    shifted, same_scale = quantize._quantize_rows(x, offset=128)
    assert shifted.dtype == torch.uint8 and torch.equal(shifted.int() - 128, xq.int())
    assert torch.equal(same_scale, x_scale)


@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 1e3])
def test_quantize_rows_equals_quantize_absmax_per_row(magnitude):
    """Same levels and scales as quantize_absmax per row, for small rows (max |x| < 1) too."""
    x = torch.randn(9, 40, generator=torch.Generator().manual_seed(14)) * magnitude
    xq, scale = quantize._quantize_rows(x)
    ref_q, ref_scale = quantize_absmax(x, 8, dim=0)
    assert torch.equal(xq, ref_q)
    torch.testing.assert_close(scale, ref_scale, rtol=1e-6, atol=0)


def test_quantize_rows_handles_a_zero_row():
    xq, scale = quantize._quantize_rows(torch.tensor([[0.0, 0.0], [1.0, -2.0]]))
    assert torch.equal(xq, torch.tensor([[0, 0], [64, -127]], dtype=torch.int8))
    assert (scale > 0).all()


def test_int8_kernel_cache_follows_the_weight_and_survives_copies():
    torch.manual_seed(9)
    layer = QuantLinear.from_linear(nn.Linear(32, 16), 8, kernel="int8")
    x = torch.randn(4, 32)
    before, before_row = layer(x), layer(x[:1])  # builds the packed copy and the views
    other = QuantLinear.from_linear(nn.Linear(32, 16), 8)
    layer.load_state_dict(other.state_dict())  # new weights, copied in place
    expected = x @ other.dequantized_weight().T + other.bias  # up to activation rounding
    assert (layer(x) - expected).abs().max() < 0.05
    assert (layer(x[:1]) - expected[:1]).abs().max() < 0.05
    assert not torch.allclose(layer(x), before) and not torch.allclose(layer(x[:1]), before_row)
    third = QuantLinear.from_linear(nn.Linear(32, 16), 8, kernel="int8")
    layer.qweight, layer.scale, layer.bias = third.qweight, third.scale, third.bias  # replaced
    torch.testing.assert_close(layer(x), third(x))
    torch.testing.assert_close(layer(x[:1]), third(x[:1]))
    clone = copy.deepcopy(layer)  # an oneDNN tensor cannot be copied: the cache is dropped
    torch.testing.assert_close(clone(x), layer(x))
    torch.testing.assert_close(pickle.loads(pickle.dumps(layer))(x), layer(x))


def test_int8_kernel_works_on_a_model_quantized_in_inference_mode():
    torch.manual_seed(13)
    linear = nn.Linear(32, 16)
    with torch.inference_mode():  # its buffers become inference tensors: no version counter
        layer = QuantLinear.from_linear(linear, 8, kernel="int8")
        x = torch.randn(5, 32)
        torch.testing.assert_close(layer(x), QuantLinear.from_linear(linear, 8, kernel="int8")(x))
        assert (layer(x) - linear(x)).abs().max() < 0.05


def test_quantlinear_int8_close_to_torch_dynamic_quantization():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 64))
    x = torch.randn(16, 128)
    ours = quantize_model(model, 8, kernel="int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    ref = model(x)
    err_ours = (ours(x) - ref).abs().max().item()
    err_theirs = (theirs(x) - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err_ours < 0.03 * scale and err_theirs < 0.03 * scale
    # per-row activation scales (ours) are at least as accurate as fbgemm's per-tensor ones
    assert err_ours < 1.5 * err_theirs


def test_quantlinear_state_dict_round_trip_and_errors():
    linear = nn.Linear(16, 8, bias=False)
    layer = QuantLinear.from_linear(linear, 4, group_size=8)
    fresh = QuantLinear(16, 8, bias=False, bits=4, group_size=8)
    fresh.load_state_dict(layer.state_dict())
    x = torch.randn(3, 16)
    assert torch.equal(fresh(x), layer(x))
    with pytest.raises(ValueError, match="expected"):
        layer(torch.randn(3, 15))
    with pytest.raises(ValueError, match="int8"):
        QuantLinear.from_linear(linear, 4, kernel="int8")
    with pytest.raises(ValueError, match="multiple"):
        QuantLinear.from_linear(linear, 4, group_size=5)


@pytest.mark.parametrize("bits,group_size", [(8, None), (8, "tensor"), (6, None), (5, 8), (4, None),
                                             (2, 16)])
def test_fresh_quantlinear_has_the_buffers_from_linear_fills(bits, group_size):
    """A layer built empty has qweight and scale of the documented shapes and dtypes, so a
    state dict saved from from_linear loads into it and gives the same outputs."""
    torch.manual_seed(19)
    linear = nn.Linear(32, 12)
    layer = QuantLinear.from_linear(linear, bits, group_size)
    fresh = QuantLinear(32, 12, bits=bits, group_size=group_size)
    packed = bits <= 4
    assert fresh.qweight.dtype == layer.qweight.dtype == (torch.uint8 if packed else torch.int8)
    assert fresh.qweight.shape == layer.qweight.shape == (12, 16 if packed else 32)
    if group_size is None:
        scale_shape = (12, 1)  # one per output channel
    elif group_size == "tensor":
        scale_shape = (1, 1)
    else:
        scale_shape = (12, 32 // group_size)
    assert fresh.scale.shape == layer.scale.shape == scale_shape
    fresh.load_state_dict(layer.state_dict())
    x = torch.randn(3, 32)
    assert torch.equal(fresh(x), layer(x))


def test_quantlinear_constructor_checks_group_size_and_packing():
    """group_size=1 is valid (a scale per weight); 0 is not; bits <= 4 need an even in_features."""
    assert QuantLinear(8, 4, group_size=1).scale.shape == (4, 8)
    with pytest.raises(ValueError, match="group_size"):
        QuantLinear(8, 4, group_size=0)
    with pytest.raises(ValueError):
        QuantLinear(7, 4, bits=4)  # int4 packs pairs of columns
    layer = QuantLinear(7, 4, bits=5)  # 5 bits are stored one per byte
    assert layer.qweight.shape == (4, 7) and layer.qweight.dtype == torch.int8


def test_quantlinear_defaults_and_float_dtype():
    """from_linear defaults to 8 bits per channel; bias and scale are stored in float_dtype."""
    torch.manual_seed(20)
    linear = nn.Linear(16, 6)
    layer = QuantLinear.from_linear(linear)
    assert layer.bits == 8 and layer.qweight.dtype == torch.int8 and layer.scale.shape == (6, 1)
    torch.testing.assert_close(layer.dequantized_weight(), fake_quantize(linear.weight.detach(), 8, dim=0),
                               rtol=0, atol=0)
    fresh = QuantLinear(16, 6, float_dtype=torch.float16)
    assert fresh.bias.dtype == torch.float16 and fresh.scale.dtype == torch.float16
    assert QuantLinear(16, 6).bits == 8


def test_from_linear_copies_the_bias():
    """The quantized layer is a snapshot: later in-place updates of the float layer don't leak in."""
    linear = nn.Linear(8, 4)
    layer = QuantLinear.from_linear(linear, 8)
    before = layer.bias.clone()
    with torch.no_grad():
        linear.bias.add_(1.0)
    assert torch.equal(layer.bias, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_int8_kernel_returns_the_input_dtype(dtype):
    """kernel="int8" computes in float32 but returns the input's dtype, for one row and many."""
    torch.manual_seed(21)
    linear = nn.Linear(32, 16)
    layer = QuantLinear.from_linear(linear, 8, kernel="int8")
    for shape in ((1, 32), (4, 32), (2, 3, 32)):
        x = torch.randn(shape)
        out = layer(x.to(dtype))
        assert out.dtype == dtype and out.shape == (*shape[:-1], 16)
        torch.testing.assert_close(out.float(), layer(x.to(dtype).float()), rtol=1e-2, atol=1e-2)


def test_int8_kernel_dispatch(monkeypatch):
    """oneDNN's kernel where this PyTorch has it and there are 2+ rows on a CPU; torch._int_mm
    for a single row and where oneDNN is missing."""
    calls = []
    onednn, int_mm = quantize._onednn_int8_linear, quantize._int_mm_linear
    monkeypatch.setattr(quantize, "_onednn_int8_linear",
                        lambda *a, **k: calls.append("onednn") or onednn(*a, **k))
    monkeypatch.setattr(quantize, "_int_mm_linear",
                        lambda *a, **k: calls.append("int_mm") or int_mm(*a, **k))
    layer = QuantLinear.from_linear(nn.Linear(32, 16), 8, kernel="int8")
    for shape in ((1, 32), (1, 1, 32), (2, 32), (2, 1, 32), (5, 32)):
        calls.clear()
        layer(torch.randn(shape))
        many = shape[0] > 1
        assert calls == ["onednn" if many and quantize._has_onednn_int8() else "int_mm"], shape
    monkeypatch.setattr(quantize, "_has_onednn_int8", lambda: False)
    calls.clear()
    layer(torch.randn(5, 32))
    assert calls == ["int_mm"]


def test_int8_kernel_views_follow_a_replaced_qweight_or_scale():
    """The cached transposes used by torch._int_mm are rebuilt when either buffer is replaced
    on its own, and a copied or unpickled layer starts with fresh ones."""
    torch.manual_seed(22)
    layer = QuantLinear.from_linear(nn.Linear(32, 16), 8, kernel="int8")
    other = QuantLinear.from_linear(nn.Linear(32, 16), 8)
    x = torch.randn(1, 32)  # one row: the torch._int_mm path

    def expected():
        xq = fake_quantize(x.double(), 8, dim=0)
        return (xq @ layer.dequantized_weight(torch.float64).T + layer.bias.double()).float()

    layer(x)  # builds the views
    layer.qweight = other.qweight  # only the integers change
    torch.testing.assert_close(layer(x), expected(), rtol=1e-5, atol=1e-5)
    layer.scale = other.scale * 2  # only the scales change
    torch.testing.assert_close(layer(x), expected(), rtol=1e-5, atol=1e-5)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(clone(x), layer(x), rtol=0, atol=0)


def test_has_int8_kernel_reads_the_cpu_flags(monkeypatch):
    """True with a CUDA GPU; otherwise whether /proc/cpuinfo lists VNNI or AMX (False if unreadable)."""

    class FakePath:
        text: str | None = None

        def __init__(self, path):
            assert str(path) == "/proc/cpuinfo"

        def read_text(self):
            if FakePath.text is None:
                raise OSError("no such file")
            return FakePath.text

    monkeypatch.setattr(quantize, "Path", FakePath)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert has_int8_kernel() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert has_int8_kernel() is False  # unreadable
    FakePath.text = "flags\t\t: fpu sse sse2 avx avx2 fma\n"
    assert has_int8_kernel() is False
    for flag in ("avx512_vnni", "avx_vnni", "amx_int8"):
        FakePath.text = f"flags\t\t: fpu sse avx2 {flag} fma\n"
        assert has_int8_kernel() is True, flag


# --------------------------------------------------------------------------- whole models


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.body = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.lm_head = nn.Linear(32, 50, bias=False)
        self.lm_head.weight = self.emb.weight

    def forward(self, ids):
        return self.lm_head(self.body(self.emb(ids)))


def test_quantize_model_swaps_linears_and_keeps_original():
    torch.manual_seed(7)
    model = Tied()
    q = quantize_model(model, 8, skip=["lm_head"])
    assert isinstance(model.body[0], nn.Linear)  # the original is untouched
    assert isinstance(q.body[0], QuantLinear) and isinstance(q.body[2], QuantLinear)
    assert isinstance(q.lm_head, nn.Linear)
    ids = torch.randint(0, 50, (2, 6))
    assert (q(ids) - model(ids)).abs().max() < 0.05
    q_all = quantize_model(model, 4, group_size=16, skip=lambda name: False)
    assert isinstance(q_all.lm_head, QuantLinear)


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 16), (5, None), (8, "tensor")])
def test_quant_embedding_looks_up_dequantized_rows(bits, group_size):
    torch.manual_seed(10)
    emb = nn.Embedding(50, 32)
    table = QuantEmbedding.from_embedding(emb, bits, group_size)
    w_hat = fake_quantize(emb.weight.detach(), bits, dim=0 if group_size is None else None,
                          group_size=group_size if isinstance(group_size, int) else None)
    ids = torch.randint(0, 50, (3, 7))
    torch.testing.assert_close(table(ids), nn.functional.embedding(ids, w_hat), rtol=0, atol=0)
    torch.testing.assert_close(table.dequantized_weight(), w_hat, rtol=0, atol=0)
    with pytest.raises(IndexError, match="idx"):
        table(torch.tensor([0, 50]))
    with pytest.raises(IndexError, match="idx"):
        table(torch.tensor([-1]))  # would silently wrap around with plain indexing
    with pytest.raises(TypeError, match="idx"):
        table(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="max_norm"):
        QuantEmbedding.from_embedding(nn.Embedding(5, 4, max_norm=1.0))


def test_quantize_model_keeps_a_tied_head_tied():
    torch.manual_seed(11)
    model = Tied()
    q = quantize_model(model, 8)
    assert isinstance(q.emb, QuantEmbedding) and isinstance(q.lm_head, QuantLinear)
    assert q.lm_head.qweight is q.emb.qweight and q.lm_head.scale is q.emb.scale
    ints = 50 * 32 + 32 * 64 + 64 * 32  # one byte each, the tied matrix once
    scales_and_biases = 4 * (50 + 64 + 32) + 4 * (64 + 32)
    assert model_size_bytes(q) == ints + scales_and_biases
    ids = torch.randint(0, 50, (2, 6))
    assert (q(ids) - model(ids)).abs().max() < 0.05
    untied = quantize_model(model, 8, skip=["emb"])  # the head gets its own integer copy
    assert isinstance(untied.emb, nn.Embedding) and isinstance(untied.lm_head, QuantLinear)
    assert isinstance(quantize_model(model, 8, embeddings=False).emb, nn.Embedding)


def test_quantize_model_float_dtype_stores_the_float_parts_small():
    from lmlab.transformer import GPT, GPTConfig

    torch.manual_seed(12)
    for fused in (False, True):
        model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32,
                              fused=fused)).eval()
        ids = torch.randint(0, 40, (2, 16))
        for kernel in ("dequant", "int8"):
            q = quantize_model(model, 8, kernel=kernel, float_dtype=torch.float16)
            floats = [t for t in list(q.parameters()) + list(q.buffers()) if t.is_floating_point()]
            assert floats and all(t.dtype == torch.float16 for t in floats)
            logits, _ = q(ids)
            assert logits.dtype == torch.float32
            assert (logits - model(ids)[0]).abs().max() < 0.05
        fp32_parts = quantize_model(model, 8)
        assert model_size_bytes(q) < model_size_bytes(fp32_parts) < model_size_bytes(model) / 3


def test_model_size_bytes_counts_shared_weights_once_and_shrinks():
    model = Tied()
    fp32 = 4 * (50 * 32 + 32 * 64 + 64 + 64 * 32 + 32)  # the tied head adds nothing
    assert model_size_bytes(model) == fp32
    mlp = nn.Sequential(nn.Linear(256, 512, bias=False), nn.Linear(512, 256, bias=False))
    full = model_size_bytes(mlp)
    int8 = model_size_bytes(quantize_model(mlp, 8))
    int4 = model_size_bytes(quantize_model(mlp, 4, group_size=128))
    assert 3.9 < full / int8 < 4.0  # int8 weights + one fp32 scale per row
    assert 7.0 < full / int4 < 8.0  # int4 weights + one fp32 scale per 128 weights


def test_quant_embedding_defaults_dtypes_and_two_rows():
    """QuantEmbedding defaults to 8 bits; vectors come out in the table's dtype; a two-row
    table keeps one scale per row."""
    table = QuantEmbedding(10, 4)
    assert table.bits == 8 and table.qweight.shape == (10, 4) and table.qweight.dtype == torch.int8
    torch.manual_seed(23)
    emb = nn.Embedding(10, 8)
    table = QuantEmbedding.from_embedding(emb)
    assert table.bits == 8 and table.scale.shape == (10, 1)
    ids = torch.tensor([[0, 3], [9, 3]])
    w_hat = fake_quantize(emb.weight.detach(), 8, dim=0)
    torch.testing.assert_close(table(ids), nn.functional.embedding(ids, w_hat), rtol=0, atol=0)
    for dtype in (torch.float16, torch.bfloat16):
        out = QuantEmbedding.from_embedding(copy.deepcopy(emb).to(dtype))(ids)
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), emb(ids).detach(), rtol=0, atol=0.02)
    two = nn.Embedding(2, 8)
    with torch.no_grad():
        two.weight[1] *= 100  # very different rows: a shared scale would be visible
    table = QuantEmbedding.from_embedding(two, 8)
    assert table.scale.shape == (2, 1)
    w_hat = fake_quantize(two.weight.detach(), 8, dim=0)
    ids = torch.tensor([0, 1, 0])
    torch.testing.assert_close(table(ids), nn.functional.embedding(ids, w_hat), rtol=0, atol=0)


def test_quantize_model_skip_predicate_string_and_inplace():
    """skip takes a predicate on the module name or a single pattern; inplace swaps in place."""
    torch.manual_seed(24)
    model = Tied()
    q = quantize_model(model, 8, skip=lambda name: name.startswith("body"))
    assert isinstance(q.body[0], nn.Linear) and not isinstance(q.body[0], QuantLinear)
    assert isinstance(q.lm_head, QuantLinear) and isinstance(q.emb, QuantEmbedding)
    q = quantize_model(model, 8, skip="body.2")
    assert isinstance(q.body[0], QuantLinear) and not isinstance(q.body[2], QuantLinear)
    same = quantize_model(model, 8, inplace=True)
    assert same is model and isinstance(model.body[0], QuantLinear)


def test_quantize_model_passes_group_size_on():
    """group_size reaches every QuantLinear and QuantEmbedding: one scale per group of inputs."""
    q = quantize_model(Tied(), 4, group_size=16, skip=["lm_head"])
    assert q.emb.group_size == 16 and q.emb.scale.shape == (50, 2)
    assert q.body[0].scale.shape == (64, 2) and q.body[2].scale.shape == (32, 4)


def test_quantize_model_float_dtype_casts_other_buffers():
    """float_dtype also stores the other modules' float buffers small, keeps integer buffers and
    leaves a buffer that is None alone."""
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.BatchNorm1d(8, track_running_stats=False))
    q = quantize_model(model, 8, float_dtype=torch.float16)
    bn, bare = q[1], q[2]
    assert bn.running_mean.dtype == bn.running_var.dtype == torch.float16
    assert bn.weight.dtype == bare.weight.dtype == torch.float16
    assert bn.num_batches_tracked.dtype == torch.int64
    assert bare.running_mean is None and "running_mean" in bare._buffers
    assert q[0].scale.dtype == q[0].bias.dtype == torch.float16
    assert model[1].running_mean.dtype == torch.float32  # the original is untouched


def test_model_size_bytes_counts_a_storage_shared_by_two_parameters_once():
    """Two Parameters over the same storage count once, and the tensors after them still count."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    model[1].weight = nn.Parameter(model[0].weight.data)  # a different Parameter, the same storage
    assert model[1].weight is not model[0].weight
    assert model_size_bytes(model) == 4 * (16 + 8)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("bits", [1, 9, 4.0, True])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits"):
        quantize_absmax(torch.randn(4), bits)


def test_bad_inputs_name_the_argument():
    with pytest.raises(TypeError, match="dtype"):
        quantize_absmax(torch.arange(4), 8)
    with pytest.raises(ValueError, match="dim=2"):
        quantize_zeropoint(torch.randn(3, 4), 8, dim=2)
    with pytest.raises(ValueError, match="group_size=5"):
        quantize_groupwise(torch.randn(3, 12), 4, 5)
    with pytest.raises(ValueError, match="scale has shape"):
        dequantize(torch.zeros(3, 4, dtype=torch.int8), torch.ones(5))
    with pytest.raises(ValueError, match="scheme"):
        fake_quantize(torch.randn(4), 8, scheme="log")


def test_has_int8_kernel_is_a_bool():
    assert isinstance(has_int8_kernel(), bool)
