"""The machinery every graded part shares.

A graded part is a :class:`Part`: the reference function, a seeded generator of test
inputs (:class:`Case`), a catalogue of known-wrong variants (:class:`Mistake`) and a way to
compare outputs. :func:`run_part` calls the student's function on every case and, on
failure, raises ``AssertionError`` with a diagnosis: the input, what was expected, what came
back, and the catalogued mistake whose output matches the student's.

Three promises, each tested in ``tests/unit/test_checks_core.py``:

* a check never hangs: every call runs under a time limit (``Part.timeout``);
* a check never crashes on bad student code: exceptions, wrong types and wrong shapes
  become a readable ``AssertionError``;
* a check grades the student, not lmlab: while the student's code runs, the matching
  lmlab reference (``Part.guard``) raises :class:`DelegationError` when called from it.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import sys
import threading
import traceback
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

    def check(fn: Callable, *, seed: int = 0, hidden: bool = False) -> None:
        run_part(part, fn, seed=hidden_seed(part.name) if hidden else seed)

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
        if expected != got:
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
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__}"


def _short(x: Any, limit: int = 60) -> str:
    if isinstance(x, torch.Tensor):
        if x.numel() <= 6:
            return f"tensor({x.tolist()})"
        return f"<tensor {tuple(x.shape)} {str(x.dtype).replace('torch.', '')}>"
    if callable(x) and not isinstance(x, type):
        return getattr(x, "__name__", type(x).__name__)
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(x: Any) -> str:
    """A short description of a value for messages."""
    return _short(x)


# --------------------------------------------------------------------------- guard


class DelegationError(RuntimeError):
    """Raised when graded code calls the lmlab reference it is supposed to re-implement."""


def _resolve(dotted: str) -> tuple[Any, str]:
    module_name, _, attr = dotted.rpartition(".")
    try:
        return import_module(module_name), attr
    except ModuleNotFoundError:
        owner_name, _, cls = module_name.rpartition(".")
        return getattr(import_module(owner_name), cls), attr


def _called_from_library(frame) -> bool:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name.split(".")[0] in ("lmlab", "torch")


def _blocker(original: Callable, dotted: str, part_name: str) -> Callable:
    def blocked(*args, **kwargs):
        # Library code may use the reference internally; only the student's own frames
        # are refused.
        if _called_from_library(sys._getframe(1)):
            return original(*args, **kwargs)
        raise DelegationError(
            f"your {part_name} calls {dotted}, the reference this exercise asks you to "
            f"write yourself: implement it without calling lmlab"
        )

    blocked.__wrapped_reference__ = original
    return blocked


@contextmanager
def blocked_references(guard: Sequence[str], student_fn: Callable, part_name: str):
    """Make the references in ``guard`` unavailable to ``student_fn`` while inside."""
    undo: list[tuple[Any, str, Any]] = []
    try:
        for dotted in guard:
            owner, attr = _resolve(dotted)
            original = getattr(owner, attr)
            stand_in = _blocker(original, dotted, part_name)
            targets = [(owner, attr)]
            # re-exports in other lmlab modules (lmlab.matmul_flops, ...)
            for name, module in list(sys.modules.items()):
                if name.split(".")[0] == "lmlab" and module is not owner and module is not None:
                    for key, value in list(vars(module).items()):
                        if value is original:
                            targets.append((module, key))
            for target, key in targets:
                undo.append((target, key, getattr(target, key)))
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


# --------------------------------------------------------------------------- time limit


class _TimeLimit(BaseException):
    """Raised inside the student's code when it runs past the limit (not an Exception, so a
    bare ``except Exception`` in student code cannot swallow it)."""


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    trace: str = ""


def call_with_limit(fn: Callable, case: Case, seconds: float) -> Outcome:
    """Run ``case.call(fn)`` for at most ``seconds``; never raises."""
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
    library = ("/lmlab/", "/torch/", "/copy.py", "/site-packages/")
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = frame.filename.replace("\\", "/")
        if any(part in path for part in library):
            continue
        line = (frame.line or "").strip()
        in_notebook = path.startswith("<") or "ipykernel" in path
        where = "your code" if in_notebook else path
        return f"line {frame.lineno} of {where}: {line}" if line else f"line {frame.lineno} of {where}"
    return ""


# --------------------------------------------------------------------------- running


def _error_message(part: Part, case: Case, outcome: Outcome) -> str:
    call = case.show(part.name)
    if outcome.timed_out:
        return (
            f"{part.name} did not return within {part.timeout:g} s on {call}.\n"
            f"Is there an infinite loop, or a loop that never moves forward?"
        )
    err = outcome.error
    if isinstance(err, NotImplementedError):
        return f"{part.name} is not implemented yet: replace `raise NotImplementedError()` with your code."
    if isinstance(err, DelegationError):
        return str(err)
    where = f"\n  at {outcome.trace}" if outcome.trace else ""
    return f"{part.name} raised {type(err).__name__}: {err}\n  on {call}{where}"


def _identify(part: Part, cases: list[Case], outputs: list[Any], failing: list[int]) -> str:
    """Name the catalogued mistake whose outputs match the student's."""
    if not part.mistakes:
        return ""
    matcher = _nan_tolerant(part.compare)
    partial = None
    for mistake in part.mistakes:
        agree = []
        for i, case in enumerate(cases):
            try:
                wrong = case.call(mistake.fn)
            except Exception:  # noqa: BLE001 - a variant may fail where the student's did not
                agree.append(False)
                continue
            agree.append(matcher(wrong, outputs[i]) is None)
        if all(agree):
            return f"\nLikely mistake: {mistake.hint}"
        if partial is None and all(agree[i] for i in failing):
            partial = mistake
    if partial is not None:
        return f"\nPossible mistake (matches the failing inputs): {partial.hint}"
    return "\nNo catalogued mistake matches; compare your code with the formula in the chapter."


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


def run_part(part: Part, student_fn: Callable, *, seed: int = 0, quiet: bool = False) -> None:
    """Grade ``student_fn`` against ``part``; raise ``AssertionError`` with a diagnosis."""
    __tracebackhide__ = True  # pytest shows the message, not this frame
    if not callable(student_fn):
        raise AssertionError(
            f"expected your function {part.name}, got {_type_name(student_fn)}: pass the function "
            f"itself, e.g. check_{part.name}({part.name})"
        )
    cases = part.cases(seed)
    expected = [case.call(part.reference) for case in cases]
    outputs: list[Any] = []
    failing: list[int] = []
    first_diff = ""
    with blocked_references(part.guard, student_fn, part.name):
        for i, case in enumerate(cases):
            outcome = call_with_limit(student_fn, case, part.timeout)
            if outcome.timed_out or outcome.error is not None:
                raise AssertionError(_error_message(part, case, outcome)) from None
            outputs.append(outcome.value)
            diff = part.compare(expected[i], outcome.value)
            if diff:
                if not failing:
                    first_diff = (
                        f"{part.name} is wrong on <N> of {len(cases)} test inputs.\n"
                        f"First wrong input: {case.show(part.name)}\n"
                        f"  {diff}\n"
                        f"  expected: {_short(expected[i], 200)}\n"
                        f"  got:      {_short(outcome.value, 200)}"
                    )
                failing.append(i)
    if failing:
        message = first_diff.replace("<N>", str(len(failing)), 1) + _identify(part, cases, outputs, failing)
        raise AssertionError(message)
    if not quiet:
        print(f"✔ {part.name}: correct on all {len(cases)} test inputs")
