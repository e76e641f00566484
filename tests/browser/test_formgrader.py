"""The instructor's workflow in nbgrader's formgrader, in headless chromium (issue 17).

As ``make grade`` runs it: a Jupyter server at the course root (so formgrader's links to
``solutions/`` and the submissions resolve) with ``tools/jupyter-data`` on JUPYTER_PATH
(MathJax from the course's own copy). Two students of exercise 1 are autograded; the
instructor sees the assignment and the scores, follows every link, opens a submission,
enters a manual score, and ``nbgrader export`` writes it to grading/grades.csv. One server
for the module; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import csv
import shutil
from urllib.parse import urljoin, urlparse

import pytest

from tests.grading.course import ROOT, Course, graded_parts, student_cell, with_cells

from .conftest import offline_page

CHAPTER = "ch01_chips"


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("instructor")
    course = Course.create(tmp, CHAPTER)
    shutil.copytree(ROOT / "book" / "_vendor" / "mathjax", course.root / "book" / "_vendor" / "mathjax")
    source, blank = course.source(), course.release()
    _, s1, _ = graded_parts(source)[0]
    course.submit("alice", with_cells(blank, {s1: student_cell(source.cells[s1].source)}))
    course.submit("bob", blank)
    result = course.autograde()
    assert result.returncode == 0, result.stderr[-3000:]
    return course


@pytest.fixture(scope="module")
def formgrader(course, start_jupyter, browser):
    server = start_jupyter(course.root, course.root, course.root.parent,
                           {"JUPYTER_PATH": str(ROOT / "tools" / "jupyter-data")})
    errors, external = [], []
    page = offline_page(browser, errors, external)
    yield server, page, errors, external
    page.close()


def _submission_id(course, student: str) -> str:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.root / 'grading' / 'gradebook.db'}") as gb:
        return gb.find_submission_notebook("chips", CHAPTER, student).id


def test_assignments_page_and_every_link(formgrader):
    server, page, errors, external = formgrader
    page.goto(server.url("formgrader"))
    row = page.locator("tr", has_text=CHAPTER).first
    row.wait_for(timeout=60_000)
    assert "2" in row.inner_text()  # submissions
    links = {urljoin(page.url, a) for a in page.locator("a[href]").evaluate_all(
        "els => els.map(e => e.getAttribute('href'))") if a and not a.startswith(("#", "javascript"))}
    local = [u for u in links if urlparse(u).hostname == "127.0.0.1"]
    assert any("/solutions/" in u for u in local), local
    broken = [(u, r.status) for u in local if (r := page.request.get(u)).status >= 400]
    assert not broken, broken
    assert errors == [] and external == []


def test_scores_are_listed(formgrader):
    server, page, errors, external = formgrader
    page.goto(server.url(f"formgrader/gradebook/{CHAPTER}/chips"))
    page.locator("td", has_text="Submission #").first.wait_for(timeout=60_000)
    text = page.inner_text("body")
    assert "2 / 9" in text and "0 / 9" in text, text  # alice solved part 1; bob nothing
    assert errors == [] and external == []


def test_manual_score_reaches_the_export(formgrader, course):
    server, page, errors, external = formgrader
    page.goto(server.url(f"formgrader/submissions/{_submission_id(course, 'bob')}/?index=0"))
    score = page.locator("input.score").first
    score.wait_for(timeout=60_000)
    page.wait_for_function("() => window.MathJax && MathJax.loaded === true", timeout=60_000)
    with page.expect_response(lambda r: "/api/grade/" in r.url and r.request.method == "PUT"):
        score.fill("1.5")
        score.press("Enter")
    assert errors == [] and external == []

    result = course.nbgrader("export")
    grades = course.root / "grading" / "grades.csv"
    assert grades.exists(), result.stdout + result.stderr
    rows = {r["student_id"]: r for r in csv.DictReader(grades.open())}
    assert float(rows["bob"]["raw_score"]) == 1.5
    assert float(rows["alice"]["raw_score"]) == 2.0
    assert not (course.root / "grades.csv").exists()
