"""The machinery every graded part shares.

A graded part is a :class:`Part`: the reference function, a seeded generator of test
inputs (:class:`Case`), a catalogue of known-wrong variants (:class:`Mistake`) and a way to
compare outputs. :func:`run_part` calls the student's function on every case and, on
failure, raises ``AssertionError`` with a diagnosis: the input, what was expected, what came
back, and the catalogued mistake whose output matches the student's.

Four promises, each tested in ``tests/unit/test_checks_core.py`` and
``tests/unit/test_checks_cheats.py``:

* a check never hangs: the student's calls run in a forked child process that is killed
  when a call runs past ``Part.timeout``, whatever the student's code catches;
* a check never crashes on bad student code: exceptions, wrong types and wrong shapes
  become a readable :class:`CheckFailed` (an ``AssertionError`` that IPython shows
  without lmlab's traceback), and warnings become notes on stdout, never stderr;
* a check grades the student, not lmlab: in the child, the lmlab references and torch
  built-ins in ``Part.guard`` refuse calls from the student's code however they are
  reached (aliases, closures, default arguments, ``functools.partial``, containers);
* the expected outputs are computed only after the student's code has returned, in the
  parent, and compared with plain copies of what came back (a Tensor subclass or an
  object whose ``==`` always succeeds is compared as plain data).
"""

from __future__ import annotations

import builtins
import copy
import io
import math
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import traceback
import types
import warnings
import zlib
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import torch

__all__ = [
    "Case",
    "Mistake",
    "Part",
    "PARTS",
    "register",
    "make_check",
    "run_part",
    "close",
    "exact",
    "describe",
    "DelegationError",
    "CheckFailed",
    "hidden_seed",
    "DEFAULT_HIDDEN_SEED",
]


# --------------------------------------------------------------------------- data


@dataclass
class Case:
    """One input to a graded function: positional and keyword arguments and a label."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""

    def call(self, fn: Callable) -> Any:
        # Deep copies: a student who mutates an input in place cannot spoil the next call,
        # and stateful inputs (a fake clock) start fresh for every function we compare.
        args, kwargs = copy.deepcopy((self.args, self.kwargs))
        return fn(*args, **kwargs)

    def show(self, name: str) -> str:
        parts = [_short(a) for a in self.args] + [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        text = f"{name}({', '.join(parts)})"
        return f"{text}   [{self.label}]" if self.label else text


@dataclass
class Mistake:
    """A known-wrong variant of the reference and the hint shown when a student's matches."""

    name: str
    hint: str
    fn: Callable


@dataclass
class Part:
    """A graded part of an exercise.

    ``cases(seed)`` returns the list of :class:`Case` to run, random ones drawn from
    ``seed`` plus fixed edge cases. ``compare(expected, got)`` returns ``None`` when ``got``
    is acceptable, else a sentence saying what differs. ``guard`` lists dotted names
    (``"lmlab.device.matmul_flops"``) the student's code may not call.
    """

    name: str
    reference: Callable
    cases: Callable[[int], list[Case]]
    mistakes: Sequence[Mistake] = ()
    compare: Callable[[Any, Any], str | None] = None  # type: ignore[assignment]
    guard: Sequence[str] = ()
    timeout: float = 10.0
    chapter: str = ""
    #: True when the exercise says the function must leave its inputs unchanged.
    pure: bool = False
    #: Parts whose functions this one calls (``"attention"`` for multi-head attention): when
    #: this part fails, the student's own versions of them are checked and named if wrong.
    helpers: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.compare is None:
            self.compare = close()


PARTS: dict[str, Part] = {}


def register(part: Part) -> Part:
    if part.name in PARTS and PARTS[part.name] is not part:
        raise ValueError(f"two graded parts are both called {part.name!r}")
    PARTS[part.name] = part
    return part


def make_check(part: Part) -> Callable[..., None]:
    """Build the public ``check_<name>(fn, *, seed=0)`` for ``part``."""
    register(part)

    run = run_part  # bound now: reassigning core.run_part later does not change the check

    def check(fn: Callable, *, seed: int = 0, hidden: bool = False) -> None:
        __tracebackhide__ = True
        run(part, fn, seed=hidden_seed(part.name) if hidden else seed)

    check.__name__ = check.__qualname__ = f"check_{part.name}"
    check.__doc__ = (
        f"Check a student's ``{part.name}`` against lmlab's reference.\n\n"
        f"Raises ``AssertionError`` naming the first wrong input and the likely mistake; "
        f"prints a one-line summary when every case passes. ``seed`` picks other random "
        f"inputs; ``hidden=True`` (the hidden tests) draws them from the instructor's "
        f"grading-time seed, see :func:`hidden_seed`."
    )
    return check


#: Used when the instructor sets no ``LMLAB_HIDDEN_SEED``; set one when grading for real.
DEFAULT_HIDDEN_SEED = 2024


def hidden_seed(part_name: str) -> int:
    """The seed of ``part_name``'s hidden cases, chosen by the instructor at grading time.

    Read from the environment variable ``LMLAB_HIDDEN_SEED`` (an integer; default
    :data:`DEFAULT_HIDDEN_SEED`) and mixed with the part's name, so every part gets other
    inputs and no seed appears in a notebook that ships with the course.
    """
    raw = os.environ.get("LMLAB_HIDDEN_SEED", str(DEFAULT_HIDDEN_SEED))
    try:
        base = int(raw)
    except ValueError:
        raise ValueError(f"LMLAB_HIDDEN_SEED must be an integer, got {raw!r}") from None
    return (base * 1_000_003 + zlib.crc32(part_name.encode())) % 2**31


