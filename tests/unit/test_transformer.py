"""lmlab.transformer against torch built-ins, hand derivations and its own invariants."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lmlab.generate import left_pad
from lmlab.transformer import (
    GPT,
    GPT2_CONFIGS,
    Block,
    FeedForward,
    GPTConfig,
    LayerNorm,
    count_parameters,
    feed_forward,
    flops_per_token,
    layer_norm,
    param_breakdown,
    param_count,
    sinusoidal_positions,
)

FAST = settings(max_examples=25, deadline=None)


def tiny(**overrides) -> GPTConfig:
    fields = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=8)
    fields.update(overrides)
    return GPTConfig(**fields)



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread beats two that wait for each other (10× on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# --------------------------------------------------------------------------- LayerNorm


@FAST
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    C=st.integers(1, 33),
    scale=st.floats(1e-2, 1e2),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_matches_torch(shape, C, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, C, generator=g) * scale
    ours, peer = LayerNorm(C), nn.LayerNorm(C)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.copy_(torch.randn(C, generator=g))
        peer.weight.copy_(ours.weight)
        peer.bias.copy_(ours.bias)
    # float32: two rows of C=2 close values make x - mean a cancellation, where the two
    # summation orders differ by tens of ulps (1.9e-6 found by hypothesis); the float64
    # check below is the one that pins the formula
    torch.testing.assert_close(ours(x), peer(x), rtol=1e-5, atol=1e-5)
    x64 = x.double() + 3.0  # an offset much larger than the spread: cancellation in float32
    torch.testing.assert_close(ours.double()(x64), peer.double()(x64), rtol=0, atol=1e-12)


def test_layer_norm_without_bias_and_functional():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 10, dtype=torch.float64)
    w = torch.randn(10, dtype=torch.float64)
    ln = LayerNorm(10, bias=False).double()
    assert ln.bias is None and count_parameters(ln) == 10
    with torch.no_grad():
        ln.weight.copy_(w)
    torch.testing.assert_close(ln(x), F.layer_norm(x, (10,), w, None), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        layer_norm(x, w, None, eps=1e-3), F.layer_norm(x, (10,), w, None, eps=1e-3), rtol=0, atol=1e-12
    )


def test_layer_norm_output_has_zero_mean_unit_biased_variance():
    x = torch.randn(5, 64, dtype=torch.float64) * 7 + 2
    y = layer_norm(x, None, None, eps=0.0)
    torch.testing.assert_close(y.mean(-1), torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)


def test_layer_norm_rejects_wrong_width():
    with pytest.raises(ValueError, match="last dimension"):
        LayerNorm(8)(torch.randn(2, 7))


# --------------------------------------------------------------------------- feed-forward


@FAST
@given(C=st.integers(1, 16), T=st.integers(1, 6), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_feed_forward_matches_torch_sequential(C, T, bias, seed):
    torch.manual_seed(seed)
    ff = FeedForward(C, bias=bias).double()
    peer = nn.Sequential(ff.c_fc, nn.GELU(), ff.c_proj)
    x = torch.randn(2, T, C, dtype=torch.float64)
    torch.testing.assert_close(ff(x), peer(x), rtol=0, atol=1e-12)


def test_feed_forward_functional_matches_module_and_hand_formula():
    torch.manual_seed(1)
    ff = FeedForward(6).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    W1, b1 = ff.c_fc.weight.T, ff.c_fc.bias
    W2, b2 = ff.c_proj.weight.T, ff.c_proj.bias
    h = x @ W1 + b1
    by_hand = (0.5 * h * (1 + torch.erf(h / math.sqrt(2)))) @ W2 + b2  # GELU(h) = h·Φ(h)
    torch.testing.assert_close(feed_forward(x, W1, b1, W2, b2), ff(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ff(x), by_hand, rtol=0, atol=1e-12)
    assert ff.c_fc.out_features == 24  # 4·C hidden units


# --------------------------------------------------------------------------- positions


def test_sinusoidal_positions_by_hand():
    pe = sinusoidal_positions(50, 6).double()
    assert pe.shape == (50, 6)
    for p in (0, 1, 7, 49):
        for i in range(3):
            angle = p / 10000 ** (2 * i / 6)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_positions_odd_width_and_relative_shift():
    pe = sinusoidal_positions(20, 7)
    assert pe.shape == (20, 7)
    assert torch.all(pe[0, 0::2] == 0) and torch.all(pe[0, 1::2] == 1)
    # the dot product of two positions depends only on their distance
    d = sinusoidal_positions(40, 16).double()
    torch.testing.assert_close(d[3] @ d[8], d[20] @ d[25], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- block


def _torch_encoder_layer(block: Block, C: int, H: int, norm_first: bool) -> nn.TransformerEncoderLayer:
    peer = nn.TransformerEncoderLayer(
        C, H, dim_feedforward=4 * C, dropout=0.0, activation="gelu", batch_first=True,
        norm_first=norm_first,
    ).double()
    with torch.no_grad():
        peer.self_attn.in_proj_weight.copy_(block.attn.c_attn.weight)
        peer.self_attn.in_proj_bias.copy_(block.attn.c_attn.bias)
        peer.self_attn.out_proj.weight.copy_(block.attn.c_proj.weight)
        peer.self_attn.out_proj.bias.copy_(block.attn.c_proj.bias)
        peer.linear1.weight.copy_(block.mlp.c_fc.weight)
        peer.linear1.bias.copy_(block.mlp.c_fc.bias)
        peer.linear2.weight.copy_(block.mlp.c_proj.weight)
        peer.linear2.bias.copy_(block.mlp.c_proj.bias)
        for ours, theirs in ((block.ln_1, peer.norm1), (block.ln_2, peer.norm2)):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    return peer.eval()


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("C,H,T", [(8, 2, 5), (12, 3, 9), (16, 1, 1)])
def test_block_matches_torch_transformer_encoder_layer(norm_first, C, H, T):
    torch.manual_seed(C * T)
    block = Block(tiny(n_embd=C, n_head=H, norm_first=norm_first)).double()
    for p in block.parameters():  # move away from the ones/zeros init of the norms
        nn.init.normal_(p, std=0.3)
    peer = _torch_encoder_layer(block, C, H, norm_first)
    x = torch.randn(3, T, C, dtype=torch.float64)
    causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
    torch.testing.assert_close(block(x), peer(x, src_mask=causal, is_causal=True), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- GPT


@FAST
@given(
    vocab=st.integers(1, 40), block=st.integers(1, 20), layers=st.integers(1, 3),
    heads=st.integers(1, 3), head_size=st.integers(1, 4), bias=st.booleans(), tie=st.booleans(),
    positions=st.sampled_from(["learned", "sinusoidal"]),
)
def test_param_count_equals_built_model(vocab, block, layers, heads, head_size, bias, tie, positions):
    config = GPTConfig(vocab_size=vocab, block_size=block, n_layer=layers, n_head=heads,
                       n_embd=heads * head_size, bias=bias, tie_weights=tie, positions=positions)
    with torch.device("meta"):
        model = GPT(config)
    assert param_count(config) == count_parameters(model)
    assert param_count(config) == sum(param_breakdown(config).values())


def test_gpt2_sizes_on_the_meta_device():
    # GPT-2 small/medium/large/XL: 124M, 355M, 774M, 1.56B with tied embeddings
    expected = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168,
                "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    for name, config in GPT2_CONFIGS.items():
        with torch.device("meta"):
            model = GPT(config)
        assert count_parameters(model) == param_count(config) == expected[name], name


def test_weight_tying_shares_one_matrix():
    model = GPT(tiny())
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = GPT(tiny(tie_weights=False))
    assert count_parameters(untied) - count_parameters(model) == 23 * 8


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_forward_shapes_loss_and_ignore_index(positions):
    torch.manual_seed(0)
    model = GPT(tiny(positions=positions))
    idx = torch.randint(0, 23, (3, 7))
    targets = torch.randint(0, 23, (3, 7))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 7, 23)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 23), targets.reshape(-1)))
    assert model(idx)[1] is None
    targets[:, :3] = -1
    _, masked = model(idx, targets)
    torch.testing.assert_close(masked, F.cross_entropy(logits[:, 3:].reshape(-1, 23), targets[:, 3:].reshape(-1)))
    masked.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_initial_loss_is_about_log_vocab():
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=100))
    _, loss = model(torch.randint(0, 100, (4, 16)), torch.randint(0, 100, (4, 16)))
    assert abs(loss.item() - math.log(100)) < 0.1


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 23, (1, 10))
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 23
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_positions_break_permutation_equivariance():
    torch.manual_seed(0)
    model = GPT(tiny(n_layer=1)).eval()
    idx = torch.tensor([[3, 5, 7, 11]])
    logits, _ = model(idx)
    swapped, _ = model(idx[:, [1, 0, 2, 3]])
    # the last token sees the same set of tokens, but at other positions
    assert not torch.allclose(logits[0, -1], swapped[0, -1], atol=1e-6)


def test_flops_per_token_matches_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    for config, T in [(tiny(), 16), (tiny(n_embd=32, n_head=4, vocab_size=50), 9),
                      (GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128), 64)]:
        model = GPT(config)
        idx = torch.randint(0, config.vocab_size, (2, T))
        with FlopCounterMode(display=False) as counter:
            model(idx)
        measured = counter.get_total_flops() / (2 * T)
        assert abs(measured / flops_per_token(config, T) - 1) < 0.05, (measured, flops_per_token(config, T))
    assert flops_per_token(tiny(), training=True) == 3 * flops_per_token(tiny())


def test_flops_per_token_is_about_twice_the_parameters_for_gpt2():
    config = GPT2_CONFIGS["gpt2-xl"]
    non_embedding = param_count(config) - param_breakdown(config)["position embedding"]
    # 2 FLOPs per weight, plus attention over 1024 positions (about 10% more for GPT-2 XL)
    assert 2 * non_embedding < flops_per_token(config) < 2.25 * non_embedding
    assert 0.99 * 2 * non_embedding < flops_per_token(config, seq_len=1) < 2 * non_embedding


# --------------------------------------------------------------------------- KV cache


class ListCache:
    """The smallest KV cache with the interface GPT.forward expects (see lmlab.generate)."""

    def __init__(self, n_layer: int) -> None:
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.length = 0

    def update(self, layer_index, k, v):
        if self.k[layer_index] is not None:
            k = torch.cat([self.k[layer_index], k], dim=2)
            v = torch.cat([self.v[layer_index], v], dim=2)
        self.k[layer_index], self.v[layer_index] = k, v
        if layer_index == len(self.k) - 1:
            self.length = k.shape[2]
        return k, v


@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 1, 3], [9]])
@pytest.mark.parametrize("positions,fused", [("learned", False), ("sinusoidal", False), ("learned", True)])
def test_kv_cache_gives_the_same_logits(chunks, positions, fused):
    torch.manual_seed(0)
    model = GPT(tiny(positions=positions, fused=fused)).eval()
    idx = torch.randint(0, 23, (2, 9))
    full, _ = model(idx)
    cache, start, pieces = ListCache(2), 0, []
    for n in chunks:
        logits, _ = model(idx[:, start:start + n], kv_cache=cache)
        pieces.append(logits)
        start += n
        assert cache.length == start
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_left_padding_matches_unpadded_runs(fused):
    torch.manual_seed(0)
    model = GPT(tiny(fused=fused)).eval()
    seqs = [torch.randint(0, 23, (n,)) for n in (6, 3, 1)]
    T = 6
    idx = torch.zeros(3, T, dtype=torch.long)
    mask = torch.zeros(3, T, dtype=torch.bool)
    for b, s in enumerate(seqs):
        idx[b, T - len(s):] = s
        idx[b, : T - len(s)] = 17  # any token: padding must not matter
        mask[b, T - len(s):] = True
    batched, _ = model(idx, attention_mask=mask)
    assert torch.isfinite(batched).all()
    for b, s in enumerate(seqs):
        alone, _ = model(s[None])
        torch.testing.assert_close(batched[b, T - len(s):], alone[0], rtol=0, atol=1e-5)

    # then decode two tokens with the cache: still as if each sequence ran alone
    cache = ListCache(2)
    model(idx, kv_cache=cache, attention_mask=mask)
    nxt = torch.randint(0, 23, (3, 2))
    for step in range(2):
        mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], dim=1)
        logits, _ = model(nxt[:, step:step + 1], kv_cache=cache, attention_mask=mask)
        for b, s in enumerate(seqs):
            alone, _ = model(torch.cat([s, nxt[b, : step + 1]])[None])
            torch.testing.assert_close(logits[b, -1], alone[0, -1], rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- errors


def test_clear_errors():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets has shape"):
        model(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="not divisible by n_head"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="positions"):
        GPTConfig(positions="rotary")
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)


# --------------------------------------------------------------------------- functional forms


def test_block_forward_equals_the_block_module():
    from lmlab.transformer import block_forward, gpt_param_count

    torch.manual_seed(3)
    block = Block(tiny(n_embd=12, n_head=3)).double()
    for p in block.parameters():
        nn.init.normal_(p, std=0.3)
    params = {
        "ln1_weight": block.ln_1.weight, "ln1_bias": block.ln_1.bias,
        "W_qkv": block.attn.c_attn.weight.T, "b_qkv": block.attn.c_attn.bias,
        "W_o": block.attn.c_proj.weight.T, "b_o": block.attn.c_proj.bias,
        "ln2_weight": block.ln_2.weight, "ln2_bias": block.ln_2.bias,
        "W1": block.mlp.c_fc.weight.T, "b1": block.mlp.c_fc.bias,
        "W2": block.mlp.c_proj.weight.T, "b2": block.mlp.c_proj.bias,
    }
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    torch.testing.assert_close(block_forward(x, params, 3), block(x), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="missing"):
        block_forward(x, {"W1": params["W1"]}, 3)
    assert gpt_param_count(50257, 1024, 12, 768) == 124_439_808
    assert gpt_param_count(50257, 1024, 12, 768, tied=False) == 124_439_808 + 50257 * 768


@pytest.mark.parametrize("norm_first", [True, False])
def test_fused_kernels_compute_the_same_model(norm_first):
    torch.manual_seed(0)
    readable = GPT(tiny(norm_first=norm_first)).double()
    fused = GPT(tiny(norm_first=norm_first, fused=True)).double()
    fused.load_state_dict(readable.state_dict())
    idx, targets = torch.randint(0, 23, (3, 16)), torch.randint(0, 23, (3, 16))
    (a, la), (b, lb) = readable(idx, targets), fused(idx, targets)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    la.backward()
    lb.backward()
    for (name, p), q in zip(readable.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-10, msg=name)


# --------------------------------------------------------------------------- explorer


def test_model_calculator_explorer_frames_differ():
    from lmlab.viz import model_calculator_figure
    from lmlab.viz.core import figure_to_png
    from lmlab.widgets import model_calculator_explorer

    box = model_calculator_explorer(layers=(1, 2), width=(8,), heads=(2,), vocabulary=(10,), context=(16,))
    assert box.frames == 2 and "lmlab-explorer" in box._dom_classes
    a = figure_to_png(model_calculator_figure(1, 8, 2, 10, 16))
    b = figure_to_png(model_calculator_figure(1, 8, 4, 10, 16))  # heads change the scores' memory
    assert a != b
    with pytest.raises(ValueError, match="not divisible by heads"):
        model_calculator_explorer(width=(10,), heads=(3,))


# --------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=1.5), "dropout"),
        (dict(n_kv_head=0), "n_kv_head"),
        (dict(ffn_hidden=0), "ffn_hidden"),
        (dict(n_layer=True), "n_layer"),
        (dict(n_embd=8.0), "n_embd"),
        (dict(mlp="swiglu", n_expert=-1, n_expert_per_token=1), r"GPTConfig\.n_expert\b"),
        (dict(mlp="swiglu", n_expert=2.5, n_expert_per_token=1), r"GPTConfig\.n_expert\b"),
        (dict(mlp="swiglu", n_expert=True, n_expert_per_token=1), r"GPTConfig\.n_expert\b"),
    ],
    ids=["dropout_1", "dropout_1_5", "n_kv_head_0", "ffn_hidden_0", "n_layer_bool", "n_embd_float",
         "n_expert_negative", "n_expert_float", "n_expert_bool"],
)
def test_config_rejects_out_of_range_fields_and_names_them(overrides, match):
    """Each bad field raises ValueError naming that field (dropout must be < 1, ints must be ints)."""
    with pytest.raises(ValueError, match=match):
        tiny(**overrides)


def test_config_accepts_the_edges_of_the_valid_ranges():
    """dropout just below 1 and one expert per token are valid."""
    assert tiny(dropout=0.99).dropout == 0.99
    config = tiny(mlp="swiglu", n_expert=4, n_expert_per_token=1)
    assert config.n_expert_per_token == 1
    GPT(config)


# --------------------------------------------------------------------------- norms


@pytest.mark.parametrize("fused", [False, True], ids=["readable", "fused"])
def test_layer_norm_module_passes_eps_on(fused):
    """LayerNorm(eps=...) uses that eps in both code paths (F.layer_norm as reference)."""
    torch.manual_seed(0)
    ln = LayerNorm(6, eps=0.1, fused=fused).double()
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(4, 6, dtype=torch.float64) * 0.3
    torch.testing.assert_close(ln(x), F.layer_norm(x, (6,), ln.weight, ln.bias, eps=0.1), rtol=0, atol=1e-12)


def test_fused_layer_norm_without_bias_and_with_weights_in_another_dtype():
    """Fused LayerNorm works without a bias and casts float32 weights to the input's dtype."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64)
    ln = LayerNorm(5, bias=False, fused=True)
    with torch.no_grad():
        ln.weight.normal_()
    torch.testing.assert_close(ln(x), F.layer_norm(x, (5,), ln.weight.double(), None), rtol=0, atol=1e-12)
    with_bias = LayerNorm(5, fused=True)  # float32 parameters, float64 input
    with torch.no_grad():
        with_bias.weight.normal_()
        with_bias.bias.normal_()
    out = with_bias(x)
    assert out.dtype == torch.float64
    reference = F.layer_norm(x, (5,), with_bias.weight.double(), with_bias.bias.double())
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-12)


