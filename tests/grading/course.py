"""A throw-away nbgrader course built from the repository's solutions/, for grading tests.

    course = Course.create(tmp_path, "ch01_chips")     # copies config + source, generates
    course.submit("alice", notebook)                    # grading/submitted/alice/ch01_chips/
    course.autograde()                                  # nbgrader autograde, all students
    course.scores("alice") -> {"test_matmul_flops": 2.0, ...}
"""

from __future__ import annotations

import copy
import html
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def chapters() -> list[str]:
    return sorted(p.name for p in (ROOT / "solutions").glob("ch*") if list(p.glob("*.ipynb")))


def notebook_name(chapter: str) -> str:
    (path,) = sorted((ROOT / "solutions" / chapter).glob("*.ipynb"))
    return path.name


@dataclass
class Course:
    root: Path
    chapter: str

    @classmethod
    def create(cls, tmp: Path, chapter: str, *, cell_timeout: int = 60) -> Course:
        root = tmp / "course"
        (root / "solutions").mkdir(parents=True)
        shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
        with open(root / "nbgrader_config.py", "a") as f:
            f.write(f"\nc.Execute.timeout = {cell_timeout}\nc.ExecutePreprocessor.timeout = {cell_timeout}\n")
        shutil.copytree(ROOT / "solutions" / chapter, root / "solutions" / chapter,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        course = cls(root, chapter)
        course.nbgrader("generate_assignment", chapter, "--force")
        return course

    def nbgrader(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, **(env or {}), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        result = subprocess.run([str(BIN / "nbgrader"), *args, "--log-level=INFO"], cwd=self.root,
                                env=env, capture_output=True, text=True, timeout=1800)
        if check and result.returncode != 0:
            raise RuntimeError(f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    @property
    def name(self) -> str:
        return notebook_name(self.chapter)

    def source(self) -> nbformat.NotebookNode:
        return nbformat.read(self.root / "solutions" / self.chapter / self.name, as_version=4)

    def release(self) -> nbformat.NotebookNode:
        return nbformat.read(self.root / "exercises" / self.chapter / self.name, as_version=4)

    def submit(self, student: str, nb: nbformat.NotebookNode) -> None:
        folder = self.root / "grading" / "submitted" / student / self.chapter
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / self.name)

    def autograde(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.nbgrader("autograde", self.chapter, "--force", *args, check=False, env=env)

    def feedback(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.nbgrader("generate_feedback", self.chapter, "--force", *args, check=False, env=env)

    def feedback_html(self, student: str) -> Path:
        return self.root / "grading" / "feedback" / student / self.chapter / self.name.replace(".ipynb", ".html")

    def feedback_text(self, student: str) -> str:
        """The feedback page as a reader sees it: tags removed, entities decoded."""
        raw = self.feedback_html(student).read_text()
        return html.unescape(re.sub(r"<[^>]+>", "", raw))

    def hidden_lines(self) -> list[str]:
        """Hidden-test lines of the source that a student must never see (the ones that do
        not also appear in the release, e.g. a repeated import)."""
        from lmlab.grading import hidden_lines

        released = nbformat.writes(self.release())
        return [line for cell in self.source().cells for line in hidden_lines(cell.source)
                if len(line) >= 8 and line not in released]

    def scores(self, student: str) -> dict[str, float]:
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.root / 'grading' / 'gradebook.db'}") as gb:
            notebook = gb.find_submission_notebook(self.name.removesuffix(".ipynb"), self.chapter, student)
            return {g.name: float(g.score) for g in notebook.grades if g.max_score > 0}

    def max_scores(self) -> dict[str, float]:
        return {cell.metadata["nbgrader"]["grade_id"]: float(cell.metadata["nbgrader"]["points"])
                for cell in self.source().cells
                if cell.metadata.get("nbgrader", {}).get("grade") and cell.metadata["nbgrader"].get("points")}


# ------------------------------------------------------------------ building submissions


def graded_parts(nb) -> list[tuple[str, int, int]]:
    """(part name, solution cell index, test cell index) in notebook order."""
    parts, solution_cells = [], {}
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "code":
            solution_cells[meta["grade_id"]] = i
        if meta.get("grade") and meta.get("points"):
            name = meta["grade_id"].removeprefix("test_")
            parts.append((name, solution_cells.get(name), i))
    return parts


def with_cells(base, replacements: dict[int, str]) -> nbformat.NotebookNode:
    nb = copy.deepcopy(base)
    for index, source in replacements.items():
        nb.cells[index].source = source
    return nb


def student_cell(source_cell_text: str) -> str:
    """The solution cell as a student would write it: markers removed."""
    lines = [ln for ln in source_cell_text.splitlines() if "### BEGIN SOLUTION" not in ln and "### END SOLUTION" not in ln]
    return "\n".join(lines)