# --------------------------------------------------------------------------- comparing


def _to_number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, torch.Tensor) and x.numel() == 1 and x.dim() == 0:
        return float(x.item())
    try:
        import numpy as np

        if isinstance(x, np.generic) and np.issubdtype(type(x), np.number):
            return float(x)
    except ImportError:  # pragma: no cover
        pass
    return None


def close(rtol: float = 1e-5, atol: float = 1e-6, equal_nan: bool = False) -> Callable:
    """Compare numbers, tensors and nested tuples/lists/dicts within tolerances."""

    def compare(expected: Any, got: Any, path: str = "result") -> str | None:
        if isinstance(expected, torch.Tensor) and expected.dim() > 0:
            return _compare_tensor(expected, got, path, rtol, atol, equal_nan)
        number = _to_number(expected)
        if number is not None:
            value = _to_number(got)
            if value is None:
                return f"{path} is {_type_name(got)}, expected a number like {_short(expected)}"
            if math.isnan(number) and math.isnan(value) and equal_nan:
                return None
            if not math.isclose(value, number, rel_tol=rtol, abs_tol=atol):
                return f"{path} is {value:.6g}, expected {number:.6g}"
            return None
        if isinstance(expected, (tuple, list)):
            if not isinstance(got, (tuple, list)):
                return f"{path} is {_type_name(got)}, expected a {type(expected).__name__} of {len(expected)} items"
            if len(got) != len(expected):
                return f"{path} has {len(got)} items, expected {len(expected)}"
            for i, (e, g) in enumerate(zip(expected, got)):
                diff = compare(e, g, f"{path}[{i}]")
                if diff:
                    return diff
            return None
        if isinstance(expected, dict):
            if not isinstance(got, dict):
                return f"{path} is {_type_name(got)}, expected a dict"
            missing = [k for k in expected if k not in got]
            extra = [k for k in got if k not in expected]
            if missing or extra:
                return f"{path} keys differ: missing {missing[:5]}, unexpected {extra[:5]}"
            for key in expected:
                diff = compare(expected[key], got[key], f"{path}[{key!r}]")
                if diff:
                    return diff
            return None
        if isinstance(expected, (str, bytes, type(None))) and type(got) is not type(expected):
            return f"{path} is {_type_name(got)}, expected {_short(expected)}"
        if isinstance(got, _Foreign) or expected != got:
            return f"{path} is {_short(got)}, expected {_short(expected)}"
        return None

    return compare


def exact() -> Callable:
    """Compare exactly (integers, token lists, boolean masks)."""
    return close(rtol=0.0, atol=0.0)


def _compare_tensor(expected, got, path, rtol, atol, equal_nan) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"{path} is {_type_name(got)}, expected a torch.Tensor of shape {tuple(expected.shape)}"
    if got.shape != expected.shape:
        return f"{path} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if expected.dtype == torch.bool or got.dtype == torch.bool:
        if got.dtype != expected.dtype:
            return f"{path} has dtype {got.dtype}, expected {expected.dtype}"
    if got.is_complex() != expected.is_complex():
        return f"{path} has dtype {got.dtype}, expected {expected.dtype}"
    e = expected.detach().cpu().to(torch.float64)
    g = got.detach().cpu().to(torch.float64)
    if torch.allclose(g, e, rtol=rtol, atol=atol, equal_nan=equal_nan):
        return None
    bad_nan = torch.isnan(g) & ~torch.isnan(e)
    if bad_nan.any():
        where = tuple(int(i) for i in bad_nan.nonzero()[0])
        return f"{path} has NaN at index {where} where {e[where].item():.6g} was expected (overflow or 0/0?)"
    err = (g - e).abs().nan_to_num(nan=math.inf)
    where = tuple(int(i) for i in (err == err.max()).nonzero()[0])
    n_bad = int((err > atol + rtol * e.abs()).sum())
    return (
        f"{path} differs at {n_bad} of {e.numel()} positions; the largest error is at index "
        f"{where}: got {g[where].item():.6g}, expected {e[where].item():.6g}"
    )


def _type_name(x: Any) -> str:
    if x is None:
        return "None"
    if isinstance(x, _Foreign):
        return f"a {x.type_name}"
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def _short(x: Any, limit: int = 60) -> str:
    if isinstance(x, torch.Tensor):
        if x.numel() <= 6:
            return f"tensor({x.tolist()})"
        return f"<tensor {tuple(x.shape)} {str(x.dtype).replace('torch.', '')}>"
    if isinstance(x, _Foreign):
        return x.text
    if callable(x) and not isinstance(x, type):
        return getattr(x, "__name__", type(x).__name__)
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(x: Any) -> str:
    """A short description of a value for messages."""
    return _short(x)