def test_rms_norm_default_eps_is_one_in_a_million():
    """rms_norm and RMSNorm default to eps = 1e-6 (Llama's), visible on tiny inputs."""
    from lmlab.transformer import RMSNorm, rms_norm

    torch.manual_seed(0)
    x = torch.randn(4, 8, dtype=torch.float64) * 1e-3  # mean(x^2) ~ 1e-6: eps matters
    reference = F.rms_norm(x, (8,), eps=1e-6)
    torch.testing.assert_close(rms_norm(x), reference, rtol=1e-12, atol=0)
    torch.testing.assert_close(RMSNorm(8).double()(x), reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("fused", [False, True], ids=["readable", "fused"])
def test_rms_norm_module_without_weight_and_keeps_the_input_dtype(fused):
    """RMSNorm(weight=False) runs unscaled; float32 weights do not promote a bfloat16 input."""
    from lmlab.transformer import RMSNorm

    torch.manual_seed(0)
    x = torch.randn(3, 8, dtype=torch.float64)
    torch.testing.assert_close(RMSNorm(8, weight=False, eps=1e-3, fused=fused)(x),
                               F.rms_norm(x, (8,), None, 1e-3), rtol=0, atol=1e-12)
    norm = RMSNorm(8, fused=fused)
    with torch.no_grad():
        norm.weight.normal_()
    xb = torch.randn(3, 8).bfloat16()
    out = norm(xb)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, F.rms_norm(xb, (8,), norm.weight.bfloat16(), 1e-6), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_gpt_norms_use_the_config_norm_eps(norm):
    """Every norm of a GPT uses config.norm_eps (checked against F.layer_norm / F.rms_norm)."""
    from lmlab.transformer import RMSNorm

    torch.manual_seed(0)
    model = GPT(tiny(norm=norm, norm_eps=0.25)).double()
    x = torch.randn(2, 8, dtype=torch.float64) * 0.5
    norms = [m for m in model.modules() if isinstance(m, (LayerNorm, RMSNorm))]
    assert len(norms) == 2 * 2 + 1
    for m in norms:
        if norm == "layernorm":
            reference = F.layer_norm(x, (8,), m.weight, m.bias, eps=0.25)
        else:
            reference = F.rms_norm(x, (8,), m.weight, eps=0.25)
        torch.testing.assert_close(m(x), reference, rtol=0, atol=1e-12)


def _count_calls(monkeypatch, name):
    calls = []
    original = getattr(F, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, name, spy)
    return calls


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("fused", [False, True], ids=["readable", "fused"])
def test_fused_flag_decides_which_kernels_run(monkeypatch, norm, fused):
    """config.fused reaches every norm and attention layer; the default runs none of torch's fused kernels."""
    from lmlab.transformer import RMSNorm

    kernel = "layer_norm" if norm == "layernorm" else "rms_norm"
    norm_calls = _count_calls(monkeypatch, kernel)
    attention_calls = _count_calls(monkeypatch, "scaled_dot_product_attention")
    model = GPT(tiny(norm=norm, fused=fused)).eval()
    model(torch.randint(0, 23, (2, 5)))
    assert len(norm_calls) == (2 * 2 + 1 if fused else 0)
    assert len(attention_calls) == (2 if fused else 0)
    norm_calls.clear()
    x = torch.randn(2, 8)
    (LayerNorm(8) if norm == "layernorm" else RMSNorm(8))(x)  # the modules default to readable
    assert norm_calls == []


# --------------------------------------------------------------------------- feed-forward wiring


def test_feed_forward_hidden_width_and_tanh_gelu():
    """FeedForward(hidden=...) sets the width; approximate='tanh' is torch's tanh GELU."""
    torch.manual_seed(0)
    ff = FeedForward(6, hidden=10, approximate="tanh").double()
    assert ff.c_fc.out_features == 10 and ff.c_proj.in_features == 10
    peer = nn.Sequential(ff.c_fc, nn.GELU(approximate="tanh"), ff.c_proj)
    x = torch.randn(3, 6, dtype=torch.float64) * 3
    torch.testing.assert_close(ff(x), peer(x), rtol=0, atol=1e-12)
    assert not torch.allclose(ff(x), nn.Sequential(ff.c_fc, nn.GELU(), ff.c_proj)(x), rtol=0, atol=1e-9)


@pytest.mark.parametrize("mlp", ["gelu", "gelu_tanh", "swiglu"])
def test_gpt_feed_forward_follows_the_config(mlp):
    """A GPT's feed-forward takes ffn_hidden, bias, dropout and (gelu_tanh) the tanh GELU from the config."""
    torch.manual_seed(0)
    model = GPT(tiny(mlp=mlp, ffn_hidden=12, bias=True, dropout=0.3)).double()
    ff = model.transformer.h[0].mlp
    assert ff.dropout.p == 0.3
    if mlp == "swiglu":
        assert ff.w1.out_features == ff.w3.out_features == ff.w2.in_features == 12
        assert all(layer.bias is not None for layer in (ff.w1, ff.w2, ff.w3))
        return
    assert ff.c_fc.out_features == 12 and ff.c_fc.bias is not None
    ff.eval()
    x = torch.randn(2, 3, 8, dtype=torch.float64) * 20
    gelu = nn.GELU(approximate="tanh" if mlp == "gelu_tanh" else "none")
    torch.testing.assert_close(ff(x), ff.c_proj(gelu(ff.c_fc(x))), rtol=0, atol=1e-12)


def test_llama_hidden_size_rounds_up_to_the_multiple():
    """hidden = int(8/3 · dim) rounded *up* to multiple_of (1: no rounding)."""
    from lmlab.transformer import llama_hidden_size

    assert llama_hidden_size(12, multiple_of=1) == 32
    assert llama_hidden_size(2, multiple_of=2) == 6  # int(16/3) = 5 -> 6
    assert llama_hidden_size(3, multiple_of=7) == 14  # 8 -> 14


# --------------------------------------------------------------------------- positions


def test_sinusoidal_positions_bounds_and_far_positions():
    """T = 0 gives an empty table, T < 0 or d < 1 raise; far positions stay float64-accurate."""
    assert sinusoidal_positions(0, 4).shape == (0, 4)
    with pytest.raises(ValueError, match="T"):
        sinusoidal_positions(-1, 4)
    with pytest.raises(ValueError, match="d"):
        sinusoidal_positions(5, 0)
    T, d = 4096, 8
    pe = sinusoidal_positions(T, d)
    p = torch.arange(T, dtype=torch.float64)[:, None]
    angle = p / 10000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    reference = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).reshape(T, d)
    torch.testing.assert_close(pe.double(), reference, rtol=0, atol=1e-6)


