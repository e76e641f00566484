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
    with pytest.raises(TypeError):
        pack_int4(torch.zeros(2))


# --------------------------------------------------------------------------- QuantLinear


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, None), (4, 16), (3, 8), (6, 32)])
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


def test_quantize_rows_equals_quantize_absmax_per_row():
    x = torch.randn(9, 40, generator=torch.Generator().manual_seed(14))
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


@pytest.mark.parametrize("bits,group_size", [(8, None), (4, 16), (8, "tensor")])
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
