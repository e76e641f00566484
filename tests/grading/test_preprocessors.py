"""lmlab.grading's nbgrader preprocessors on hand-made cells (fast; the round trips through
nbgrader are in test_class.py and test_robustness.py)."""

from __future__ import annotations

import nbformat

from lmlab.grading import RepairCellMetadata, ScrubHiddenTests, hidden_lines, released_source

SOURCE = """from lmlab.checks import check_f
check_f(f)
### BEGIN HIDDEN TESTS
check_f(f, hidden=True)
assert f(0) == 0, "f(0) should be 0"
### END HIDDEN TESTS"""
META = {"nbgrader": {"grade": True, "grade_id": "test_f", "locked": True, "points": 2,
                     "schema_version": 3, "solution": False, "task": False}}


def _failing_cell():
    frame = ("\x1b[0;31mAssertionError\x1b[0m Traceback\nCell In[3], line 2\n      1 from lmlab.checks import"
             " check_f\n----> 2 check_f(f)\n      3 ### BEGIN HIDDEN TESTS\n      4 check_f(f, hidden=True)\n"
             "      5 assert f(0) == 0, \"f(0) should be 0\"\n")
    error = nbformat.v4.new_output("error", ename="CheckFailed", evalue="f is wrong on 3 of 9 inputs (seed=123456)",
                                   traceback=[frame, "CheckFailed: f is wrong on 3 of 9 inputs (seed=123456)"])
    stream = nbformat.v4.new_output("stream", name="stdout", text="running check_f(f, hidden=True)\nok\n")
    return nbformat.v4.new_code_cell(SOURCE, metadata=META, outputs=[stream, error])


def test_hidden_lines_and_release():
    assert hidden_lines(SOURCE)[1:3] == ["check_f(f, hidden=True)", 'assert f(0) == 0, "f(0) should be 0"']
    assert released_source(SOURCE) == "from lmlab.checks import check_f\ncheck_f(f)"


def test_scrub_removes_hidden_lines_and_seeds_but_keeps_the_diagnosis():
    nb = nbformat.v4.new_notebook(cells=[_failing_cell()])
    nb, _ = ScrubHiddenTests().preprocess(nb, {})
    cell = nb.cells[0]
    text = nbformat.writes(nb)
    for secret in ("check_f(f, hidden=True)", "f(0) == 0", "BEGIN HIDDEN", "123456"):
        assert secret not in text, secret
    assert cell.source == released_source(SOURCE)
    assert "f is wrong on 3 of 9 inputs" in cell.outputs[1].evalue
    assert cell.outputs[1].traceback[0].endswith("[hidden test]")  # the frame quoting the cell
    assert cell.outputs[0].text.splitlines() == ["[hidden test]", "ok"]


def test_duplicates_become_ordinary_cells_last_copy_graded():
    first = nbformat.v4.new_code_cell("def f(): return 1", metadata={"nbgrader": {
        "grade": False, "grade_id": "f", "locked": False, "schema_version": 3, "solution": True, "task": False}})
    copy = nbformat.from_dict(nbformat.v4.new_code_cell("def f(): return 2", metadata=dict(first.metadata)))
    nb = nbformat.v4.new_notebook(cells=[first, copy])
    nb, _ = RepairCellMetadata().preprocess(nb, {})
    assert "nbgrader" not in nb.cells[0].metadata  # not an empty dict: nbgrader reads that as schema 0
    assert nb.cells[1].metadata["nbgrader"]["grade_id"] == "f"
