"""One explorer per chapter, each returning an ipywidget.

Every explorer works in two places: live in Jupyter, and in the static book without a
kernel. The trick (:func:`lmlab.widgets.frames.frame_explorer`) is to precompute one
figure per combination of control values, stack them, and link each control to the
stack's ``selected_index`` with ``jslink``, a link the browser keeps without Python.
Chapter explorers live in ``lmlab/widgets/chNN_<slug>.py`` and are collected here.
"""

from importlib import import_module
from pkgutil import iter_modules

from .frames import frame_explorer

__all__ = ["frame_explorer"]

for _info in sorted(iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("ch"):
        _module = import_module(f"{__name__}.{_info.name}")
        for _name in _module.__all__:
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
