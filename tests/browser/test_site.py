"""The rendered book in headless chromium: every page loads cleanly and offline, math
renders, and every explorer responds to its controls without a kernel."""

from __future__ import annotations

import pytest

from .conftest import SITE

PAGES = sorted(
    str(p.relative_to(SITE))
    for p in SITE.rglob("*.html")
    if not p.relative_to(SITE).parts[0].startswith("_") and p.name not in ("genindex.html", "search.html")
) if SITE.exists() else []
EXPLORER_PAGES = [p for p in PAGES if "lmlab-explorer" in (SITE / p).read_text(errors="replace")
                  or "lmlab-explorer" in (SITE / p).read_text(errors="replace").replace("\\", "")]
MATH_PAGES = [p for p in PAGES if 'class="math' in (SITE / p).read_text(errors="replace")]


def test_the_site_has_pages():
    assert "index.html" in PAGES
    assert any(p.startswith("book/ch01_chips/") for p in PAGES)


@pytest.mark.parametrize("path", PAGES)
def test_page_loads_without_errors_or_external_requests(visit, path):
    v = visit(path)
    v.page.wait_for_timeout(300)
    assert v.errors == [], f"{path}: {v.errors}"
    assert v.external == [], f"{path} requested {v.external}"


@pytest.mark.parametrize("path", MATH_PAGES[:3] or ["book/ch01_chips/01_flops_and_bytes.html"])
def test_math_renders_with_the_local_mathjax(visit, path):
    v = visit(path)
    v.page.wait_for_selector("mjx-container", timeout=30_000)
    assert v.page.locator("mjx-container").count() > 0
    assert v.external == []


def _visible_image(explorer) -> str:
    """The src of the frame currently shown (hidden stack children have zero size)."""
    return explorer.evaluate(
        """el => { for (const img of el.querySelectorAll('img')) {
                     const r = img.getBoundingClientRect();
                     if (r.width > 0 && r.height > 0) return img.src; }
                   return ''; }"""
    )


def _move(control, page) -> None:
    if control.locator("select").count():
        select = control.locator("select")
        options = select.locator("option").all_inner_texts()
        current = select.evaluate("s => s.selectedIndex")
        select.select_option(index=(current + 1) % len(options))
    elif control.locator(".noUi-handle, .ui-slider-handle, [role=slider]").count():
        handle = control.locator(".noUi-handle, .ui-slider-handle, [role=slider]").first
        handle.focus()
        handle.press("ArrowRight")
    elif control.locator("button").count() > 1:
        control.locator("button").nth(1).click()
    else:
        raise AssertionError(f"don't know how to move control: {control.inner_html()[:200]}")
    page.wait_for_timeout(300)


def test_every_chapter_with_an_exercise_has_an_explorer():
    chapters = sorted(p.name for p in (SITE.parents[1] / "solutions").glob("ch*"))
    assert chapters
    for chapter in chapters:
        assert any(p.startswith(f"book/{chapter}/") for p in EXPLORER_PAGES), f"no explorer in {chapter}"


@pytest.mark.parametrize("path", EXPLORER_PAGES)
def test_explorer_figures_change_when_controls_move(visit, path):
    v = visit(path)
    v.page.wait_for_selector(".lmlab-explorer img", state="attached", timeout=60_000)
    explorers = v.page.locator(".lmlab-explorer")
    assert explorers.count() > 0
    for i in range(explorers.count()):
        explorer = explorers.nth(i)
        explorer.scroll_into_view_if_needed()
        controls = explorer.locator(":scope > .widget-dropdown, :scope > .widget-slider, "
                                    ":scope > .widget-toggle-buttons, :scope > .widget-hslider")
        assert controls.count() > 0, f"explorer {i} on {path} has no controls"
        for j in range(controls.count()):
            before = _visible_image(explorer)
            assert before, f"explorer {i} on {path} shows no figure"
            _move(controls.nth(j), v.page)
            after = _visible_image(explorer)
            assert after and after != before, f"explorer {i} on {path}: control {j} did not change the figure"
    assert v.errors == [], v.errors
    assert v.external == [], v.external


def test_site_serves_its_own_widget_manager_and_mathjax():
    import re

    assert (SITE / "_static" / "html-manager" / "embed-amd.js").exists()
    assert (SITE / "_static" / "mathjax" / "tex-chtml-full.js").exists()
    assert (SITE / "_static" / "require.js").exists()
    page = (SITE / "book" / "ch01_chips" / "03_roofline.html").read_text()
    sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page)
    external = [s for s in sources if s.startswith(("http:", "https:", "//"))]
    assert external == [], external
    assert any("html-manager/embed-amd.js" in s for s in sources)
    assert any("mathjax/tex-chtml-full.js" in s for s in sources)
