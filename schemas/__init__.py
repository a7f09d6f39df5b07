"""What a segflow record is: feature keys, label definitions, dataset metadata and the shared transform.

Everything else (``pipelines`` that make and use records, ``trainer`` that learns from them) imports from
here; this package imports from neither.

Importing any segflow module changes nothing in the importing process (environment, logging, which Keras
``tf.keras`` is): segflow's own Keras code imports ``tf_keras`` by name, and the commands choose their
settings in their ``main`` (``pipelines.shared.cli.main``). ``tests/test_import_side_effects.py`` checks it.
"""
