"""The Chinese edition of the book: message catalogues, their coverage, and the zh build.

The English pages are the source. Sphinx's gettext builder extracts every paragraph,
heading, list item and table cell of every page (Markdown cells of the notebooks
included; the figures' alt texts are added from the cells' metadata) into one template
per page; ``sphinx-intl`` keeps one catalogue per page under
``locales/zh_CN/LC_MESSAGES/``; the Chinese build (``language: zh_CN``) reads the English
sources and replaces each message by its translation. Code cells and stored outputs are
not messages: they stay exactly as in the English edition.

    python -m tools.i18n extract        # after an English change: update every catalogue
    python -m tools.i18n status         # per page: share translated, fuzzy; exit 1 below 98 %
    python -m tools.i18n check          # formulas, code and links unchanged; one term, one translation
    python -m tools.i18n verify         # status --fresh and check (make test's i18n stage)
    python -m tools.i18n build          # the Chinese site into _build/html/zh
    python -m tools.i18n dump PAGE      # a page's untranslated messages as JSON
    python -m tools.i18n apply PAGE F   # set a page's translations from that JSON, filled in

``make book`` builds both editions, ``make i18n-status`` prints the coverage, and
``make test`` fails on an untranslated, fuzzy or damaged message.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = "zh_CN"
CATALOGUES = ROOT / "locales" / LANGUAGE / "LC_MESSAGES"
BUILD = ROOT / "_build"
TEMPLATES = BUILD / "gettext"
HTML_ZH = BUILD / "html" / "zh"
MIN_TRANSLATED = 98.0

# What a Chinese page says where the English one says something else in the theme (the
# theme's other strings: locales/zh_CN/LC_MESSAGES/sphinx.po and booktheme.po).
ZH_OVERRIDES = {
    "language": LANGUAGE,
    "html_theme_options": {
        "search_bar_text": "搜索本书……",
        "extra_footer": "LLM Lab —— 每一页都可离线使用：MathJax 与小部件管理器均由本站提供。",
    },
    "togglebutton_hint": "点击显示",
    "togglebutton_hint_hide": "点击隐藏",
}

# One English term, its one Chinese form in this book, and renderings the book must not
# use (a wrong sense, or a second name for the same thing). The glossary is the source of
# the Chinese forms; `check` enforces them on every translated page.
TERMS: list[tuple[str, str, tuple[str, ...]]] = [
    ("token", "词元", ("令牌", "标记符")),
    ("tokenizer", "分词器", ("标记器", "词元化器")),
    ("attention", "注意力", ("注意机制", "关注度")),
    ("quantization", "量化", ("量子化",)),
    ("KV cache", "键值缓存", ("KV缓存", "KV 缓存", "kv 缓存")),
    ("embedding", "嵌入", ("埋入", "嵌入层向量")),
    ("perplexity", "困惑度", ("混乱度", "困惑值")),
    ("open-weight", "开放权重", ("开源权重",)),
    ("fine-tuning", "微调", ("精调", "细调")),
    ("learning rate", "学习率", ("学习速率",)),
    ("gradient", "梯度", ()),
    ("throughput", "吞吐量", ("吞吐率",)),
    ("latency", "延迟", ("时延",)),
    ("roofline", "屋顶线", ("车顶线",)),
    ("residual", "残差", ()),
    ("feed-forward", "前馈", ("前向网络",)),
    ("mixture of experts", "混合专家", ("专家混合",)),
    ("speculative decoding", "投机解码", ("推测解码", "猜测解码")),
    ("pruning", "剪枝", ("修剪",)),
    ("distillation", "蒸馏", ()),
    ("key/value head", "键值头", ("键/值头", "KV 头")),
    ("draft model", "草稿模型", ("起草模型",)),
    ("acceptance rate", "接受率", ("接收率",)),
    ("held-out", "留出", ()),
    ("load-balancing loss", "负载均衡损失", ()),
    ("residual stream", "残差流", ()),
    ("benchmark", "基准测试", ()),
]


def sphinx_build(builder: str, outdir: Path, doctrees: Path, overrides: dict,
                 strict: bool) -> int:
    """Build the book with Jupyter Book's configuration plus ``overrides``."""
    from jupyter_book.sphinx import build_sphinx

    overrides = {"external_toc_path": str(ROOT / "_toc.yml"),
                 "latex_individualpages": False, **overrides}
    result = build_sphinx(ROOT, outdir, noconfig=True, path_config=ROOT / "_config.yml",
                          confoverrides=overrides, doctreedir=doctrees, builder=builder,
                          warningiserror=strict, keep_going=True, quiet=True,
                          force_all=builder == "html")
    if isinstance(result, Exception):
        raise result
    return int(result or 0)


