"""What Sphinx's translation of a page misses, for the Chinese edition.

Sphinx translates a page right after reading it (transform priority 20). Two kinds of text
appear later, so they would stay in English:

- the captions of the book's table of contents ("The machine", ...): sphinx-external-toc
  inserts the toctrees at priority 100; the gettext builder does extract the captions into
  the root page's catalogue;
- the alt text of a notebook's figures (cell metadata ``mystnb.image.alt``): myst-nb turns
  stored outputs into images in a post-transform; ``tools/i18n.py`` adds these texts to the
  page's template, since the gettext builder never sees them.

Both are looked up in the page's own catalogue; an English edition is left as it is.
Interface strings: ``locales/<lang>/LC_MESSAGES/sphinx.po`` overrides Sphinx's and the
theme's (locale_dirs are searched first), and ``booktheme.po`` is put in front of
sphinx-book-theme's own catalogue, which it falls back to.
"""

from __future__ import annotations

import gettext
from os import path

from docutils import nodes
from sphinx import addnodes, locale
from sphinx.locale import init as init_locale
from sphinx.transforms import SphinxTransform
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.i18n import docname_to_domain


def page_catalog(transform):
    """The gettext catalogue of the page being built, or None (English, or no catalogue)."""
    config, env = transform.config, transform.env
    if not config.language or config.language == "en":
        return None
    domain = docname_to_domain(env.docname, config.gettext_compact)
    dirs = [path.join(env.srcdir, d) for d in config.locale_dirs]
    catalog, found = init_locale(dirs, config.language, domain)
    return catalog if found else None


class TranslateTocCaptions(SphinxTransform):
    default_priority = 110  # after sphinx_external_toc's InsertToctrees (100)

    def apply(self, **kwargs) -> None:
        toctrees = [n for n in self.document.findall(addnodes.toctree) if n.get("caption")]
        catalog = page_catalog(self) if toctrees else None
        for node in toctrees if catalog else []:
            node["caption"] = node["rawcaption"] = catalog.gettext(node["caption"])


class TranslateFigureAltText(SphinxPostTransform):
    default_priority = 10  # after myst-nb's SelectMimeType (4) has made the images

    def run(self, **kwargs) -> None:
        images = [n for n in self.document.findall(nodes.image) if n.get("alt")]
        catalog = page_catalog(self) if images else None
        for node in images if catalog else []:
            node["alt"] = catalog.gettext(node["alt"])


class _PoCatalog(gettext.NullTranslations):
    """A catalogue read straight from its .po file: at builder-inited Sphinx has compiled
    only the "sphinx" domain's .mo files, the others come later in the build."""

    def __init__(self, po_path: str):
        from babel.messages.pofile import read_po

        super().__init__()
        with open(po_path, "rb") as f:
            self._strings = {m.id: m.string for m in read_po(f) if m.id and m.string}

    def gettext(self, message):
        if message in self._strings:
            return self._strings[message]
        return self._fallback.gettext(message) if self._fallback else message


def prefer_our_theme_catalog(app, catalog: str = "booktheme") -> None:
    """Put this book's catalogue for the theme's strings in front of the theme's own."""
    if not app.config.language or app.config.language == "en":
        return
    for directory in app.config.locale_dirs:
        po = path.join(app.srcdir, directory, app.config.language, "LC_MESSAGES", f"{catalog}.po")
        if path.exists(po):
            ours = _PoCatalog(po)
            theirs = locale.translators.get(("general", catalog))
            if theirs is not None:
                ours.add_fallback(theirs)
            locale.translators["general", catalog] = ours
            return


def setup(app):
    app.add_transform(TranslateTocCaptions)
    app.add_post_transform(TranslateFigureAltText)
    app.connect("builder-inited", prefer_our_theme_catalog)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
