"""Intersection over union from a confusion matrix: one rule for the trainer's metrics and ``pipelines.evaluate``.

The rule is the official Cityscapes evaluator's (``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``):
a class's IoU is TP / (TP + FP + FN); a class absent from both the ground truth and the predictions has no IoU
(NaN, shown as n/a or JSON null), and the mean IoU is the mean over the classes that have one. With no such class
at all (no labelled pixel, nothing predicted) the mean is NaN too: 0.0 would read as a model that got everything
wrong.
"""

from __future__ import annotations

import numpy as np


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """float64 ``[C]`` IoU per class; NaN for a class absent from both sides.

    ``matrix``: counts, rows = true class, columns = predicted class, ``[C, C]``, or ``[C, C + 1]`` whose last
    column counts predictions outside the C classes (false negatives of the row's class, no class's false
    positive).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    c = matrix.shape[0]
    tp = np.diag(matrix[:, :c])
    fn = matrix.sum(axis=1) - tp
    fp = matrix[:, :c].sum(axis=0) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def mean_iou(iou: np.ndarray) -> float:
    """The mean of the per-class IoUs that are not NaN; NaN when every one is."""
    iou = np.asarray(iou, dtype=np.float64)
    valid = ~np.isnan(iou)
    return float(iou[valid].mean()) if valid.any() else float("nan")
