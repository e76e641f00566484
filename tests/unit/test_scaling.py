"""lmlab.scaling against its peers: FlopCounterMode, measured memory of real models,
published training runs, and explicit simulations of rings and pipelines."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmlab import scaling as S
from lmlab.device import GPU_PEAKS
from lmlab.transformer import GPT, GPTConfig, count_parameters

SMALL = [  # (n_layer, n_embd, n_head, T, B, V)
    (2, 64, 4, 32, 4, 100),
    (3, 96, 6, 48, 2, 300),
]


def _gpt(L, C, H, T, V, *, tie=True, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C, tie_weights=tie))


def _tokens(B, T, V, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("L, C, H, T, B, V", SMALL)
@pytest.mark.parametrize("tie", [True, False])
def test_training_flops_matches_flop_counter(L, C, H, T, B, V, tie):
    model = _gpt(L, C, H, T, V, tie=tie)
    idx = _tokens(B, T, V)
    measured = S.measure_training_flops(lambda: model(idx, idx)[1].backward())
    n = S.matmul_params(model)
    estimate = S.training_flops(n, B * T, n_layer=L, seq_len=T, d_model=C)
    assert measured == pytest.approx(estimate, rel=1e-9)
    # without the attention term 6ND undercounts by exactly 12·L·T·d per token
    assert S.training_flops(n, B * T) == pytest.approx(measured - 12 * L * T * C * B * T, rel=1e-9)


def test_matmul_params_of_gpt():
    L, C, H, T, B, V = SMALL[0]
    assert S.matmul_params(_gpt(L, C, H, T, V)) == 12 * L * C * C + V * C
    assert S.matmul_params(_gpt(L, C, H, T, V, tie=False)) == 12 * L * C * C + V * C


def test_matmul_params_counts_a_shared_weight_once():
    """Two nn.Linear modules sharing one weight matrix count it once (as a tied head does)."""
    a, b = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
    b.weight = a.weight
    other = nn.Linear(8, 3)
    assert S.matmul_params(nn.Sequential(a, b, other)) == 8 * 8 + 3 * 8


def test_model_shape_reproduces_gpt3():
    """N = 175e9 at the default aspect ratio 128 gives GPT-3's shape: L = 96, d = 12288, 96 heads."""
    assert S.model_shape(175e9) == {"n_layer": 96, "d_model": 12288, "n_heads": 96}


_SHAPE_SIZES = [m * 10**e for e in range(6, 13) for m in (1, 2, 3, 5, 7)]


def test_model_shape_follows_its_derivation():
    """Defaults r = 128, head_dim = 128: L is the nearest integer to (N/(12·r²))^(1/3), d the
    multiple of 128 nearest to sqrt(N/(12·L)), and n_heads = d/128 (float64 by hand)."""
    for n in _SHAPE_SIZES:
        shape = S.model_shape(n)
        cube_root = (n / (12 * 128.0**2)) ** (1 / 3)
        assert abs(shape["n_layer"] - cube_root) <= 0.5, n
        assert shape["d_model"] % 128 == 0 and shape["n_heads"] == shape["d_model"] // 128
        width = math.sqrt(n / (12 * shape["n_layer"]))
        assert abs(shape["d_model"] - width) <= 64, n
        assert shape == S.model_shape(n, aspect_ratio=128, head_dim=128)
    # aspect_ratio and head_dim passed on: (1e9/(12·64²))^(1/3) = 27.3 -> 27 layers;
    # sqrt(1e9/(12·27)) = 1756.8 = 27.45 heads of 64 -> d = 27·64 = 1728
    assert S.model_shape(1e9, aspect_ratio=64, head_dim=64) == {
        "n_layer": 27, "d_model": 1728, "n_heads": 27}


def test_model_shape_floor_and_errors():
    """A tiny budget still gets one layer one head wide; a non-positive size raises naming n_params."""
    assert S.model_shape(1e4) == {"n_layer": 1, "d_model": 128, "n_heads": 1}
    with pytest.raises(ValueError, match="n_params"):
        S.model_shape(0)


def test_measure_training_flops_prints_nothing(capsys):
    """The FLOP counter runs silently (display=False) and counts one matmul: 2·m·n·k."""
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    assert S.measure_training_flops(lambda: a @ b) == 2 * 4 * 5 * 6
    assert capsys.readouterr().out == ""


def test_training_flops_is_six_n_d():
    assert S.training_flops(1e9, 2e10) == 6 * 1e9 * 2e10
    assert S.training_flops(0, 10) == 0


def test_training_flops_attention_needs_all_three():
    with pytest.raises(ValueError, match="n_layer, seq_len and d_model"):
        S.training_flops(10, 10, n_layer=2)
    with pytest.raises(ValueError, match="params"):
        S.training_flops(-1, 10)


def test_training_flops_zero_tokens_and_argument_checks():
    """Zero params or tokens cost zero FLOPs; negatives, NaN, bools and bad attention sizes
    raise naming the argument."""
    assert S.training_flops(1e9, 0) == 0
    assert S.training_flops(1e9, 0, n_layer=2, seq_len=8, d_model=16) == 0
    with pytest.raises(ValueError, match="tokens"):
        S.training_flops(1e9, -1)
    with pytest.raises(ValueError, match=">= 0"):  # zero is allowed, so the bound says >= 0
        S.training_flops(1e9, -1)
    with pytest.raises(TypeError, match="params"):
        S.training_flops(float("nan"), 10)
    with pytest.raises(TypeError, match="params"):
        S.training_flops(True, 10)  # a bool is not a parameter count
    for name in ("n_layer", "seq_len", "d_model"):
        sizes = dict(n_layer=2, seq_len=8, d_model=16) | {name: 0}
        with pytest.raises(ValueError, match=name):
            S.training_flops(10, 10, **sizes)