def test_sinusoidal_table_is_not_saved_in_the_state_dict():
    """The sinusoidal table is a fixed buffer: not in state_dict, so checkpoints hold only weights."""
    model = GPT(tiny(positions="sinusoidal"))
    assert "pe" not in model.state_dict() and model.pe.shape == (16, 8)


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize("n_rep", [True, 2.0], ids=["bool", "float"])
def test_repeat_kv_rejects_a_non_int_n_rep(n_rep):
    """repeat_kv needs an int n_rep (not a bool, not a float)."""
    from lmlab.transformer import repeat_kv

    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(torch.zeros(1, 2, 3, 4), n_rep)


class RecordingCache:
    """A cache that stores nothing and records the layer indices it is asked for."""

    def __init__(self):
        self.layers = []

    def update(self, layer_index, k, v):
        self.layers.append(layer_index)
        return k, v


def test_a_lone_attention_layer_or_block_writes_layer_zero_of_the_cache():
    """layer_index defaults to 0 in CausalSelfAttention and Block."""
    from lmlab.transformer import CausalSelfAttention

    x = torch.randn(1, 3, 8)
    cache = RecordingCache()
    CausalSelfAttention(tiny())(x, kv_cache=cache)
    Block(tiny())(x, kv_cache=cache)
    assert cache.layers == [0, 0]


