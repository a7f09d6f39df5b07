"""Apache Beam jobs that make segflow records (preprocess) and use trained models (infer, evaluate)."""
