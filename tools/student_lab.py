"""The student's working copy and JupyterLab: ``make lab``.

    python -m tools.student_lab           # copy new exercises into work/, start JupyterLab
    python -m tools.student_lab --no-lab  # only copy

Each released notebook ``exercises/chNN_slug/x.ipynb`` is copied to ``work/chNN_slug/x.ipynb``
the first time only: ``work/`` is git-ignored, so ``git pull`` and ``make exercises`` never
touch a student's answers, and a copy that exists is never overwritten (delete it to start
that exercise afresh). JupyterLab then opens on ``work/`` (the book's notebooks are a click
away, MyST rendered) with the course's nbgrader settings (Validate uses ``nbgrader_config.py``: the same time limits as grading) and without
the instructor and exchange tools (``tools/student-lab-config``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tools" / "student-lab-config"


def copy_exercises(exercises: Path = ROOT / "exercises", work: Path = ROOT / "work") -> list[Path]:
    """Copy every released notebook that ``work`` lacks; return the copies made."""
    made = []
    for notebook in sorted(exercises.glob("ch*/*.ipynb")):
        target = work / notebook.relative_to(exercises)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, target)
        made.append(target)
    return made


def lab_command(root: Path = ROOT) -> tuple[list[str], dict[str, str]]:
    """The command and environment that start the student's JupyterLab: the file browser
    shows the course (``root``: the book's notebooks, rendered with jupyterlab-myst, and
    the working copy), and the lab opens on ``work/``."""
    env = dict(os.environ)
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        p for p in (str(CONFIG), env.get("JUPYTER_CONFIG_PATH", "")) if p)
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", f"--ServerApp.root_dir={root}",
               "--LabApp.default_url=/lab/tree/work"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI machines
        command.append("--allow-root")
    return command, env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-lab", action="store_true", help="copy the exercises, start nothing")
    args, extra = parser.parse_known_args(argv)
    for path in copy_exercises():
        print(f"new exercise: {path.relative_to(ROOT)}")
    if args.no_lab:
        return 0
    command, env = lab_command()
    os.chdir(ROOT)  # Validate reads nbgrader_config.py from the server's working directory
    os.execve(command[0], command + extra, env)


if __name__ == "__main__":
    sys.exit(main())
