"""``python -m pipelines.evaluate``: see ``pipelines/evaluate/__init__.py`` and ``job.py``."""
import sys

from pipelines.common import flags

# --help and flag errors are answered before Beam and TensorFlow are imported.
flags.preflight(lambda: flags.evaluate_parser(), sys.argv[1:])

from pipelines.common.runner import exit_process  # noqa: E402
from pipelines.evaluate.job import main  # noqa: E402

main()
exit_process(0)