def _grid(x: torch.Tensor, marks: torch.Tensor | None) -> str:
    """The values of a small tensor, one row per line; ``*`` after each differing value."""
    flat = x.detach().cpu()
    if flat.dim() == 0:
        flat = flat.reshape(1)
    rows = flat.reshape(-1, flat.shape[-1])
    mark_rows = None if marks is None else marks.reshape(-1, flat.shape[-1])

    def cell(v) -> str:
        if isinstance(v, bool):
            return "T" if v else "F"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    texts = [[cell(v) for v in row] for row in rows.tolist()]
    width = max(len(t) for row in texts for t in row)
    lines = []
    for r, row in enumerate(texts):
        cells = []
        for c, text in enumerate(row):
            star = "*" if mark_rows is not None and bool(mark_rows[r, c]) else " "
            cells.append(f" {text:>{width}}{star}")
        lines.append("".join(cells).rstrip())
    if flat.dim() > 2:
        lines.insert(0, f"(rows of the last axis; shape {tuple(flat.shape)})")
    return "\n".join(lines)


SMALL = 64  # tensors up to this many elements are printed with their values


def _show_pair(expected: Any, got: Any, rtol: float = 1e-5, atol: float = 1e-6) -> str:
    """``expected:`` and ``got:`` lines; small tensors as values with differences marked ``*``."""
    if (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)
            and expected.shape == got.shape and 6 < expected.numel() <= SMALL and expected.dim() > 0):
        e = expected.detach().cpu().to(torch.float64)
        g = got.detach().cpu().to(torch.float64)
        differs = ~torch.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        pad = lambda text: "\n".join("    " + line for line in text.splitlines())  # noqa: E731
        return (f"  expected ({tuple(expected.shape)}, {str(expected.dtype).replace('torch.', '')}):\n"
                f"{pad(_grid(expected, None))}\n"
                f"  got (* marks the {int(differs.sum())} differing values):\n"
                f"{pad(_grid(got, differs))}")
    return f"  expected: {_short(expected, 200)}\n  got:      {_short(got, 200)}"


# --------------------------------------------------------------------------- the failure


class CheckFailed(AssertionError):
    """A check's verdict: IPython (and so nbgrader's feedback) shows only the diagnosis."""

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


# --------------------------------------------------------------------------- plain data


@dataclass
class _Foreign:
    """A returned object of a type the checks do not compare: never equal to anything."""

    type_name: str
    text: str

    def __eq__(self, other) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None))


def _plain(x: Any, depth: int = 0) -> Any:
    """A copy of ``x`` made of plain types only: tensors (no subclass, detached), numbers,
    strings, lists, tuples and dicts. Student-defined ``__eq__`` and ``__torch_function__``
    cannot take part in the comparison."""
    if depth > 20:
        return _Foreign("deeply nested value", "<deeply nested value>")
    if type(x) in _PLAIN_SCALARS:
        return x
    if isinstance(x, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():
            t = torch.Tensor.as_subclass(x, torch.Tensor) if type(x) is not torch.Tensor else x
            return t.detach().cpu().clone()
    for kind, convert in ((bool, bool.__bool__), (int, int.__index__), (float, float.__float__),
                          (str, str.__str__)):
        if isinstance(x, kind):
            return convert(x)
    if isinstance(x, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in dict.items(x)}
    if isinstance(x, tuple):
        return tuple(_plain(v, depth + 1) for v in tuple.__iter__(x))
    if isinstance(x, list):
        return [_plain(v, depth + 1) for v in list.__iter__(x)]
    try:
        import numpy as np

        if isinstance(x, np.ndarray):
            return np.array(x, subok=False, copy=True)
        if isinstance(x, np.generic):
            return x.item()
    except ImportError:  # pragma: no cover
        pass
    return x  # other objects (an lmlab result type, a module) are compared as they are


# --------------------------------------------------------------------------- guard


class DelegationError(RuntimeError):
    """Raised when graded code calls the lmlab reference it is supposed to re-implement."""


_RESOLVED: dict[str, tuple[Any, str] | None] = {}


def _resolve_cached(dotted: str) -> tuple[Any, str] | None:
    """``_resolve`` once per name (a failed import searches the whole path: slow); None when
    the name does not exist in this torch version."""
    if dotted not in _RESOLVED:
        try:
            owner, attr = _resolve(dotted)
            getattr(owner, attr)
            _RESOLVED[dotted] = (owner, attr)
        except (ImportError, AttributeError):
            _RESOLVED[dotted] = None
    return _RESOLVED[dotted]


def _resolve(dotted: str) -> tuple[Any, str]:
    module_name, _, attr = dotted.rpartition(".")
    try:
        return import_module(module_name), attr
    except ModuleNotFoundError:
        owner_name, _, cls = module_name.rpartition(".")
        owner, _ = _resolve(module_name) if "." in owner_name else (import_module(owner_name), cls)
        return getattr(owner, cls), attr


# frames of these packages are looked through when deciding who called a reference
_PASS_THROUGH = ("torch", "functools", "operator", "itertools", "contextlib", "importlib", "copy")


def _called_from_library(frame) -> bool:
    """True when the first caller outside torch and the stdlib glue is lmlab itself.

    The checks' runner (this module) calling a reference means the student's function *is*
    the reference (``attention = scaled_dot_product_attention``): refused.
    """
    while frame is not None:
        name = frame.f_globals.get("__name__", "") or ""
        if name.split(".")[0] in _PASS_THROUGH:
            frame = frame.f_back
            continue
        return name.split(".")[0] == "lmlab" and name != __name__
    return False


def _refusal(dotted: str, part_name: str) -> str:
    if dotted.startswith("lmlab."):
        return (f"your {part_name} calls {dotted}, the reference this exercise asks you to "
                f"write yourself: implement it without calling lmlab")
    return (f"your {part_name} calls {dotted}, a built-in that does the whole job this "
            f"exercise asks you to write yourself: implement it with basic tensor operations")


def _blocker(original: Callable, dotted: str, part_name: str) -> Callable:
    def blocked(*args, **kwargs):
        # Library code may use the reference internally; only the student's own frames
        # are refused.
        if _called_from_library(sys._getframe(1)):
            return original(*args, **kwargs)
        raise DelegationError(_refusal(dotted, part_name))

    blocked.__wrapped_reference__ = original
    return blocked


class _Gate:
    """What a guarded Python function runs in the child: the original for lmlab's own
    calls, a :class:`DelegationError` for the student's."""

    def __init__(self, original: Callable, dotted: str, part_name: str):
        self.original, self.dotted, self.part_name = original, dotted, part_name

    def __call__(self, *args, **kwargs):
        if _called_from_library(sys._getframe(2)):
            return self.original(*args, **kwargs)
        raise DelegationError(_refusal(self.dotted, self.part_name))


def _gate_code(fn: types.FunctionType, gate: _Gate) -> bool:
    """Make the function object ``fn`` itself run ``gate``: every route to it (alias,
    closure, default argument, partial, container, ``PARTS[...].reference``) then meets the
    gate. Only in the child process, which never returns to the notebook."""
    if fn.__code__.co_freevars:
        return False
    original = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                                  fn.__closure__)
    original.__kwdefaults__ = fn.__kwdefaults__
    gate.original = original
    key = f"__lmlab_gate_{id(fn)}__"
    fn.__globals__[key] = gate
    source = f"def {fn.__name__}(*args, **kwargs):\n    return {key}(*args, **kwargs)\n"
    module = compile(source, fn.__code__.co_filename, "exec")
    fn.__code__ = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    fn.__defaults__ = None
    fn.__kwdefaults__ = None
    return True