def figure_alt_texts(notebook: Path) -> list[str]:
    """The alt texts a notebook gives its figures (cell metadata ``mystnb.image.alt``)."""
    import json
    texts = []
    for cell in json.loads(notebook.read_text(encoding="utf-8")).get("cells", []):
        image = (cell.get("metadata", {}).get("mystnb") or {}).get("image") or {}
        if isinstance(image, dict) and image.get("alt") and image["alt"] not in texts:
            texts.append(image["alt"])
    return texts


def add_figure_alt_texts(templates: Path) -> None:
    """Append each notebook's figure alt texts to its page's template: the gettext builder
    never sees them (myst-nb makes the images after translation; book/_ext/lmlab_i18n.py
    translates them in the Chinese build)."""
    from babel.messages.pofile import read_po, write_po
    for pot in templates.rglob("*.pot"):
        notebook = ROOT / pot.relative_to(templates).with_suffix(".ipynb")
        if not notebook.exists():
            continue
        with open(pot, "rb") as f:
            template = read_po(f)
        for text in figure_alt_texts(notebook):
            if text not in template:
                template.add(text, auto_comments=["alt text of a figure"])
        with open(pot, "wb") as f:
            write_po(f, template, width=0)


def gettext_templates(templates: Path, doctrees: Path) -> None:
    """One template per page from the English sources, figure alt texts included."""
    sphinx_build("gettext", templates, doctrees, {}, strict=False)
    add_figure_alt_texts(templates)


def jieba_dictionary() -> Path:
    """A jieba user dictionary of every Chinese term in the glossary, so that the search
    index holds "键值缓存" as one word and not only "键值" and "缓存"."""
    words = set()
    glossary = (ROOT / "book" / "appendix" / "glossary.md").read_text(encoding="utf-8")
    for line in glossary.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.search(r"[\u4e00-\u9fff]", cells[1]):
            words.update(re.findall(r"[\u4e00-\u9fff]{2,}", cells[1]))
    words.update(term for _, term, _ in TERMS)
    path = BUILD / "jieba-glossary.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w} 1000 n\n" for w in sorted(words)), encoding="utf-8")
    return path


def build(outdir: Path = HTML_ZH, strict: bool = True) -> int:
    """The Chinese site into ``outdir`` (its own doctrees: translation happens on read)."""
    import logging

    import jieba
    jieba.setLogLevel(logging.WARNING)
    overrides = dict(ZH_OVERRIDES)
    overrides["html_search_options"] = {"dict": str(jieba_dictionary())}
    doctrees = BUILD / ".doctrees-zh" if outdir == HTML_ZH else Path(outdir) / ".doctrees"
    code = sphinx_build("html", Path(outdir), doctrees, overrides, strict)
    if code == 0:
        print(f"The Chinese edition is built: open file://{Path(outdir).resolve()}/index.html")
    return code


def extract(pages: list[str] | None = None) -> None:
    """Templates from the English pages, then every catalogue (or only ``pages``'s)
    brought up to date: new messages empty, changed ones fuzzy, removed ones dropped."""
    if pages:
        import tempfile

        from babel.messages.pofile import read_po
        scratch = Path(tempfile.mkdtemp(prefix="lmlab-gettext-"))
        templates = scratch / "gettext"
        gettext_templates(templates, scratch / "doctrees")
        paths = [catalogue(page) for page in pages]
        for path in paths:
            name = path.relative_to(CATALOGUES).with_suffix(".pot")
            with open(templates / name, "rb") as f:
                template = read_po(f)
            catalog = read(path)
            catalog.update(template)
            catalog.obsolete.clear()
            write(path, catalog)
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"updated {len(pages)} catalogue(s); "
              f"{fill_untranslatable(paths)} messages with nothing to translate copied")
        return
    gettext_templates(TEMPLATES, BUILD / ".doctrees-gettext")
    subprocess.run([sys.executable, "-m", "sphinx_intl", "update", "-p", str(TEMPLATES),
                    "-d", str(ROOT / "locales"), "-l", LANGUAGE, "-w", "0",
                    "--no-obsolete"], check=True, cwd=ROOT)
    filled = fill_untranslatable()
    print(f"catalogues updated under {CATALOGUES.relative_to(ROOT)}; "
          f"{filled} messages with nothing to translate copied as they are")


