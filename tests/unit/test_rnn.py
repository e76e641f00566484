"""lmlab.rnn against torch.nn: same weights in, same outputs and gradients out."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab import rnn

F64 = dict(rtol=1e-10, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-5)


def _grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=False)


def _loss(out, h, c=None):
    # weights every output differently, so a permuted or shifted output cannot pass
    w = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * w).sum() + (h**2).sum()
    return loss if c is None else loss + (c**3).sum()


# --------------------------------------------------------------------------- cells


def test_rnn_cell_matches_torch_with_same_seed_and_gradients():
    torch.manual_seed(0)
    ref = torch.nn.RNNCell(5, 4).double()
    torch.manual_seed(0)
    ours = rnn.RNNCell(5, 4).double()
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)  # same init, same order
    x = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    h = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    a, b = ref(x, h), ours(x, h)
    torch.testing.assert_close(b, a, **F64)
    ga = _grads((a * a.detach().exp()).sum(), [x, h, *ref.parameters()])
    gb = _grads((b * b.detach().exp()).sum(), [x, h, *ours.parameters()])
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(v, u, **F64)
    torch.testing.assert_close(ours(x), ref(x), **F64)  # default zero state


def test_lstm_cell_matches_torch_forward_gradients_and_state_dict_both_ways():
    torch.manual_seed(1)
    ref = torch.nn.LSTMCell(6, 5).double()
    ours = rnn.LSTMCell(6, 5).double()
    ours.load_state_dict(ref.state_dict())
    assert ours.weight_ih.shape == (20, 6) and ours.weight_hh.shape == (20, 5)
    x = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    h = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    c = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    (h1, c1), (h2, c2) = ref(x, (h, c)), ours(x, (h, c))
    torch.testing.assert_close(h2, h1, **F64)
    torch.testing.assert_close(c2, c1, **F64)
    ga = _grads(_loss(h1, h1, c1), [x, h, c, *ref.parameters()])
    gb = _grads(_loss(h2, h2, c2), [x, h, c, *ours.parameters()])
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(v, u, **F64)
    back = torch.nn.LSTMCell(6, 5).double()
    back.load_state_dict(ours.state_dict())
    torch.testing.assert_close(back(x)[0], ours(x)[0], **F64)


def test_lstm_gates_are_named_in_torch_order_and_rebuild_the_state():
    torch.manual_seed(2)
    cell = rnn.LSTMCell(3, 4).double()
    x, h, c = (torch.randn(2, n, dtype=torch.double) for n in (3, 4, 4))
    gates = cell.gates(x, (h, c))
    pre = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    rows = pre.split(4, dim=1)  # i, f, g, o blocks of 4 rows each
    torch.testing.assert_close(gates.i, torch.sigmoid(rows[0]), **F64)
    torch.testing.assert_close(gates.f, torch.sigmoid(rows[1]), **F64)
    torch.testing.assert_close(gates.g, torch.tanh(rows[2]), **F64)
    torch.testing.assert_close(gates.o, torch.sigmoid(rows[3]), **F64)
    h1, c1 = cell(x, (h, c))
    torch.testing.assert_close(c1, gates.f * c + gates.i * gates.g, **F64)
    torch.testing.assert_close(h1, gates.o * torch.tanh(c1), **F64)
    assert gates._fields == ("i", "f", "g", "o")


def test_cells_without_bias_match_torch():
    torch.manual_seed(3)
    ref, ours = torch.nn.LSTMCell(3, 2, bias=False), rnn.LSTMCell(3, 2, bias=False)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], **F32)


# --------------------------------------------------------------------------- sequences


def _torch_lstm_and_ours(n_in, H, L, *, bias=True, batch_first=True, dtype=torch.double, seed=0):
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(n_in, H, L, bias=bias, batch_first=batch_first).to(dtype)
    ours = rnn.LSTM(n_in, H, L, bias=bias, batch_first=batch_first).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _compare_lstm(ref, ours, x, state, tol):
    x = x.clone().requires_grad_(True)
    leaves = [x]
    if state is not None:
        state = tuple(s.clone().requires_grad_(True) for s in state)
        leaves += list(state)
    results = []
    for module in (ref, ours):
        out, (h, c) = module(x, state)
        grads = _grads(_loss(out, h, c), leaves + list(module.parameters()))
        results.append([out, h, c, *grads])
    for u, v in zip(*results, strict=True):
        torch.testing.assert_close(v, u, **tol)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [True, False])
def test_lstm_matches_torch_forward_and_gradients(layers, batch_first):
    ref, ours = _torch_lstm_and_ours(4, 3, layers, batch_first=batch_first)
    shape = (2, 7, 4) if batch_first else (7, 2, 4)
    x = torch.randn(shape, dtype=torch.double)
    state = (torch.randn(layers, 2, 3, dtype=torch.double), torch.randn(layers, 2, 3, dtype=torch.double))
    _compare_lstm(ref, ours, x, state, F64)
    _compare_lstm(ref, ours, x, None, F64)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize(("B", "with_state"), [(8, False), (8, True), (1, True)])
def test_lstm_float32_at_benchmark_width_within_1e5(B, with_state, onednn, monkeypatch):
    # float32 on a CPU is the fast path (oneDNN matmuls); with oneDNN switched off, the same
    # code runs on torch's own matmul
    ref, ours = _torch_lstm_and_ours(32, 64, 2, dtype=torch.float32, seed=4)
    g = torch.Generator().manual_seed(B)
    state = tuple(torch.randn(2, B, 64, generator=g) for _ in range(2)) if with_state else None
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
    _compare_lstm(ref, ours, torch.randn(B, 30, 32, generator=g), state, F32)


def test_lstm_layer_passes_gradcheck_with_initial_state():
    g = torch.Generator().manual_seed(12)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.double, requires_grad=True)  # noqa: E731
    inputs = (make(2, 4, 3), make(2, 5), make(2, 5), make(20, 3), make(20, 5), make(20), make(20))

    def layer(xs, h0, c0, *params):
        out, (h, c) = rnn.lstm_layer(xs, h0, c0, params)
        return out, h, c

    assert torch.autograd.gradcheck(layer, inputs)


def test_lstm_backward_twice_with_retain_graph_gives_the_same_gradients():
    _, ours = _torch_lstm_and_ours(6, 8, 2, dtype=torch.float32, seed=13)
    x = torch.randn(3, 9, 6, requires_grad=True)
    out, (h, c) = ours(x)
    loss = _loss(out, h, c)
    leaves = [x, *ours.parameters()]
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = _grads(loss, leaves)
    for u, v in zip(first, second, strict=True):
        assert torch.equal(u, v)  # the backward must not overwrite what it saved


def test_lstm_with_an_empty_batch():
    _, ours = _torch_lstm_and_ours(5, 4, 2, dtype=torch.float32)
    x = torch.randn(0, 3, 5, requires_grad=True)
    out, (h, c) = ours(x)
    assert out.shape == (0, 3, 4) and h.shape == c.shape == (2, 0, 4)
    (out.sum() + c.sum()).backward()
    assert x.grad.shape == x.shape and ours.weight_hh_l0.grad.eq(0).all()


def test_lstm_without_bias_and_state_dict_back_to_torch():
    ref, ours = _torch_lstm_and_ours(3, 5, 2, bias=False)
    _compare_lstm(ref, ours, torch.randn(3, 4, 3, dtype=torch.double), None, F64)
    back = torch.nn.LSTM(3, 5, 2, bias=False, batch_first=True).double()
    back.load_state_dict(ours.state_dict())
    assert [n for n, _ in back.named_parameters()] == [n for n, _ in ours.named_parameters()]


def test_same_seed_gives_torchs_initial_weights():
    torch.manual_seed(5)
    ref = torch.nn.LSTM(3, 4, 2)
    torch.manual_seed(5)
    ours = rnn.LSTM(3, 4, 2)
    for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 4), T=st.integers(1, 6), n_in=st.integers(1, 5), H=st.integers(1, 5),
    L=st.integers(1, 2), seed=st.integers(0, 2**16), with_state=st.booleans(),
)
def test_lstm_property_any_shape_matches_torch(B, T, n_in, H, L, seed, with_state):
    ref, ours = _torch_lstm_and_ours(n_in, H, L, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, n_in, generator=g, dtype=torch.double) * 2
    state = None
    if with_state:
        state = tuple(torch.randn(L, B, H, generator=g, dtype=torch.double) for _ in range(2))
    _compare_lstm(ref, ours, x, state, F64)


@settings(max_examples=20, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 6), n_in=st.integers(1, 4), H=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_readable_lstm_forward_equals_the_hand_written_bptt(B, T, n_in, H, seed):
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.double)  # noqa: E731
    inputs = [make(B, T, n_in), make(B, H), make(B, H), make(4 * H, n_in), make(4 * H, H), make(4 * H), make(4 * H)]
    results = []
    for fn in (rnn.lstm_forward, rnn.lstm_layer):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        out, (h, c) = fn(leaves[0], leaves[1], leaves[2], leaves[3:])
        results.append([out, h, c, *_grads(_loss(out, h, c), leaves)])
    for u, v in zip(*results, strict=True):
        torch.testing.assert_close(v, u, **F64)


def test_lstm_forward_equals_stepping_the_cell():
    torch.manual_seed(6)
    cell = rnn.LSTMCell(3, 4)
    xs = torch.randn(2, 5, 3)
    h = c = torch.zeros(2, 4)
    steps = []
    for t in range(5):
        h, c = cell(xs[:, t], (h, c))
        steps.append(h)
    out, (hT, cT) = rnn.lstm_forward(xs, torch.zeros(2, 4), torch.zeros(2, 4), list(cell.parameters()))
    torch.testing.assert_close(out, torch.stack(steps, 1))
    torch.testing.assert_close((hT, cT), (h, c))


def test_lstm_layer_with_zero_steps_returns_the_initial_state():
    h0, c0 = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    params = [torch.randn(12, 4), torch.randn(12, 3), None, None]
    out, (h, c) = rnn.lstm_layer(torch.randn(2, 0, 4), h0, c0, params)
    assert out.shape == (2, 0, 3)
    torch.testing.assert_close((h, c), (h0, c0))
    gh, gc = torch.autograd.grad((h * 2).sum() + (c * 3).sum(), [h0, c0])
    torch.testing.assert_close(gh, torch.full_like(gh, 2.0))
    torch.testing.assert_close(gc, torch.full_like(gc, 3.0))


@pytest.mark.parametrize("layers", [1, 2])
def test_rnn_matches_torch(layers):
    torch.manual_seed(7)
    ref = torch.nn.RNN(3, 4, layers, batch_first=True).double()
    ours = rnn.RNN(3, 4, layers).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(layers, 2, 4, dtype=torch.double, requires_grad=True)
    results = []
    for module in (ref, ours):
        out, h = module(x, h0)
        results.append([out, h, *_grads(_loss(out, h), [x, h0, *module.parameters()])])
    for u, v in zip(*results, strict=True):
        torch.testing.assert_close(v, u, **F64)


# --------------------------------------------------------------------------- clipping


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4),
    scale=st.floats(1e-3, 1e3), max_norm=st.floats(0.01, 10.0), seed=st.integers(0, 2**16),
)
def test_clip_grad_norm_matches_torch(shapes, scale, max_norm, seed):
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(s, generator=g, dtype=torch.double) * scale for s in shapes]
    params = [torch.zeros(s, dtype=torch.double, requires_grad=True) for s in shapes]
    for p, gr in zip(params, grads, strict=True):
        p.grad = gr.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    ours = rnn.clip_grad_norm(grads, max_norm)
    for p, o in zip(params, ours, strict=True):
        torch.testing.assert_close(o, p.grad, rtol=1e-12, atol=1e-15)
    total = torch.sqrt(sum((o**2).sum() for o in ours))
    assert total <= max_norm * (1 + 1e-9) or torch.allclose(torch.cat([o.flatten() for o in ours]),
                                                          torch.cat([gr.flatten() for gr in grads]))


def test_clip_grad_norm_keeps_direction_and_leaves_small_gradients_alone():
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]  # global norm 5
    clipped = rnn.clip_grad_norm(grads, 1.0)
    torch.testing.assert_close(clipped[0], torch.tensor([0.6, 0.0]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(clipped[1], torch.tensor([[0.8]]), rtol=1e-5, atol=1e-6)
    same = rnn.clip_grad_norm(grads, 10.0)
    assert all(torch.equal(a, b) for a, b in zip(same, grads, strict=True))
    assert rnn.clip_grad_norm([torch.zeros(3)], 1.0)[0].eq(0).all()
    assert rnn.clip_grad_norm([], 1.0) == []


# --------------------------------------------------------------------------- measuring


def test_gradient_norms_through_time_shape_and_vanishing_in_a_plain_rnn():
    torch.manual_seed(8)
    model = rnn.RNN(4, 16)
    x = torch.randn(8, 40, 4)
    norms = rnn.gradient_norms_through_time(model, x)
    assert norms.shape == (40,)
    assert norms[-1] > 0 and norms[0] < 1e-3 * norms[-1]  # 40 steps back: almost nothing left
    # entry t is the batch-mean norm of ∂ sum(h_T) / ∂ x_t
    xr = x.clone().requires_grad_(True)
    out, _ = model(xr)
    (g,) = torch.autograd.grad(out[:, -1].sum(), xr)
    torch.testing.assert_close(norms, g.norm(dim=-1).mean(0))


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    lstm = rnn.LSTM(4, 3, 2)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 6\).*input_size=4"):
        lstm(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        lstm(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"h0 has shape \(1, 2, 3\), expected \(L, B, H\) = \(2, 2, 3\)"):
        lstm(torch.randn(2, 5, 4), (torch.zeros(1, 2, 3), torch.zeros(2, 2, 3)))
    with pytest.raises(ValueError, match=r"c0 has shape"):
        lstm(torch.randn(2, 5, 4), (torch.zeros(2, 2, 3), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match="batch_first=False"):  # x given time first (T=5, B=2)
        lstm(torch.randn(5, 2, 4), (torch.zeros(2, 2, 3), torch.zeros(2, 2, 3)))
    with pytest.raises(ValueError, match="batch_first=True"):
        rnn.LSTM(4, 3, 2, batch_first=False)(torch.randn(2, 5, 4), (torch.zeros(2, 2, 3), torch.zeros(2, 2, 3)))
    with pytest.raises(TypeError, match=r"state must be a tuple \(h0, c0\)"):
        lstm(torch.randn(2, 5, 4), torch.zeros(2, 2, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        lstm([[1.0]])
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        rnn.LSTM(4, 0)


def test_bad_cell_inputs_raise_clear_errors():
    cell = rnn.LSTMCell(4, 3)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5\), expected \(B, 4\)"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"h has shape \(2, 4\), expected \(B, H\) = \(2, 3\)"):
        cell(torch.randn(2, 4), (torch.zeros(2, 4), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match=r"c has shape \(3, 3\)"):
        cell(torch.randn(2, 4), (torch.zeros(2, 3), torch.zeros(3, 3)))
    with pytest.raises(ValueError, match="multiple of 4"):
        rnn.lstm_cell(torch.randn(1, 2), torch.randn(1, 3), torch.randn(1, 3), torch.randn(6, 2), torch.randn(6, 3))
    with pytest.raises(ValueError, match=r"weight_hh has shape \(12, 4\)"):
        rnn.lstm_cell(torch.randn(1, 2), torch.randn(1, 3), torch.randn(1, 3), torch.randn(12, 2), torch.randn(12, 4))
    with pytest.raises(ValueError, match="params must be"):
        rnn.lstm_forward(torch.randn(1, 2, 2), torch.zeros(1, 3), torch.zeros(1, 3), [torch.randn(12, 2)])
    with pytest.raises(ValueError, match=r"xs has shape \(2, 2\), expected \(B, T, I\)"):
        rnn.lstm_forward(torch.randn(2, 2), torch.zeros(2, 3), torch.zeros(2, 3), [torch.randn(12, 2), torch.randn(12, 3)])
    with pytest.raises(ValueError, match="max_norm must be a positive number"):
        rnn.clip_grad_norm([torch.ones(2)], 0)
    with pytest.raises(TypeError, match=r"grads\[1\] must be a torch.Tensor"):
        rnn.clip_grad_norm([torch.ones(2), 3.0], 1.0)


# --------------------------------------------------------------------------- memory task, tracing, LM


def test_recall_task_layout():
    x, y = rnn.recall_task(5, 7, torch.Generator().manual_seed(0))
    assert x.shape == (5, 9, 3) and y.shape == (5,) and y.dtype == torch.long
    assert torch.equal(y, (x[:, 0, 0] > 0).long())
    assert x[:, 0, 1].eq(1).all() and x[:, 1:, 1].eq(0).all()  # marker only at step 0
    assert x[:, -1, 2].eq(1).all() and x[:, :-1, 2].eq(0).all()  # query only at the end
    assert x[:, :-1, 0].abs().eq(1).all() and x[:, -1, 0].eq(0).all()
    with pytest.raises(ValueError, match="gap must be a non-negative int"):
        rnn.recall_task(2, -1)


def test_lstm_learns_a_short_recall_quickly():
    torch.manual_seed(0)
    model = rnn.RecallNet("lstm", hidden_size=16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add waiting on a busy machine
    try:
        acc = rnn.train_recall(model, gap=3, steps=120, batch_size=32, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(acc) == 120 and sum(acc[-10:]) / 10 > 0.9
    with pytest.raises(ValueError, match="kind must be"):
        rnn.RecallNet("gru")


def test_trace_gates_reproduces_the_layer_output():
    torch.manual_seed(9)
    lstm = rnn.LSTM(3, 4, num_layers=2)
    x = torch.randn(1, 6, 3)
    out, (h, c) = lstm(x)
    trace = rnn.trace_gates(lstm, x, layer=1)
    assert set(trace) == set("ifgoch") and all(v.shape == (6, 4) for v in trace.values())
    torch.testing.assert_close(trace["h"], out[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trace["c"][-1], c[1, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trace["c"][1:], trace["f"][1:] * trace["c"][:-1] + trace["i"][1:] * trace["g"][1:])
    with pytest.raises(ValueError, match="trace one sequence"):
        rnn.trace_gates(lstm, torch.randn(2, 6, 3))


def test_language_model_shapes_loss_and_generation():
    torch.manual_seed(10)
    model = rnn.LSTMLanguageModel(rnn.LSTMLMConfig(vocab_size=11, hidden_size=8, block_size=5))
    ids = torch.randint(0, 11, (3, 5))
    logits, loss = model(ids, ids)
    assert logits.shape == (3, 5, 11)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.reshape(-1, 11), ids.reshape(-1)))
    assert model(ids)[1] is None
    out = model.generate(ids[:, :2], 4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 6) and torch.equal(out[:, :2], ids[:, :2])
    # one step at a time with the carried state equals running the whole sequence
    full, _ = model.step(ids)
    state, steps = None, []
    for t in range(5):
        step_logits, state = model.step(ids[:, t:t + 1], state)
        steps.append(step_logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-6)


def test_figures_and_explorer_render():
    import matplotlib.pyplot as plt

    from lmlab import viz, widgets

    torch.manual_seed(11)
    lstm = rnn.LSTM(3, 4)
    x, _ = rnn.recall_task(1, 2)
    trace = {k: v.numpy() for k, v in rnn.trace_gates(lstm, x).items()}
    figs = [viz.unrolled_figure(3), viz.unrolled_figure(2, cell="LSTM"),
            viz.gradient_norms_plot({"a": [1e-3, 1e-1, 1.0]}),
            viz.accuracy_curves({"a": [0.5] * 20}, smooth=5),
            viz.cell_trace_plot({"a": [0.0, 1.0]}), viz.timing_bars({"a": 0.01, "b": 0.02}),
            viz.gate_frame(trace, 1)]
    for fig in figs:
        assert fig.axes
        plt.close(fig)
    box = widgets.lstm_gate_explorer(lstm, x, labels=["a", "b", "c", "d"], dpi=30)
    assert box.frames == 4 and "lmlab-explorer" in box._dom_classes
    frames = box.children[-1].children
    pngs = [f.value for f in frames]
    assert all(a != b for a, b in zip(pngs, pngs[1:], strict=False))  # every frame differs from the next
    with pytest.raises(ValueError, match="labels has 2 entries"):
        widgets.lstm_gate_explorer(lstm, x, labels=["a", "b"])
    with pytest.raises(TypeError, match="lmlab.rnn.LSTM"):
        widgets.lstm_gate_explorer(torch.nn.LSTM(3, 4), x)


def test_empty_sequences_give_empty_outputs_and_the_initial_state():
    """T = 0 (found by mutation testing: no test ran a sequence of length zero)."""
    B, I, H = 3, 4, 5
    xs = torch.randn(B, 0, I)
    h0, c0 = torch.randn(B, H), torch.randn(B, H)
    lstm_params = (torch.randn(4 * H, I), torch.randn(4 * H, H), torch.randn(4 * H), torch.randn(4 * H))
    out, (h, c) = rnn.lstm_forward(xs, h0, c0, lstm_params)
    assert out.shape == (B, 0, H) and out.dtype == xs.dtype
    assert torch.equal(h, h0) and torch.equal(c, c0)
    rnn_params = (torch.randn(H, I), torch.randn(H, H), torch.randn(H), torch.randn(H))
    out, h = rnn.rnn_forward(xs, h0, rnn_params)
    assert out.shape == (B, 0, H) and torch.equal(h, h0)


# --------------------------------------------------------------------------- found by mutation testing


def test_one_bias_of_two_is_used_alone():
    """params with only bias_ih or only bias_hh: the missing one counts as zero."""
    g = torch.Generator().manual_seed(20)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.double)  # noqa: E731
    xs, h0, c0 = make(2, 3, 4), make(2, 5), make(2, 5)
    w_ih, w_hh, b = make(20, 4), make(20, 5), make(20)
    zero = torch.zeros(20, dtype=torch.double)
    for fn in (rnn.lstm_forward, rnn.lstm_layer):
        full = fn(xs, h0, c0, (w_ih, w_hh, b, zero))
        for params in ((w_ih, w_hh, b, None), (w_ih, w_hh, None, b)):
            torch.testing.assert_close(fn(xs, h0, c0, params), full, **F64)
        torch.testing.assert_close(fn(xs, h0, c0, (w_ih, w_hh, None, None)),
                                   fn(xs, h0, c0, (w_ih, w_hh, zero, zero)), **F64)


@pytest.mark.parametrize("layers", [1, 2])
def test_relu_rnn_forward_matches_torch(layers):
    """rnn_forward(nonlinearity="relu") is torch.nn.RNN(nonlinearity="relu"), layer by layer."""
    torch.manual_seed(21)
    ref = torch.nn.RNN(3, 4, layers, nonlinearity="relu", batch_first=True).double()
    x = torch.randn(2, 6, 3, dtype=torch.double)
    h0 = torch.randn(layers, 2, 4, dtype=torch.double)
    expected, h_n = ref(x, h0)
    out, finals = x, []
    for layer in range(layers):
        params = [getattr(ref, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        out, h = rnn.rnn_forward(out, h0[layer], params, nonlinearity="relu")
        finals.append(h)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(torch.stack(finals), h_n, **F64)
    assert (out >= 0).all()
    with pytest.raises(ValueError, match="nonlinearity"):
        rnn.rnn_forward(x, h0[0], params, nonlinearity="sigmoid")


def test_lstm_cell_gates_default_to_the_zero_state():
    """LSTMCell.gates(x) without a state uses h = 0, like forward."""
    torch.manual_seed(22)
    cell = rnn.LSTMCell(3, 4).double()
    x = torch.randn(2, 3, dtype=torch.double)
    zeros = torch.zeros(2, 4, dtype=torch.double)
    for a, b in zip(cell.gates(x), cell.gates(x, (zeros, zeros)), strict=True):
        torch.testing.assert_close(a, b, **F64)


def test_module_defaults_match_torch():
    """LSTM/RNN default to one layer with biases, batch first; parameter names as torch's."""
    for ours, ref in ((rnn.LSTM(3, 4), torch.nn.LSTM(3, 4)), (rnn.RNN(3, 4), torch.nn.RNN(3, 4))):
        assert ours.num_layers == 1 and ours.bias and ours.batch_first
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]


