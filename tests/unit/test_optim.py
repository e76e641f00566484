"""lmlab.optim against torch.optim: trajectories, clipping, the cosine schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab import optim


def _problem(seed: int):
    """A small non-convex regression problem with two parameter tensors."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    y = torch.randn(16, 3, generator=g, dtype=torch.float64)
    return [w, b], x, y


def _trajectory(make_opt, seed: int, steps: int = 100, lr_schedule=None):
    params, x, y = _problem(seed)
    params = [p.clone().requires_grad_(True) for p in params]
    opt = make_opt(params)
    out = []
    for t in range(steps):
        if lr_schedule is not None:
            for group in opt.param_groups:
                group["lr"] = lr_schedule(t)
        opt.zero_grad()
        loss = (torch.tanh(x @ params[0] + params[1]) - y).pow(2).mean()
        loss.backward()
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


def _assert_same(ours, theirs, tol=1e-6):
    for step, (a, b) in enumerate(zip(ours, theirs)):
        for pa, pb in zip(a, b):
            err = (pa - pb).abs().max().item()
            assert err <= tol, f"step {step}: max |Δ| = {err:.3g}"


CONFIGS = [
    ("sgd", dict(lr=0.1), dict(lr=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd", dict(lr=0.05, momentum=0.5, weight_decay=0.1), dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    ("adam", dict(lr=0.01), dict(lr=0.01)),
    ("adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
     dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    ("adamw", dict(lr=0.01), dict(lr=0.01)),
    ("adamw", dict(lr=0.02, betas=(0.9, 0.95), weight_decay=0.3), dict(lr=0.02, betas=(0.9, 0.95), weight_decay=0.3)),
]
OURS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW}
TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@pytest.mark.parametrize("name,ours,theirs", CONFIGS)
def test_trajectory_matches_torch(name, ours, theirs):
    a = _trajectory(lambda p: OURS[name](p, **ours), seed=0)
    b = _trajectory(lambda p: TORCH[name](p, foreach=False, **theirs), seed=0)
    _assert_same(a, b)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_trajectory_float32_and_changing_lr(name):
    def schedule(t):
        return optim.cosine_schedule(t, warmup=10, total=100, lr_max=0.05, lr_min=0.005)

    def run(cls, **extra):
        params, x, y = _problem(3)
        params = [p.float().requires_grad_(True) for p in params]
        x, y = x.float(), y.float()
        opt = cls(params, lr=0.05, **({"momentum": 0.9} if name == "sgd" else {}), **extra)
        for t in range(100):
            for group in opt.param_groups:
                group["lr"] = schedule(t)
            opt.zero_grad()
            (torch.tanh(x @ params[0] + params[1]) - y).pow(2).mean().backward()
            opt.step()
        return params

    ours = run(OURS[name])
    theirs = run(TORCH[name], foreach=False)
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max().item() <= 1e-6


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    lr=st.floats(1e-4, 0.1),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.5, 0.9999),
    wd=st.floats(0.0, 0.5),
)
def test_adamw_property(seed, lr, beta1, beta2, wd):
    kw = dict(lr=lr, betas=(beta1, beta2), weight_decay=wd)
    a = _trajectory(lambda p: optim.AdamW(p, **kw), seed=seed, steps=20)
    b = _trajectory(lambda p: torch.optim.AdamW(p, foreach=False, **kw), seed=seed, steps=20)
    _assert_same(a, b)


def test_state_dict_round_trip_continues_identically():
    params, x, y = _problem(1)

    def loss_of(ps):
        return (torch.tanh(x @ ps[0] + ps[1]) - y).pow(2).mean()

    ps = [p.clone().requires_grad_(True) for p in params]
    opt = optim.AdamW(ps, lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        loss_of(ps).backward()
        opt.step()
    qs = [p.detach().clone().requires_grad_(True) for p in ps]
    opt2 = optim.AdamW(qs, lr=0.01)
    # deepcopy: state_dict() returns the live moment tensors, and load_state_dict keeps them
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for o, group in ((opt, ps), (opt2, qs)):
        for _ in range(5):
            o.zero_grad()
            loss_of(group).backward()
            o.step()
    for a, b in zip(ps, qs):
        assert torch.equal(a, b)


def test_adam_l2_differs_from_adamw():
    a = _trajectory(lambda p: optim.Adam(p, lr=0.01, weight_decay=0.5), seed=0, steps=10)
    b = _trajectory(lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.5), seed=0, steps=10)
    assert (a[-1][0] - b[-1][0]).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-1.0), "lr must be"),
        (dict(betas=(1.0, 0.9)), r"betas\[0\]"),
        (dict(betas=0.9), "betas must be a pair"),
        (dict(eps="x"), "eps must be a number"),
    ],
)
def test_adam_bad_hyperparameters(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        optim.Adam([torch.zeros(2, requires_grad=True)], **kwargs)


def test_sgd_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, nesterov=True)


