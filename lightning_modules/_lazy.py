"""Package exports imported on first use (PEP 562), so that importing one part stays cheap.

``from lightning_modules.style_transfer.functional import gram_matrix`` then imports no
Lightning, and ``cli.py`` imports only the technique a config names.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any],
                                                                  Callable[[], list[str]],
                                                                  list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a package.

    Args:
        package: The package's ``__name__``.
        exports: Each public name and the module (relative to the package, e.g. ``".module"``)
            that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
