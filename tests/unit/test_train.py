"""lmlab.train: the loop learns, accumulates, evaluates, checkpoints and resumes bit-identically."""

from __future__ import annotations

import math
import os
import signal
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lmlab.data
from lmlab import train as T
from lmlab.data import get_batch
from lmlab.optim import SGD
from lmlab.transformer import GPT, GPTConfig


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add noise on a shared machine
    yield
    torch.set_num_threads(before)


def tiny_gpt(dropout: float = 0.0, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=dropout))


class Bigram(nn.Module):
    """A model that is not lmlab's GPT: a next-token table with the same interface."""

    def __init__(self, vocab: int = 11, block_size: int = 8) -> None:
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size)
        self.table = nn.Embedding(vocab, vocab)
        self.drop = nn.Dropout(0.3)

    def forward(self, idx, targets=None):
        logits = self.drop(self.table(idx))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def pattern(n: int = 600) -> torch.Tensor:
    return torch.arange(n) % 11  # 0 1 2 ... 10 0 1 ...: perfectly predictable


def test_loss_goes_down_and_history_is_complete():
    model = Bigram()
    h = T.train(model, pattern(), steps=60, batch_size=8, lr=0.1, val_data=pattern(200),
                eval_every=20, progress=False)
    assert h.step == list(range(1, 61))
    assert len(h.loss) == len(h.lr) == len(h.grad_norm) == len(h.tokens_per_s) == 60
    assert h.val_step == [20, 40, 60]
    assert h.loss[-1] < 0.5 * h.loss[0]
    assert h.val_loss[-1] < h.val_loss[0]
    assert not h.interrupted


def test_schedule_and_clipping_recorded():
    h = T.train(tiny_gpt(), pattern(), steps=20, batch_size=4, lr=1e-2, warmup=5, lr_min=1e-3,
                clip=1e-3, progress=False)
    assert h.lr[0] == pytest.approx(2e-3) and h.lr[4] == pytest.approx(1e-2)
    assert h.lr[-1] < 2e-3
    assert all(n > 1e-3 for n in h.grad_norm)  # recorded before clipping


