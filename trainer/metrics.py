"""Segmentation metrics from a streaming confusion matrix.

Pure functions first (shapes in docstrings), then ``ConfusionMatrixMetric``, the Keras metric that accumulates
the matrix across batches (and across replicas/workers: its variable is summed on read) and reports mIoU,
pixel accuracy and Dice. Pixels labelled ``ignore_label`` (or any id >= C) are not counted at all. IoU follows
``schemas.scores`` (shared with ``pipelines.evaluate``): a class absent from both sides is NaN and left out of
the mean; the mean of no class is NaN.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from schemas import scores


def confusion_matrix(labels: tf.Tensor, predictions: tf.Tensor, num_classes: int, ignore_label: int = 255) -> tf.Tensor:
    """int64 ``[C, C]`` counts, rows = true class, columns = predicted class.

    labels, predictions: int ``[...]`` of the same shape (predictions are ids, not scores).
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    valid = tf.logical_and(tf.not_equal(labels, ignore_label), tf.logical_and(labels >= 0, labels < num_classes))
    labels = tf.boolean_mask(labels, valid)
    predictions = tf.clip_by_value(tf.boolean_mask(predictions, valid), 0, num_classes - 1)
    flat = labels * num_classes + predictions
    counts = tf.math.bincount(
        flat, minlength=num_classes * num_classes, maxlength=num_classes * num_classes, dtype=tf.int64
    )
    return tf.reshape(counts, [num_classes, num_classes])


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """float64 ``[C]``: TP / (TP + FP + FN) per class; NaN for a class absent from labels and predictions
    (``schemas.scores``, the rule ``pipelines.evaluate`` and the official Cityscapes evaluator use)."""
    return scores.per_class_iou(cm)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of ``per_class_iou`` over classes that occur (in labels or predictions); NaN when none does."""
    return scores.mean_iou(per_class_iou(cm))


def pixel_accuracy(cm: np.ndarray) -> float:
    """Correct labelled pixels / labelled pixels; 0 for an empty matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else 0.0


def per_class_dice(cm: np.ndarray) -> np.ndarray:
    """float64 ``[C]``: 2 TP / (2 TP + FP + FN) (hard Dice = F1); NaN for absent classes."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)


def mean_dice(cm: np.ndarray) -> float:
    """Mean of ``per_class_dice`` over classes that occur; 0 for an empty matrix."""
    dice = per_class_dice(cm)
    return float(np.nanmean(dice)) if np.any(~np.isnan(dice)) else 0.0


def _tf_nanmean(values: tf.Tensor, present: tf.Tensor, nan_when_empty: bool = False) -> tf.Tensor:
    """float32 mean of ``values`` where ``present``; 0, or NaN with ``nan_when_empty``, when nothing is."""
    present = tf.cast(present, tf.float64)
    # A plain division makes 0 / 0 NaN: schemas.scores' rule for the mean IoU of no class.
    divide = tf.math.divide if nan_when_empty else tf.math.divide_no_nan
    return tf.cast(divide(tf.reduce_sum(values * present), tf.reduce_sum(present)), tf.float32)


class ConfusionMatrixMetric(keras.metrics.Metric):
    """Streaming confusion matrix over batches; ``result()`` = {miou, pixel_accuracy, dice}.

    ``update_state(y_true [B, H, W] int, y_pred [B, H, W, C] logits or probabilities)``. Read the full matrix
    (for per-class IoU) with ``matrix()`` after ``evaluate``.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255, name: str = "seg", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        # float64 holds exact counts up to 2**53 pixels, and sums across replicas like any metric variable.
        self.cm = self.add_weight(
            name="confusion_matrix", shape=(self.num_classes, self.num_classes), initializer="zeros", dtype=tf.float64
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        predictions = tf.argmax(y_pred, axis=-1)
        cm = confusion_matrix(y_true, predictions, self.num_classes, self.ignore_label)
        self.cm.assign_add(tf.cast(cm, tf.float64))

    def result(self):
        cm = tf.convert_to_tensor(self.cm)
        tp = tf.linalg.diag_part(cm)
        rows, cols = tf.reduce_sum(cm, axis=1), tf.reduce_sum(cm, axis=0)
        union = rows + cols - tp
        iou = tf.math.divide_no_nan(tp, union)
        dice = tf.math.divide_no_nan(2 * tp, rows + cols)
        return {
            "miou": _tf_nanmean(iou, union > 0, nan_when_empty=True),
            "pixel_accuracy": tf.cast(tf.math.divide_no_nan(tf.reduce_sum(tp), tf.reduce_sum(cm)), tf.float32),
            "dice": _tf_nanmean(dice, rows + cols > 0),
        }

    def reset_state(self):
        self.cm.assign(tf.zeros_like(self.cm))

    def matrix(self) -> np.ndarray:
        return np.asarray(self.cm.numpy()).astype(np.int64)

    def get_config(self):
        return {"num_classes": self.num_classes, "ignore_label": self.ignore_label, "name": self.name}


def summarize(cm: np.ndarray, class_names: Optional[Sequence[str]] = None) -> dict:
    """A JSON-ready summary of a confusion matrix: miou, pixel_accuracy, dice, per_class_iou {name: iou|None}.

    IoUs that are NaN (``schemas.scores``: no class to score) are None, JSON null, as in evaluation.json.
    """
    iou = per_class_iou(cm)
    names = list(class_names) if class_names else [str(i) for i in range(len(iou))]
    miou = scores.mean_iou(iou)
    return {
        "miou": None if np.isnan(miou) else miou,
        "pixel_accuracy": pixel_accuracy(cm),
        "dice": mean_dice(cm),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
        "labelled_pixels": int(np.asarray(cm).sum()),
    }
