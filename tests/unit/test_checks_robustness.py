"""Diagnoses survive harmless differences (issue 17, item 3), measured per part.

Every catalogued mistake is combined with harmless variations a student's code may have
(float64 arithmetic, a float64 result, NaN turned into 0 by ``nan_to_num``, a tuple for a
list, a float for an int); the check must still name the mistake ("Likely" or "Possible")
for at least 90 % of these wrong variants of each chapter. The same variations of the
reference must all pass. ``python tests/unit/test_checks_robustness.py`` prints the table.
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager

import pytest
import torch

from lmlab.checks import PARTS, run_part

CHAPTERS = sorted({p.chapter for p in PARTS.values()})
NAMES = sorted(n for n, p in PARTS.items() if p.chapter in CHAPTERS)


def _map(x, fn_tensor=None, fn_number=None, fn_seq=None):
    if isinstance(x, torch.Tensor):
        return fn_tensor(x) if fn_tensor else x
    if isinstance(x, bool):
        return x
    if isinstance(x, (int, float)) and fn_number:
        return fn_number(x)
    if isinstance(x, (list, tuple)):
        items = [_map(v, fn_tensor, fn_number, fn_seq) for v in x]
        return fn_seq(items, x) if fn_seq else type(x)(items) if not hasattr(x, "_fields") else x
    if isinstance(x, dict):
        return {k: _map(v, fn_tensor, fn_number, fn_seq) for k, v in x.items()}
    return x


def _to64(t):
    return t.double() if t.is_floating_point() and t.dtype != torch.float64 else t


def _in_float64(fn):
    """Compute in float64, give the result back in the dtype of the first float input."""
    def variant(*args, **kwargs):
        dtypes = [a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
        out = fn(*_map(args, _to64), **_map(kwargs, _to64))
        if not dtypes:
            return out
        return _map(out, lambda t: t.to(dtypes[0]) if t.is_floating_point() else t)
    return variant


def _returns_float64(fn):
    return lambda *a, **k: _map(fn(*a, **k), _to64)


def _nan_to_zero(fn):
    return lambda *a, **k: _map(fn(*a, **k), lambda t: t.nan_to_num(0.0) if t.is_floating_point() else t)


def _tuple_for_list(fn):
    return lambda *a, **k: _map(fn(*a, **k), fn_seq=lambda items, x: tuple(items))


def _float_numbers(fn):
    return lambda *a, **k: _map(fn(*a, **k), fn_number=float)


def _contiguous_copy(fn):
    return lambda *a, **k: _map(fn(*a, **k), lambda t: t.clone().contiguous())


VARIATIONS = {
    "as catalogued": lambda fn: fn,
    "float64 inside": _in_float64,
    "float64 result": _returns_float64,
    "nan_to_num": _nan_to_zero,
    "tuple for list": _tuple_for_list,
    "float for int": _float_numbers,
    "copied result": _contiguous_copy,
}


def _own_copy(fn):
    """The reference as a new function object (the reference itself is refused)."""
    if isinstance(fn, types.FunctionType):
        copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                                  fn.__closure__)
        copy.__kwdefaults__ = fn.__kwdefaults__
        return copy
    return lambda *a, **k: fn(*a, **k)


@contextmanager
def _in_process():
    """Diagnoses do not depend on the child process; measuring in-process is 3x faster."""
    saved = os.environ.get("LMLAB_CHECK_IN_PROCESS")
    os.environ["LMLAB_CHECK_IN_PROCESS"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["LMLAB_CHECK_IN_PROCESS"]
        else:
            os.environ["LMLAB_CHECK_IN_PROCESS"] = saved


def _named(part, fn, hint: str) -> bool | None:
    """True if the check names ``hint``; None if ``fn`` happens to pass (a harmless variant of
    a mistake that only differs in what the variation removes, e.g. dtype)."""
    try:
        with _in_process():
            run_part(part, fn, seed=0, quiet=True)
    except AssertionError as err:
        return hint in str(err)
    return None


def _leaves(x):
    if isinstance(x, (list, tuple)):
        yield ("seq", x)
        for v in x:
            yield from _leaves(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    else:
        yield ("leaf", x)


def _applies(label: str, part, fn) -> bool:
    """Only the variations that change something for this function's outputs."""
    if label in ("as catalogued", "float64 inside", "copied result"):
        return True
    outs = []
    for case in part.cases(0):
        try:
            outs.append(case.call(fn))
        except Exception:  # noqa: BLE001
            pass
    leaves = [v for out in outs for kind, v in _leaves(out) if kind == "leaf"]
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    if label == "nan_to_num":
        return any(t.is_floating_point() and bool(torch.isnan(t).any()) for t in tensors)
    if label == "float64 result":
        return any(t.dtype == torch.float32 for t in tensors)
    if label == "tuple for list":
        return any(kind == "seq" and isinstance(v, list) for out in outs for kind, v in _leaves(out))
    if label == "float for int":
        return any(isinstance(v, int) and not isinstance(v, bool) for v in leaves)
    return True


def measure(name: str) -> tuple[int, int, list[str]]:
    part = PARTS[name]
    named = total = 0
    missed = []
    for mistake in part.mistakes:
        for label, vary in VARIATIONS.items():
            if not _applies(label, part, mistake.fn):
                continue
            verdict = _named(part, vary(mistake.fn), mistake.hint)
            if verdict is None:
                continue  # the variation made it correct (e.g. a dtype-only mistake)
            total += 1
            named += verdict
            if not verdict:
                missed.append(f"{mistake.name} / {label}")
    return named, total, missed


@pytest.mark.parametrize("name", NAMES)
def test_correct_variants_all_pass(name):
    part = PARTS[name]
    for label, vary in VARIATIONS.items():
        fn = vary(_own_copy(part.reference))
        try:
            with _in_process():
                run_part(part, fn, seed=0, quiet=True)
        except AssertionError as err:
            raise AssertionError(f"{name}, correct but {label}: {err}") from None


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_mistakes_are_named_despite_harmless_differences(chapter):
    named = total = 0
    missed = []
    for name in NAMES:
        if PARTS[name].chapter != chapter:
            continue
        n, t, m = measure(name)
        named, total = named + n, total + t
        missed += [f"{name}: {x}" for x in m]
    assert total and named / total >= 0.9, f"{chapter}: {named}/{total} named; missed {missed}"


if __name__ == "__main__":
    for name in NAMES:
        n, t, m = measure(name)
        print(f"{PARTS[name].chapter:18} {name:24} {n:3}/{t:3} = {n / max(t, 1):6.1%}  {m[:4]}")
