"""Graded-part checks: ``check_<part>(fn, *, seed=0)`` for every exercise.

Each chapter's checks live in ``lmlab/checks/chNN_<slug>.py`` and list their public names
in ``__all__``; this package collects them so notebooks can write
``from lmlab.checks import check_matmul_flops``. The shared machinery is in
:mod:`lmlab.checks.core`.
"""

from importlib import import_module
from pkgutil import iter_modules

from .core import PARTS, Case, DelegationError, Mistake, Part, run_part

__all__ = ["PARTS", "Case", "Mistake", "Part", "run_part", "DelegationError"]

for _info in sorted(iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("ch"):
        _module = import_module(f"{__name__}.{_info.name}")
        for _name in _module.__all__:
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