@pytest.mark.parametrize("use_mask", [False, True], ids=["causal", "mask"])
@pytest.mark.parametrize("fused", [False, True], ids=["readable", "fused"])
def test_attention_dropout_acts_while_training_only(use_mask, fused):
    """config.dropout drops attention weights in train mode; eval mode is the dropout-free layer."""
    from lmlab.transformer import CausalSelfAttention

    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny(dropout=0.5, fused=fused))
    attn.resid_dropout = nn.Identity()  # only the dropout on the attention weights is left
    plain = CausalSelfAttention(tiny(dropout=0.0, fused=fused))
    plain.load_state_dict(attn.state_dict())
    x = torch.randn(2, 6, 8)
    mask = torch.ones(6, 6, dtype=torch.bool).tril().expand(2, 1, 6, 6) if use_mask else None
    attn.train()
    torch.manual_seed(1)
    a = attn(x, mask=mask)
    torch.manual_seed(2)
    b = attn(x, mask=mask)
    assert not torch.allclose(a, b)
    attn.eval()
    torch.testing.assert_close(attn(x, mask=mask), plain(x, mask=mask), rtol=0, atol=0)


@pytest.mark.parametrize("T", [1, 2, 3, 4], ids=["T1", "T2", "T3", "T4"])
def test_fused_grouped_query_attention_matches_the_readable_one(T):
    """Fused GQA (4 query heads, 2 KV heads) equals the readable path for any sequence length."""
    torch.manual_seed(0)
    readable = GPT(tiny(n_embd=16, n_head=4, n_kv_head=2)).double().eval()
    fused = GPT(tiny(n_embd=16, n_head=4, n_kv_head=2, fused=True)).double().eval()
    fused.load_state_dict(readable.state_dict())
    idx = torch.randint(0, 23, (2, T))
    torch.testing.assert_close(fused(idx)[0], readable(idx)[0], rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- GPT forward


def _forward_by_hand(model, idx):
    """GPT.forward without cache or mask, written out: embeddings + positions, blocks, head."""
    from lmlab.rope import rope_cos_sin

    config = model.config
    T = idx.shape[1]
    x = model.transformer.wte(idx)
    rope = None
    if config.positions == "learned":
        x = x + model.transformer.wpe.weight[:T]
    elif config.positions == "sinusoidal":
        x = x + sinusoidal_positions(config.block_size, config.n_embd).to(x.dtype)[:T]
    else:
        rope = rope_cos_sin(torch.arange(T), config.head_dim, config.rope_theta)
    for i, block in enumerate(model.transformer.h):
        x = block(x, layer_index=i, rope=rope)
    return model.lm_head(model.transformer.ln_f(x))


@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope"])
def test_gpt_forward_matches_a_hand_written_forward(positions):
    """Position embeddings are *added*; RoPE uses config.rope_theta (here not the default)."""
    torch.manual_seed(0)
    model = GPT(tiny(positions=positions, rope_theta=100.0)).double().eval()
    with torch.no_grad():
        if positions == "learned":
            model.transformer.wpe.weight.normal_()  # large enough to matter
    idx = torch.randint(0, 23, (2, 9))
    torch.testing.assert_close(model(idx)[0], _forward_by_hand(model, idx), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fused", [False, True], ids=["readable", "fused"])
def test_rope_left_padding_matches_unpadded_runs(fused):
    """With RoPE, a padded batch (B=3 rows, 2 heads) gives each row's unpadded logits."""
    torch.manual_seed(0)
    model = GPT(tiny(positions="rope", fused=fused)).eval()
    seqs = [torch.randint(0, 23, (n,)) for n in (6, 3, 1)]
    idx, mask = left_pad([s.tolist() for s in seqs], pad_id=5)
    T = idx.shape[1]
    batched, _ = model(idx, attention_mask=mask)
    for b, s in enumerate(seqs):
        alone, _ = model(s[None])
        torch.testing.assert_close(batched[b, T - len(s):], alone[0], rtol=0, atol=1e-5)


def test_left_padding_does_not_count_towards_block_size():
    """Positions count real tokens: a row of 16 tokens plus one pad fits block_size=16."""
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    seqs = [torch.randint(0, 23, (n,)) for n in (16, 4)]
    idx, mask = left_pad([s.tolist() for s in seqs])
    idx, mask = F.pad(idx, (1, 0)), F.pad(mask, (1, 0))  # one more pad column: T = 17
    T = idx.shape[1]
    batched, _ = model(idx, attention_mask=mask)
    for b, s in enumerate(seqs):
        torch.testing.assert_close(batched[b, T - len(s):], model(s[None])[0][0], rtol=0, atol=1e-5)


def test_idx_errors_say_what_they_got():
    """A non-(B, T) idx error names the shape it got, or the type when it is no tensor."""
    model = GPT(tiny())
    with pytest.raises(ValueError, match=r"\(4,\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="list"):
        model([[1, 2]])


def test_aux_loss_of_a_dense_model_is_a_clear_error():
    """aux_loss() on a model without MoE layers raises ValueError, not AttributeError."""
    model = GPT(tiny())
    model(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="aux_loss"):
        model.aux_loss()


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_initial_weights_follow_gpt2(mlp):
    """Linear and embedding weights ~ N(0, 0.02); residual projections ~ N(0, 0.02/sqrt(2·n_layer))."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=64, block_size=64, n_layer=4, n_head=4, n_embd=64, mlp=mlp)
    model = GPT(config)
    residual = [p.detach().flatten() for n, p in model.named_parameters()
                if n.endswith(("c_proj.weight", "w2.weight"))]
    assert len(residual) == 2 * 4
    residual = torch.cat(residual)
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.03)
    assert abs(residual.mean().item()) < 0.0005
    others = torch.cat([model.transformer.wte.weight.detach().flatten(),
                        model.transformer.wpe.weight.detach().flatten(),
                        model.transformer.h[0].attn.c_attn.weight.detach().flatten()])
    assert others.std().item() == pytest.approx(0.02, rel=0.03)


# --------------------------------------------------------------------------- counting


def test_count_parameters_trainable_only():
    """Frozen parameters count by default and are left out with trainable_only=True."""
    model = GPT(tiny())
    total = count_parameters(model)
    model.transformer.wte.weight.requires_grad_(False)  # the first parameter (tied to the head)
    model.transformer.ln_f.weight.requires_grad_(False)
    assert count_parameters(model) == total
    assert count_parameters(model, trainable_only=True) == total - 23 * 8 - 8


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_gpt_param_count_uses_every_size(tied):
    """gpt_param_count passes vocab, block size, layers and width on; any width works (one head)."""
    from lmlab.transformer import gpt_param_count

    config = GPTConfig(vocab_size=30, block_size=20, n_layer=3, n_head=1, n_embd=7, tie_weights=tied)
    with torch.device("meta"):
        model = GPT(config)
    assert gpt_param_count(30, 20, 3, 7, tied=tied) == param_count(config) == count_parameters(model)
