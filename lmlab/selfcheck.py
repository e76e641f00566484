"""Run a student's exercise notebook and report each graded part (``lmlab check``).

The verdicts are the ones the autograder gives, less the hidden tests (a released
notebook does not contain them): each locked test cell with points either runs clean
(the part passes) or raises, and the check's message is the diagnosis.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

__all__ = ["PartResult", "check_notebook", "format_report"]


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
            return f"{output['ename']}: {output['evalue']}"
    return None


def check_notebook(path: str | Path, *, timeout: int = 120) -> tuple[list[PartResult], list[str]]:
    """Execute ``path`` in a fresh kernel; return per-part results and notes about other cells."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"notebook {str(path)!r} does not exist")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        allow_errors=True,
        interrupt_on_timeout=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    died_at = None
    try:
        client.execute()
    except DeadKernelError:
        died_at = next(
            (i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count") is None
             and c.source.strip()), None)
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
            notes.append(f"cell {index} raised {error.splitlines()[0]}")
    return results, notes


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