def test_known_runs_reported_compute():
    for name, rel in [("GPT-3 175B", 0.01), ("Chinchilla 70B", 0.03), ("Llama 3.1 405B", 0.01)]:
        run = S.KNOWN_RUNS[name]
        assert S.training_flops(run.params, run.tokens) == pytest.approx(run.reported_flops, rel=rel)


def test_known_runs_imply_plausible_mfu():
    # reported GPU-hours imply an MFU between 10 % and 60 % of the datasheet peak (Llama 3 8B:
    # about 16 %; the hours may include more than the final run)
    for run in S.KNOWN_RUNS.values():
        if run.gpu_hours is None:
            continue
        cost = S.training_cost(S.training_flops(run.params, run.tokens), device=run.device, mfu=1.0)
        mfu = cost.gpu_hours / run.gpu_hours
        assert 0.1 < mfu < 0.6, (run.name, mfu)


# --------------------------------------------------------------------------- scaling laws


def test_chinchilla_rule_reproduces_chinchilla():
    n, d = S.chinchilla_optimal(5.76e23)
    assert n == pytest.approx(70e9, rel=0.03)
    assert d == pytest.approx(1.4e12, rel=0.03)


@settings(max_examples=50, deadline=None)
@given(st.floats(1e15, 1e27), st.sampled_from(["rule", "hoffmann", "besiroglu"]))
def test_chinchilla_optimal_spends_the_budget(compute, method):
    n, d = S.chinchilla_optimal(compute, method=method)
    assert 6 * n * d == pytest.approx(compute, rel=1e-9)


@pytest.mark.parametrize("fit", ["hoffmann", "besiroglu"])
@pytest.mark.parametrize("compute", [1e19, 1e22, 1e25])
def test_fitted_optimum_minimizes_loss_on_the_isoflop_line(fit, compute):
    n, _ = S.chinchilla_optimal(compute, method=fit)
    best = S.chinchilla_loss(n, compute / (6 * n), fit)
    for factor in (0.9, 0.99, 1.01, 1.1):
        m = n * factor
        assert S.chinchilla_loss(m, compute / (6 * m), fit) > best


def test_refit_is_about_twenty_tokens_per_param():
    n, d = S.chinchilla_optimal(5.76e23, method="besiroglu")
    assert 15 < d / n < 30
    n, d = S.chinchilla_optimal(5.76e23, method="hoffmann")
    assert d / n > 50  # the published constants favour far more tokens (Besiroglu et al.)


def test_chinchilla_errors():
    with pytest.raises(ValueError, match="method"):
        S.chinchilla_optimal(1e20, method="kaplan")
    with pytest.raises(ValueError, match="compute"):
        S.chinchilla_optimal(0)


def test_chinchilla_argument_names_in_errors():
    """Non-positive sizes raise naming the argument: params, tokens, tokens_per_param."""
    with pytest.raises(ValueError, match="params"):
        S.chinchilla_loss(0, 1e9)
    with pytest.raises(ValueError, match="tokens"):
        S.chinchilla_loss(1e9, 0)
    with pytest.raises(ValueError, match="> 0"):  # zero is not allowed, so the bound says > 0
        S.chinchilla_loss(1e9, 0)
    with pytest.raises(ValueError, match="tokens_per_param"):
        S.chinchilla_optimal(1e20, tokens_per_param=0)


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize(
    "optimizer, precision, per_param",
    [("adam", "fp32", 16), ("adamw", "mixed", 16), ("adam", "bf16", 8), ("sgd", "fp32", 8),
     ("momentum", "fp32", 12), ("sgd", "mixed", 8)],
)
def test_bytes_per_parameter(optimizer, precision, per_param):
    assert S.memory_estimate(1000, optimizer=optimizer, precision=precision).total == per_param * 1000


def test_adam_memory_bytes():
    assert S.adam_memory_bytes(7e9, "mixed") == 112e9  # 7B parameters: 112 GB before activations
    assert S.adam_memory_bytes(10, "fp32") == 160


def test_adam_memory_bytes_in_bf16():
    """Pure bf16 Adam: 2 + 2 + 2·2 = 8 bytes per parameter (the precision is passed on)."""
    assert S.adam_memory_bytes(10, "bf16") == 80


def test_memory_estimate_defaults_and_zero_params():
    """Defaults: AdamW in fp32 (4 + 4 + 8 bytes), no activations without a batch,
    activations in 4 bytes with one head and no checkpointing; zero parameters cost zero."""
    assert S.memory_estimate(1000) == S.MemoryEstimate(4000, 4000, 8000, 0.0)
    assert S.memory_estimate(0).total == 0
    with pytest.raises(ValueError, match="params"):
        S.memory_estimate(-1)
    shape = dict(batch=2, seq_len=16, n_layer=3, d_model=8)
    estimate = S.memory_estimate(1000, **shape, profile="lmlab")
    # lmlab profile: per token 3·(20·8 + 3·1·16) + 4·8 + 0·V values, 4 bytes each
    assert estimate.activations == 2 * 16 * (3 * (20 * 8 + 3 * 16) + 4 * 8) * 4
    assert estimate.total == 16000 + estimate.activations
    with pytest.raises(ValueError, match="seq_len"):  # a batch needs a sequence length
        S.memory_estimate(1000, batch=2, n_layer=3, d_model=8)


