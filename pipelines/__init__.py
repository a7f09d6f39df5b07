"""Apache Beam jobs that make segflow records (preprocess) and use trained models (infer, evaluate)."""

import importlib

# First: the TensorFlow settings in ``schemas`` must precede any TensorFlow import.
importlib.import_module("schemas")