_GATED_METHODS = ("__init__", "forward", "step", "calculate_qparams", "__call__")


def _poison(guard: Sequence[str], student_fn: Callable, part_name: str) -> None:
    """In the child: make every guarded reference refuse the student's calls, for good.

    A Python function gets a new body (so every route to the object meets the gate); a
    class gets its ``forward``/``step``/... gated; a built-in (no body to swap) is replaced
    wherever a module, the student's namespace or the student's closures hold it.
    """
    replace: dict[int, tuple[Any, Any]] = {}
    for dotted in guard:
        resolved = _resolve_cached(dotted)
        if resolved is None:
            continue
        owner, attr = resolved
        original = getattr(owner, attr)
        raw = inspect_static(owner, attr)
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        if isinstance(raw, type):
            for method in _GATED_METHODS:
                fn = vars(raw).get(method)
                if isinstance(fn, types.FunctionType) and not _gate_code(fn, _Gate(fn, dotted, part_name)):
                    setattr(raw, method, _blocker(fn, dotted, part_name))
            continue
        if isinstance(raw, types.FunctionType) and _gate_code(raw, _Gate(raw, dotted, part_name)):
            continue
        stand_in = _blocker(original, dotted, part_name)
        try:
            setattr(owner, attr, stand_in)
        except (AttributeError, TypeError):
            pass
        replace[id(original)] = (original, stand_in)
    if replace:
        _replace_everywhere(replace, student_fn)


def inspect_static(owner: Any, attr: str) -> Any:
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if attr in vars(klass):
                return vars(klass)[attr]
    return getattr(owner, attr)


