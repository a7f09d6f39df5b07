"""Oxford-IIIT Pet / Cityscapes → sharded GZIP TFRecords, metadata.json and a tensorflow-transform graph.

    python -m pipelines.preprocess --dataset pet --input_dir SRC --output_dir DST --image_size 128 \\
        [--num_shards N] [--augment_copies K] [--val_fraction F] [--seed S] [any Beam option]

Job flags are parsed here; every other flag goes to Beam (``--runner``, ``--direct_num_workers``,
``--project``, ``--temp_location``, ``--setup_file`` ...). Defaults run the DirectRunner in multi-processing
mode with one worker per core.

Python callers: ``run(PreprocessConfig(...))`` returns a ``PreprocessResult`` and raises ``schemas.errors``,
never ``SystemExit``; ``ReadDataset``, ``MakeRecords`` and ``WriteDataset`` are the job's steps as Beam
transforms for your own pipeline (docs/api.md). Importing this package loads neither Beam nor TensorFlow: each
name below loads its module when first used (PEP 562).
"""

from __future__ import annotations

from pipelines.shared.lazy_exports import lazy_exports

# Public name → the module that defines it.
_HOMES = {
    "PreprocessConfig": "pipelines.preprocess.options",
    "from_args": "pipelines.preprocess.options",
    "PreprocessResult": "pipelines.preprocess.metadata",
    "run": "pipelines.preprocess.job",
    "main": "pipelines.preprocess.job",
    "build_pipeline": "pipelines.preprocess.job",
    "NoRecordsError": "pipelines.preprocess.publication",
    "ReadDataset": "pipelines.preprocess.transforms",
    "MakeRecords": "pipelines.preprocess.transforms",
    "WriteDataset": "pipelines.preprocess.transforms",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _HOMES)