def test_grad_accum_equals_one_big_step():
    """grad_accum=2 of batch 4: the gradient is the mean of the two micro-batch losses' gradients."""
    lr = 0.5
    model = tiny_gpt()
    manual = tiny_gpt()
    opt = SGD(model.parameters(), lr=lr)
    T.train(model, pattern(), steps=1, batch_size=4, grad_accum=2, lr=lr, optimizer=opt,
            schedule="constant", clip=None, progress=False, seed=7)
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    batches = [get_batch(pattern(), 8, 4, generator=g) for _ in range(2)]
    loss = sum(manual(x, y)[1] for x, y in batches) / 2
    loss.backward()
    with torch.no_grad():
        for p in manual.parameters():
            p -= lr * p.grad
    for a, b in zip(model.parameters(), manual.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_evaluate_matches_manual_cross_entropy():
    model = tiny_gpt()
    data = torch.randint(0, 11, (100,), generator=torch.Generator().manual_seed(1))
    loss, ppl = T.evaluate(model, data, batch_size=3, max_batches=None)
    windows = (100 - 1) // 8
    x = data[: windows * 8].view(windows, 8)
    y = data[1 : windows * 8 + 1].view(windows, 8)
    logits, _ = model(x)
    expected = F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert ppl == pytest.approx(torch.exp(torch.tensor(expected)).item(), rel=1e-5)
    assert model.training  # evaluate restores the mode it found


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


KW = dict(batch_size=4, lr=3e-3, warmup=2, progress=False, seed=3)


def test_resume_is_bit_identical(tmp_path):
    data, val = pattern(), pattern(100)
    full = tiny_gpt(dropout=0.2)
    h_full = T.train(full, data, steps=8, val_data=val, eval_every=2, **KW)

    ck = tmp_path / "run.pt"
    half = tiny_gpt(dropout=0.2)
    T.train(half, data, steps=8, val_data=val, eval_every=2, checkpoint=ck, **KW)  # writes at 8
    resumed = tiny_gpt(dropout=0.2, seed=99)  # different init: everything must come from the file
    first = tiny_gpt(dropout=0.2)
    # a run stopped at step 4 (its checkpoint), then continued in a new model
    ck2 = tmp_path / "half.pt"
    with pytest.warns(UserWarning, match="interrupted after step 4"):
        T.train(first, data, steps=8, val_data=val, eval_every=2, checkpoint=ck2,
                callback=_stop_at(4), **KW)
    assert T.load_checkpoint(ck2)["step"] == 4
    torch.manual_seed(1234)  # scramble the global RNG: resume must restore it
    h_res = T.train(resumed, data, steps=8, val_data=val, eval_every=2, checkpoint=ck2,
                    resume=True, **KW)
    _assert_identical(_params(full), _params(resumed))
    _assert_identical(_params(full), _params(half))
    assert h_res.loss == h_full.loss and h_res.val_loss == h_full.val_loss
    assert h_res.step == list(range(1, 9))


def _stop_at(step):
    def callback(history):
        if history.step[-1] == step:
            raise KeyboardInterrupt  # as if Ctrl-C arrived inside the callback
    return callback


def test_ctrl_c_signal_writes_checkpoint_and_returns(tmp_path):
    if os.name != "posix":
        pytest.skip("needs SIGINT")
    ck = tmp_path / "ctrl_c.pt"

    def press_ctrl_c(history):
        if history.step[-1] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # deferred to the end of the step

    model = tiny_gpt(dropout=0.1)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup, Python's handler otherwise
    with pytest.warns(UserWarning, match="interrupted after step 3"):
        h = T.train(model, pattern(), steps=10, val_data=pattern(100), eval_every=1,
                    checkpoint=ck, callback=press_ctrl_c, **KW)
    assert h.interrupted and h.step[-1] == 3
    assert T.load_checkpoint(ck)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    resumed = tiny_gpt(dropout=0.1, seed=5)
    T.train(resumed, pattern(), steps=10, val_data=pattern(100), eval_every=1, checkpoint=ck,
            resume=True, **KW)
    full = tiny_gpt(dropout=0.1)
    T.train(full, pattern(), steps=10, val_data=pattern(100), eval_every=1, **KW)
    _assert_identical(_params(full), _params(resumed))


def test_interrupt_before_update_replays_the_step(tmp_path, monkeypatch):
    """Ctrl-C in the middle of forward/backward: the step is dropped and replayed on resume."""
    ck = tmp_path / "mid.pt"
    calls = {"n": 0}
    real = T._forward_backward

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "_forward_backward", flaky)
    with pytest.warns(UserWarning, match="after step 3"):
        T.train(tiny_gpt(dropout=0.1), pattern(), steps=6, checkpoint=ck, **KW)
    monkeypatch.setattr(T, "_forward_backward", real)
    resumed = tiny_gpt(dropout=0.1, seed=5)
    T.train(resumed, pattern(), steps=6, checkpoint=ck, resume=True, **KW)
    full = tiny_gpt(dropout=0.1)
    T.train(full, pattern(), steps=6, **KW)
    _assert_identical(_params(full), _params(resumed))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    T.save_checkpoint(path, {"step": 1})

    def broken_save(obj, f):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert T.load_checkpoint(path)["step"] == 1  # the old checkpoint survived intact
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind


def test_bf16_without_native_support_warns(monkeypatch):
    monkeypatch.setattr(T, "native_bf16", lambda device="cpu": False)
    with pytest.warns(RuntimeWarning, match="without native bf16"):
        h = T.train(tiny_gpt(), pattern(), steps=2, precision="bf16", **KW)
    assert len(h.loss) == 2


