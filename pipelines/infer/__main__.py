"""``python -m pipelines.infer``: see ``pipelines/infer/__init__.py`` and ``job.py``."""
import sys

from pipelines.common import flags

# --help and flag errors are answered before Beam and TensorFlow are imported.
flags.preflight(lambda: flags.infer_parser(), sys.argv[1:])

from pipelines.common.runner import exit_process  # noqa: E402
from pipelines.infer.job import main  # noqa: E402

exit_process(main())
