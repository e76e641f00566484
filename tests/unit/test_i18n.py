"""The Chinese edition's tooling (tools/i18n.py): what counts as translated, what a
translation must keep, and which renderings of a term it may not use.

Whether every page *is* translated, in step with the English and with its markup intact,
is make test's i18n stage (``python -m tools.i18n verify``): it needs a gettext build.
"""

from __future__ import annotations

import re

import pytest

from tools import i18n


@pytest.mark.parametrize("message", [
    "\\mathrm{out} = \\sum_j w_j v_j, \\qquad w_j = \\frac{e^{q\\cdot k_j}}{Z}.",
    "\\begin{gathered}\nQ = X W_Q\n\\end{gathered}",
    "$4C^2 + 4C$",
    "{doc}`ch00_intro/index`",
    "`solutions/chNN_slug/`",
    "0.996 (0.0095)",
    "≤ 1.3× ✓",
])
def test_formulas_code_and_numbers_need_no_translation(message):
    assert i18n.nothing_to_translate(message)


@pytest.mark.parametrize("message", [
    "Measured on random embeddings:",
    "In a Transformer every token $x_i$ plays all three roles:",
    "the cost is \\(O(T^2)\\) and grows with the context length",
    "GPT-2",
])
def test_prose_needs_translation(message):
    assert not i18n.nothing_to_translate(message)


def test_protected_markup_is_counted_exactly():
    english = "Use $x_i$ and `f(x)`, see {doc}`02_masks` and [the docs](ref.html), twice $x_i$."
    found = i18n.protected(english)
    assert found == {"$x_i$": 2, "`f(x)`": 1, "{doc}`02_masks`": 1, "](ref.html)": 1}
    good = "用 $x_i$ 与 `f(x)`，见 {doc}`02_masks` 与[文档](ref.html)，再用一次 $x_i$。"
    assert i18n.protected(good) == found
    assert i18n.protected("用 $x_j$ 与 `f(x)`，见 {doc}`02_masks` 与[文档](ref.html)。") != found


def test_bold_that_commonmark_would_not_open_is_caught():
    english = 'the **"one"** key'
    assert i18n.rendered_markup(english)["<strong>"] == 1
    assert i18n.rendered_markup("那个**“一个”**键")["stray * or `"] > 0
    assert i18n.rendered_markup("那个“**一个**”键") == i18n.rendered_markup(english)


def _catalogue(tmp_path, monkeypatch, pairs):
    from babel.messages.catalog import Catalog
    catalog = Catalog(locale="zh_CN")
    for msgid, msgstr in pairs:
        catalog.add(msgid, msgstr)
    path = tmp_path / "book" / "chX" / "01_page.po"
    path.parent.mkdir(parents=True)
    i18n.write(path, catalog)
    monkeypatch.setattr(i18n, "CATALOGUES", tmp_path)
    return path


def test_problems_name_wrong_terms_and_changed_formulas(tmp_path, monkeypatch):
    _catalogue(tmp_path, monkeypatch, [
        ("Each token costs $2N$ FLOPs.", "每个令牌花费 $2N$ 次浮点运算。"),
        ("The KV cache grows with $T$.", "KV 缓存随 $T$ 增长。"),
        ("Attention weights sum to $1$.", "权重之和为 $2$。"),
    ])
    found = "\n".join(i18n.problems())
    assert "'令牌' for 'token'" in found
    assert "'KV 缓存' for 'KV cache'" in found
    assert "markup changed" in found and "$1$" in found
    assert "'attention' is in the English text" in found


def test_a_faithful_page_has_no_problems(tmp_path, monkeypatch):
    _catalogue(tmp_path, monkeypatch, [
        ("Each token costs $2N$ FLOPs.", "每个词元（token）花费 $2N$ 次浮点运算。"),
        ("The KV cache grows with $T$.", "键值缓存（KV cache）随 $T$ 增长。"),
    ])
    assert i18n.problems() == []


def test_coverage_counts_fuzzy_and_empty_as_untranslated(tmp_path, monkeypatch, capsys):
    path = _catalogue(tmp_path, monkeypatch, [("One.", "一。"), ("Two.", ""), ("Three.", "三。")])
    catalog = i18n.read(path)
    next(m for m in catalog if m.id == "Three.").flags.add("fuzzy")
    i18n.write(path, catalog)
    (row,) = i18n.coverage()
    assert (row.total, row.translated, row.fuzzy) == (3, 1, 1)
    assert i18n.status(minimum=30) == 1  # a fuzzy message fails even above the minimum
    assert "<-" in capsys.readouterr().out


def test_apply_refuses_msgids_that_are_not_on_the_page(tmp_path, monkeypatch, capsys):
    path = _catalogue(tmp_path, monkeypatch, [("One.", "")])
    table = tmp_path / "t.json"
    table.write_text('{"One.": "一。", "One": "一"}', encoding="utf-8")
    assert i18n.apply(str(path), table) == 1
    assert "not a message" in capsys.readouterr().out
    assert next(m for m in i18n.read(path) if m.id == "One.").string == "一。"


def test_search_dictionary_holds_the_glossary_terms():
    words = i18n.jieba_dictionary().read_text(encoding="utf-8").split("\n")
    terms = {line.split()[0] for line in words if line}
    assert {"键值缓存", "量化", "注意力", "词元"} <= terms
    assert all(re.fullmatch(r"[\u4e00-\u9fff]+", t) for t in terms)


def test_jieba_keeps_the_glossary_terms_whole():
    jieba = pytest.importorskip("jieba")
    jieba.load_userdict(str(i18n.jieba_dictionary()))
    assert "键值缓存" in list(jieba.cut_for_search("推理时的键值缓存随上下文增长"))


def test_every_page_has_a_catalogue():
    book = i18n.ROOT / "book"
    pages = {str(p.relative_to(i18n.ROOT).with_suffix(""))
             for p in list(book.rglob("*.ipynb")) + list(book.rglob("*.md"))
             if not any(part.startswith(("_", ".")) for part in p.relative_to(book).parts)}
    catalogued = {c.page for c in i18n.coverage()}
    assert pages <= catalogued, sorted(pages - catalogued)


def test_figure_alt_texts_come_from_the_cells_metadata(tmp_path):
    import json
    notebook = tmp_path / "page.ipynb"
    cells = [{"cell_type": "code", "metadata": {"mystnb": {"image": {"alt": "A rising curve."}}}},
             {"cell_type": "code", "metadata": {"mystnb": {"image": {"alt": "A rising curve."}}}},
             {"cell_type": "code", "metadata": {"tags": ["hide-input"]}},
             {"cell_type": "markdown", "metadata": {}}]
    notebook.write_text(json.dumps({"cells": cells}), encoding="utf-8")
    assert i18n.figure_alt_texts(notebook) == ["A rising curve."]


def test_every_notebook_figure_alt_text_is_in_its_catalogue():
    book = i18n.ROOT / "book"
    for notebook in book.rglob("*.ipynb"):
        if ".ipynb_checkpoints" in notebook.parts:
            continue
        texts = i18n.figure_alt_texts(notebook)
        if not texts:
            continue
        po = i18n.CATALOGUES / notebook.relative_to(i18n.ROOT).with_suffix(".po")
        ids = {m.id for m in i18n.messages(i18n.read(po))}
        missing = [t for t in texts if t not in ids]
        assert missing == [], f"{notebook.name}: run python -m tools.i18n extract ({missing[:1]})"
