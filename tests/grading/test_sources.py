"""Source notebooks are well-formed nbgrader sources."""

import nbformat

from tools.nbbuild import check

from .course import ROOT, chapters


def test_there_are_exercises():
    assert "ch01_chips" in chapters()


def test_source_notebooks_have_valid_metadata_and_no_outputs():
    for chapter in chapters():
        for path in (ROOT / "solutions" / chapter).glob("*.ipynb"):
            assert check(path) == [], path
            nb = nbformat.read(path, as_version=4)
            assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path} stores outputs"
