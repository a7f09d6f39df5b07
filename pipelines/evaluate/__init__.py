"""Beam job: per-class IoU, mIoU and pixel accuracy of predicted masks against ground truth.

    python -m pipelines.evaluate --predictions OUT/masks --ground_truth SRC --dataset {pet,cityscapes}
        [--split val] [--output_file OUT/evaluation.json] [any Beam option]

Both sides are read in the dataset's native encoding (what ``pipelines.infer`` writes to ``OUT/masks``): Pet
trimaps (``SRC/annotations/trimaps/<id>.png``), Cityscapes labelIds (``SRC/gtFine/<split>/<city>/
<frame>_gtFine_labelIds.png``). Predictions pair with ground truth by example id (Pet: the file stem;
Cityscapes: ``<city>_<seq>_<frame>``). One confusion matrix per image, summed with ``CombineGlobally``.
``--predictions`` and ``--ground_truth`` are literal folder paths (glob characters are part of the name); both
are listed on the launcher (``storage.list_files``), so a run that pairs nothing stops with one line before any
work, and the document lists which ground-truth ids have no prediction and which predictions have no ground
truth.

The arithmetic is the official Cityscapes pixel-level one (``cityscapesscripts.evaluation.
evalPixelLevelSemanticLabeling``), so both give the same numbers on the same files: ground-truth pixels of ignored
classes count nowhere; a prediction of a class that is not evaluated counts as a false negative of the true
class; IoU = TP / (TP + FP + FN), NaN for a class absent from both sides, and mIoU averages the non-NaN IoUs
(``schemas.scores``: the trainer's metrics use the same function).

Python callers: ``from pipelines.evaluate import EvaluateConfig, run``; ``run(EvaluateConfig(...))`` returns an
``EvaluateResult`` and raises ``schemas.errors`` errors, never ``SystemExit``. In a Beam pipeline of your own:
``ScoreMasks`` (docs/api.md). Importing this package (or its ``options``) loads neither Beam nor TensorFlow: the
names below load their module on first use.
"""

from __future__ import annotations

from pipelines.shared.lazy_exports import lazy_exports

# public name → the module that defines it (PEP 562: imported when first asked for, so the import stays light)
_EXPORTS = {
    "EvaluateConfig": "pipelines.evaluate.options",
    "EvaluateResult": "pipelines.evaluate.options",
    "run": "pipelines.evaluate.job",
    "from_args": "pipelines.evaluate.job",
    "build_pipeline": "pipelines.evaluate.job",
    "ScoreMasks": "pipelines.evaluate.transforms",
    "PairByExampleId": "pipelines.evaluate.transforms",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
