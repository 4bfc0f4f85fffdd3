"""Algorithm registry: one entry per ``algo=`` name (FP32 reference, QAT algorithms, PTQ methods).

Every module of this package is imported here, so an algorithm registers itself with ``@register_algo`` in its own
module: adding one is one module plus one ``bench/conf/algo/<name>.yaml``, no list to edit.
"""

import importlib
import pkgutil

from bench.algos.base import ALGOS, Algorithm, CellContext, CellOutcome, register_algo

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["ALGOS", "Algorithm", "CellContext", "CellOutcome", "register_algo"]
