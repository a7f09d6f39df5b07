"""``python -m pipelines.infer``: see ``pipelines/infer/__init__.py`` and ``job.py``.

The flags are parsed (``--help``, a bad flag answered) before Beam and TensorFlow are imported."""
from pipelines.common.flags import infer_main
from schemas.cli import exit_process

exit_process(infer_main())
