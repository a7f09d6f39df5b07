"""``python -m pipelines.infer``: see ``pipelines/infer/__init__.py``.

The flags are parsed (``--help``, a bad flag answered) before the job module imports Beam and TensorFlow."""

import importlib

from pipelines.infer import options
from pipelines.shared.cli import exit_process


def _job():
    return importlib.import_module("pipelines.infer.job")


exit_process(options.main(None, run=lambda argv: _job().run_command(argv)))
