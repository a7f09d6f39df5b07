"""``python -m pipelines.preprocess``: see ``pipelines/preprocess/job.py``."""
from pipelines.preprocess.job import _exit, main

_exit(main())