def _replace_everywhere(replace: dict[int, tuple[Any, Any]], student_fn: Callable) -> None:
    """Replace built-ins (which have no code to swap) in every module, the student's
    namespace, and the closures, defaults and partials the student's functions hold."""

    def swap(value: Any) -> Any:
        hit = replace.get(id(value))
        return hit[1] if hit is not None and hit[0] is value else None

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("torch", "lmlab", "__main__", "math", "functools"):
            continue  # other libraries do not hand out torch's or lmlab's functions
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for key, value in list(namespace.items()):
            stand_in = swap(value)
            if stand_in is not None:
                try:
                    setattr(module, key, stand_in)
                except (AttributeError, TypeError):
                    pass
    for key, value in list(vars(torch.Tensor).items()):
        stand_in = swap(value)
        if stand_in is not None:
            setattr(torch.Tensor, key, stand_in)
    seen: set[int] = set()

    def visit(obj: Any, depth: int = 0) -> None:
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if isinstance(obj, (dict, list)):  # mutable: swap a reference in place
            for key, value in list(obj.items() if isinstance(obj, dict) else enumerate(obj)):
                stand_in = swap(value)
                if stand_in is not None:
                    obj[key] = stand_in
                else:
                    visit(value, depth + 1)
        elif isinstance(obj, tuple):
            for value in obj:
                visit(value, depth + 1)
        elif isinstance(obj, types.FunctionType):
            for cell in obj.__closure__ or ():
                try:
                    stand_in = swap(cell.cell_contents)
                    if stand_in is not None:
                        cell.cell_contents = stand_in
                    else:
                        visit(cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell
                    pass
            if obj.__defaults__:
                obj.__defaults__ = tuple(swap(d) or d for d in obj.__defaults__)
                for d in obj.__defaults__:
                    visit(d, depth + 1)
            for key, value in (obj.__kwdefaults__ or {}).items():
                stand_in = swap(value)
                if stand_in is not None:
                    obj.__kwdefaults__[key] = stand_in
        elif type(obj).__name__ == "partial" and hasattr(obj, "__setstate__"):
            stand_in = swap(obj.func)
            obj.__setstate__((stand_in or obj.func, obj.args, obj.keywords, obj.__dict__ or None))
            visit(obj.func, depth + 1)
            visit(obj.args, depth + 1)

    namespace = getattr(student_fn, "__globals__", None)
    if isinstance(namespace, dict):
        visit({k: v for k, v in namespace.items() if not k.startswith("_")} | {"": student_fn})
        for key, value in list(namespace.items()):
            stand_in = swap(value)
            if stand_in is not None:
                namespace[key] = stand_in
    visit(student_fn)


@contextmanager
def blocked_references(guard: Sequence[str], student_fn: Callable, part_name: str):
    """Make the references in ``guard`` unavailable to ``student_fn`` while inside (the
    in-process fallback where no child process can be forked)."""
    undo: list[tuple[Any, str, Any]] = []
    try:
        for dotted in guard:
            try:
                owner, attr = _resolve(dotted)
                original = getattr(owner, attr)
            except (ImportError, AttributeError):
                continue
            stand_in = _blocker(original, dotted, part_name)
            targets = [(owner, attr)]
            # re-exports in other lmlab modules (lmlab.matmul_flops, ...)
            for name, module in list(sys.modules.items()):
                if name.split(".")[0] == "lmlab" and module is not owner and module is not None:
                    for key, value in list(vars(module).items()):
                        if value is original:
                            targets.append((module, key))
            for target, key in targets:
                undo.append((target, key, inspect_static(target, key) if isinstance(target, type)
                             and key in vars(target) else getattr(target, key)))
                setattr(target, key, stand_in)
            # names the student imported into their own namespace
            namespace = getattr(student_fn, "__globals__", None)
            if isinstance(namespace, dict):
                for key, value in list(namespace.items()):
                    if value is original:
                        undo.append((namespace, key, value))
                        namespace[key] = stand_in
        yield
    finally:
        for target, key, value in reversed(undo):
            if isinstance(target, dict):
                target[key] = value
            else:
                setattr(target, key, value)


# --------------------------------------------------------------------------- tampering


def _from_notebook(obj: Any) -> bool:
    """True for a function defined in a notebook cell (or ``__main__``)."""
    fn = getattr(obj, "func", obj)  # functools.partial
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    filename = code.co_filename
    return (getattr(fn, "__module__", None) == "__main__" or filename.startswith("<ipython-input")
            or "ipykernel_" in filename or filename == "<stdin>")


def _tampered(part: Part) -> list[str]:
    """Library functions the notebook replaced with its own (``math.sqrt = lambda x: 1``)."""
    import torch.nn.functional

    found = []
    for label, owner in (("math", math), ("builtins", builtins), ("torch", torch),
                         ("torch.nn.functional", torch.nn.functional), ("torch.Tensor", torch.Tensor),
                         ("lmlab.checks.core", sys.modules[__name__])):
        for key, value in list(vars(owner).items()):
            if callable(value) and _from_notebook(value):
                found.append(f"{label}.{key}")
    for field_name in ("reference", "cases", "compare"):
        if _from_notebook(getattr(part, field_name)):
            found.append(f"PARTS[{part.name!r}].{field_name}")
    return found


# --------------------------------------------------------------------------- time limit


class _TimeLimit(BaseException):
    """Raised inside the student's code when it runs past the limit (in-process fallback)."""


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    trace: str = ""
    mutated: bool = False
    notes: list = field(default_factory=list)


class _StudentError(Exception):
    """An exception raised in the child, carried back by name and message."""

    def __init__(self, type_name: str, message: str, kind: str):
        super().__init__(message)
        self.type_name, self.kind = type_name, kind


def call_with_limit(fn: Callable, case: Case, seconds: float) -> Outcome:
    """Run ``case.call(fn)`` in this process for at most ``seconds``; never raises.

    The fallback where no child can be forked: a student's bare ``except:`` can defeat it.
    """
    use_signal = (
        hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if use_signal:
        return _call_with_alarm(fn, case, seconds)
    return _call_in_thread(fn, case, seconds)


def _call_with_alarm(fn, case, seconds) -> Outcome:
    def on_alarm(signum, frame):
        raise _TimeLimit()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return Outcome(value=case.call(fn))
    except _TimeLimit:
        return Outcome(timed_out=True)
    except BaseException as err:  # noqa: BLE001 - student code may raise anything
        if isinstance(err, KeyboardInterrupt):
            raise
        return Outcome(error=err, trace=_student_frame(err))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _call_in_thread(fn, case, seconds) -> Outcome:
    box: dict[str, Outcome] = {}

    def target():
        try:
            box["out"] = Outcome(value=case.call(fn))
        except BaseException as err:  # noqa: BLE001
            box["out"] = Outcome(error=err, trace=_student_frame(err))

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        return Outcome(timed_out=True)
    return box["out"]


def _student_frame(err: BaseException) -> str:
    """The last traceback line outside lmlab, torch and the stdlib: where the student's code broke."""
    library = ("/lmlab/", "/torch/", "/copy.py", "/site-packages/", "<lmlab")
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = frame.filename.replace("\\", "/")
        if any(part in path for part in library):
            continue
        line = (frame.line or "").strip()
        in_notebook = path.startswith("<") or "ipykernel" in path
        where = "your code" if in_notebook else path
        return f"line {frame.lineno} of {where}: {line}" if line else f"line {frame.lineno} of {where}"
    return ""


def _same(a: Any, b: Any) -> bool:
    """Structural equality of inputs (to see whether the student's code changed one)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(
            torch.equal(a.detach(), b.detach()) or (torch.isnan(a) & torch.isnan(b)).any()
            and torch.equal(a.nan_to_num(0), b.nan_to_num(0)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b) or a is b
    except Exception:  # noqa: BLE001
        return True


def _run_one(fn: Callable, case: Case, pure: bool) -> Outcome:
    """Call ``fn`` on a copy of the case's inputs, catching everything, recording warnings."""
    own_call = type(case).call is not Case.call  # a case with its own way of calling fn
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    before = copy.deepcopy((args, kwargs)) if pure and not own_call else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = case.call(fn) if own_call else fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - student code may raise anything
            if isinstance(err, (KeyboardInterrupt, _TimeLimit)):
                raise
            return Outcome(error=err, trace=_student_frame(err), notes=_warning_notes(caught))
    mutated = before is not None and not _same(before, (args, kwargs))
    return Outcome(value=value, mutated=mutated, notes=_warning_notes(caught))


def _warning_notes(caught) -> list[str]:
    notes = []
    for w in caught:
        text = f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}"
        if text not in notes:
            notes.append(text)
    return notes


# ----- the child process


_HEADER = struct.Struct("!Q")


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float) -> bytes | None:
    """``n`` bytes from ``fd``; None on end of file; raises TimeoutError after ``deadline``."""
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _child_main(part: Part, fn: Callable, cases: list[Case], fd: int) -> None:
    """Run in the forked child: never returns (``os._exit``)."""
    try:
        torch.set_num_threads(1)  # OpenMP's pool does not survive fork; one thread is safe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        printed = io.StringIO()
        sys.stdout = sys.stderr = printed
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        if not _is_selftest(part, fn):
            _poison(part.guard, fn, part.name)
        _send(fd, ("ready",))
        for case in cases:
            outcome = _run_one(fn, case, part.pure)
            if outcome.error is not None:
                err = outcome.error
                kind = ("not-implemented" if isinstance(err, NotImplementedError)
                        else "delegation" if isinstance(err, DelegationError) else "error")
                message = str(err) if kind != "delegation" else str(err)
                payload = ("error", type(err).__name__, message[:2000], outcome.trace, kind,
                           outcome.notes)
            else:
                try:
                    value = _plain(outcome.value)
                    pickle.dumps(value)
                    payload = ("ok", value, outcome.mutated, outcome.notes)
                except Exception as err:  # noqa: BLE001 - not picklable
                    payload = ("unsendable", f"{type(outcome.value).__name__}: {err}")
            _send(fd, payload)
            if payload[0] != "ok":
                break
        _send(fd, ("printed", printed.getvalue()[-4000:]))
    finally:
        os._exit(0)


