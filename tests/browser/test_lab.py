"""The student's workflow in JupyterLab, in headless chromium (issue 17).

``make lab`` (tools/student_lab.py): exercises copied into a working folder, JupyterLab
started on it with the course's nbgrader settings and without the instructor tools. A
student opens exercise 1, runs a wrong answer and sees the short diagnosis, runs a right
one and sees it pass, then presses Validate. One server for the module; nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tools.student_lab import CONFIG, ROOT, copy_exercises

from .conftest import offline_page

NOTEBOOK = "work/ch01_chips/chips.ipynb"


BOOK_NOTEBOOK = "book/ch01_chips/01_flops_and_bytes.ipynb"


@pytest.fixture(scope="module")
def lab(start_jupyter, tmp_path_factory):
    # as `make lab`: a course folder with the working copy in work/ (here a temporary one,
    # holding one book notebook), the server started at the repo root (Validate reads
    # nbgrader_config.py there)
    home = tmp_path_factory.mktemp("student")
    copy_exercises(ROOT / "exercises", home / "work")
    (home / BOOK_NOTEBOOK).parent.mkdir(parents=True)
    shutil.copy(ROOT / BOOK_NOTEBOOK, home / BOOK_NOTEBOOK)
    return start_jupyter(home, ROOT, home, {"JUPYTER_CONFIG_PATH": str(CONFIG)})


@pytest.fixture(scope="module")
def notebook(lab, browser):
    errors, external = [], []
    page = offline_page(browser, errors, external)
    page.goto(lab.url(f"lab/tree/{NOTEBOOK}"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    yield page, errors, external
    page.close()


def _index(grade_id: str) -> int:
    """Position of the cell with this nbgrader grade_id in the released notebook."""
    nb = json.loads((ROOT / "exercises" / NOTEBOOK.removeprefix("work/")).read_text())
    return next(i for i, c in enumerate(nb["cells"])
                if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def _cell(page, grade_id: str):
    return page.locator(".jp-Notebook .jp-Cell").nth(_index(grade_id))


def _run(page, grade_id: str, source: str | None = None) -> str:
    """Run a cell (after replacing its source) and return its output once it is done."""
    cell = _cell(page, grade_id)
    cell.scroll_into_view_if_needed()
    prompt = cell.locator(".jp-InputArea-prompt")
    before = prompt.inner_text()
    cell.locator(".cm-content").click()
    if source is not None:
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(source)
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "([el, before]) => { const t = el.textContent; return t !== before && /\\[\\d+\\]/.test(t); }",
        arg=[prompt.element_handle(), before], timeout=90_000)
    return cell.locator(".jp-OutputArea").inner_text()


def test_no_instructor_tools_and_validate_is_there(notebook):
    page, errors, external = notebook
    assert "Nbgrader" not in page.locator(".lm-MenuBar-itemLabel").all_inner_texts()
    tabs = page.locator(".lm-TabBar-tab").evaluate_all("els => els.map(e => e.title)")
    assert not [t for t in tabs if "Assignment" in t or "Formgrader" in t], tabs
    assert page.locator(".validate-button").count() == 1
    assert errors == [] and external == []


def test_wrong_then_right_answer(notebook):
    page, _, external = notebook
    _run(page, "imports")
    _run(page, "matmul_flops", "def matmul_flops(m, n, k):\n    return m * n * k\n")
    output = _run(page, "test_matmul_flops")
    assert "matmul_flops is wrong on" in output
    assert "Likely mistake" in output
    assert "run_part" not in output and "core.py" not in output, output  # no lmlab internals
    _run(page, "matmul_flops", "def matmul_flops(m, n, k):\n    return 2 * m * n * k\n")
    output = _run(page, "test_matmul_flops")
    assert "✔ matmul_flops" in output
    assert external == []


def test_validate_uses_the_course_settings(notebook, lab):
    page, _, external = notebook
    page.locator(".validate-button button, .validate-button jp-button").first.click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=120_000)  # the dialog opens when validation is done
    text = dialog.inner_text()
    # part 1 is solved above; the three others are still blank
    assert text.count("The following cell failed") == 3, text
    assert "is not implemented yet" in text and "check_matmul_flops" not in text, text
    assert "No nbgrader_config.py file found" not in lab.log()
    assert external == []


def test_book_notebooks_render_myst(lab, browser):
    """jupyterlab-myst renders the book's admonitions and roles instead of showing them raw."""
    errors, external = [], []
    page = offline_page(browser, errors, external)
    page.goto(lab.url(f"lab/tree/{BOOK_NOTEBOOK}"))
    page.wait_for_selector(".jp-MarkdownCell", timeout=60_000)
    page.wait_for_timeout(2000)
    markdown = page.locator(".jp-MarkdownCell .jp-RenderedMarkdown, .jp-MarkdownCell .myst")
    text = " ".join(markdown.all_inner_texts())
    assert "```{" not in text and ":::{" not in text and "{doc}`" not in text, text[:2000]
    admonition = page.locator(".jp-MarkdownCell .myst aside.myst-admonition")
    for _ in range(60):  # JupyterLab renders cells as they come into view: scroll down
        if admonition.count():
            break
        page.locator(".jp-Notebook").first.evaluate("e => { e.scrollTop += 600; }")
        page.wait_for_timeout(300)
    assert admonition.count() > 0, "no MyST admonition rendered"
    assert external == []
    page.close()
