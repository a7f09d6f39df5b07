"""segflow trainer: learns U-Net / FCN-8s from preprocessed records and exports a SavedModel serving raw bytes.

Entry point: ``python -m trainer.task``. Imports ``schemas`` and ``pipelines.shared`` only (never the jobs).
Its Keras is Keras 2, imported by name (``tf_keras``), whatever ``tf.keras`` is in the calling process.

The Python API (docs/api.md, "Train"): ``run(TrainConfig(...)) -> TrainResult`` is the command without the command
line; the reusable parts work in anyone's Keras code: ``build_model``, ``read_records`` (the records' ``tf.data``
reader), ``SegmentationLoss``, ``ConfusionMatrixMetric`` (mIoU), ``export_model``. The names load on first use
(PEP 562), so ``import trainer`` imports no TensorFlow.
"""

from __future__ import annotations

from pipelines.shared.lazy_exports import lazy_exports

# Public name → the module that defines it; a module's own name (``losses``) stands for the module.
_EXPORTS = {
    "TrainConfig": "trainer.config",
    "TrainResult": "trainer.training",
    "run": "trainer.training",
    "from_args": "trainer.task",
    "main": "trainer.task",
    "build_model": "trainer.models",
    "with_transform": "trainer.normalization",
    "read_dataset": "trainer.data_dir",
    "read_records": "trainer.data",
    "DatasetInfo": "trainer.data_dir",
    "DataError": "trainer.data_dir",
    "SegmentationLoss": "trainer.losses",
    "ConfusionMatrixMetric": "trainer.metrics",
    "export_model": "trainer.export",
    "losses": "trainer.losses",
    "metrics": "trainer.metrics",
    "export": "trainer.export",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