def _is_selftest(part: Part, fn: Callable) -> bool:
    """lmlab's own tests check each reference against itself; a notebook that binds its
    answer to the reference (``from lmlab.device import matmul_flops``) is refused."""
    if fn is not part.reference:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "") or ""
        if not name.startswith(("lmlab.", "_pytest", "pluggy")):
            return name.startswith(("test_", "tests.")) or ".test_" in name
        frame = frame.f_back
    return False


def _can_fork() -> bool:
    """Fork on Linux only (macOS frameworks are not fork-safe; Windows has no fork); set
    ``LMLAB_CHECK_IN_PROCESS=1`` to run the student's calls in this process instead."""
    return (sys.platform.startswith("linux") and hasattr(os, "fork")
            and os.environ.get("LMLAB_CHECK_IN_PROCESS", "") in ("", "0")
            and threading.current_thread() is threading.main_thread())


class _Unsendable(Exception):
    pass


def _run_in_child(part: Part, fn: Callable, cases: list[Case]) -> tuple[list[Outcome], str]:
    """The student's calls in a forked child, each with a hard time limit (SIGKILL)."""
    for dotted in part.guard:
        _resolve_cached(dotted)  # once, here: the child inherits the answers
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _child_main(part, fn, cases, write_fd)
    os.close(write_fd)
    outcomes: list[Outcome] = []
    printed = ""
    try:
        # the time limit starts once the child is ready (gating may import torch.ao, ...)
        try:
            header = _read_exact(read_fd, _HEADER.size, time.monotonic() + 120.0)
            if header is not None:
                _read_exact(read_fd, _HEADER.unpack(header)[0], time.monotonic() + 5.0)
        except TimeoutError:
            header = None
        if header is None:
            raise _Unsendable("the child process did not start")
        for _case in cases:
            deadline = time.monotonic() + part.timeout
            try:
                header = _read_exact(read_fd, _HEADER.size, deadline)
                body = None if header is None else _read_exact(
                    read_fd, _HEADER.unpack(header)[0], deadline + 5.0)
            except TimeoutError:
                outcomes.append(Outcome(timed_out=True))
                break
            if body is None:
                outcomes.append(Outcome(error=_StudentError(
                    "crash", "the process running your code died (a crash, or os._exit?)",
                    "error")))
                break
            message = pickle.loads(body)
            if message[0] == "ok":
                _, value, mutated, notes = message
                outcomes.append(Outcome(value=_plain(value), mutated=mutated, notes=notes))
            elif message[0] == "error":
                _, type_name, text, trace, kind, notes = message
                outcomes.append(Outcome(error=_StudentError(type_name, text, kind), trace=trace,
                                        notes=notes))
                break
            else:
                raise _Unsendable(message[1])
        else:
            try:
                header = _read_exact(read_fd, _HEADER.size, time.monotonic() + 2.0)
                if header is not None:
                    body = _read_exact(read_fd, _HEADER.unpack(header)[0], time.monotonic() + 2.0)
                    printed = pickle.loads(body)[1] if body else ""
            except TimeoutError:
                pass
    finally:
        os.close(read_fd)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    return outcomes, printed


