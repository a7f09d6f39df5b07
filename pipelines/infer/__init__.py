"""Beam RunInference over images: masks, colour images and instances written back to storage.

    python -m pipelines.infer --model_dir JOB/model --input 'data/pet/images/*.jpg' --output_dir out/pred
        [--instances] [--overlay] [--batch_size 1,8] [--model_copies N] [any Beam option]
    python -m pipelines.infer --model_dir JOB/model --input_dir SRC --dataset pet --split test --output_dir OUT

Stages: the files the ``--input`` globs match (local globs expanded here, with Python's glob rules; ``gs://``
globs matched in the pipeline), each file once, or the images of the dataset folder ``--input_dir`` (of its own
``--split``, as ``pipelines.evaluate --split`` scores it) → give every file a unique, safe output stem → read, check the
pixel count in the header (``--max_pixels``) and preprocess with the model's own ``preprocess`` signature →
``RunInference`` (``predict_resized``, batched on the fixed model input size) → the model's ``postprocess`` at
each image's original size → instances (optional) → write masks/colour/overlay/instances through FileSystems.
Files that cannot be read or decoded go to ``OUT/dead_letter/``; every matched file ends in exactly one of the
two places. The previous run's outputs in ``OUT`` are removed first, ``summary.json`` first of all, and
``summary.json`` is written last: an ``OUT`` with a ``summary.json`` is complete.

Python callers: ``from pipelines.infer import InferConfig, run``; ``run(InferConfig(...))`` returns an
``InferResult`` and raises ``schemas.errors`` errors, never ``SystemExit``. In a Beam pipeline of your own:
``SegmentImages`` and ``WritePredictions`` (docs/api.md). Importing this package (or its ``options``) loads
neither Beam nor TensorFlow: the names below load their module on first use.
"""

from __future__ import annotations

from pipelines.shared.lazy_exports import lazy_exports

# public name → the module that defines it (PEP 562: imported when first asked for, so the import stays light)
_EXPORTS = {
    "InferConfig": "pipelines.infer.options",
    "InferResult": "pipelines.infer.options",
    "run": "pipelines.infer.job",
    "from_args": "pipelines.infer.job",
    "build_pipeline": "pipelines.infer.job",
    "SegmentImages": "pipelines.infer.transforms",
    "Segmentation": "pipelines.infer.transforms",
    "WritePredictions": "pipelines.infer.transforms",
    "AssignOutputNames": "pipelines.infer.transforms",
    "SegflowModelHandler": "pipelines.infer.model",
    "SegflowModel": "pipelines.infer.model",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