@pytest.mark.parametrize("precision, size", [("fp32", 4), ("mixed", 2), ("bf16", 2), ("fp16", 2)])
def test_memory_estimate_activation_bytes_per_value(precision, size):
    """Activations are kept in 4 bytes in fp32 and in 2 in mixed, bf16 and fp16."""
    shape = dict(batch=2, seq_len=16, n_layer=3, d_model=8, n_heads=2, vocab_size=50)
    estimate = S.memory_estimate(1000, precision=precision, profile="unfused-attention", **shape)
    values = 2 * 16 * (3 * (16 * 8 + 1 * 2 * 16) + 2 * 8 + 50)
    assert estimate.activations == values * size


def test_activation_bytes_by_hand():
    """One head by default; custom profiles' checkpoint_d scales the checkpointed inputs;
    a negative vocabulary raises naming vocab_size."""
    # lmlab profile, B·T = 8 tokens: 20·4 + 3·1·8 per layer, 4·4 for the head, 4 bytes each
    assert S.activation_bytes(batch=1, seq_len=8, n_layer=1, d_model=4, profile="lmlab") == (
        8 * (20 * 4 + 3 * 8 + 4 * 4) * 4)
    profile = S.ActivationProfile("test", layer_d=10, layer_ht=0, head_d=1, head_v=0, checkpoint_d=2)
    # checkpointed: every layer keeps 2·d, plus one layer's 10·d: (3·2·4 + 10·4) per token
    assert S.activation_bytes(batch=1, seq_len=2, n_layer=3, d_model=4, bytes_per_value=1,
                              profile=profile, activation_checkpointing=True) == 2 * (24 + 40)
    with pytest.raises(ValueError, match="vocab_size"):
        S.activation_bytes(batch=1, seq_len=8, n_layer=1, d_model=4, vocab_size=-1)


def _measured_vs_estimate(model, idx, opt, *, L, C, H, T, B, V, profile, ckpt=False):
    measured = S.measure_training_memory(model, lambda m: m(idx, idx)[1], opt)
    estimate = S.memory_estimate(
        count_parameters(model), optimizer="adamw", precision="fp32", batch=B, seq_len=T,
        n_layer=L, d_model=C, n_heads=H, vocab_size=V, profile=profile,
        activation_checkpointing=ckpt,
    )
    return measured, estimate


@pytest.mark.parametrize("L, C, H, T, B, V", SMALL)
def test_memory_estimate_matches_measured_gpt(L, C, H, T, B, V):
    model = _gpt(L, C, H, T, V)
    idx = _tokens(B, T, V)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    measured, estimate = _measured_vs_estimate(model, idx, opt, L=L, C=C, H=H, T=T, B=B, V=V,
                                               profile="lmlab")
    for key in ("weights", "gradients", "optimizer"):  # Adam's step counters: a few bytes
        assert getattr(measured, key) == pytest.approx(getattr(estimate, key), rel=1e-3)
    # Measured/estimated 1.010 on both sizes: the profile counts d-sized and T-sized
    # tensors; what it leaves out are per-token scalars (LayerNorm's mean and 1/std, 4 per
    # layer) and the loss's bookkeeping. A coefficient off by one d would move it by >= 5 %.
    assert measured.activations == pytest.approx(estimate.activations, rel=0.02)
    assert measured.total == pytest.approx(estimate.total, rel=0.01)