def test_bf16_with_native_support_is_quiet(monkeypatch):
    monkeypatch.setattr(T, "native_bf16", lambda device="cpu": True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = T.train(tiny_gpt(), pattern(), steps=3, precision="bf16", **KW)
    assert all(torch.isfinite(torch.tensor(h.loss)))


@pytest.mark.parametrize("precision, rtol", [("bf16", 1e-3), ("fp16", 2e-4)])
def test_low_precision_follows_the_fp32_run(precision, rtol):
    """Autocast changes rounding, not the maths: the same seeded run in bf16 or fp16 tracks
    fp32 and learns (measured after 40 steps: +5.8e-4 relative for bf16, +8.4e-5 for
    fp16; the loss and the weights stay in fp32, only the matmuls round), yet it is not
    the fp32 run (the precision argument does something)."""
    kw = {**KW, "lr": 1e-2}
    ref = T.train(tiny_gpt(), pattern(), steps=40, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no native bf16 / fp16 on CPU
        low = T.train(tiny_gpt(), pattern(), steps=40, precision=precision, **kw)
    assert low.loss != ref.loss
    assert low.loss[0] == pytest.approx(ref.loss[0], rel=rtol)
    assert low.loss[-1] == pytest.approx(ref.loss[-1], rel=5 * rtol)
    assert low.loss[-1] < 0.8 * low.loss[0], "the low-precision run did not learn"


def test_native_bf16_reads_cpu_flags(monkeypatch):
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"avx2", "fma"})
    assert T.native_bf16("cpu") is False
    monkeypatch.setattr(T, "_cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert T.native_bf16("cpu") is True


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(data=[1, 2, 3]), TypeError, "data must be a 1-D LongTensor"),
        (dict(data=torch.zeros(5, dtype=torch.long)), ValueError, "block_size is 8"),
        (dict(data=torch.zeros(2, 50, dtype=torch.long)), ValueError, "1-D"),
        (dict(data=torch.zeros(50)), TypeError, "integer token ids"),
        (dict(precision="fp8"), ValueError, "precision must be one of"),
        (dict(steps=0), ValueError, "steps must be a positive int"),
        (dict(schedule="linear"), ValueError, "schedule must be"),
        (dict(optimizer="lion"), ValueError, "optimizer must be"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(data=pattern(), steps=2, batch_size=2, lr=1e-3, progress=False)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        T.train(tiny_gpt(), **args)


def test_model_without_block_size():
    with pytest.raises(TypeError, match="config.block_size"):
        T.train(nn.Linear(2, 2), pattern(), steps=1, batch_size=2, lr=1e-3, progress=False)


def test_history_plot_and_round_trip():
    h = T.train(Bigram(), pattern(), steps=30, batch_size=4, lr=0.1, val_data=pattern(100),
                eval_every=10, progress=False)
    fig = h.plot(smooth=5)
    (ax,) = fig.axes
    raw, smooth, val = ax.get_lines()
    assert list(raw.get_xdata()) == h.step and list(raw.get_ydata()) == h.loss
    assert list(val.get_xdata()) == h.val_step and list(val.get_ydata()) == h.val_loss
    # the solid line is the moving average of the last 5 steps (fewer at the start)
    expected = [sum(h.loss[max(0, i - 4):i + 1]) / len(h.loss[max(0, i - 4):i + 1])
                for i in range(len(h.loss))]
    assert smooth.get_ydata() == pytest.approx(expected, rel=1e-12)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train (avg of 5)", "validation"]
    assert ax.get_xlabel() == "step" and "cross-entropy" in ax.get_ylabel()
    assert T.History.from_dict(h.as_dict()) == h


def test_small_char_gpt_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_CACHE", str(tmp_path))
    text = "def f(x):\n    return x + 1\n" * 200
    monkeypatch.setattr(lmlab.data, "load_corpus", lambda name="pydoc": text)
    monkeypatch.setitem(T.SMALL_CHAR_GPT, "n_layer", 1)
    monkeypatch.setitem(T.SMALL_CHAR_GPT, "n_embd", 16)
    monkeypatch.setitem(T.SMALL_CHAR_GPT, "block_size", 16)
    model, tok, tr, va = T.small_char_gpt(steps=3)
    files = list((tmp_path / "small_char_gpt").glob("*.pt"))
    assert len(files) == 1
    again, tok2, _, _, history = T.small_char_gpt(steps=3, return_history=True)
    _assert_identical(_params(model), _params(again))
    assert history.step == [1, 2, 3] and len(history.val_loss) == 3
    assert tok.decode(tr[:10].tolist()) == text[:10]
    assert len(tr) + len(va) == len(text)
    assert not again.training
    T.small_char_gpt(steps=4)  # other hyper-parameters: another file
    assert len(list((tmp_path / "small_char_gpt").glob("*.pt"))) == 2


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 16), v=st.integers(2, 40),
       scale=st.sampled_from([0.1, 1.0, 10.0, 1e3, 1e4]))
def test_cross_entropy_matches_torch(seed, n, v, scale):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g) * scale
    targets = torch.randint(0, v, (n,), generator=g)
    ours = T.cross_entropy(logits, targets)
    theirs = F.cross_entropy(logits, targets)
    assert torch.isfinite(ours)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_cross_entropy_gradient_matches_torch():
    logits = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 6, 3, 3, 1])
    (g1,) = torch.autograd.grad(T.cross_entropy(logits, targets), logits)
    (g2,) = torch.autograd.grad(F.cross_entropy(logits, targets), logits)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_cross_entropy_bad_shapes():
    with pytest.raises(ValueError, match=r"logits must be \(N, V\)"):
        T.cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))


def test_fp16_on_cpu_warns_and_trains():
    with pytest.warns(RuntimeWarning, match="fp16"):
        h = T.train(tiny_gpt(), pattern(), steps=4, precision="fp16", **KW)
    assert all(math.isfinite(x) for x in h.loss)


def test_resume_beyond_steps_is_refused(tmp_path):
    ck = tmp_path / "ck.pt"
    T.train(tiny_gpt(), pattern(), steps=4, checkpoint=ck, **KW)
    with pytest.raises(ValueError, match="beyond steps=2"):
        T.train(tiny_gpt(), pattern(), steps=2, checkpoint=ck, resume=True, **KW)
