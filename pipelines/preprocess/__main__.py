"""``python -m pipelines.preprocess``: see ``pipelines/preprocess/job.py``."""

from pipelines.preprocess.job import main
from pipelines.shared.cli import exit_process

exit_process(main())