# --- reading catalogues -------------------------------------------------------------------

def catalogues() -> list[Path]:
    """The pages' catalogues (the interface's own, sphinx.po and booktheme.po, aside)."""
    return sorted((CATALOGUES / "book").rglob("*.po"))


def read(path: Path):
    from babel.messages.pofile import read_po
    with open(path, "rb") as f:
        return read_po(f, locale=LANGUAGE)


def write(path: Path, catalog) -> None:
    from babel.messages.pofile import write_po
    with open(path, "wb") as f:
        write_po(f, catalog, width=0, omit_header=False)


def messages(catalog):
    """The real messages of a catalogue (not its header)."""
    return [m for m in catalog if m.id and not isinstance(m.id, tuple)]


# Markup a translation must carry over unchanged: math, inline code, roles, link targets.
_PROTECTED = [
    re.compile(r"\$\$.+?\$\$", re.S),
    re.compile(r"(?<![\\$])\$(?!\$)(?:\\.|[^$\\])+?\$"),
    re.compile(r"\{[a-z:-]+\}`[^`]*`"),
    re.compile(r"(?<![}`])`[^`]+`"),
    re.compile(r"\]\([^)\s]+\)"),
    re.compile(r"https?://\S+"),
]


# A translated paragraph is parsed as a document of its own, without the notebook's glue
# data, so a translation names the notebook: {glue:text}`04_cpu_history.ipynb::key:s`.
_GLUE = re.compile(r"\{glue(:\w+)?\}`(?:[^`:]+::)?([^`:]+)(?::[^`]*)?`")


def protected(text: str) -> Counter:
    """The formulas, code spans, roles and link targets of a message, counted (a glue
    role counts as its key, whichever notebook it names)."""
    found: Counter = Counter()
    rest = _GLUE.sub(lambda m: f"{{glue{m.group(1) or ''}}}`{m.group(2)}`", text)
    for pattern in _PROTECTED:
        for match in pattern.findall(rest):
            found[match] += 1
        rest = pattern.sub(" ", rest)
    return found


def nothing_to_translate(text: str) -> bool:
    """True for a message that is only formulas, code, roles, numbers or punctuation
    (display formulas come without their ``$$``: a TeX command and no run of words)."""
    rest = text
    for pattern in _PROTECTED:
        rest = pattern.sub(" ", rest)
    words = re.search(r"[A-Za-z]{2,}[,.;:]? +[a-z]{2,} +[a-z]{2,}", rest)
    if re.search(r"\\[a-zA-Z]+", rest) and not words:
        return True
    return not re.search(r"[A-Za-z]{2,}", rest)


def is_display_formula(text: str) -> bool:
    """A message that is a whole display formula (a ``$$`` block or ``\\begin`` environment):
    its translation must be the English, character for character."""
    return "$" not in text and "`" not in text and nothing_to_translate(text) \
        and bool(re.search(r"\\[a-zA-Z]+", text))


def fill_untranslatable(paths: list[Path] | None = None) -> int:
    """Copy each message with nothing to translate (a display formula, a code span, a
    cross-reference alone) into its translation, so that coverage counts only prose."""
    filled = 0
    for path in paths or catalogues():
        catalog = read(path)
        changed = False
        for m in messages(catalog):
            if not m.string and nothing_to_translate(m.id):
                m.string = m.id
                filled += 1
                changed = True
        if changed:
            write(path, catalog)
    return filled


# --- coverage ------------------------------------------------------------------------------

@dataclass
class Coverage:
    page: str
    total: int
    translated: int
    fuzzy: int

    @property
    def percent(self) -> float:
        return 100.0 * self.translated / self.total if self.total else 100.0


def coverage() -> list[Coverage]:
    rows = []
    for path in catalogues():
        ms = messages(read(path))
        translated = sum(1 for m in ms if m.string and not m.fuzzy)
        rows.append(Coverage(str(path.relative_to(CATALOGUES).with_suffix("")), len(ms),
                             translated, sum(1 for m in ms if m.fuzzy)))
    return rows


