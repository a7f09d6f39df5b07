"""Oxford-IIIT Pet / Cityscapes → sharded GZIP TFRecords, metadata.json and a tensorflow-transform graph.

Python callers: ``from pipelines.preprocess.job import run``; ``run(argv)`` raises ``schemas.errors``, never
``SystemExit``. Importing this package loads neither Beam nor TensorFlow.
"""
