"""A simulated class for one exercise: submissions built from the solution notebook and the
chapter's mistake catalogue, each with the score it must get.

Rules used to predict scores:
* a part's test fails when its function is wrong, raises, hangs or is missing;
* a later part whose solution calls a missing or broken function (raises, hangs, wrong
  type) fails too (the cascade);
* a later part that calls a *subtly* wrong function may or may not fail (a softmax without
  the max shift is only wrong on large inputs), so its score is not predicted;
* a function that merely delegates to lmlab still returns right answers: no cascade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lmlab.checks import PARTS

from .alternatives import ALTERNATIVES
from .course import graded_parts, student_cell, with_cells


@dataclass
class Submission:
    student: str
    notebook: object
    failing: set[str] | None = field(default_factory=set)  # parts expected to score 0
    note: str = ""
    unknown: set[str] = field(default_factory=set)  # parts whose score is not predicted


def _def_line(source: str, name: str) -> str:
    match = re.search(rf"^def {name}\(.*?\):", source, re.M | re.S)
    if not match:
        raise ValueError(f"no `def {name}(...)` in solution cell")
    return match.group(0)


def build(source, blank, chapter: str, *, generic: bool = False) -> list[Submission]:
    """The class for ``chapter``. Submissions that test nbgrader's handling of hostile
    notebooks rather than the chapter's checks (tampered or deleted test cells, a hang at
    the top of a cell, a syntax error, a kernel crash, an infinite loop in a function) are
    the same for every exercise: they are built only with ``generic=True`` (the
    robustness class of ``test_robustness.py``, one exercise), which keeps the per-chapter
    classes cheap."""
    parts = graded_parts(source)
    names = [p[0] for p in parts]
    solved = {s: student_cell(source.cells[s].source) for _, s, _ in parts}

    def cascade(wrong: str) -> set[str]:
        failing = {wrong}
        for name, s, _ in parts:
            if any(re.search(rf"\b{w}\(", solved[s]) for w in failing if w != name):
                failing.add(name)
        return failing

    def solution_with(replacements: dict[int, str]):
        return with_cells(blank, {**solved, **replacements})

    first, s1, t1 = parts[0]
    second, s2, _ = parts[1]
    subs = [
        Submission("correct", solution_with({}), set(), "the solution, markers removed"),
        Submission("blank", blank, set(names), "the release as handed out"),
        Submission("partial", with_cells(blank, {s: solved[s] for _, s, _ in parts[: len(parts) // 2]}),
                   set(names[len(parts) // 2:]), "first half of the parts solved"),
    ]
    alternatives = ALTERNATIVES.get(chapter, {})
    if alternatives:
        index = {name: s for name, s, _ in parts}
        subs.append(Submission("alternative", solution_with({index[n]: src for n, src in alternatives.items()}),
                               set(), "different correct implementations (loops, other library calls)"))
    for name, s, _ in parts:
        mistakes = PARTS[name].mistakes
        if not mistakes:
            continue
        wrong = f"from lmlab.checks import PARTS\n{name} = PARTS[{name!r}].mistakes[0].fn\n"
        subs.append(Submission(f"mistake-{name}", solution_with({s: wrong}), {name},
                               f"catalogued mistake {mistakes[0].name!r} in {name}",
                               unknown=cascade(name) - {name}))
    header = _def_line(solved[s1], first)
    subs += [
        Submission("wrong-type", solution_with({s1: f"{header}\n    return 'a string'\n"}),
                   cascade(first), "returns a str"),
        Submission("delegates", solution_with({s1: _delegating(first, header)}), {first},
                   "calls the lmlab reference it should write"),
    ]
    if not generic:
        return subs
    mistaken = f"from lmlab.checks import PARTS\n{first} = PARTS[{first!r}].mistakes[0].fn\n"
    tampered = solution_with({s1: mistaken})
    tampered.cells[t1].source = "print('all tests passed')"
    subs.append(Submission("tampered-test", tampered, {first}, "wrong answer, locked test cell replaced",
                           unknown=cascade(first) - {first}))
    deleted = solution_with({s1: mistaken})
    del deleted.cells[t1]
    subs.append(Submission("deleted-test", deleted, {first}, "wrong answer, test cell deleted",
                           unknown=cascade(first) - {first}))
    subs += [
        Submission("infinite-loop", solution_with({s1: f"{header}\n    while True:\n        pass\n"}),
                   cascade(first), "hangs inside the function: stopped by the check's time limit"),
        Submission("hangs-cell", solution_with({s2: "while True:\n    pass\n" + solved[s2]}),
                   cascade(second), "hangs at the top of a cell: stopped by nbgrader's cell time limit"),
        Submission("syntax-error", solution_with({s2: solved[s2].replace("def ", "def (", 1)}),
                   cascade(second), "a syntax error in one cell"),
        Submission("kernel-crash", solution_with({s2: "import os\nos._exit(1)\n" + solved[s2]}),
                   None, "kills its kernel: graded without stopping the others"),
    ]
    return subs


def _delegating(name: str, header: str) -> str:
    guarded = PARTS[name].guard[0]
    module, _, attr = guarded.rpartition(".")
    args = re.search(r"\((.*)\)", header, re.S).group(1)
    call_args = ", ".join(a.split("=")[0].split(":")[0].strip() for a in args.split(",") if a.strip())
    return f"import {module}\n{header}\n    return {module}.{attr}({call_args})\n"
