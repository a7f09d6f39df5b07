"""``python -m pipelines.evaluate``: see ``pipelines/evaluate/__init__.py``.

The flags are parsed (``--help``, a bad flag answered) before the job module imports Beam and TensorFlow."""

import importlib

from pipelines.evaluate import options
from pipelines.shared.cli import exit_process


def _job():
    return importlib.import_module("pipelines.evaluate.job")


exit_process(
    options.main(
        None, run=lambda argv: _job().run_command(argv), summary=lambda result, argv: _job().summary(result, argv)
    )
)
