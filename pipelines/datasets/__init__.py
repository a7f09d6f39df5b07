"""The dataset registry: one module per dataset in this folder, found by its file name.

``pipelines/datasets/<name>.py`` holds everything that is dataset ``<name>``'s (layout and discovery, example
ids, which ``schemas.labels`` table applies, evaluate's ground-truth layouts, the default record format...) as
one ``DATASET`` instance of a ``base.Dataset`` subclass; the jobs ask ``get(name)`` and never branch on a name.
A new dataset is one new file here (``docs/datasets.md``).

``names()`` reads this folder's file names and imports nothing: every ``--dataset`` choice list and ``--help``
use it before Beam or TensorFlow load. ``get(name)`` imports the dataset's module on first use; dataset modules
import neither Beam nor TensorFlow either (their Beam side is ``discovery.py``), so the flag checks that read a
dataset's fields (its label modes, its record format) stay fast too.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.datasets.base import Dataset

# Modules of this folder that are not datasets: what all datasets share, and their Beam side.
_SHARED = ("base", "discovery")
# The first datasets, in the order the command lines list them; others follow by name.
_FIRST = ("pet", "cityscapes")
# Datasets registered from elsewhere (``register``): name -> module path.
_REGISTERED: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def _in_folder() -> tuple[str, ...]:
    here = os.path.dirname(os.path.abspath(__file__))
    found = [f[:-3] for f in os.listdir(here) if f.endswith(".py") and not f.startswith("_") and f[:-3] not in _SHARED]
    return tuple(sorted(found, key=lambda n: (_FIRST.index(n) if n in _FIRST else len(_FIRST), n)))


def names() -> tuple[str, ...]:
    """Every dataset's name, for ``--dataset`` choices."""
    folder = _in_folder()
    return folder + tuple(n for n in _REGISTERED if n not in folder)


def _module_path(name: str) -> str:
    return _REGISTERED.get(name) or f"{__name__}.{name}"


def get(name: str) -> "Dataset":
    """The dataset called ``name``; ``ValueError`` naming the choices when there is none."""
    if name not in names():
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(names())}")
    dataset = importlib.import_module(_module_path(name)).DATASET
    if dataset.name != name:
        raise ValueError(f"{_module_path(name)}.DATASET is named {dataset.name!r}, not {name!r}")
    return dataset


def register(name: str, module: str) -> None:
    """Adds the dataset whose ``DATASET`` lives in ``module`` (a dotted path) outside this folder, e.g. a test's
    or a plugin's. On a remote runner the module must be importable on the workers too."""
    _REGISTERED[name] = module


def unregister(name: str) -> None:
    """Removes a dataset added with ``register``."""
    _REGISTERED.pop(name, None)
