"""The project's own promises: pins in step, README commands, layout, no leaked solutions."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return reqs


def _normalize(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_pins_match_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    in_env = {_normalize(r) for r in pip_section if not r.startswith("-")}
    in_pyproject = {_normalize(r) for r in _pyproject_requirements()}
    assert in_env == in_pyproject, (
        f"only in pyproject.toml: {sorted(in_pyproject - in_env)}; only in environment.yml: {sorted(in_env - in_pyproject)}"
    )


def test_torch_is_pinned_to_the_local_cpu_build():
    assert "torch==2.13.0" in _pyproject_requirements()


def test_jupyter_book_stays_on_the_sphinx_line():
    assert any(r.startswith("jupyter-book>=1.0.4.post1,<2") for r in _pyproject_requirements())


def test_readme_starts_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:8])
    assert "make book" in head and "make test" in head


def test_ci_calls_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_exercises_carry_no_solutions():
    for path in (ROOT / "exercises").rglob("*.ipynb"):
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path


def test_every_chapter_folder_is_complete():
    toc = (ROOT / "_toc.yml").read_text()
    for book_dir in sorted((ROOT / "book").glob("ch*")):
        assert (book_dir / "index.md").exists(), f"{book_dir} has no index.md"
        assert f"file: book/{book_dir.name}/index" in toc, f"{book_dir.name} is not in _toc.yml"
    for solution_dir in sorted((ROOT / "solutions").glob("ch*")):
        assert (ROOT / "book" / solution_dir.name).exists(), f"exercise {solution_dir.name} has no chapter"
        assert (ROOT / "exercises" / solution_dir.name).exists(), f"run `make exercises` for {solution_dir.name}"


def test_book_notebooks_are_stored_with_outputs():
    import nbformat

    for path in sorted((ROOT / "book").rglob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
        assert all(c.get("execution_count") for c in code), f"{path}: run `make notebooks`"
        assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", [])), path


def test_no_vendored_js_under_a_root_static_folder():
    # Jupyter Book 1 adds every script in a root _static/ to every page (widgets twice).
    assert not (ROOT / "_static").exists()


def test_config_serves_mathjax_and_widgets_locally():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert not config["mathjax_path"].startswith("http")
    assert all(not k.startswith("http") for k in config["nb_ipywidgets_js"])
    for rel in ["book/_vendor/require.js", "book/_vendor/html-manager/embed-amd.js",
                "book/_vendor/mathjax/tex-chtml-full.js"]:
        assert (ROOT / rel).exists(), rel