def _run_in_process(part: Part, fn: Callable, cases: list[Case]) -> list[Outcome]:
    outcomes = []
    with blocked_references(part.guard, fn, part.name):
        for case in cases:
            one = Case(case.args, case.kwargs, case.label)
            box: dict[str, Outcome] = {}

            def call(*_a, _case=one, _box=box, **_k):
                _box["o"] = _run_one(fn, _case, part.pure)
                return None

            outcome = call_with_limit(call, Case(), part.timeout)
            if outcome.timed_out or outcome.error is not None:
                outcomes.append(outcome)
                break
            got = box["o"]
            if got.error is None:
                got.value = _plain(got.value)
            outcomes.append(got)
            if got.error is not None:
                break
    return outcomes


def _run_student(part: Part, fn: Callable, cases: list[Case]) -> tuple[list[Outcome], str]:
    if _can_fork():
        try:
            return _run_in_child(part, fn, cases)
        except _Unsendable:
            pass  # a result pickle cannot carry: compare it in this process instead
    stream = io.StringIO()
    saved = sys.stderr
    sys.stderr = stream  # nothing a check runs may reach stderr (nbgrader scores it 0)
    try:
        return _run_in_process(part, fn, cases), stream.getvalue()
    finally:
        sys.stderr = saved


# --------------------------------------------------------------------------- running


def _error_message(part: Part, case: Case, outcome: Outcome) -> str:
    call = case.show(part.name)
    if outcome.timed_out:
        return (
            f"{part.name} did not return within {part.timeout:g} s on {call}.\n"
            f"Is there an infinite loop, or a loop that never moves forward?"
        )
    err = outcome.error
    kind = getattr(err, "kind", None)
    type_name = getattr(err, "type_name", type(err).__name__)
    if isinstance(err, NotImplementedError) or kind == "not-implemented":
        return f"{part.name} is not implemented yet: replace `raise NotImplementedError()` with your code."
    if isinstance(err, DelegationError) or kind == "delegation":
        return str(err)
    where = f"\n  at {outcome.trace}" if outcome.trace else ""
    return f"{part.name} raised {type_name}: {err}\n  on {call}{where}"


def _finite(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dtype == torch.bool or not x.is_floating_point() or bool(torch.isfinite(x).all())
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, (list, tuple)):
        return all(_finite(v) for v in x)
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    return True


def _identify(part: Part, cases: list[Case], outputs: list[Any], failing: list[int]) -> str:
    """Name the catalogued mistake whose outputs match the student's.

    Harmless differences must not hide a mistake: a case counts against a mistake only
    where the mistake's own output is defined and finite (a student who turns its NaN into
    0 or uses -1e9 for -inf still matches). "Likely" when every such case agrees exactly,
    "Possible" when the failing ones agree, or agree only where the mistake's output is
    finite (the mistake agreeing on most other cases is named).
    """
    if not part.mistakes:
        return ""
    matcher = _nan_tolerant(part.compare)
    best: tuple[float, Mistake] | None = None
    for mistake in part.mistakes:
        agree, counted, weak = [], [], 0
        for i, case in enumerate(cases):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    wrong = case.call(mistake.fn)
            except Exception:  # noqa: BLE001 - a variant may fail where the student's did not
                agree.append(False)
                counted.append(False)
                continue
            same = matcher(wrong, outputs[i]) is None
            if not same and _masked_match(matcher, wrong, outputs[i]):
                # equal wherever the mistake's output is finite: evidence, but weaker
                same, weak = True, weak + 1
            agree.append(same)
            counted.append(same or _finite(wrong))
        fails = [i for i in failing if counted[i]]
        if not fails or not all(agree[i] for i in fails):
            continue
        n_counted = sum(counted)
        n_agree = sum(a and c for a, c in zip(agree, counted))
        if n_agree == n_counted and (n_counted == len(cases) or len(fails) >= 2) and not weak:
            return f"\nLikely mistake: {mistake.hint}"
        fraction = n_agree / max(n_counted, 1)
        if best is None or fraction > best[0]:
            best = (fraction, mistake)
    if best is not None:
        return f"\nPossible mistake (matches the failing inputs): {best[1].hint}"
    return "\nNo catalogued mistake matches; compare your code with the formula in the chapter."


