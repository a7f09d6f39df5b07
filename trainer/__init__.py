"""segflow trainer: learns U-Net / FCN-8s from preprocessed records and exports a SavedModel serving raw bytes.

Entry point: ``python -m trainer.task``. Imports ``schemas`` and ``pipelines.shared`` only (never the jobs).
Its Keras is Keras 2, imported by name (``tf_keras``), whatever ``tf.keras`` is in the calling process.
"""
