"""A simulated class per exercise, autograded in one nbgrader run (DESIGN §5, issue 11).

For every exercise: the submissions whose grading depends on the chapter's checks
(correct, correct-but-different, partial, blank, one catalogued mistake per part, a wrong
return type, a delegating solution), each must get exactly its predicted score; feedback
HTML is produced for everyone and, passing or failing, shows no hidden-test line and no
hidden seed, while a failing one keeps its diagnosis. Hostile notebooks (tampering, hangs,
crashes, duplicated cells, swallowed interrupts) test nbgrader's side, which is the same for
every exercise: ``test_robustness.py`` grades them once. Seconds per submission are printed
(run with -s).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .course import ROOT, Course, chapters
from .simulated_class import build

CHAPTERS = chapters()


def grade_class(chapter: str, tmp: Path):
    course = Course.create(tmp, chapter, cell_timeout=20)
    submissions = build(course.source(), course.release(), chapter)
    for sub in submissions:
        course.submit(sub.student, sub.notebook)
    start = time.perf_counter()
    result = course.autograde()
    seconds = time.perf_counter() - start
    course.feedback()
    print(f"\n{chapter}: autograded {len(submissions)} submissions in {seconds:.0f} s "
          f"({seconds / len(submissions):.1f} s per submission)")
    return course, submissions, result


# One test per exercise (not one per assertion): the class is graded once, and pytest-xdist
# hands whole exercises to its workers.
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_simulated_class(chapter, tmp_path):
    course, submissions, result = grade_class(chapter, tmp_path)
    assert len(submissions) >= 8
    log = result.stdout[-4000:] + result.stderr[-4000:]
    check_scores(course, submissions, log)
    check_feedback(course, submissions)
    check_hidden_tests_stay_hidden(course, submissions)
    check_no_drift(course)
    check_no_solution_text(course)


def check_scores(course, submissions, log):
    maxima = course.max_scores()
    wrong = []
    for sub in submissions:
        if sub.failing is None:
            continue
        got = course.scores(sub.student)
        expected = {grade_id: (0.0 if grade_id.removeprefix("test_") in sub.failing else points)
                    for grade_id, points in maxima.items()}
        for part in sub.unknown:  # a subtly wrong helper may or may not break its callers
            got.pop(f"test_{part}", None)
            expected.pop(f"test_{part}", None)
        if got != expected:
            wrong.append(f"{sub.student} ({sub.note}): got {got}, expected {expected}")
    assert not wrong, "\n".join(wrong) + "\n" + log


def check_feedback(course, submissions):
    missing = [s.student for s in submissions if not course.feedback_html(s.student).exists()]
    assert not missing, f"no feedback for {missing}"


def check_hidden_tests_stay_hidden(course, submissions):
    """No feedback page (passing or failing: a failing check's traceback quotes the lines
    around it) shows a hidden-test line or the hidden seed; a failing one keeps its
    diagnosis."""
    from lmlab.checks import PARTS
    from lmlab.checks.core import hidden_seed

    hidden = course.hidden_lines()
    assert hidden, "the exercise has hidden tests"
    seeds = {str(hidden_seed(name.removeprefix("test_"))) for name in course.max_scores()}
    leaks = []
    for sub in submissions:
        if not course.feedback_html(sub.student).exists():
            continue
        text = course.feedback_text(sub.student)
        leaks += [f"{sub.student}: {line}" for line in hidden + sorted(seeds) if line in text]
        if sub.student.startswith("mistake-"):
            hint = PARTS[sub.student.removeprefix("mistake-")].mistakes[0].hint
            assert " ".join(hint.split())[:60] in " ".join(text.split()), \
                f"{sub.student}: the feedback lost the diagnosis {hint!r}"
    assert not leaks, "feedback shows hidden tests or seeds:\n" + "\n".join(leaks)


def check_no_drift(course):
    released = course.root / "exercises" / course.chapter
    committed = ROOT / "exercises" / course.chapter
    fresh = {p.relative_to(released): p.read_bytes() for p in released.rglob("*") if p.is_file()}
    stored = {p.relative_to(committed): p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    assert fresh.keys() == stored.keys(), f"exercises/{course.chapter}: run `make exercises`"
    for rel in fresh:
        assert fresh[rel] == stored[rel], f"exercises/{course.chapter}/{rel} differs from a fresh release: run `make exercises`"


def check_no_solution_text(course):
    for path in (ROOT / "exercises" / course.chapter).glob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{path} contains {marker}"