def out_of_date(templates: Path = TEMPLATES) -> dict[str, int]:
    """{page: messages of the English page that its catalogue lacks} from freshly built
    templates (a page with no catalogue counts all its messages): an English change not
    yet brought into the catalogues with ``extract``."""
    from babel.messages.pofile import read_po
    gettext_templates(templates, BUILD / ".doctrees-gettext")
    lacking = {}
    for pot in sorted(templates.rglob("*.pot")):
        page = str(pot.relative_to(templates).with_suffix(""))
        with open(pot, "rb") as f:
            wanted = {m.id for m in read_po(f) if m.id}
        po = CATALOGUES / f"{page}.po"
        have = {m.id for m in messages(read(po))} if po.exists() else set()
        if wanted - have:
            lacking[page] = len(wanted - have)
    return lacking


def status(minimum: float = MIN_TRANSLATED, fresh: bool = False) -> int:
    """Print per page the share of messages translated and the fuzzy count; 1 if any page
    is under ``minimum`` per cent or has a fuzzy message. With ``fresh``, first rebuild the
    templates from the English pages and fail on messages the catalogues lack."""
    if fresh:
        lacking = out_of_date()
        for page, n in lacking.items():
            print(f"{page}: {n} English message(s) not in its catalogue: "
                  "run python -m tools.i18n extract, then translate them")
        if lacking:
            return 1
    rows = coverage()
    width = max(len(r.page) for r in rows)
    print(f"{'page':<{width}}  messages  translated  fuzzy")
    for r in rows:
        flag = "" if r.percent >= minimum and not r.fuzzy else "   <-"
        print(f"{r.page:<{width}}  {r.total:8d}  {r.percent:9.1f}%  {r.fuzzy:5d}{flag}")
    total = sum(r.total for r in rows)
    done = sum(r.translated for r in rows)
    fuzzy = sum(r.fuzzy for r in rows)
    print(f"{'all pages':<{width}}  {total:8d}  {100.0 * done / total:9.1f}%  {fuzzy:5d}")
    bad = [r for r in rows if r.percent < minimum or r.fuzzy]
    if bad:
        print(f"\n{len(bad)} page(s) under {minimum:g} % translated or with fuzzy messages; "
              "translate them in locales/zh_CN/LC_MESSAGES/ (python -m tools.i18n extract "
              "after an English change).")
        return 1
    return 0


# --- checks on the translations ------------------------------------------------------------

_INLINE_TAGS = ("<strong>", "<em>", "<code>", "<a ")


def rendered_markup(text: str) -> Counter:
    """Bold, italics, code and links of a message as CommonMark renders it, with any
    ``*`` or backtick left over (CommonMark does not open ``**`` between a CJK letter and
    an opening quote: write the quote inside the bold or add a space)."""
    from markdown_it import MarkdownIt
    html = MarkdownIt("commonmark").renderInline(re.sub(r"\$[^$]+\$", "M", text))
    found = Counter({tag: html.count(tag) for tag in _INLINE_TAGS})
    bare = re.sub(r"<code>.*?</code>", "", html)
    found["stray * or `"] = bare.count("*") + bare.count("`")
    return found


def problems() -> list[str]:
    """Every translated message whose formulas/code/links differ from the English, every
    forbidden rendering of a term, and every page that translates a term without its
    one Chinese form."""
    found = []
    for path in catalogues():
        page = str(path.relative_to(CATALOGUES).with_suffix(""))
        ms = [m for m in messages(read(path)) if m.string]
        for m in ms:
            if protected(m.id) != protected(m.string):
                missing = protected(m.id) - protected(m.string)
                extra = protected(m.string) - protected(m.id)
                found.append(f"{page}: markup changed in {m.id[:60]!r}: "
                             f"missing {sorted(missing)}, added {sorted(extra)}")
            elif is_display_formula(m.id) and m.string != m.id:
                found.append(f"{page}: the display formula {m.id[:50]!r} is translated; "
                             "Sphinx cannot render a changed formula block (it comes out as "
                             "'\\[::\\]'): keep it as the English, and say it in the text around it")
            elif _GLUE.search(m.id) and _GLUE.search(m.string) and "::" not in m.string:
                found.append(f"{page}: a translated paragraph has no glue data of its own: "
                             "name the notebook, {glue:text}`<notebook>.ipynb::<key>:s`")
            elif re.match(r"\d+\. ", m.string) and not re.match(r"\d+\. ", m.id):
                found.append(f"{page}: {m.string[:40]!r} starts with a number and a full stop, "
                             "which Markdown reads as a numbered list: write it as 'N\\. '")
            elif re.match(r"\d+\. ", m.string):
                found.append(f"{page}: the heading {m.string[:40]!r} would be read as a "
                             "numbered list and stay in English: write its number as 'N\\. '")
            elif rendered_markup(m.id) != rendered_markup(m.string):
                found.append(f"{page}: bold/italic/code/links render differently in "
                             f"{m.string[:60]!r}: English {dict(rendered_markup(m.id))}, "
                             f"Chinese {dict(rendered_markup(m.string))}")
        if page.endswith("glossary"):
            continue
        text = "\n".join(m.string for m in ms if m.string != m.id)
        source = "\n".join(m.id for m in ms if m.string != m.id)
        for english, chinese, wrong in TERMS:
            for variant in wrong:
                if variant in text:
                    found.append(f"{page}: {variant!r} for {english!r}; this book says "
                                 f"{chinese!r} (see the glossary)")
            if (re.search(rf"\b{re.escape(english)}s?\b", source, re.I) and text
                    and chinese not in text and english.lower() not in text.lower()):
                found.append(f"{page}: {english!r} is in the English text but neither "
                             f"{chinese!r} nor {english!r} is in the translation")
    return found


