"""A simulated class per exercise, autograded in one nbgrader run (DESIGN §5, issue 11).

For every exercise: ≥ 12 submissions (correct, correct-but-different, partial, blank, one
catalogued mistake per part, a tampered and a deleted test cell, two kinds of infinite
loop, a syntax error, a wrong return type, a delegating solution, a kernel crash), each
must get exactly its predicted score; one bad submission never stops the others; feedback
HTML is produced for everyone. Seconds per submission are printed (run with -s).
"""

from __future__ import annotations

import html
import re
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
    assert len(submissions) >= 12
    log = result.stdout[-4000:] + result.stderr[-4000:]
    check_scores(course, submissions, log)
    check_crash_is_isolated(course, result)
    check_feedback(course, submissions)
    check_hidden_tests_stay_hidden(course)
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


def check_crash_is_isolated(course, result):
    """A kernel that dies is reported by name; the others are graded as usual."""
    maxima = course.max_scores()
    assert sum(course.scores("kernel-crash").values()) < sum(maxima.values())
    assert course.scores("correct") == maxima
    assert "kernel-crash" in result.stdout + result.stderr


def check_feedback(course, submissions):
    # nbgrader cannot autograde a notebook whose kernel died, so it gets no feedback.
    missing = [s.student for s in submissions
               if s.student != "kernel-crash" and not course.feedback_html(s.student).exists()]
    assert not missing, f"no feedback for {missing}"
    mistaken = next(s.student for s in submissions if s.student.startswith("mistake-"))
    assert "Likely mistake" in course.feedback_html(mistaken).read_text()


def check_hidden_tests_stay_hidden(course):
    text = html.unescape(re.sub(r"<[^>]+>", "", course.feedback_html("correct").read_text()))
    hidden = [line.strip() for cell in course.source().cells if "BEGIN HIDDEN TESTS" in cell.source
              for line in cell.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0].splitlines()
              if line.strip()]
    assert hidden, "the exercise has hidden tests"
    leaked = [line for line in hidden if line in text]
    assert not leaked, f"feedback shows hidden tests: {leaked}"


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
