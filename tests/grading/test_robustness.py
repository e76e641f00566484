"""One class of hostile and unusual notebooks through nbgrader (issue 17, items 1 and 4).

nbgrader's side of grading is the same for every exercise, so it is tested once, on the
cheapest exercise (ch01), in one autograde run:

* a tampered and a deleted locked test cell, a hang inside a function and at the top of a
  cell, a syntax error, a kernel crash (from ``simulated_class.build(generic=True)``);
* a duplicated solution and test cell (JupyterLab copies the nbgrader metadata), a renamed
  test-cell id: graded as if untouched, and the class goes on;
* code that swallows ``KeyboardInterrupt`` in a loop at the top of a cell: the kernel is
  restarted, earlier parts keep their points;
* a correct answer that raises warnings, also where a hidden assert calls it outside the
  check: full marks, in nbgrader and in ``lmlab check``;
* a function right on the visible cases and wrong on the hidden ones: its feedback names
  the failure but shows no hidden-test line and no seed;
* an untouched release copy: no "checksum has changed" warning (a real edit still warns);
* the hidden cases follow ``LMLAB_HIDDEN_SEED`` at grading time (the kernel inherits it).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

from .course import Course, graded_parts, student_cell, with_cells
from .simulated_class import Submission, build

CHAPTER = "ch01_chips"
SEED_A, SEED_B = "31337", "4242"


def _recorder(header: str, log: Path, visible: set | None = None) -> str:
    """A matmul_flops that logs its arguments; with ``visible``, right only on those."""
    body = "    return 2 * m * n * k\n"
    if visible is not None:
        body = (f"    if (m, n, k) in {sorted(visible)!r}:\n        return 2 * m * n * k\n"
                "    return m * n * k\n")
    return (f"{header}\n    with open({str(log)!r}, 'a') as f:\n"
            f"        f.write(repr((m, n, k)) + '\\n')\n{body}")


def _visible_cases() -> set:
    from lmlab.checks import check_matmul_flops

    seen = set()

    def spy(m, n, k):
        seen.add((m, n, k))
        return 2 * m * n * k

    check_matmul_flops(spy)
    return seen


def hostile_class(course: Course, log_dir: Path) -> list[Submission]:
    source, blank = course.source(), course.release()
    subs = build(source, blank, CHAPTER, generic=True)
    parts = graded_parts(source)
    names = [p[0] for p in parts]
    (first, s1, t1), (_, s2, t2) = parts[0], parts[1]
    solved = {s: student_cell(source.cells[s].source) for _, s, _ in parts}
    correct = with_cells(blank, solved)
    header = solved[s1].split("\n", 1)[0]

    duplicated = copy.deepcopy(correct)
    wrong_copy = copy.deepcopy(duplicated.cells[s1])
    wrong_copy.source = f"{header}\n    return m * n * k  # a first try, kept above\n"
    test_copy = copy.deepcopy(duplicated.cells[t2])
    wrong_copy.id, test_copy.id = "copied-solution", "copied-test"  # JupyterLab gives copies new ids
    duplicated.cells.insert(t2 + 1, test_copy)
    duplicated.cells.insert(s1, wrong_copy)

    renamed = copy.deepcopy(correct)
    renamed.cells[t1].metadata["nbgrader"]["grade_id"] = f"test_{first}_renamed"

    interrupt_proof = ("while True:\n    try:\n        time.sleep(0.05)\n"
                       "    except BaseException:\n        pass\n")
    warns = ("import warnings\n\n" + solved[s1].replace(
        '"""\n', '"""\n    warnings.warn("harmless", UserWarning)\n'
                 '    warnings.warn("old API", DeprecationWarning)\n', 1))

    subs += [
        Submission("duplicated-cells", duplicated, set(), "a solution and a test cell duplicated"),
        Submission("renamed-test-id", renamed, set(), "a test cell's grade_id renamed"),
        # part 2's cell times out and the kernel is restarted: part 1 keeps its points; a
        # later part passes or not depending on what it needs from before the restart
        Submission("swallows-interrupt", with_cells(correct, {s2: interrupt_proof + solved[s2]}),
                   {names[1]}, "a loop that catches KeyboardInterrupt at the top of part 2",
                   unknown=set(names[2:])),
        Submission("swallows-interrupt-in-function", with_cells(correct, {s1: (
            f"{header}\n    while True:\n        try:\n            time.sleep(0.05)\n"
            "        except BaseException:\n            pass\n")}),
                   {first}, "the same loop inside the function", unknown=set(names[1:])),
        Submission("warns", with_cells(correct, {s1: warns}), set(),
                   "correct, but raises a UserWarning and a DeprecationWarning"),
        Submission("hidden-only-wrong", with_cells(correct, {s1: _recorder(
            header, log_dir / "hidden-only-wrong.log", _visible_cases())}), {first},
                   "right on the visible cases only", unknown=set(names[1:])),
        Submission("recorder", with_cells(correct, {s1: _recorder(header, log_dir / "recorder.log")}),
                   set(), "correct; logs the cases it is called on"),
    ]
    return subs


# One test (not one per assertion): the class is graded once, and pytest-xdist, which hands
# out single tests, would otherwise grade it on both workers.
def test_hostile_class(tmp_path):
    course = Course.create(tmp_path, CHAPTER, cell_timeout=15)
    subs = hostile_class(course, tmp_path)
    for sub in subs:
        course.submit(sub.student, sub.notebook)
    start = time.perf_counter()
    result = course.autograde(env={"LMLAB_HIDDEN_SEED": SEED_A})
    seconds = time.perf_counter() - start
    course.feedback(env={"LMLAB_HIDDEN_SEED": SEED_A})
    print(f"\n{CHAPTER} robustness: autograded {len(subs)} submissions in {seconds:.0f} s")
    graded = course, subs, result.stdout + result.stderr, tmp_path
    check_every_submission_gets_its_score(graded)
    check_one_bad_notebook_never_stops_the_class(graded)
    check_checksum_warning_only_for_real_edits(graded)
    check_failing_feedback_hides_hidden_tests(graded)
    check_warnings_cost_no_points_in_lmlab_check_either(graded, tmp_path / "warns")
    check_hidden_cases_follow_the_instructors_seed(graded)


def check_every_submission_gets_its_score(graded):
    from .test_class import check_scores

    course, subs, log, _ = graded
    check_scores(course, subs, log[-8000:])


def check_one_bad_notebook_never_stops_the_class(graded):
    course, subs, log, _ = graded
    assert "old version" not in log and "may be corrupted" not in log, log[-4000:]
    maxima = course.max_scores()
    assert sum(course.scores("kernel-crash").values()) < sum(maxima.values())
    assert "kernel-crash" in log
    # nbgrader cannot autograde a notebook whose kernel died; everyone else gets feedback.
    missing = [s.student for s in subs
               if s.student != "kernel-crash" and not course.feedback_html(s.student).exists()]
    assert not missing, f"no feedback for {missing}"


def check_checksum_warning_only_for_real_edits(graded):
    _, _, log, _ = graded
    warned = {line.split("for cell ")[1].split()[0] for line in log.splitlines()
              if "Attribute 'checksum'" in line}
    # one test cell was replaced by the tampered-test student; nobody else edits a locked cell
    assert warned == {"test_matmul_flops"}, log[-4000:]


def check_failing_feedback_hides_hidden_tests(graded):
    from lmlab.checks.core import hidden_seed

    course, subs, _, _ = graded
    secret = course.hidden_lines() + [SEED_A] + [
        str(hidden_seed(g.removeprefix("test_"))) for g in course.max_scores()]
    for student in ("hidden-only-wrong", "mistake-matmul_flops", "tampered-test", "warns"):
        text = course.feedback_text(student)
        leaked = [s for s in secret if s in text]
        assert not leaked, f"{student}'s feedback shows {leaked}"
    assert "matmul_flops is wrong on" in course.feedback_text("hidden-only-wrong")


def check_hidden_cases_follow_the_instructors_seed(graded):
    course, _, _, tmp = graded
    log = tmp / "recorder.log"
    calls_a = set(log.read_text().splitlines())
    log.unlink()
    course.autograde("--student=recorder", env={"LMLAB_HIDDEN_SEED": SEED_B})
    calls_b = set(log.read_text().splitlines())
    visible = {repr(c) for c in _visible_cases()}
    assert visible <= calls_a and visible <= calls_b  # the visible cases never change
    assert calls_a - visible and calls_b - visible
    assert calls_a - visible != calls_b - visible, "two seeds gave the same hidden cases"
    assert course.scores("recorder") == course.max_scores()


def check_warnings_cost_no_points_in_lmlab_check_either(graded, tmp_path):
    course, subs, _, _ = graded
    tmp_path.mkdir()
    path = tmp_path / "chips.ipynb"
    path.write_text(json.dumps(next(s.notebook for s in subs if s.student == "warns")))
    result = subprocess.run([sys.executable, "-m", "lmlab.cli", "check", str(path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert course.scores("warns") == course.max_scores()