def check() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"{len(found)} problem(s) in the translations")
    return 1 if found else 0


def catalogue(page: str) -> Path:
    """``book/ch04_attention/01_soft_lookup`` (or its .po path) -> the catalogue's path."""
    path = Path(page)
    if path.suffix != ".po":
        path = CATALOGUES / (page.removesuffix(".ipynb").removesuffix(".md") + ".po")
    if not path.exists():
        raise SystemExit(f"page: no catalogue {path}; the pages are: "
                         + ", ".join(c.page for c in coverage()))
    return path


def dump(page: str, everything: bool = False) -> None:
    """Print the page's untranslated messages (or all, with their translations) as JSON
    {msgid: msgstr}, in page order: the form ``apply`` reads back."""
    import json
    ms = messages(read(catalogue(page)))
    out = {m.id: m.string for m in ms if everything or not m.string or m.fuzzy}
    print(json.dumps(out, ensure_ascii=False, indent=1))


def apply(page: str, translations: Path) -> int:
    """Set translations from a JSON file {msgid: msgstr}; unknown msgids are reported."""
    import json
    path = catalogue(page)
    table = json.loads(Path(translations).read_text(encoding="utf-8"))
    catalog = read(path)
    known = {m.id: m for m in messages(catalog)}
    unknown = [k for k in table if k not in known]
    for msgid, msgstr in table.items():
        if msgid in known and msgstr:
            known[msgid].string = msgstr
            known[msgid].flags.discard("fuzzy")
    write(path, catalog)
    for k in unknown:
        print(f"not a message of {page} (msgid must be copied exactly): {k[:80]!r}")
    print(f"{len(table) - len(unknown)} translations set in {path}")
    return 1 if unknown else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="update every catalogue from the English pages")
    ex.add_argument("pages", nargs="*", help="only these pages' catalogues")
    st = sub.add_parser("status", help="coverage per page")
    st.add_argument("--min", type=float, default=MIN_TRANSLATED)
    st.add_argument("--fresh", action="store_true",
                    help="first check the catalogues against the English pages")
    sub.add_parser("check", help="markup unchanged, one translation per term")
    sub.add_parser("verify", help="status --fresh and check: what make test runs")
    bd = sub.add_parser("build", help="build the Chinese site into _build/html/zh")
    bd.add_argument("--out", type=Path, default=HTML_ZH)
    dp = sub.add_parser("dump", help="a page's untranslated messages as JSON")
    dp.add_argument("page")
    dp.add_argument("--all", action="store_true")
    ap = sub.add_parser("apply", help="set a page's translations from a JSON file")
    ap.add_argument("page")
    ap.add_argument("json", type=Path)
    args = parser.parse_args(argv)
    if args.command == "dump":
        dump(args.page, args.all)
        return 0
    if args.command == "apply":
        return apply(args.page, args.json)
    if args.command == "extract":
        extract(args.pages)
        return 0
    if args.command == "status":
        return status(args.min, args.fresh)
    if args.command == "check":
        return check()
    if args.command == "verify":
        return max(status(fresh=True), check())
    return build(args.out)


if __name__ == "__main__":
    sys.exit(main())
