"""Figures for the book and the explorers (matplotlib).

Shared helpers live in :mod:`lmlab.viz.core`; each chapter's figures in
``lmlab/viz/chNN_<slug>.py``, whose ``__all__`` names are collected here so that
``from lmlab.viz import roofline_plot`` works.
"""

from importlib import import_module
from pkgutil import iter_modules

from .core import figure_to_png, new_figure, style, table

__all__ = ["figure_to_png", "new_figure", "style", "table"]

for _info in sorted(iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("ch"):
        _module = import_module(f"{__name__}.{_info.name}")
        for _name in _module.__all__:
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