def test_sizes_must_be_positive_ints():
    """Every size argument is checked, bools and floats rejected, with its name in the error."""
    cases = [
        ("input_size", lambda: rnn.LSTMCell(0, 3)),
        ("hidden_size", lambda: rnn.RNNCell(3, 0)),
        ("input_size", lambda: rnn.LSTM(0, 3)),
        ("hidden_size", lambda: rnn.LSTM(3, True)),
        ("hidden_size", lambda: rnn.RNN(3, 2.0)),
        ("num_layers", lambda: rnn.LSTM(3, 4, num_layers=0)),
        ("vocab_size", lambda: rnn.LSTMLanguageModel(rnn.LSTMLMConfig(vocab_size=0))),
        ("hidden_size", lambda: rnn.LSTMLanguageModel(rnn.LSTMLMConfig(5, hidden_size=0))),
        ("num_layers", lambda: rnn.LSTMLanguageModel(rnn.LSTMLMConfig(5, num_layers=0))),
        ("block_size", lambda: rnn.LSTMLanguageModel(rnn.LSTMLMConfig(5, block_size=0))),
    ]
    for name, make in cases:
        with pytest.raises(ValueError, match=name):
            make()


def test_more_bad_inputs_name_the_argument_and_the_expected_shape():
    """Each check names the offending argument and says what shape it should have."""
    x, h, c = torch.randn(2, 4), torch.zeros(2, 3), torch.zeros(2, 3)
    w_ih, w_hh = torch.randn(12, 4), torch.randn(12, 3)
    with pytest.raises(ValueError, match=r"weight_ih has shape \(12,\)"):
        rnn.lstm_cell(x, h, c, torch.randn(12), w_hh)
    with pytest.raises(ValueError, match=r"weight_ih has shape list"):
        rnn.lstm_cell(x, h, c, [[1.0]], w_hh)
    with pytest.raises(ValueError, match=r"weight_hh has shape \(12, 4\), expected \(12, 3\)"):
        rnn.lstm_cell(x, h, c, w_ih, torch.randn(12, 4))
    with pytest.raises(ValueError, match=r"^x has shape \(2, 5\), expected \(B, 4\)"):
        rnn.lstm_cell(torch.randn(2, 5), h, c, w_ih, w_hh)
    with pytest.raises(ValueError, match=r"^c has shape \(3, 3\), expected \(B, H\) = \(2, 3\)"):
        rnn.lstm_cell(x, h, torch.zeros(3, 3), w_ih, w_hh)
    with pytest.raises(ValueError, match=r"^c0 has shape \(2, 4\), expected \(B, H\) = \(2, 3\)"):
        rnn.lstm_forward(torch.randn(2, 5, 4), h, torch.zeros(2, 4), (w_ih, w_hh))
    with pytest.raises(ValueError, match=r"^x has shape \(8, 4\), expected \(B, T, I\)"):
        rnn.gradient_norms_through_time(rnn.RNN(4, 3), torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"^h0 has shape \(2, 2, 3\)"):
        rnn.RNN(4, 3)(torch.randn(2, 5, 4), torch.zeros(2, 2, 3))
    with pytest.raises(TypeError, match="state"):
        rnn.LSTMCell(4, 3)(x, (h, c, c))
    with pytest.raises(ValueError, match=r"^ids has shape \(1, 2, 3\)"):
        rnn.LSTMLanguageModel(rnn.LSTMLMConfig(5, hidden_size=4)).step(torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^ids has shape list"):
        rnn.LSTMLanguageModel(rnn.LSTMLMConfig(5, hidden_size=4)).step([[1, 2]])
    for bad in (True, "1.0"):
        with pytest.raises(ValueError, match="max_norm"):
            rnn.clip_grad_norm([torch.ones(2)], bad)


def test_layout_errors_name_the_layout_of_the_module():
    """Errors for x give (B, T, I) for a batch-first module and (T, B, I) otherwise."""
    for batch_first, layout in ((True, r"\(B, T, I\)"), (False, r"\(T, B, I\)")):
        lstm = rnn.LSTM(4, 3, batch_first=batch_first)
        with pytest.raises(ValueError, match=layout):
            lstm(torch.randn(5, 4))
        with pytest.raises(TypeError, match=layout):
            lstm("x")


def test_time_first_hint_only_when_it_applies():
    """The 'x looks time-first' hint appears exactly when h0's batch size matches x's dim 1."""
    lstm = rnn.LSTM(4, 3, 2)  # B = 3 = H below, so h0's last dim equals the batch size
    zeros = torch.zeros(2, 3, 3)
    with pytest.raises(ValueError, match="batch_first=False"):
        lstm(torch.randn(3, 5, 4), (torch.zeros(2, 5, 3), zeros))
    for h0 in (torch.zeros(2, 4, 3), torch.zeros(5, 5), torch.zeros(2, 3, 4)):
        with pytest.raises(ValueError, match=r"h0 has shape") as info:
            lstm(torch.randn(3, 5, 4), (h0, zeros))
        assert str(info.value).endswith("= (2, 3, 3)")


def test_recall_task_gap_boundaries_and_generator():
    """gap = 0 is allowed (T = 2), bools and floats are not; the generator drives the bits."""
    x, y = rnn.recall_task(4, 0)
    assert x.shape == (4, 2, 3) and y.shape == (4,)
    for bad in (True, 1.5):
        with pytest.raises(ValueError, match="gap"):
            rnn.recall_task(2, bad)
    a = rnn.recall_task(64, 3, torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    b = rnn.recall_task(64, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert 0 < a[1].sum() < 64  # both answers occur
    assert (a[0][:, :-1, 0] == -1).any() and (a[0][:, :-1, 0] == 1).any()


def test_recall_net_layout_and_forget_bias():
    """RecallNet: the chosen layer on 3 channels, a 2-way head on the last output, and
    forget_bias added to the forget gate's block of bias_hh only."""
    torch.manual_seed(23)
    ref = rnn.LSTM(3, 32)
    torch.manual_seed(23)
    net = rnn.RecallNet()  # defaults: an LSTM of 32 units, forget_bias 2.0
    assert net.kind == "lstm" and isinstance(net.recurrent, rnn.LSTM)
    expected = ref.bias_hh_l0.detach().clone()
    expected[32:64] += 2.0
    torch.testing.assert_close(net.recurrent.bias_hh_l0.detach(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(net.recurrent.bias_ih_l0, ref.bias_ih_l0, rtol=0, atol=0)
    plain = rnn.RecallNet("rnn", hidden_size=6)
    assert plain.kind == "rnn" and type(plain.recurrent) is rnn.RNN
    assert (plain.recurrent.input_size, plain.recurrent.hidden_size) == (3, 6)
    x, _ = rnn.recall_task(5, 4)
    for model in (net, plain):
        logits = model(x)
        assert logits.shape == (5, 2)
        torch.testing.assert_close(logits, model.head(model.recurrent(x)[0][:, -1]))


def test_train_recall_is_adam_with_clipping_on_seeded_batches():
    """train_recall's defaults: Adam lr 1e-2, global clipping at 1.0, batches of 64 from
    Generator(seed 0); accuracy is measured before each update."""
    torch.manual_seed(24)
    model = rnn.RecallNet("lstm", hidden_size=4)
    with torch.no_grad():
        model.head.weight.mul_(10)  # gradient norms around 1: some steps clipped, some not
    ref = rnn.RecallNet("lstm", hidden_size=4)
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    expected, norms = [], []
    for _ in range(4):
        x, y = rnn.recall_task(64, 2, g)
        logits = ref(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)))
        opt.step()
        expected.append(float((logits.argmax(-1) == y).float().mean()))
    assert any(1.0 < n < 2.0 for n in norms) and any(n < 1.0 for n in norms)
    acc = rnn.train_recall(model, 2, steps=4, progress=False)
    assert acc == pytest.approx(expected, abs=1e-6)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_train_recall_default_length_and_progress_bar(capsys):
    """300 steps by default; a bar named after the model and gap unless progress=False,
    removed when training ends."""
    torch.manual_seed(25)
    model = rnn.RecallNet("rnn", hidden_size=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        acc = rnn.train_recall(model, 0, batch_size=4)
        err = capsys.readouterr().err
        assert len(acc) == 300 and "rnn, gap 0" in err and not err.endswith("\n")
        rnn.train_recall(model, 0, steps=2, batch_size=4, progress=False)
        assert capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(threads)


def test_trace_gates_input_forms_and_layer_bound():
    """A (T, I) input is one sequence; a time-first LSTM traces the same as a batch-first
    copy (x is batch first either way); layer must be below num_layers."""
    torch.manual_seed(26)
    lstm = rnn.LSTM(3, 4, num_layers=2)
    x = torch.randn(1, 6, 3)
    trace = rnn.trace_gates(lstm, x, layer=1)
    for k, v in rnn.trace_gates(lstm, x[0], layer=1).items():
        torch.testing.assert_close(v, trace[k], rtol=0, atol=0)
    time_first = rnn.LSTM(3, 4, num_layers=2, batch_first=False)
    time_first.load_state_dict(lstm.state_dict())
    for k, v in rnn.trace_gates(time_first, x, layer=1).items():
        torch.testing.assert_close(v, trace[k], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="layer"):
        rnn.trace_gates(lstm, x, layer=2)


def test_language_model_keeps_its_config_and_layers():
    """LSTMLanguageModel stores its config and builds config.num_layers LSTM layers."""
    config = rnn.LSTMLMConfig(vocab_size=7, hidden_size=4, num_layers=2)
    model = rnn.LSTMLanguageModel(config)
    assert model.config is config and model.lstm.num_layers == 2
    assert hasattr(model.lstm, "weight_ih_l1")