# --------------------------------------------------------------------------- clipping


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), max_norm=st.floats(0.01, 20.0))
def test_clip_grad_norm_matches_torch(seed, max_norm):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (7,), (2, 2, 2)]
    ours = [torch.zeros(s, requires_grad=True) for s in shapes]
    theirs = [torch.zeros(s, requires_grad=True) for s in shapes]
    for a, b in zip(ours, theirs):
        grad = torch.randn(a.shape, generator=g) * 3
        a.grad, b.grad = grad.clone(), grad.clone()
    n1 = optim.clip_grad_norm_(ours, max_norm)
    n2 = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert torch.allclose(n1, n2, rtol=1e-6, atol=0)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-7)


def test_clip_keeps_direction_and_skips_missing_grads():
    a = torch.zeros(2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)  # no grad
    a.grad = torch.tensor([3.0, 4.0])
    norm = optim.clip_grad_norm_([a, b], 1.0)
    assert norm.item() == pytest.approx(5.0)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8]), atol=1e-6)
    assert b.grad is None


def test_clip_single_tensor_and_no_grads():
    a = torch.zeros(3, requires_grad=True)
    assert optim.clip_grad_norm_(a, 1.0).item() == 0.0
    a.grad = torch.full((3,), 0.1)
    optim.clip_grad_norm_(a, 10.0)
    assert torch.allclose(a.grad, torch.full((3,), 0.1))  # below the threshold: unchanged


# --------------------------------------------------------------------------- schedule


def test_cosine_schedule_shape():
    kw = dict(warmup=10, total=110, lr_max=1.0, lr_min=0.1)
    lrs = [optim.cosine_schedule(s, **kw) for s in range(130)]
    assert lrs[0] == pytest.approx(0.1)  # (0 + 1) / 10
    assert lrs[9] == pytest.approx(1.0)  # warm-up reaches the peak on its last step
    assert lrs[10] == pytest.approx(1.0)  # cosine starts at the peak
    assert lrs[60] == pytest.approx(0.55)  # half way: the mean of lr_max and lr_min
    assert lrs[110] == pytest.approx(0.1)
    assert all(lr == pytest.approx(0.1) for lr in lrs[110:])
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b - 1e-12 for a, b in zip(lrs[10:], lrs[11:]))


