"""Cheat submissions the checks must refuse (issue 17, items 2 and 6).

Each test writes a cheat the way a student would in a notebook cell (code run as
``__main__``) and calls the check from that notebook too. What cannot be stopped inside a
kernel the student controls is listed in ``NOT_STOPPED`` and written up for instructors
(grading appendix).
"""

from __future__ import annotations

import textwrap

import pytest
import torch

import lmlab.checks as checks

# Cheats that remain possible in the student's own kernel (documented for instructors).
NOT_STOPPED = [
    "replacing lmlab.checks.check_<part> (or the chapter module's) before the test cell runs",
    "an IPython input transformer that rewrites or empties later (test) cells",
    "killing or replacing the kernel process (os.kill, os.execv) to end grading",
    "reading solutions/ or lmlab's source and copying the reference's body (plagiarism)",
    "calling a catalogued helper inside lmlab.checks that happens to compute the answer",
]


def notebook(source: str) -> dict:
    """Run ``source`` as a notebook cell would: in a namespace called ``__main__``."""
    namespace = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)  # noqa: S102 - the point of the test
    return namespace


def grade(namespace: dict, check_name: str, fn_name: str) -> str:
    """Call the check from the notebook; return its failure message ('' if it passed)."""
    namespace["_check"] = getattr(checks, check_name)
    try:
        exec(f"_check({fn_name})", namespace)  # noqa: S102
    except AssertionError as err:
        return str(err)
    return ""


ATTENTION_ROUTES = {
    "bound to the reference": """
        from lmlab.attention import scaled_dot_product_attention as attention
    """,
    "closure": """
        def _make():
            from lmlab.attention import scaled_dot_product_attention as ref
            def attention(q, k, v, mask=None):
                return ref(q, k, v, mask)
            return attention
        attention = _make()
    """,
    "default argument": """
        from lmlab.attention import scaled_dot_product_attention as _ref
        def attention(q, k, v, mask=None, _f=_ref):
            return _f(q, k, v, mask)
        del _ref
    """,
    "getattr + importlib at call time": """
        import importlib
        def attention(q, k, v, mask=None):
            module = importlib.import_module("lmlab." + "attention")
            return getattr(module, "scaled_dot_product_" + "attention")(q, k, v, mask)
    """,
    "module under another name": """
        import lmlab.attention as helpers
        def attention(q, k, v, mask=None):
            return helpers.scaled_dot_product_attention(q, k, v, mask)
    """,
    "stored in a container": """
        import lmlab.attention
        TOOLS = {"attend": [lmlab.attention.scaled_dot_product_attention]}
        def attention(q, k, v, mask=None):
            return TOOLS["attend"][0](q, k, v, mask)
    """,
    "functools.partial": """
        import functools
        from lmlab.attention import scaled_dot_product_attention
        attention = functools.partial(scaled_dot_product_attention)
    """,
    "PARTS[...].reference": """
        from lmlab.checks import PARTS
        def attention(q, k, v, mask=None):
            return PARTS["attention"].reference(q, k, v, mask)
    """,
    "another lmlab function (flash_attention)": """
        from lmlab.attention import flash_attention
        def attention(q, k, v, mask=None):
            return flash_attention(q, k, v, mask)
    """,
    "torch.nn.functional.scaled_dot_product_attention": """
        import torch.nn.functional as F
        def attention(q, k, v, mask=None):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    """,
    "torch._C._nn.scaled_dot_product_attention": """
        import torch
        def attention(q, k, v, mask=None):
            return torch._C._nn.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    """,
}


@pytest.mark.parametrize("route", list(ATTENTION_ROUTES))
def test_attention_delegation_is_refused_by_every_route(route):
    message = grade(notebook(ATTENTION_ROUTES[route]), "check_attention", "attention")
    assert "write yourself" in message, f"{route}: {message or 'passed'}"


def test_lmlab_module_doing_the_job_is_refused():
    ns = notebook("""
        import torch
        from lmlab.attention import MultiHeadAttention
        def multi_head_attention(x, W_q, W_k, W_v, W_o, n_heads, mask=None):
            layer = MultiHeadAttention(x.shape[-1], n_heads)
            return layer(x)
    """)
    assert "write yourself" in grade(ns, "check_multi_head_attention", "multi_head_attention")


