"""Re-exports for the sub-packages' ``__init__``, imported on first use.

Each sub-package names its public API in its ``__init__`` (``from cilp_plugin.dataset import
create_splits``), yet importing one of its modules never imports the others: the layers keep
FiftyOne and torch out of whatever does not need them (``cilp --help``; ``cilp app``'s server,
which must start before FiftyOne is imported; the raw-folder arrays and the generator on a GPU
machine without FiftyOne).
"""

from __future__ import annotations

import sys
from importlib import import_module


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]):
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package``, whose module ``m`` provides
    the names ``exports[m]``; a name is imported from its module when first asked for."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)
