"""`lmlab check NOTEBOOK`: the student's view of the autograder."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from .course import ROOT, graded_parts, student_cell, with_cells

EXERCISE = ROOT / "exercises" / "ch01_chips" / "chips.ipynb"
SOURCE = ROOT / "solutions" / "ch01_chips" / "chips.ipynb"
LMLAB = [sys.executable, "-m", "lmlab.cli"]


def run_check(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LMLAB, "check", str(path), *extra], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def mixed_submission(tmp_path_factory) -> Path:
    """Part 1 correct, part 2 with a catalogued mistake, the rest blank."""
    source, blank = nbformat.read(SOURCE, 4), nbformat.read(EXERCISE, 4)
    (p1, s1, _), (p2, s2, _) = graded_parts(source)[:2]
    wrong = "def arithmetic_intensity(m, n, k, bytes_per_element):\n    return 2 * m * n * k / ((m * k + k * n) * bytes_per_element)\n"
    nb = with_cells(blank, {s1: student_cell(source.cells[s1].source), s2: wrong})
    path = tmp_path_factory.mktemp("student") / "chips.ipynb"
    nbformat.write(nb, path)
    return path


def test_mixed_submission_reports_each_part(mixed_submission):
    result = run_check(mixed_submission)
    out = result.stdout
    assert result.returncode == 1
    assert "✔ pass  matmul_flops" in out
    assert "✘ FAIL  arithmetic_intensity" in out
    assert "Likely mistake: you counted only the reads of A and B" in out
    assert "not implemented yet" in out  # the blank parts
    assert "Score: 2/9 points (1 of 4 parts pass" in out
    assert "\033[" not in out, "colour codes when piped"


def test_solution_passes_with_exit_code_zero():
    result = run_check(SOURCE)
    assert result.returncode == 0, result.stdout
    assert "Score: 9/9 points" in result.stdout


def test_missing_notebook_is_a_clear_error():
    result = run_check(ROOT / "nope.ipynb")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_colour_on_a_terminal(mixed_submission):
    from lmlab.selfcheck import PartResult, format_report

    text = format_report("x.ipynb", [PartResult("test_a", 2, True), PartResult("test_b", 1, False, "boom")], [], colour=True)
    assert "\033[32m" in text and "\033[31m" in text


def test_doctor_prints_the_machine():
    result = subprocess.run([*LMLAB, "doctor"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for word in ("torch", "cpu peak", "threads", "picked device"):
        assert word in result.stdout


def test_bench_quick_runs_a_named_benchmark():
    result = subprocess.run([*LMLAB, "bench", "timing", "--quick"], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "median ratio" in result.stdout


def test_bench_unknown_name():
    result = subprocess.run([*LMLAB, "bench", "nope", "--quick"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "not a Jupyter notebook"),
])
def test_a_file_that_is_not_a_notebook_gets_one_line(tmp_path, content, words):
    path = tmp_path / "broken.ipynb"
    path.write_text(content)
    result = run_check(path)
    assert result.returncode == 2
    assert words in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_copied_cells_renamed_tests_and_stuck_cells_are_explained(tmp_path):
    import copy

    nb = nbformat.read(EXERCISE, 4)
    solutions = [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")]
    nb.cells.insert(solutions[0] + 1, copy.deepcopy(nb.cells[solutions[0]]))  # a copied cell
    tests = [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade")]
    nb.cells[tests[-1]].metadata["nbgrader"]["grade_id"] = "renamed"
    stubborn = "import time\nwhile True:\n    try:\n        time.sleep(100)\n    except:\n        pass\n"
    nb.cells.insert(solutions[0], nbformat.v4.new_code_cell(stubborn))
    path = tmp_path / EXERCISE.name
    nbformat.write(nb, path)
    result = run_check(path, "--timeout", "8")
    out = result.stdout
    assert result.returncode == 1
    assert "is a copy of cell" in out and "paste the code" in out
    assert "is missing (deleted, or its nbgrader id was changed)" in out
    assert "ran past the 8 s limit and was skipped" in out
    assert "still raises NotImplementedError" not in out or "not written yet" in out
    assert "Score: 0/9 points" in out