BUILTINS = {
    "nn.LSTMCell via torch.nn.modules.rnn": ("check_lstm_cell", "lstm_cell", """
        import torch
        from torch.nn.modules.rnn import LSTMCell
        def lstm_cell(x, h, c, W_ih, W_hh, b_ih, b_hh):
            cell = LSTMCell(x.shape[-1], h.shape[-1])
            return cell(x, (h, c))
    """, "torch.nn.LSTMCell"),
    "torch._VF.lstm_cell": ("check_lstm_cell", "lstm_cell", """
        import torch
        def lstm_cell(x, h, c, W_ih, W_hh, b_ih, b_hh):
            return tuple(torch._VF.lstm_cell(x, (h, c), W_ih, W_hh, b_ih, b_hh))
    """, "torch._VF.lstm_cell"),
    "nn.CrossEntropyLoss": ("check_cross_entropy", "cross_entropy", """
        import torch
        def cross_entropy(logits, targets):
            return torch.nn.CrossEntropyLoss()(logits, targets)
    """, "torch.nn.CrossEntropyLoss"),
    "torch._C._nn.cross_entropy_loss": ("check_cross_entropy", "cross_entropy", """
        import torch
        def cross_entropy(logits, targets):
            return torch._C._nn.cross_entropy_loss(logits, targets)
    """, "cross_entropy_loss"),
    "torch.optim.adamw.AdamW": ("check_adamw_step", "adamw_step", """
        import torch
        from torch.optim.adamw import AdamW
        def adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay):
            p = p.clone().requires_grad_(True)
            AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
            return p, m, v
    """, "torch.optim.AdamW"),
    "torch.quantize_per_tensor": ("check_quantize_absmax", "quantize_absmax", """
        import torch
        def quantize_absmax(w, bits=8, dim=-1):
            scale = w.abs().amax() / 127
            q = torch.quantize_per_tensor(w, float(scale), 0, torch.qint8)
            return q.int_repr(), scale
    """, "torch.quantize_per_tensor"),
    "torch.ao MinMaxObserver": ("check_quantize_absmax", "quantize_absmax", """
        import torch
        from torch.ao.quantization.observer import MinMaxObserver
        def quantize_absmax(w, bits=8, dim=-1):
            obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
            obs(w)
            return obs.calculate_qparams()
    """, "MinMaxObserver"),
    "F.log_softmax in softmax": ("check_softmax", "softmax", """
        import torch.nn.functional as F
        def softmax(x, dim=-1):
            return F.log_softmax(x, dim).exp()
    """, "log_softmax"),
}


@pytest.mark.parametrize("route", list(BUILTINS))
def test_builtins_that_do_the_whole_job_are_refused_and_named(route):
    check_name, fn_name, source, named = BUILTINS[route]
    message = grade(notebook(source), check_name, fn_name)
    assert "write yourself" in message and named in message, f"{route}: {message or 'passed'}"
    assert "lmlab" not in message.split("write yourself")[0].replace(f"your {fn_name}", ""), message


def test_reassigning_run_part_does_not_change_the_checks():
    import lmlab.checks.core as core

    saved = core.run_part
    try:
        core.run_part = lambda *a, **k: None
        ns = notebook("def matmul_flops(m, n, k):\n    return m * n * k\n")
        assert "Likely mistake" in grade(ns, "check_matmul_flops", "matmul_flops")
    finally:
        core.run_part = saved


def test_monkeypatched_math_is_detected():
    import math

    saved = math.sqrt
    try:
        ns = notebook("""
            import math
            math.sqrt = lambda x: 1.0
            def attention(q, k, v, mask=None):
                import torch
                s = q @ k.transpose(-2, -1)
                if mask is not None:
                    s = s.masked_fill(~mask, float("-inf"))
                return torch.softmax(s, -1) @ v
        """)
        message = grade(ns, "check_attention", "attention")
    finally:
        math.sqrt = saved
    assert "grading environment was changed" in message and "math.sqrt" in message


def test_replacing_a_parts_comparison_is_detected():
    part = checks.PARTS["matmul_flops"]
    saved = part.compare
    try:
        ns = notebook("""
            from lmlab.checks import PARTS
            PARTS["matmul_flops"].compare = lambda expected, got: None
            def matmul_flops(m, n, k):
                return 0
        """)
        message = grade(ns, "check_matmul_flops", "matmul_flops")
    finally:
        part.compare = saved
    assert "grading environment was changed" in message