def _masked_match(matcher: Callable, wrong: Any, got: Any) -> bool:
    """Whether ``got`` equals the mistake's output wherever that output is finite (a student
    whose version of the mistake turns its NaN or inf into numbers, e.g. with nan_to_num)."""
    if not (isinstance(wrong, torch.Tensor) and isinstance(got, torch.Tensor)
            and wrong.shape == got.shape and wrong.is_floating_point()):
        return False
    finite = torch.isfinite(wrong)
    if bool(finite.all()) or not bool(finite.any()) and wrong.numel() > 1:
        return False  # nothing masked, or nothing left to compare
    return matcher(wrong.detach().double().masked_fill(~finite, 0.0),
                   got.detach().double().masked_fill(~finite, 0.0)) is None


def _nan_tolerant(compare: Callable) -> Callable:
    def match(a, b):
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape:
            if a.dtype != torch.bool and b.dtype != torch.bool:
                both_nan = torch.isnan(a.detach().double()) & torch.isnan(b.detach().double())
                if both_nan.any():
                    a = a.detach().double().masked_fill(both_nan, 0.0)
                    b = b.detach().double().masked_fill(both_nan, 0.0)
        try:
            return compare(a, b)
        except Exception as err:  # noqa: BLE001
            return str(err)

    return match


def _blame_helpers(part: Part, student_fn: Callable) -> str:
    """When a composite part fails, check the student's own helpers it calls."""
    namespace = getattr(student_fn, "__globals__", None)
    if not isinstance(namespace, dict):
        return ""
    wrong = []
    for name in part.helpers:
        helper, helper_part = namespace.get(name), PARTS.get(name)
        if helper is None or helper_part is None or not callable(helper):
            continue
        try:
            run_part(helper_part, helper, seed=0, quiet=True)
        except AssertionError:
            wrong.append(name)
    if not wrong:
        return ""
    names = ", ".join(wrong)
    checks = ", ".join(f"check_{n}" for n in wrong)
    return (f"\nYour {names} (which {part.name} may call) fails its own check: fix it first "
            f"({checks}), then run this check again.")


def _say(text: str) -> None:
    print(text)


def run_part(part: Part, student_fn: Callable, *, seed: int = 0, quiet: bool = False) -> None:
    """Grade ``student_fn`` against ``part``; raise :class:`CheckFailed` with a diagnosis."""
    __tracebackhide__ = True  # pytest shows the message, not this frame
    if not callable(student_fn):
        raise CheckFailed(
            f"expected your function {part.name}, got {_type_name(student_fn)}: pass the function "
            f"itself, e.g. check_{part.name}({part.name})"
        )
    tampered = _tampered(part)
    if tampered:
        raise CheckFailed(
            f"the grading environment was changed by code in this notebook ({', '.join(tampered[:3])} "
            f"replaced), so {part.name} cannot be checked. Remove that code and restart the kernel."
        )
    cases = part.cases(seed)
    outcomes, printed = _run_student(part, student_fn, cases)
    notes = [n for o in outcomes for n in o.notes]
    stopped = ""
    last = outcomes[-1] if outcomes else None
    if last is not None and (last.timed_out or last.error is not None):
        stopped = _error_message(part, cases[len(outcomes) - 1], last)
        outcomes = outcomes[:-1]
        cases = cases[: len(outcomes)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [case.call(part.reference) for case in cases]
    outputs = [o.value for o in outcomes]
    if stopped and not any(part.compare(e, g) for e, g in zip(expected, outputs)):
        raise CheckFailed(stopped) from None
    failing: list[int] = []
    first_diff = ""
    for i, case in enumerate(cases):
        diff = part.compare(expected[i], outputs[i])
        if diff:
            if not failing:
                first_diff = (
                    f"{part.name} is wrong on <N> of {len(cases)} test inputs.\n"
                    f"First wrong input: {case.show(part.name)}\n"
                    f"  {diff}\n" + _show_pair(expected[i], outputs[i])
                )
            failing.append(i)
    mutated = [i for i, o in enumerate(outcomes) if o.mutated]
    mutation = ""
    if mutated:
        mutation = (f"{part.name} changed its input in place on {len(mutated)} of {len(cases)} test "
                    f"inputs (first: {cases[mutated[0]].show(part.name)}). The exercise asks you "
                    f"to leave the inputs unchanged: work on a copy or build a new result.")
    if failing:
        message = first_diff.replace("<N>", str(len(failing)), 1)
        message += _identify(part, cases, outputs, failing)
        if stopped:
            message += f"\nOn the next input it stopped: {stopped}"
        message += _blame_helpers(part, student_fn)
        if mutation:
            message += "\n" + mutation
        raise CheckFailed(message)
    if mutation:
        raise CheckFailed(mutation)
    if not quiet:
        for note in dict.fromkeys(notes):
            _say(f"note: your {part.name} raised a warning (it costs no points): {note}")
        if printed.strip():
            _say(f"note: your {part.name} printed (first lines):\n" + "\n".join(printed.splitlines()[:5]))
        _say(f"✔ {part.name}: correct on all {len(cases)} test inputs")
