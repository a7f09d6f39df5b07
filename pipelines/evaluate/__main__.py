"""``python -m pipelines.evaluate``: see ``pipelines/evaluate/__init__.py`` and ``job.py``.

The flags are parsed (``--help``, a bad flag answered) before Beam is imported."""
from pipelines.common.flags import evaluate_main
from schemas.cli import exit_process

exit_process(evaluate_main())
