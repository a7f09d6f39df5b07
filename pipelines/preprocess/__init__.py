"""Oxford-IIIT Pet / Cityscapes → sharded GZIP TFRecords, metadata.json and a tensorflow-transform graph.

``python -m pipelines.preprocess`` runs the job (``job.py``); ``run(argv)`` is its Python entry point. Importing this
package imports neither Beam nor TensorFlow: ``run``/``main`` load ``job`` on first use.
"""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("run", "main"):
        from pipelines.preprocess import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
