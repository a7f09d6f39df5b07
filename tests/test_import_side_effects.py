"""Importing segflow changes nothing in the importing process: its environment, its logging, its Keras.

A notebook or another library imports segflow's modules to use them; what the commands need (Keras 2 for a quick
start, quiet library logs) is set by their ``main`` or scoped to the code that needs it. Each check runs in a
fresh interpreter, since a module imports once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("schemas", "pipelines", "trainer")
# The developer tools and the programs' ``__main__`` modules are run, not imported.
SKIPPED = ("pipelines.tools",)

# Runs in the fresh interpreter: snapshots what importing may change, imports every segflow module (or the code
# given), snapshots again and prints both as JSON.
_SNAPSHOT = textwrap.dedent(
    """
    import importlib, json, logging, os, pkgutil, sys

    def loggers():
        found = {"": logging.getLogger()}
        found.update((n, l) for n, l in logging.Logger.manager.loggerDict.items() if isinstance(l, logging.Logger))
        return {
            name: {
                "level": logger.level,
                "handlers": sorted(type(h).__name__ for h in logger.handlers),
                "filters": sorted(type(f).__name__ for f in logger.filters),
                "handler_filters": sorted(type(f).__name__ for h in logger.handlers for f in h.filters),
                "propagate": logger.propagate,
                "disabled": logger.disabled,
            }
            for name, logger in found.items()
        }

    def keras():
        tf = sys.modules.get("tensorflow")
        return getattr(tf.keras, "__version__", "?") if tf is not None and TOUCH_KERAS else None

    def segflow_modules():
        for package in PACKAGES:
            yield package
            path = [os.path.join(ROOT, *package.split("."))]
            for info in pkgutil.walk_packages(path, prefix=package + "."):
                if info.name.endswith(".__main__") or info.name.startswith(SKIPPED):
                    continue
                yield info.name

    def import_quietly(name):
        try:
            importlib.import_module(name)
        except Exception:
            pass

    BEFORE
    loaded_before = set(sys.modules)
    before = {"environ": dict(os.environ), "loggers": loggers(), "keras": keras()}
    imported = []
    if MODULES is None:
        for name in segflow_modules():
            importlib.import_module(name)
            imported.append(name)
    else:
        for name in MODULES:
            import_quietly(name)
    after = {"environ": dict(os.environ), "loggers": loggers(), "keras": keras()}
    libraries = [n for n in sys.modules if n not in loaded_before and n.split(".")[0] not in PACKAGES]
    print(json.dumps({"before": before, "after": after, "imported": imported, "libraries": libraries}))
    """
)


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-"], input=code, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env
    )


def _snapshots(before_code: str, touch_keras: bool = False, modules: Optional[list[str]] = None) -> dict:
    """Before and after importing every segflow module (``modules``: these instead, each if it imports)."""
    code = _SNAPSHOT.replace("BEFORE", before_code)
    header = (
        f"ROOT = {ROOT!r}; PACKAGES = {PACKAGES!r}; SKIPPED = {SKIPPED!r}; TOUCH_KERAS = {touch_keras!r}; "
        f"MODULES = {modules!r}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = _run(header + code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _changes(shots: dict) -> tuple[dict, dict]:
    """(environment variables set or removed, loggers changed) between ``shots``' before and after; a logger
    created meanwhile counts as changed when it has a level, handler or filter of its own."""
    before, after = shots["before"], shots["after"]
    environ = {k: after["environ"].get(k) for k in set(before["environ"]) | set(after["environ"])}
    environ = {k: v for k, v in environ.items() if before["environ"].get(k) != v}
    pristine = {"level": 0, "handlers": [], "filters": [], "handler_filters": [], "propagate": True, "disabled": False}
    loggers = {}
    for name, state in after["loggers"].items():
        expected = before["loggers"].get(name, pristine)
        if state != expected:
            loggers[name] = {"before": expected, "after": state}
    return environ, loggers


@pytest.mark.slow  # fresh interpreters that import everything: ~30-60 s on 2 cores
def test_importing_every_module_leaves_environment_logging_and_keras_as_they_were():
    """A user who configured logging and uses ``tf.keras`` imports every segflow module: what changes is only
    what the libraries segflow imports change by themselves (the same libraries imported without segflow, in
    another fresh interpreter, make exactly the same changes), and ``tf.keras`` stays the same Keras."""
    user_first = "import logging; logging.basicConfig(); import tensorflow as tf; tf.keras.__version__"
    shots = _snapshots(user_first, touch_keras=True)
    assert len(shots["imported"]) > 40, shots["imported"]  # the walk found the tree
    assert shots["before"]["keras"] == shots["after"]["keras"]
    control = _snapshots(user_first, modules=shots["libraries"])
    environ, loggers = _changes(shots)
    libraries_environ, libraries_loggers = _changes(control)
    ours = {k: v for k, v in environ.items() if libraries_environ.get(k, "absent") != v}
    assert not ours, f"importing segflow changed os.environ: {ours}"
    ours = {k: v for k, v in loggers.items() if libraries_loggers.get(k) != v}
    assert not ours, f"importing segflow changed loggers: {json.dumps(ours, indent=1)[:3000]}"


@pytest.mark.slow  # fresh interpreters that import everything: ~30-60 s on 2 cores
def test_segflow_imported_first_leaves_tf_keras_to_keras_3():
    """A user who imports segflow first, then ``tensorflow``, gets TensorFlow's own default ``tf.keras``
    (Keras 3), not the Keras 2 segflow's programs choose for themselves."""
    code = (
        "import importlib\n"
        "for name in ('schemas', 'pipelines', 'trainer', 'pipelines.preprocess.job', 'pipelines.infer.job',\n"
        "             'pipelines.evaluate.job', 'pipelines.common.runner', 'trainer.task', 'trainer.models'):\n"
        "    importlib.import_module(name)\n"
        "import os, tensorflow as tf\n"
        "assert 'TF_USE_LEGACY_KERAS' not in os.environ, os.environ['TF_USE_LEGACY_KERAS']\n"
        "print(tf.keras.__version__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = _run(code, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("3."), result.stdout
