"""A simulated class per exercise, autograded in one nbgrader run (DESIGN §5, issue 11).

For every exercise: ≥ 12 submissions (correct, correct-but-different, partial, blank, one
catalogued mistake per part, a tampered and a deleted test cell, two kinds of infinite
loop, a syntax error, a wrong return type, a delegating solution, a kernel crash), each
must get exactly its predicted score; one bad submission never stops the others; feedback
HTML is produced for everyone. Seconds per submission are printed (run with -s).
"""

from __future__ import annotations

import time

import pytest

from .course import ROOT, Course, chapters
from .simulated_class import build

CHAPTERS = [pytest.param(ch, marks=pytest.mark.xdist_group(ch)) for ch in chapters()]


@pytest.fixture(scope="module", params=CHAPTERS)
def graded(request, tmp_path_factory):
    chapter = request.param
    course = Course.create(tmp_path_factory.mktemp(chapter), chapter, cell_timeout=20)
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


def test_class_is_big_enough(graded):
    _, submissions, _ = graded
    assert len(submissions) >= 12


def test_every_submission_gets_its_expected_score(graded):
    course, submissions, result = graded
    maxima = course.max_scores()
    wrong = []
    for sub in submissions:
        if sub.failing is None:
            continue
        got = course.scores(sub.student)
        expected = {grade_id: (0.0 if grade_id.removeprefix("test_") in sub.failing else points)
                    for grade_id, points in maxima.items()}
        if got != expected:
            wrong.append(f"{sub.student} ({sub.note}): got {got}, expected {expected}")
    assert not wrong, "\n".join(wrong) + "\n" + result.stdout[-4000:] + result.stderr[-4000:]


def test_a_crashing_kernel_does_not_stop_the_others(graded):
    course, submissions, _ = graded
    maxima = course.max_scores()
    crash = course.scores("kernel-crash")
    assert sum(crash.values()) < sum(maxima.values())
    assert course.scores("correct") == maxima


def test_feedback_html_for_every_graded_submission(graded):
    course, submissions, result = graded
    # nbgrader cannot autograde a notebook whose kernel died; it reports that student by
    # name and goes on with the others. Everyone else gets feedback.
    assert "kernel-crash" in result.stdout + result.stderr
    missing = [s.student for s in submissions
               if s.student != "kernel-crash" and not course.feedback_html(s.student).exists()]
    assert not missing, f"no feedback for {missing}"
    mistaken = next(s.student for s in submissions if s.student.startswith("mistake-"))
    assert "Likely mistake" in course.feedback_html(mistaken).read_text()


def test_feedback_does_not_reveal_hidden_tests(graded):
    course, _, _ = graded
    html = course.feedback_html("correct").read_text()
    hidden = [line.strip() for cell in course.source().cells if "BEGIN HIDDEN TESTS" in cell.source
              for line in cell.source.split("### BEGIN HIDDEN TESTS")[1].split("### END HIDDEN TESTS")[0].splitlines()
              if line.strip()]
    assert hidden, "the exercise has hidden tests"
    import html as html_lib
    import re

    text = html_lib.unescape(re.sub(r"<[^>]+>", "", html))
    leaked = [line for line in hidden if line in text]
    assert not leaked, f"feedback shows hidden tests: {leaked}"


def test_no_drift_between_solutions_and_exercises(graded):
    course, _, _ = graded
    released = course.root / "exercises" / course.chapter
    committed = ROOT / "exercises" / course.chapter
    fresh = {p.relative_to(released): p.read_bytes() for p in released.rglob("*") if p.is_file()}
    stored = {p.relative_to(committed): p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    assert fresh.keys() == stored.keys(), f"exercises/{course.chapter}: run `make exercises`"
    for rel in fresh:
        assert fresh[rel] == stored[rel], f"exercises/{course.chapter}/{rel} differs from a fresh release: run `make exercises`"


def test_no_solution_text_in_exercises(graded):
    course, _, _ = graded
    for path in (ROOT / "exercises" / course.chapter).glob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{path} contains {marker}"
