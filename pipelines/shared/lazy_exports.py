"""A package's public names, imported when first used (PEP 562), so that importing the package stays light.

``import pipelines.infer`` must not load Beam or TensorFlow (``--help`` answers in a fraction of a second, and
a notebook pays for what it uses); ``from pipelines.infer import run`` loads the module ``run`` lives in.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, homes: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any], Callable]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` whose public names live in ``homes``: name → module.

    A name whose home is the module ``package.name`` itself (``trainer.losses``) is that module.
    """

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module-level hook PEP 562 names
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(home)
        value = module if home == f"{package}.{name}" else getattr(module, name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return sorted(homes), __getattr__, __dir__
