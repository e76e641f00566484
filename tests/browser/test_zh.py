"""The Chinese edition (_build/html/zh) as its readers use it: every page links to the same
page in the other language, the landing page offers both editions, and the Chinese search
(jieba segmentation plus the glossary's terms) finds the chapters that teach a term.

Loading, console errors, offline-ness, MathJax and the explorers are checked for both
editions by test_site.py, whose page list includes zh/.
"""

from __future__ import annotations

import re

import pytest

from .conftest import SITE

ZH = SITE / "zh"
pytestmark = pytest.mark.skipif(not (ZH / "book" / "index.html").exists(),
                                reason="the Chinese edition is not built (make book builds it)")

# A term and a chapter page that teaches it; the search must list that page.
SEARCHES = {
    "量化": "book/ch08_quantization/01_formats_and_schemes.html",
    "注意力": "book/ch04_attention/01_soft_lookup.html",
    "键值缓存": "book/ch07_inference/01_one_token_per_tick.html",
    "词元": "book/ch02_text/01_bpe.html",
}


@pytest.fixture(scope="module")
def tab(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.route("**/*", lambda route: route.continue_()
               if "127.0.0.1" in route.request.url or route.request.url.startswith(("data:", "blob:"))
               else route.abort())
    page.errors = errors
    yield page
    context.close()


def test_the_chinese_pages_are_chinese():
    page = (ZH / "book" / "ch04_attention" / "01_soft_lookup.html").read_text()
    assert '<html lang="zh-CN"' in page
    title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
    assert re.search(r"[\u4e00-\u9fff]", title), title
    text = re.sub(r"<[^>]+>", " ", page.split('<article', 1)[1])
    chinese = len(re.findall(r"[\u4e00-\u9fff]", text))
    assert chinese > 1000, f"only {chinese} Chinese characters in the attention page"
    furniture = ["Color mode", "System Settings", "Toggle primary sidebar", "Copyright",
                 "Click to show", "Link to this heading", "列印"]
    assert [w for w in furniture if w in page] == [], "interface strings left untranslated"
    captions = re.findall(r'caption-text">([^<]*)<', page)
    assert captions and all(re.search(r"[\u4e00-\u9fff]", c) for c in captions), captions


@pytest.mark.parametrize("path", ["book/index.html", "book/ch04_attention/01_soft_lookup.html",
                                  "book/ch10_adapting/index.html", "book/appendix/glossary.html"])
def test_the_language_switch_lands_on_the_same_page(tab, site_url, path):
    tab.goto(f"{site_url}/{path}", wait_until="load")
    tab.locator("a.lmlab-lang-switch").first.click()
    tab.wait_for_load_state("load")
    assert tab.url == f"{site_url}/zh/{path}"
    assert tab.evaluate("document.documentElement.lang") == "zh-CN"
    tab.locator("a.lmlab-lang-switch").first.click()
    tab.wait_for_load_state("load")
    assert tab.url == f"{site_url}/{path}"
    assert tab.evaluate("document.documentElement.lang") == "en"
    assert tab.errors == []


def test_every_page_of_both_editions_has_the_switch():
    for page in list(SITE.glob("book/**/*.html")) + list(ZH.glob("book/**/*.html")):
        assert "lmlab-lang-switch" in page.read_text(), page


@pytest.mark.parametrize("edition", ["", "zh/"])
def test_the_landing_page_offers_both_editions(tab, site_url, edition):
    tab.goto(f"{site_url}/{edition}index.html", wait_until="load")  # the root redirect
    tab.wait_for_url(re.compile(r".*/book/index\.html$"))
    choice = tab.locator("nav.lmlab-lang-choice")
    assert choice.count() == 1
    other = choice.locator("a")
    assert other.count() == 1
    other.click()
    tab.wait_for_load_state("load")
    expected = f"{site_url}/book/index.html" if edition else f"{site_url}/zh/book/index.html"
    assert tab.url == expected


@pytest.mark.parametrize("term", SEARCHES)
def test_chinese_search_finds_the_chapter_that_teaches_a_term(tab, site_url, term):
    tab.goto(f"{site_url}/zh/search.html?q={term}", wait_until="load")
    # results arrive one by one; the summary gets the count when the search has finished
    tab.wait_for_function(
        """() => { const s = document.querySelector('#search-results .search-summary');
                   const n = s && s.textContent.match(/\\d+/);
                   return n && document.querySelectorAll('#search-results li').length == +n[0]; }""",
        timeout=30_000, polling=100)
    links = tab.locator("#search-results li a").evaluate_all("els => els.map(a => a.href)")
    assert any(SEARCHES[term] in link for link in links), f"{term}: {links[:10]}"
    assert all("/zh/" in link for link in links), "the Chinese search left the Chinese edition"
    snippets = tab.locator("#search-results p.context").all_inner_texts()
    furniture = [s for s in snippets if re.match(r"\W*(English|目录)", s)]
    assert furniture == [], f"snippets that start with page furniture: {furniture[:3]}"
