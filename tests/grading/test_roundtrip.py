"""The nbgrader round trip for every exercise (DESIGN §5):

* exercises/ is exactly what `nbgrader generate_assignment` makes from solutions/;
* no solution or hidden-test text reaches exercises/;
* the solution notebook scores full marks, the blank exercise zero, and a submission
  that solves only the first part gets exactly that part's points.
"""

import nbformat
import pytest

from .course import ROOT, Course, chapters, graded_parts, student_cell, with_cells

CHAPTERS = chapters()


@pytest.fixture(scope="module", params=CHAPTERS)
def course(request, tmp_path_factory):
    return Course.create(tmp_path_factory.mktemp(request.param), request.param)


def test_there_are_exercises():
    assert "ch01_chips" in CHAPTERS


def test_no_drift_between_solutions_and_exercises(course):
    released = course.root / "exercises" / course.chapter
    committed = ROOT / "exercises" / course.chapter
    for path in sorted(released.rglob("*")):
        if path.is_file():
            twin = committed / path.relative_to(released)
            assert twin.exists(), f"{twin} is missing: run `make exercises`"
            assert twin.read_bytes() == path.read_bytes(), f"{twin} differs from a fresh release: run `make exercises`"
    extra = {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()} - {
        p.relative_to(released) for p in released.rglob("*") if p.is_file()}
    assert not extra, f"exercises/{course.chapter} has files nbgrader does not make: {extra}"


def test_no_solution_text_in_exercises(course):
    for path in (ROOT / "exercises" / course.chapter).glob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, f"{path} contains {marker}"
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path} has outputs"


def test_grading_round_trip(course):
    source, blank = course.source(), course.release()
    parts = graded_parts(source)
    assert len(parts) >= 4, f"{course.chapter} has {len(parts)} graded parts, needs at least 4"
    first_name, first_solution, _ = parts[0]
    partial = with_cells(blank, {first_solution: student_cell(source.cells[first_solution].source)})
    course.submit("solution", source)
    course.submit("blank", blank)
    course.submit("partial", partial)
    result = course.autograde()
    maxima = course.max_scores()
    full = course.scores("solution")
    assert full == maxima, f"solution notebook lost points: {full} vs {maxima}\n{result.stdout[-3000:]}"
    assert sum(course.scores("blank").values()) == 0
    got = course.scores("partial")
    assert got[f"test_{first_name}"] == maxima[f"test_{first_name}"]
    assert sum(got.values()) == maxima[f"test_{first_name}"], got


def test_source_notebooks_have_valid_metadata():
    from tools.nbbuild import check

    for chapter in CHAPTERS:
        for path in (ROOT / "solutions" / chapter).glob("*.ipynb"):
            assert check(path) == [], path
            nb = nbformat.read(path, as_version=4)
            assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path} stores outputs"
