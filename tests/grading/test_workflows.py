"""The student's working copy (`make lab`) and the student release (`make release`):
fast checks without a kernel or a browser (the browser tests drive the full flows)."""

from __future__ import annotations

import json
import subprocess

from tools.student_lab import CONFIG, copy_exercises, lab_command

from .course import ROOT


def test_working_copy_is_made_once_and_never_overwritten(tmp_path):
    work = tmp_path / "work"
    made = copy_exercises(ROOT / "exercises", work)
    released = sorted((ROOT / "exercises").glob("ch*/*.ipynb"))
    assert [p.relative_to(work) for p in made] == [p.relative_to(ROOT / "exercises") for p in released]
    answer = made[0]
    answer.write_text("my answers")
    assert copy_exercises(ROOT / "exercises", work) == []  # nothing new, nothing overwritten
    assert answer.read_text() == "my answers"
    answer.unlink()
    assert copy_exercises(ROOT / "exercises", work) == [answer]  # deleted: fresh copy


def test_working_copy_is_ignored_by_git():
    result = subprocess.run(["git", "check-ignore", "-q", "work/ch01_chips/chips.ipynb"], cwd=ROOT)
    assert result.returncode == 0


def test_student_lab_hides_the_instructor_tools():
    disabled = json.loads((CONFIG / "labconfig" / "page_config.json").read_text())["disabledExtensions"]
    for tool in ("formgrader", "create-assignment", "course-list", "assignment-list"):
        assert disabled[f"@jupyter/nbgrader:{tool}"] is True
    assert "@jupyter/nbgrader:validate-assignment" not in disabled
    server = json.loads((CONFIG / "jupyter_server_config.json").read_text())["ServerApp"]["jpserver_extensions"]
    assert server["nbgrader.server_extensions.validate_assignment"] is True
    assert not server["nbgrader.server_extensions.formgrader"]
    command, env = lab_command()
    assert str(CONFIG) in env["JUPYTER_CONFIG_PATH"]
    assert f"--ServerApp.root_dir={ROOT}" in command and "--LabApp.default_url=/lab/tree/work" in command


def test_student_release_has_no_solutions(tmp_path):
    release = tmp_path / "release"
    subprocess.run(["make", "-s", "release", f"RELEASE={release}"], cwd=ROOT, check=True,
                   capture_output=True)
    assert not (release / "solutions").exists() and not (release / "tests" / "grading").exists()
    assert (release / "exercises" / "ch01_chips" / "chips.ipynb").exists()
    assert (release / "lmlab" / "checks" / "core.py").exists()
    leaks = [p for p in release.rglob("*.ipynb") if "BEGIN SOLUTION" in p.read_text()
             or "BEGIN HIDDEN TESTS" in p.read_text()]
    assert not leaks, leaks