def test_cosine_matches_torch_scheduler_after_warmup():
    """torch's CosineAnnealingLR (eta_min, T_max) is the same curve shifted by the warm-up."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=0.01)
    for s in range(50):
        ours = optim.cosine_schedule(s + 5, warmup=5, total=55, lr_max=0.3, lr_min=0.01)
        assert ours == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


def test_cosine_schedule_no_warmup_and_errors():
    assert optim.cosine_schedule(0, warmup=0, total=10, lr_max=2.0) == pytest.approx(2.0)
    assert math.isclose(optim.cosine_schedule(10, warmup=0, total=10, lr_max=2.0), 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError, match="warmup"):
        optim.cosine_schedule(0, warmup=20, total=10, lr_max=1.0)
    with pytest.raises(ValueError, match="step"):
        optim.cosine_schedule(-1, warmup=2, total=10, lr_max=1.0)


# --------------------------------------------------------------------------- functional forms


def test_adamw_step_is_pure_and_matches_one_torch_step():
    g = torch.Generator().manual_seed(0)
    p, grad = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    m, v = torch.zeros(4, 3), torch.zeros(4, 3)
    before = [t.clone() for t in (p, grad, m, v)]
    new_p, new_m, new_v = optim.adamw_step(p, grad, m, v, 1, 0.1, (0.9, 0.999), 1e-8, 0.1)
    for a, b in zip(before, (p, grad, m, v)):
        assert torch.equal(a, b)  # inputs untouched
    q = p.clone().requires_grad_(True)
    q.grad = grad.clone()
    opt = torch.optim.AdamW([q], lr=0.1, weight_decay=0.1, foreach=False)
    opt.step()
    assert torch.allclose(new_p, q.detach(), atol=1e-7, rtol=0)
    assert torch.allclose(new_m, opt.state[q]["exp_avg"]) and torch.allclose(new_v, opt.state[q]["exp_avg_sq"])


def test_clip_gradients_functional():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    clipped, norm = optim.clip_gradients(grads, 1.0)
    assert norm.item() == pytest.approx(5.0)
    assert torch.allclose(torch.cat([c.flatten() for c in clipped]), torch.tensor([0.6, 0.0, 0.8]), atol=1e-6)
    assert grads[0][0].item() == 3.0  # inputs untouched
    assert optim.clip_gradients([], 1.0)[1].item() == 0.0
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_gradients(grads, -1.0)


# --------------------------------------------------------------------------- the explorer


def test_optimizer_paths_show_the_textbook_behaviour():
    from lmlab.widgets.ch06_training import optimizer_paths

    paths = optimizer_paths("ravine", 0.1, steps=100)
    assert len(paths["SGD"]) < 101  # lr above 2/25: SGD diverges across the ravine
    assert len(paths["Adam"]) == 101 and abs(paths["Adam"][-1]).max() < 0.05
    slow = optimizer_paths("ravine", 0.003, steps=100)
    # at a small rate momentum travels ~10× further along the floor than plain SGD
    assert abs(slow["momentum 0.9"][-1][0]) < 0.1 < abs(slow["SGD"][-1][0])
    with pytest.raises(ValueError, match="surface must be one of"):
        optimizer_paths("saddle", 0.1)


def test_optimizer_explorer_frames_differ():
    from lmlab.widgets import optimizer_explorer

    box = optimizer_explorer(lrs=(0.01, 0.1), surfaces=("ravine",), steps=10)
    assert box.frames == 2 and "lmlab-explorer" in box._dom_classes
    images = box.children[-1].children[0].children  # surface stack -> lr stack -> images
    assert images[0].value != images[1].value


# --------------------------------------------------------------------------- defaults and checks


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_defaults_match_torch_optim(name):
    """lr, eps and weight_decay default to torch.optim's values (lr 1e-3; AdamW wd 0.01)."""
    ours = OURS[name]([torch.zeros(2, requires_grad=True)]).defaults
    theirs = TORCH[name]([torch.zeros(2, requires_grad=True)]).defaults
    for key in ("lr", "momentum", "weight_decay", "eps", "betas"):
        if key in ours:
            assert ours[key] == theirs[key], key


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("sgd", dict(lr=-0.1), r"lr must be >= 0"),
        ("sgd", dict(lr=0.1, momentum=1.0), r"momentum must be in \[0\.0, 1\.0\)"),
        ("sgd", dict(lr=0.1, momentum=1.5), r"momentum must be in \[0\.0, 1\.0\)"),
        ("sgd", dict(lr=0.1, weight_decay=-1.0), r"weight_decay must be >= 0"),
        ("adam", dict(betas=(0.9, 1.0)), r"betas\[1\] must be in \[0\.0, 1\.0\)"),
        ("adam", dict(betas=(0.9, 1.5)), r"betas\[1\] must be in \[0\.0, 1\.0\)"),
        ("adam", dict(weight_decay=-0.1), r"weight_decay must be >= 0"),
    ],
    ids=["sgd_lr", "sgd_momentum_1", "sgd_momentum_1_5", "sgd_wd", "adam_beta2_1", "adam_beta2_1_5",
         "adam_wd"],
)
def test_bad_hyperparameters_name_the_argument_and_its_range(name, kwargs, match):
    """ValueError names the argument and the range it must lie in ([low, high) or >= low)."""
    with pytest.raises(ValueError, match=match):
        OURS[name]([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_weight_decay_of_exactly_one_matches_torch(name):
    """weight_decay=1.0 is applied like any other value (L2 in Adam, decoupled in AdamW)."""
    a = _trajectory(lambda p: OURS[name](p, lr=0.01, weight_decay=1.0), seed=2, steps=10)
    b = _trajectory(lambda p: TORCH[name](p, lr=0.01, weight_decay=1.0, foreach=False), seed=2, steps=10)
    _assert_same(a, b)


def test_adamw_passes_eps_on():
    """AdamW(eps=...) uses that eps: a large eps slows the early steps exactly as in torch."""
    a = _trajectory(lambda p: optim.AdamW(p, lr=0.05, eps=0.1), seed=4, steps=10)
    b = _trajectory(lambda p: torch.optim.AdamW(p, lr=0.05, eps=0.1, foreach=False), seed=4, steps=10)
    _assert_same(a, b)


def test_clip_eps_is_added_to_the_norm():
    """The scale is max_norm / (norm + eps), in clip_gradients and clip_grad_norm_ alike."""
    grads = [torch.tensor([3.0, 4.0], dtype=torch.float64)]
    clipped, norm = optim.clip_gradients(grads, 1.0, eps=1.0)
    assert norm.item() == 5.0
    torch.testing.assert_close(clipped[0], grads[0] / 6.0, rtol=1e-15, atol=0)
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    p.grad = grads[0].clone()
    optim.clip_grad_norm_([p], 1.0, eps=1.0)
    torch.testing.assert_close(p.grad, grads[0] / 6.0, rtol=1e-15, atol=0)


def test_cosine_schedule_edge_configurations():
    """warmup == total (no decay phase) and total == 0 are valid; a negative warmup raises."""
    lrs = [optim.cosine_schedule(s, warmup=4, total=4, lr_max=1.0, lr_min=0.1) for s in range(6)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4:] == [0.1, 0.1]  # step >= total: lr_min
    assert optim.cosine_schedule(0, warmup=0, total=0, lr_max=1.0, lr_min=0.1) == 0.1
    with pytest.raises(ValueError, match="warmup"):
        optim.cosine_schedule(0, warmup=-1, total=10, lr_max=1.0)
