"""Translate the captions of the book's table of contents ("The machine", ...).

sphinx-external-toc inserts the toctrees (priority 100) after Sphinx has translated the
page (priority 20), so their captions would stay in English in the Chinese edition even
though the gettext builder extracts them into the root page's catalogue. This transform
runs after the insertion and looks each caption up in that catalogue.
"""

from __future__ import annotations

from os import path

from sphinx import addnodes
from sphinx.locale import init as init_locale
from sphinx.transforms import SphinxTransform
from sphinx.util.i18n import docname_to_domain


class TranslateTocCaptions(SphinxTransform):
    default_priority = 110  # after sphinx_external_toc's InsertToctrees (100)

    def apply(self, **kwargs) -> None:
        if not self.config.language or self.config.language == "en":
            return
        toctrees = [n for n in self.document.findall(addnodes.toctree) if n.get("caption")]
        if not toctrees:
            return
        domain = docname_to_domain(self.env.docname, self.config.gettext_compact)
        dirs = [path.join(self.env.srcdir, d) for d in self.config.locale_dirs]
        catalog, found = init_locale(dirs, self.config.language, domain)
        if not found:
            return
        for node in toctrees:
            translated = catalog.gettext(node["caption"])
            node["caption"] = node["rawcaption"] = translated


def setup(app):
    app.add_transform(TranslateTocCaptions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
