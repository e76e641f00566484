"""Run a student's exercise notebook and report each graded part (``lmlab check``).

The verdicts are the ones the autograder gives, less the hidden tests (a released
notebook does not contain them): each locked test cell with points either runs clean
(the part passes) or raises, and the check's message is the diagnosis.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

__all__ = ["PartResult", "NotebookError", "check_notebook", "format_report", "structure_problems"]

ROOT = Path(__file__).resolve().parent.parent


class NotebookError(ValueError):
    """The file is not a notebook ``lmlab check`` can run (one-line message)."""


def read_notebook(path: Path):
    """``path`` as a notebook, or :class:`NotebookError` saying in one line what is wrong."""
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NotebookError(f"{path} is not a text file, so not a notebook (.ipynb)") from None
    except json.JSONDecodeError as err:
        raise NotebookError(f"{path} is not a notebook: it is not valid JSON ({err.msg} at line "
                            f"{err.lineno}); was it saved by Jupyter?") from None
    if not isinstance(raw, dict) or "cells" not in raw or "nbformat" not in raw:
        raise NotebookError(f"{path} is JSON but not a Jupyter notebook (no cells/nbformat)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. duplicate cell ids from a copied cell
            return nbformat.reads(json.dumps(raw), as_version=4)
    except Exception as err:  # noqa: BLE001 - nbformat raises many kinds
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NotebookError(f"{path} is not a notebook nbformat can read: {first}") from None


def _released(path: Path):
    """The released exercise notebook with the same name (exercises/*/NAME) and its path."""
    for candidate in sorted((ROOT / "exercises").glob(f"*/{path.name}")):
        try:
            return nbformat.read(candidate, as_version=4), candidate.relative_to(ROOT)
        except Exception:  # noqa: BLE001
            return None, None
    return None, None


def structure_problems(nb, path: Path) -> list[str]:
    """Problems nbgrader would fail the whole notebook for, in words a student can act on.

    A copied cell keeps its nbgrader metadata, so two cells share a grade_id (nbgrader then
    refuses the notebook); a test cell whose grade_id was edited no longer matches the
    gradebook and scores 0.
    """
    problems = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if not grade_id:
            continue
        if grade_id in seen:
            problems.append(
                f"cell {index} is a copy of cell {seen[grade_id]} (both carry nbgrader's id "
                f"{grade_id!r}): nbgrader cannot grade a notebook with a copied cell. Delete "
                f"the copy; to try a variant, make a new cell and paste the code into it.")
        else:
            seen[grade_id] = index
    released, where = _released(path)
    if released is not None:
        wanted = [c.metadata["nbgrader"]["grade_id"] for c in released.cells
                  if c.metadata.get("nbgrader", {}).get("grade")
                  and c.metadata["nbgrader"].get("grade_id")]
        for grade_id in wanted:
            if grade_id not in seen:
                problems.append(
                    f"the test cell {grade_id!r} is missing (deleted, or its nbgrader id was "
                    f"changed): that part will score 0. Copy the cell back from the released "
                    f"exercise, {where}.")
    return problems


@dataclass
class PartResult:
    grade_id: str
    points: float
    passed: bool
    message: str = ""

    @property
    def name(self) -> str:
        return self.grade_id.removeprefix("test_")


def _error_text(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            if output["ename"] == "CheckFailed":  # a check's diagnosis: the message is enough
                return output["evalue"]
            return f"{output['ename']}: {output['evalue']}"
    return None


def _execute(original, path: Path, timeout: int, stuck: list[int]):
    """Run a copy of the notebook; the cells in ``stuck`` (which ran past the limit before)
    are replaced by an error. Returns the notebook, where the kernel died, and the index of
    a cell that ran past the limit now (None if none did)."""
    nb = copy.deepcopy(original)
    for index in stuck:
        nb.cells[index].source = (
            f"raise TimeoutError('this cell ran past the {timeout} s limit and was skipped "
            f"(an endless loop? code that catches KeyboardInterrupt with a bare except:?)')")
    # no interrupt on timeout: code that catches KeyboardInterrupt would keep the cell running
    running: dict[str, int] = {}
    client = NotebookClient(nb, timeout=timeout, allow_errors=True, interrupt_on_timeout=False,
                            kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent.resolve())}},
                            on_cell_start=lambda cell, cell_index: running.update(index=cell_index))
    died_at, stuck_now = None, None
    try:
        client.execute()
    except CellTimeoutError:
        stuck_now = running.get("index")
        if stuck_now in stuck:
            stuck_now = None
    except DeadKernelError:
        died_at = next(
            (i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is None
             and c.source.strip()), None)
    return nb, died_at, stuck_now


def check_notebook(path: str | Path, *, timeout: int = 120) -> tuple[list[PartResult], list[str]]:
    """Execute ``path`` in a fresh kernel; return per-part results and notes about other cells."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"notebook {str(path)!r} does not exist")
    if path.is_dir():
        raise NotebookError(f"{path} is a folder; give the exercise notebook (.ipynb) inside it")
    original = read_notebook(path)
    stuck: list[int] = []
    for _ in range(5):
        nb, died_at, stuck_now = _execute(original, path, timeout, stuck)
        if stuck_now is None:
            break
        stuck.append(stuck_now)  # run again from a fresh kernel, without that cell
    results, notes = [], []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        error = _error_text(cell)
        ran = cell.get("execution_count") is not None
        if meta.get("grade") and meta.get("points"):
            if died_at is not None and not ran:
                message = f"not run: the kernel died before this cell (in or after cell {died_at})"
                results.append(PartResult(meta["grade_id"], float(meta["points"]), False, message))
            else:
                results.append(PartResult(meta["grade_id"], float(meta["points"]), error is None, error or ""))
        elif error and not meta.get("grade"):
            notes.append(_note(index, error))
    return results, notes


def _note(index: int, error: str) -> str:
    first = error.splitlines()[0]
    if first.startswith("NotImplementedError"):
        return (f"cell {index} still raises NotImplementedError: it is a part you have not "
                f"written yet (replace `raise NotImplementedError()` with your code); the "
                f"parts that use it fail until you do")
    return f"cell {index} raised {first}"


def _paint(text: str, colour: str, enabled: bool) -> str:
    codes = {"green": "32", "red": "31", "bold": "1", "dim": "2"}
    return f"\033[{codes[colour]}m{text}\033[0m" if enabled else text


def format_report(path, results: list[PartResult], notes: list[str], colour: bool | None = None) -> str:
    if colour is None:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    width = max((len(r.name) for r in results), default=10)
    lines = [_paint(f"lmlab check {path}", "bold", colour)]
    for note in notes:
        lines.append(_paint(f"  note: {note}", "dim", colour))
    for r in results:
        mark = _paint("✔ pass", "green", colour) if r.passed else _paint("✘ FAIL", "red", colour)
        got = r.points if r.passed else 0
        lines.append(f"  {mark}  {r.name:<{width}}  {got:g}/{r.points:g}")
        if not r.passed:
            for line in r.message.splitlines():
                lines.append(f"          {line}")
    earned = sum(r.points for r in results if r.passed)
    total = sum(r.points for r in results)
    passed = sum(r.passed for r in results)
    lines.append(
        _paint(f"Score: {earned:g}/{total:g} points ({passed} of {len(results)} parts pass; "
               f"hidden tests run only when your instructor grades)", "bold", colour)
    )
    return "\n".join(lines)