class _Fused(nn.Module):
    """A GPT-like model on PyTorch's fused kernels (nn.LayerNorm, flash SDPA, F.gelu)."""

    def __init__(self, L, C, H, V, *, ckpt=False, flash=True):
        super().__init__()
        self.H, self.ckpt, self.flash = H, ckpt, flash
        self.emb = nn.Embedding(V, C)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(ln1=nn.LayerNorm(C), qkv=nn.Linear(C, 3 * C), proj=nn.Linear(C, C),
                               ln2=nn.LayerNorm(C), fc=nn.Linear(C, 4 * C), out=nn.Linear(4 * C, C)))
            for _ in range(L)
        )
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Linear(C, V, bias=False)

    def block(self, b, x):
        B, T, C = x.shape
        q, k, v = b["qkv"](b["ln1"](x)).view(B, T, 3, self.H, C // self.H).permute(2, 0, 3, 1, 4)
        if self.flash:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # written out: keeps the (B, H, T, T) softmax output for backward
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            scores = (q @ k.transpose(-2, -1) / math.sqrt(C // self.H)).masked_fill(~mask, -math.inf)
            y = torch.softmax(scores, dim=-1) @ v
        x = x + b["proj"](y.transpose(1, 2).reshape(B, T, C))
        return x + b["out"](F.gelu(b["fc"](b["ln2"](x))))

    def forward(self, idx, targets):
        x = self.emb(idx)
        for b in self.blocks:
            x = checkpoint(self.block, b, x, use_reentrant=True) if self.ckpt else self.block(b, x)
        logits = self.head(self.ln_f(x))
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


@pytest.mark.parametrize("ckpt, flash", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize("L, C, H, T, B, V", SMALL)
def test_memory_estimate_matches_measured_fused(L, C, H, T, B, V, ckpt, flash):
    torch.manual_seed(0)
    model = _Fused(L, C, H, V, ckpt=ckpt, flash=flash)
    idx = _tokens(B, T, V)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    profile = "fused" if flash else "unfused-attention"
    measured, estimate = _measured_vs_estimate(model, idx, opt, L=L, C=C, H=H, T=T, B=B, V=V,
                                               profile=profile, ckpt=ckpt)
    # The profiles count a copy of the attention output for merging the heads. PyTorch's
    # flash kernel returns its output laid out as (B, T, H, D), so transpose + reshape is a
    # view and that copy is never made: one d fewer per layer (measured/estimated 0.955).
    # With checkpointing, the recomputed layer's first saved tensor is its input, which is
    # already counted among the checkpointed inputs: one more d fewer (0.903). Predict both.
    p = S.ACTIVATION_PROFILES[profile]
    if flash:
        p = dataclasses.replace(p, layer_d=p.layer_d - 1)
    predicted = S.activation_bytes(batch=B, seq_len=T, n_layer=L, d_model=C, n_heads=H,
                                   vocab_size=V, profile=p, activation_checkpointing=ckpt)
    if ckpt:
        predicted -= B * T * C * 4
    # what is left: per-token scalars (LayerNorm's mean and 1/std, attention's logsumexp)
    assert measured.activations == pytest.approx(predicted, rel=0.02)
    assert measured.activations == pytest.approx(estimate.activations, rel=0.11)
    assert measured.total == pytest.approx(estimate.total, rel=0.03)


def test_checkpointing_with_gpt_blocks():
    L, C, H, T, B, V = 4, 64, 4, 64, 4, 100
    model = _gpt(L, C, H, T, V)
    idx = _tokens(B, T, V)
    g = model.transformer

    def loss_fn(m):
        x = g.wte(idx) + g.wpe(torch.arange(T))
        for block in g.h:
            x = checkpoint(block, x, use_reentrant=True)
        logits = m.lm_head(g.ln_f(x))
        return F.cross_entropy(logits.flatten(0, 1), idx.flatten())

    measured = S.measure_training_memory(model, loss_fn, torch.optim.SGD(model.parameters(), lr=0.1))
    full = S.activation_bytes(batch=B, seq_len=T, n_layer=L, d_model=C, n_heads=H, vocab_size=V,
                              profile="lmlab")
    ckpt = S.activation_bytes(batch=B, seq_len=T, n_layer=L, d_model=C, n_heads=H, vocab_size=V,
                              profile="lmlab", activation_checkpointing=True)
    # Measured/estimated 1.009. Unlike the fused model's (0.903, see
    # test_memory_estimate_matches_measured_fused), lmlab's hand-written LayerNorm saves
    # x - mean rather than x, so the recomputed layer shares no storage with its
    # checkpointed input and the estimate holds as written.
    assert measured.activations == pytest.approx(ckpt, rel=0.02)
    assert ckpt < full / 2
    assert measured.optimizer == 0  # plain SGD keeps no state


def test_saved_tensor_meter_counts_storage_once_and_releases():
    x = torch.randn(1000, requires_grad=True)
    meter = S.SavedTensorMeter()
    with meter:
        y = x.exp()  # saves its result: 4000 bytes
        z = (y * y).sum()  # saves y twice: the same storage, counted once
        assert meter.current == 4000
        w = (x.sin() * 2).sum()  # sin saves x: 4000 more
        assert meter.current == 8000
        z.backward()
        assert meter.current == 4000  # exp's and mul's saved tensors are freed
        w.backward()
    assert meter.peak == 8000
    assert meter.current == 0


def test_saved_tensor_meter_keeps_a_storage_while_any_save_holds_it():
    """A storage saved three times stays counted until its last saved copy is freed;
    a fresh meter reads zero."""
    meter = S.SavedTensorMeter()
    assert meter.peak == 0 and meter.current == 0
    x = torch.randn(1000, requires_grad=True)
    with meter:
        a = (x * x).sum()  # mul saves x twice
        b = x.sin().sum()  # sin saves x once more: one storage, 4000 bytes
        assert meter.current == 4000
        a.backward()
        assert meter.current == 4000  # sin still holds x
        b.backward()
        assert meter.current == 0
    assert meter.peak == 4000


class _TwoLinears(nn.Module):
    """Two linear maps whose weights are views of one flat buffer (as FSDP keeps them); the
    second is unused by the loss."""

    def __init__(self):
        super().__init__()
        flat = torch.randn(2 * 8 * 8)
        self.w_used = nn.Parameter(flat[:64].view(8, 8))
        self.w_unused = nn.Parameter(flat[64:].view(8, 8))

    def forward(self, x):
        return (x @ self.w_used).square().sum()


def test_measure_training_memory_counts_storages_and_fresh_gradients():
    """Weights are counted per storage (two views of one buffer: 512 bytes once); stale
    gradients are cleared first (set to None), so an unused parameter has none."""
    model = _TwoLinears()
    model.w_unused.grad = torch.ones(8, 8)  # left over from an earlier step
    x = torch.randn(4, 8)
    measured = S.measure_training_memory(model, lambda m: m(x), torch.optim.SGD(model.parameters(), lr=0.1))
    assert measured.weights == 2 * 8 * 8 * 4
    assert measured.gradients == 8 * 8 * 4
    assert model.w_unused.grad is None


def test_memory_estimate_errors():
    with pytest.raises(ValueError, match="optimizer"):
        S.memory_estimate(10, optimizer="lion")
    with pytest.raises(ValueError, match="precision"):
        S.memory_estimate(10, precision="fp64")
    with pytest.raises(ValueError, match="seq_len"):
        S.memory_estimate(10, batch=2, seq_len=0, n_layer=2, d_model=8)
    with pytest.raises(ValueError, match="profile"):
        S.activation_bytes(batch=1, seq_len=8, n_layer=1, d_model=8, profile="cuda")


# --------------------------------------------------------------------------- cost


def test_training_cost_arithmetic():
    cost = S.training_cost(989e12 * 3600 * 0.5, device="H100", mfu=0.5, price_per_hour=3.0, n_gpus=4)
    assert cost.gpu_hours == pytest.approx(1.0)
    assert cost.dollars == pytest.approx(3.0)
    assert cost.days == pytest.approx(1 / 4 / 24)
    with pytest.raises(ValueError, match="mfu"):
        S.training_cost(1e20, mfu=40)
    with pytest.raises(ValueError, match="device"):
        S.training_cost(1e20, device="Z9000")


def test_training_cost_defaults():
    """Defaults: one H100 in bf16 (989 TFLOP/s) at 40 % MFU and $2 per GPU-hour; the
    FLOPs are kept on the result."""
    flops = 989e12 * 0.4 * 3600 * 10  # ten hours' work
    cost = S.training_cost(flops)
    assert cost.flops == flops and cost.n_gpus == 1
    assert cost.gpu_hours == pytest.approx(10.0) and cost.dollars == pytest.approx(20.0)
    assert cost.days == pytest.approx(10 / 24)


def test_training_cost_zero_and_argument_checks():
    """Zero FLOPs and a zero price are allowed (cost nothing); negatives and zero GPUs
    raise naming the argument."""
    assert S.training_cost(0).gpu_hours == 0
    assert S.training_cost(1e20, price_per_hour=0).dollars == 0
    for kwargs, name in ((dict(flops=-1), "flops"), (dict(flops=1e20, price_per_hour=-1), "price_per_hour"),
                         (dict(flops=1e20, n_gpus=0), "n_gpus")):
        with pytest.raises(ValueError, match=name):
            S.training_cost(**kwargs)


def test_gpu_hours_arithmetic_and_bounds():
    """flops / (peak · mfu) / 3600; mfu must lie in (0, 1], zero FLOPs cost zero hours."""
    assert S.gpu_hours(3600e12, 1e12, 1.0) == pytest.approx(1.0)
    assert S.gpu_hours(3600e12, 2e12, 0.25) == pytest.approx(2.0)
    assert S.gpu_hours(0, 1e12, 0.5) == 0
    for mfu in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="mfu"):
            S.gpu_hours(1e12, 1e12, mfu)
    with pytest.raises(ValueError, match="flops"):
        S.gpu_hours(-1, 1e12, 0.5)
    with pytest.raises(ValueError, match="peak_flops"):
        S.gpu_hours(1e12, 0, 0.5)


def test_accelerator_table_single_source():
    for chip in S.ACCELERATORS.values():
        assert chip.source and chip.memory > 0 and chip.bandwidth > 0 and chip.link_bandwidth > 0
        assert "bf16" in chip.peak or "fp16" in chip.peak
    for key, gpu in (("H100", "H100"), ("A100", "A100"), ("RTX 4090", "4090")):
        chip = S.ACCELERATORS[key]
        assert chip.bandwidth == GPU_PEAKS[gpu]["bandwidth"]
        assert all(chip.peak[p] == v for p, v in GPU_PEAKS[gpu].items() if p != "bandwidth")
    assert S.get_accelerator("mi300").vendor == "AMD"
    with pytest.raises(ValueError, match="precision"):
        S.ACCELERATORS["TPU v5p"].peak_flops("fp32")


#: What the book's accelerator table prints (chapter 9, "industry chain"), from the vendor
#: datasheets each entry's ``source`` names: year, dense bf16 FLOP/s (fp16 for V100 and
#: T4, which have no bf16), memory bytes, memory bytes/s, chip-to-chip bytes/s each way.
DATASHEETS = {
    # NVIDIA Tesla V100 datasheet: 125 TFLOP/s fp16 tensor, 32 GB HBM2, 900 GB/s, NVLink 2 300 GB/s
    "V100": (2017, 125e12, 32e9, 0.9e12, 150e9),
    # NVIDIA T4 datasheet: 65 TFLOP/s fp16, 16 GB GDDR6, 320 GB/s, PCIe 3 x16
    "T4": (2018, 65e12, 16e9, 0.32e12, 16e9),
    # NVIDIA A100 datasheet: 312 TFLOP/s bf16, 80 GB HBM2e, 2.0 TB/s, NVLink 3 600 GB/s
    "A100": (2020, 312e12, 80e9, 2.0e12, 300e9),
    # NVIDIA Ada whitepaper: RTX 4090 165 TFLOP/s fp16 (fp32 acc.), 24 GB, 1.0 TB/s, PCIe 4 x16
    "RTX 4090": (2022, 165e12, 24e9, 1.0e12, 32e9),
    # NVIDIA H100 SXM5 datasheet: 989 TFLOP/s bf16 dense, 80 GB HBM3, 3.35 TB/s, NVLink 4 900 GB/s
    "H100": (2022, 989e12, 80e9, 3.35e12, 450e9),
    # NVIDIA L4 datasheet: 121 TFLOP/s bf16 dense, 24 GB GDDR6, 300 GB/s, PCIe 4 x16
    "L4": (2023, 121e12, 24e9, 0.3e12, 32e9),
    # NVIDIA H200 datasheet: H100's compute, 141 GB HBM3e, 4.8 TB/s, NVLink 4 900 GB/s
    "H200": (2024, 989e12, 141e9, 4.8e12, 450e9),
    # AMD Instinct MI300X data sheet: 1307.4 TFLOP/s bf16 dense, 192 GB, 5.3 TB/s, IF 896 GB/s
    "MI300X": (2023, 1307.4e12, 192e9, 5.3e12, 448e9),
    # Google Cloud TPU v5p docs: 459 TFLOP/s bf16, 95 GB HBM2e, 2765 GB/s, ICI 4800 Gbit/s
    "TPU v5p": (2023, 459e12, 95e9, 2.765e12, 300e9),
}


def test_accelerator_table_matches_datasheets():
    """Every chip's year, 16-bit peak, memory, bandwidth and link are the datasheet numbers."""
    assert set(S.ACCELERATORS) == set(DATASHEETS)
    for key, (year, peak, memory, bandwidth, link) in DATASHEETS.items():
        chip = S.ACCELERATORS[key]
        assert (chip.year, chip.peak_flops("bf16"), chip.memory, chip.bandwidth,
                chip.link_bandwidth) == (year, peak, memory, bandwidth, link), key
        assert chip.vendor == {"MI300X": "AMD", "TPU v5p": "Google"}.get(key, "NVIDIA")
    # dense fp8 (no 2:4 sparsity): H100/H200 SXM 1979 TFLOP/s, L4 242.5, MI300X 2614.9
    for key, fp8 in (("H100", 1979e12), ("H200", 1979e12), ("L4", 242.5e12), ("MI300X", 2614.9e12)):
        assert S.ACCELERATORS[key].peak_flops("fp8") == fp8


def test_nvidia_entry_built_from_gpu_peaks():
    """An NVIDIA entry takes its peaks and memory bandwidth from GPU_PEAKS, adds extra
    precisions, and converts GB and GB/s to bytes (H100 SXM5 datasheet numbers)."""
    chip = S._nvidia("H100", "NVIDIA H100 SXM5 80GB", 2022, 80, 450, "datasheet", fp8=1979e12)
    assert chip == S.Accelerator(
        "NVIDIA H100 SXM5 80GB", "NVIDIA", 2022,
        {"fp32": 67e12, "tf32": 494e12, "bf16": 989e12, "fp16": 989e12, "fp8": 1979e12},
        80e9, 3.35e12, 450e9, "datasheet",
    )
    assert "bandwidth" in GPU_PEAKS["H100"]  # the shared table is copied, not emptied
    t4 = S._nvidia("T4", "NVIDIA T4", 2018, 16, 16, "datasheet")
    assert t4.peak == {"fp32": 8.1e12, "fp16": 65e12} and t4.bandwidth == 0.32e12


def test_peak_flops_precision_lookup():
    """Precision "mixed" means the 16-bit matmul peak; V100 and T4 (no bf16) use fp16 for it;
    a precision the datasheet lacks raises naming precision."""
    h100 = S.ACCELERATORS["H100"]
    assert h100.peak_flops("mixed") == h100.peak_flops() == 989e12
    assert h100.peak_flops("fp32") == 67e12
    for key, fp16 in (("V100", 125e12), ("T4", 65e12)):
        assert S.ACCELERATORS[key].peak_flops("bf16") == fp16
        assert S.ACCELERATORS[key].peak_flops("mixed") == fp16
    assert S.ACCELERATORS["TPU v5p"].peak_flops("bf16") == 459e12  # bf16 only, no fp16 entry
    with pytest.raises(ValueError, match="precision"):
        S.ACCELERATORS["A100"].peak_flops("fp8")


# --------------------------------------------------------------------------- parallelism


def _simulate_pipeline(p: int, m: int) -> float:
    """Idle fraction of an explicit GPipe forward schedule: stage s runs micro-batch j at slot s+j."""
    slots = m + p - 1
    busy = [[False] * slots for _ in range(p)]
    for s in range(p):
        for j in range(m):
            busy[s][s + j] = True
    return sum(not b for row in busy for b in row) / (p * slots)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16), st.integers(1, 64))
def test_pipeline_bubble_matches_explicit_schedule(p, m):
    assert S.pipeline_bubble(p, m) == pytest.approx(_simulate_pipeline(p, m), abs=1e-12)


def test_pipeline_bubble_edges():
    assert S.pipeline_bubble(1, 8) == 0
    assert S.pipeline_bubble(4, 1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="m must"):
        S.pipeline_bubble(4, 0)


def test_pipeline_bubble_wants_int_counts():
    """p and m are counts: zero, bools and floats raise naming the argument."""
    for p in (0, True, 2.0):
        with pytest.raises(ValueError, match=r"\bp\b"):
            S.pipeline_bubble(p, 4)


def _ring_bytes_sent(n: int, nbytes: float) -> float:
    """Bytes one device sends in a ring all-reduce: n-1 reduce-scatter and n-1 all-gather
    steps, each passing one chunk of nbytes/n to the next device."""
    chunk = nbytes / n
    sent = 0.0
    for _ in range(n - 1):  # reduce-scatter
        sent += chunk
    for _ in range(n - 1):  # all-gather
        sent += chunk
    return sent


@given(st.integers(1, 64), st.floats(1, 1e12))
def test_ring_allreduce_volume(n, nbytes):
    assert S.ring_allreduce_time(nbytes, n, 1.0) == pytest.approx(_ring_bytes_sent(n, nbytes), rel=1e-9)


def test_ring_allreduce_time_divides_by_bandwidth_and_checks_arguments():
    """Seconds = bytes sent / bandwidth; nothing to send takes no time; bad sizes raise
    naming the argument."""
    assert S.ring_allreduce_time(8e9, 4, 50e9) == pytest.approx(_ring_bytes_sent(4, 8e9) / 50e9)
    assert S.ring_allreduce_time(0, 4, 50e9) == 0
    for args, name in (((-1, 4, 1e9), "nbytes"), ((1e9, 0, 1e9), r"\bn\b"), ((1e9, 4, 0), "bandwidth")):
        with pytest.raises(ValueError, match=name):
            S.ring_allreduce_time(*args)


CONFIG = dict(batch_tokens=4 * 2**20, n_layer=32, d_model=4096, seq_len=4096)


def test_simulate_step_single_gpu_is_compute_only():
    step = S.simulate_step(7e9, **CONFIG, efficiency=0.5)
    flops = S.training_flops(7e9, CONFIG["batch_tokens"], n_layer=32, seq_len=4096, d_model=4096)
    assert step.total == step.compute == pytest.approx(flops / (989e12 * 0.5))


def test_simulate_step_trends():
    base = S.simulate_step(7e9, **CONFIG, layout=S.Layout(dp=8))
    assert base.compute * 8 == pytest.approx(S.simulate_step(7e9, **CONFIG).compute)
    assert base.dp_comm > 0 and base.tp_comm == 0 and base.bubble == 0
    tp = S.simulate_step(7e9, **CONFIG, layout=S.Layout(dp=2, tp=4))
    assert tp.tp_comm > 0
    few = S.simulate_step(7e9, **CONFIG, layout=S.Layout(dp=2, pp=4, microbatches=4))
    many = S.simulate_step(7e9, **CONFIG, layout=S.Layout(dp=2, pp=4, microbatches=32))
    assert few.bubble > many.bubble > 0
    assert few.bubble / (few.compute + few.bubble) == pytest.approx(S.pipeline_bubble(4, 4))


def _step_by_hand(params, *, batch_tokens, n_layer, d_model, seq_len, dp=1, tp=1, pp=1, m=1,
                  size=2, efficiency=0.6, peak=989e12, link=450e9, network=50e9, node=8):
    """simulate_step's docstring in float64, on H100 datasheet numbers by default."""
    n_gpus = dp * tp * pp
    flops = 6 * params * batch_tokens + 12 * n_layer * seq_len * d_model * batch_tokens
    compute = flops / n_gpus / (peak * efficiency)
    bubble = compute * (pp - 1) / m  # (p-1) idle slots for every m busy ones
    tokens = batch_tokens / dp  # per replica
    # each of the n_layer/pp layers on a GPU all-reduces its (tokens, d) activations 4 times
    tp_comm = 4 * (n_layer / pp) * _ring_bytes_sent(tp, tokens * d_model * size) / link
    pp_link = link if tp * pp <= node else network
    pp_comm = 2 * tokens * d_model * size / tp / pp_link if pp > 1 else 0.0
    dp_link = link if n_gpus <= node else network
    dp_comm = _ring_bytes_sent(dp, params / (tp * pp) * size) / dp_link
    return dict(compute=compute, bubble=bubble, tp_comm=tp_comm, pp_comm=pp_comm, dp_comm=dp_comm)


@pytest.mark.parametrize(
    "layout",
    [
        S.Layout(dp=2),  # the smallest data-parallel group
        S.Layout(dp=8),  # a full node: the gradients stay on NVLink
        S.Layout(dp=9),  # one GPU more than a node: over the network
        S.Layout(dp=16),
        S.Layout(tp=2),
        S.Layout(pp=2, microbatches=3),
        S.Layout(dp=2, tp=2, pp=2, microbatches=4),
        S.Layout(tp=2, pp=4, microbatches=8),  # tp·pp = 8: the pipeline fits in a node
        S.Layout(dp=2, tp=4, pp=4, microbatches=16),  # tp·pp = 16: stages cross nodes
    ],
    ids=lambda lay: f"dp{lay.dp}-tp{lay.tp}-pp{lay.pp}-m{lay.microbatches}",
)
@pytest.mark.parametrize("precision, size", [("bf16", 2), ("fp32", 4)])
def test_simulate_step_matches_hand_model(layout, precision, size):
    """Every term of simulate_step against its docstring in float64: compute split over the
    GPUs, the bubble, TP all-reduces on NVLink, PP sends and the DP ring on NVLink inside an
    8-GPU node and on the 50 GB/s network beyond; 2 bytes per value in bf16, 4 in fp32."""
    shape = dict(batch_tokens=2**20, n_layer=32, d_model=4096, seq_len=2048)
    step = S.simulate_step(7e9, **shape, layout=layout, precision=precision)
    peak = 67e12 if precision == "fp32" else 989e12
    hand = _step_by_hand(7e9, **shape, dp=layout.dp, tp=layout.tp, pp=layout.pp,
                         m=layout.microbatches, size=size, peak=peak)
    for name, value in hand.items():
        assert getattr(step, name) == pytest.approx(value, rel=1e-12, abs=0), name
    assert step.total == pytest.approx(sum(hand.values()), rel=1e-12)
    assert step.details["flops"] == pytest.approx(6 * 7e9 * 2**20 + 12 * 32 * 2048 * 4096 * 2**20)
    assert step.details["bubble_fraction"] == S.pipeline_bubble(layout.pp, layout.microbatches)
    assert step.details["layout"] == str(layout)


def test_simulate_step_nodes_and_efficiency_bounds():
    """gpus_per_node decides when traffic leaves NVLink; efficiency lies in (0, 1]; the
    sizes are checked naming the argument."""
    shape = dict(batch_tokens=2**20, n_layer=32, d_model=4096, seq_len=2048)
    wide = S.simulate_step(7e9, **shape, layout=S.Layout(dp=16), gpus_per_node=16)
    assert wide.dp_comm == pytest.approx(_ring_bytes_sent(16, 7e9 * 2) / 450e9)
    slow = S.simulate_step(7e9, **shape, layout=S.Layout(dp=16), network_bandwidth=25e9)
    assert slow.dp_comm == pytest.approx(_ring_bytes_sent(16, 7e9 * 2) / 25e9)
    full = S.simulate_step(7e9, **shape, efficiency=1.0)
    assert full.compute == pytest.approx(S.training_flops(
        7e9, 2**20, n_layer=32, seq_len=2048, d_model=4096) / 989e12)
    for efficiency in (0, 1.5):
        with pytest.raises(ValueError, match="efficiency"):
            S.simulate_step(7e9, **shape, efficiency=efficiency)
    with pytest.raises(ValueError, match="params"):
        S.simulate_step(0, **shape)
    with pytest.raises(ValueError, match="batch_tokens"):
        S.simulate_step(7e9, **(shape | dict(batch_tokens=0)))


def test_memory_per_gpu_sharding():
    kw = dict(optimizer="adam", precision="mixed")
    one = S.memory_per_gpu(1e9, **kw)
    assert one.total == 16e9
    sharded = S.memory_per_gpu(1e9, layout=S.Layout(dp=4, tp=2, pp=2), **kw)
    assert sharded.total == pytest.approx(16e9 / 4)
    z1 = S.memory_per_gpu(1e9, layout=S.Layout(dp=4, zero=1), **kw)
    assert z1.optimizer == one.optimizer / 4 and z1.gradients == one.gradients
    z3 = S.memory_per_gpu(1e9, layout=S.Layout(dp=4, zero=3), **kw)
    assert z3.total == pytest.approx(one.total / 4)
    act = S.memory_per_gpu(1e9, layout=S.Layout(pp=4, microbatches=8), seq_len=1024, n_layer=8,
                           d_model=512, **kw)
    single = S.activation_bytes(batch=1, seq_len=1024, n_layer=2, d_model=512, bytes_per_value=2)
    assert act.activations == pytest.approx(4 * single)


def test_memory_per_gpu_defaults_and_zero_2():
    """Defaults: one GPU, AdamW in mixed precision (2 + 2 + 12 bytes); ZeRO-2 shards the
    gradients and optimizer states over dp but not the weights; the optimizer is passed on."""
    assert S.memory_per_gpu(1e9) == S.MemoryEstimate(2e9, 2e9, 12e9, 0.0)
    z2 = S.memory_per_gpu(1e9, layout=S.Layout(dp=4, tp=2, zero=2))
    assert (z2.weights, z2.gradients, z2.optimizer) == (1e9, 0.25e9, 1.5e9)
    sgd = S.memory_per_gpu(1e9, optimizer="sgd", precision="fp32", layout=S.Layout(dp=4, zero=2))
    assert (sgd.weights, sgd.gradients, sgd.optimizer) == (4e9, 1e9, 0)
    with pytest.raises(ValueError, match="d_model"):  # activations need the width
        S.memory_per_gpu(1e9, seq_len=128, n_layer=2)


@pytest.mark.parametrize("ckpt", [False, True])
@pytest.mark.parametrize("precision, size", [("fp32", 4), ("mixed", 2)])
def test_memory_per_gpu_activations_pass_the_shape_on(ckpt, precision, size):
    """A GPU holds its stage's ceil(L/pp) layers for min(m, pp) micro-batches, split tp ways,
    with the run's heads, vocabulary, profile, checkpointing and bytes per value."""
    layout = S.Layout(tp=4, pp=4, microbatches=2)
    shape = dict(seq_len=64, d_model=32, n_heads=4, vocab_size=100, profile="lmlab",
                 activation_checkpointing=ckpt)
    got = S.memory_per_gpu(1e9, layout=layout, micro_batch=3, n_layer=4, precision=precision, **shape)
    one = S.activation_bytes(batch=3, n_layer=1, bytes_per_value=size, **shape)
    assert got.activations == pytest.approx(one * 2 / 4, rel=1e-12)
    default_heads = S.memory_per_gpu(1e9, seq_len=64, n_layer=2, d_model=32, profile="unfused-attention")
    assert default_heads.activations == S.activation_bytes(
        batch=1, seq_len=64, n_layer=2, d_model=32, n_heads=1, bytes_per_value=2,
        profile="unfused-attention")


def test_layout_zero_stages_and_label():
    """ZeRO stages 0-3 are accepted; the label reads DP×TP×PP (m, ZeRO-k), ZeRO only when on."""
    assert [S.Layout(zero=z).zero for z in range(4)] == [0, 1, 2, 3]
    assert str(S.Layout(dp=2, tp=4, pp=2, microbatches=8, zero=1)) == "DP2×TP4×PP2 (m=8, ZeRO-1)"
    assert str(S.Layout(dp=2)) == "DP2×TP1×PP1 (m=1)"


def test_layout_errors():
    with pytest.raises(ValueError, match="Layout.tp"):
        S.Layout(tp=0)
    with pytest.raises(ValueError, match="zero"):
        S.Layout(zero=4)
    assert S.Layout(dp=2, tp=4, pp=2).n_gpus == 16


# --------------------------------------------------------------------------- explorer


def test_scaling_explorer_frames_differ():
    from lmlab.widgets import scaling_explorer

    box = scaling_explorer(budgets=(1e21, 1e24), layouts=("DP64 + ZeRO-1", "TP8 × DP32 + ZeRO-1"))
    assert box.frames == 4 and "lmlab-explorer" in box._dom_classes
    images = [child.value for stack in box.children[-1].children for child in stack.children]
    assert len(images) == 4 and len(set(images)) == 4
