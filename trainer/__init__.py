"""segflow trainer: learns U-Net / FCN-8s from preprocessed records and exports a SavedModel serving raw bytes.

Entry point: ``python -m trainer.task``. Imports ``schemas`` only (never ``pipelines``).
"""

import importlib

# First: the TensorFlow settings in ``schemas`` must precede any TensorFlow import.
importlib.import_module("schemas")
