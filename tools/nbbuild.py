"""Author notebooks from Python: book sections and nbgrader source notebooks.

Hand-writing nbgrader metadata is error-prone; this module writes it right. Use it from a
throw-away script (or a REPL) to create a notebook, then edit the notebook itself:

    from tools.nbbuild import md, code, solution, tests, write
    write("solutions/ch01_chips/chips.ipynb", [
        md("# Exercise 1", locked=True),
        solution("matmul_flops", '''
    def matmul_flops(m, n, k):
        ### BEGIN SOLUTION
        return 2 * m * n * k
        ### END SOLUTION
    '''),
        tests("matmul_flops", points=2, visible="check_matmul_flops(matmul_flops)",
              hidden="check_matmul_flops(matmul_flops, seed=101)",
              imports="from lmlab.checks import check_matmul_flops"),
    ])

``python -m tools.nbbuild check PATH...`` validates nbgrader metadata (unique grade ids,
points on test cells, solution markers only in solution cells).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat

KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _source(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def _nbgrader(grade_id: str, *, grade=False, solution=False, locked=False, points=None) -> dict:
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


_counter = {"n": 0}


def _auto_id(prefix: str) -> str:
    _counter["n"] += 1
    return f"{prefix}-{_counter['n']}"


def md(text: str, *, locked: bool = False, grade_id: str | None = None, tags=()):
    cell = nbformat.v4.new_markdown_cell(_source(text))
    if locked:
        cell.metadata.update(_nbgrader(grade_id or _auto_id("md"), locked=True))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def code(text: str, *, locked: bool = False, grade_id: str | None = None, tags=()):
    cell = nbformat.v4.new_code_cell(_source(text))
    if locked:
        cell.metadata.update(_nbgrader(grade_id or _auto_id("code"), locked=True))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def solution(grade_id: str, text: str):
    """A cell the student edits; ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` inside."""
    cell = nbformat.v4.new_code_cell(_source(text))
    cell.metadata.update(_nbgrader(grade_id, solution=True))
    return cell


def tests(grade_id: str, *, points: int, visible: str, hidden: str = "", imports: str = ""):
    """A locked, graded test cell; ``hidden`` goes between the hidden-test markers."""
    body = [_source(imports)] if imports else []
    body.append(_source(visible))
    if hidden:
        body += ["### BEGIN HIDDEN TESTS", _source(hidden), "### END HIDDEN TESTS"]
    cell = nbformat.v4.new_code_cell("\n".join(body))
    cell.metadata.update(_nbgrader(f"test_{grade_id}", grade=True, locked=True, points=points))
    return cell


def write(path: str | Path, cells: list, *, title: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    if title:
        nb.metadata["title"] = title
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs and drift checks quiet
        cell["id"] = f"cell-{i:03d}"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def check(path: str | Path) -> list[str]:
    """Problems with a source notebook's nbgrader metadata (empty list when fine)."""
    nb = nbformat.read(path, as_version=4)
    problems, seen = [], set()
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader")
        src = cell.source
        has_markers = "### BEGIN SOLUTION" in src
        if meta is None:
            if has_markers:
                problems.append(f"cell {i}: solution markers in a cell without nbgrader metadata")
            continue
        gid = meta.get("grade_id")
        if gid in seen:
            problems.append(f"cell {i}: duplicate grade_id {gid!r}")
        seen.add(gid)
        if meta.get("grade") and meta.get("points") in (None, 0):
            problems.append(f"cell {i}: graded cell {gid!r} has no points")
        if has_markers and not meta.get("solution"):
            problems.append(f"cell {i}: solution markers in non-solution cell {gid!r}")
    return problems


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "check":
        sys.exit("usage: python -m tools.nbbuild check NOTEBOOK...")
    bad = 0
    for arg in sys.argv[2:]:
        for problem in check(arg):
            print(f"{arg}: {problem}")
            bad += 1
    sys.exit(1 if bad else 0)