def test_a_tensor_subclass_that_always_compares_equal_is_compared_as_data():
    ns = notebook("""
        import torch
        class Always(torch.Tensor):
            def __eq__(self, other):
                return True
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                result = super().__torch_function__(func, types, args, kwargs or {})
                return True if func.__name__ in ("allclose", "equal", "isclose") else result
        def causal_mask(T):
            return torch.ones(T, T, dtype=torch.bool).as_subclass(Always)
    """)
    assert "wrong on" in grade(ns, "check_causal_mask", "causal_mask")


def test_an_object_equal_to_everything_gets_no_credit():
    ns = notebook("""
        class Anything:
            def __eq__(self, other):
                return True
            def __float__(self):
                return 0.0
        def merge(ids, pair, new_id):
            return Anything()
    """)
    assert "wrong on" in grade(ns, "check_merge", "merge")


def test_reading_the_expected_value_from_the_checkers_frames_finds_nothing():
    ns = notebook("""
        import sys
        def matmul_flops(m, n, k):
            frame = sys._getframe(1)
            while frame is not None:
                for name in ("expected", "want", "reference_output"):
                    if name in frame.f_locals:
                        value = frame.f_locals[name]
                        return value[len(value) - 1] if isinstance(value, list) else value
                frame = frame.f_back
            return -1
    """)
    assert "wrong on" in grade(ns, "check_matmul_flops", "matmul_flops")


def test_a_bare_except_retry_loop_cannot_defeat_the_time_limit():
    import time

    ns = notebook("""
        import time
        def matmul_flops(m, n, k):
            while True:
                try:
                    time.sleep(60)
                except:  # noqa: E722
                    pass
    """)
    checks.PARTS["matmul_flops"].timeout, saved = 1.0, checks.PARTS["matmul_flops"].timeout
    try:
        start = time.perf_counter()
        message = grade(ns, "check_matmul_flops", "matmul_flops")
    finally:
        checks.PARTS["matmul_flops"].timeout = saved
    assert "did not return within" in message
    assert time.perf_counter() - start < 10


def test_warnings_and_prints_cost_nothing_and_never_reach_stderr(capfd):
    ns = notebook("""
        import warnings, sys, torch
        def matmul_flops(m, n, k):
            warnings.warn("a harmless warning")
            print("debugging", file=sys.stderr)
            torch.tensor(torch.ones(1))  # torch's own UserWarning
            return 2 * m * n * k
    """)
    assert grade(ns, "check_matmul_flops", "matmul_flops") == ""
    out, err = capfd.readouterr()
    assert err == ""
    assert "a harmless warning" in out and "costs no points" in out


def test_mutating_an_input_the_spec_forbids_is_reported():
    ns = notebook("""
        def merge(ids, pair, new_id):
            out = []
            i = 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids[:] = out  # changes the caller's list
            return out
    """)
    assert "changed its input in place" in grade(ns, "check_merge", "merge")


def test_a_wrong_helper_is_named_by_the_composite_part():
    ns = notebook("""
        import math, torch
        def softmax(x, dim=-1):
            e = torch.exp(x - x.amax(dim=dim, keepdim=True))
            return e / e.sum(dim=0, keepdim=True)   # always normalises along axis 0
        def attention(q, k, v, mask=None):
            s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if mask is not None:
                s = s.masked_fill(~mask, float("-inf"))
            return softmax(s, dim=-1) @ v
    """)
    message = grade(ns, "check_attention", "attention")
    assert "Your softmax" in message and "check_softmax" in message


def test_honest_code_still_passes_and_lmlab_internals_keep_working():
    ns = notebook("""
        import math, torch
        from lmlab.attention import causal_mask   # a helper lmlab offers, not the reference
        def attention(q, k, v, mask=None):
            s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            if mask is not None:
                s = torch.where(mask, s, torch.tensor(float("-inf")))
            return torch.softmax(s, dim=-1) @ v
    """)
    assert grade(ns, "check_attention", "attention") == ""
    from lmlab.attention import scaled_dot_product_attention

    q = torch.randn(2, 3, 4)
    assert scaled_dot_product_attention(q, q, q).shape == (2, 3, 4)  # untouched in this process
