"""Confusion-matrix metrics against hand-computed numbers; ignore label excluded everywhere."""

import numpy as np
import pytest
import tensorflow as tf

from trainer import metrics

# labels 0 0 1 2 [255]; predictions 0 1 1 1 [2]  →  rows = truth, columns = prediction
LABELS = [0, 0, 1, 2, 255]
PREDS = [0, 1, 1, 1, 2]
CM = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0]])


def test_confusion_matrix_skips_ignore():
    cm = metrics.confusion_matrix(tf.constant(LABELS), tf.constant(PREDS), 3).numpy()
    np.testing.assert_array_equal(cm, CM)


def test_iou_accuracy_dice_by_hand():
    np.testing.assert_allclose(metrics.per_class_iou(CM), [1 / 2, 1 / 3, 0.0])
    assert metrics.mean_iou(CM) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert metrics.pixel_accuracy(CM) == pytest.approx(2 / 4)
    np.testing.assert_allclose(metrics.per_class_dice(CM), [2 / 3, 1 / 2, 0.0])
    assert metrics.mean_dice(CM) == pytest.approx((2 / 3 + 1 / 2) / 3)


def test_absent_class_is_left_out_of_the_mean():
    cm = np.array([[2, 0, 0], [0, 1, 0], [0, 0, 0]])
    assert np.isnan(metrics.per_class_iou(cm)[2])
    assert metrics.mean_iou(cm) == 1.0
    summary = metrics.summarize(cm, ["a", "b", "c"])
    assert summary["per_class_iou"] == {"a": 1.0, "b": 1.0, "c": None}


def _logits_for(preds, num_classes=3):
    return tf.one_hot(tf.constant(preds), num_classes) * 10.0


def test_streaming_metric_accumulates_batches_and_ignores_all_ignored_batch():
    metric = metrics.ConfusionMatrixMetric(3)
    metric.update_state(tf.constant([LABELS[:2]]), _logits_for([PREDS[:2]]))
    metric.update_state(tf.constant([LABELS[2:]]), _logits_for([PREDS[2:]]))
    metric.update_state(tf.fill([1, 4], 255), _logits_for([[0, 1, 2, 0]]))  # all ignored: no change
    np.testing.assert_array_equal(metric.matrix(), CM)
    result = {k: float(v) for k, v in metric.result().items()}
    assert result["miou"] == pytest.approx((1 / 2 + 1 / 3) / 3)
    assert result["pixel_accuracy"] == pytest.approx(0.5)
    assert result["dice"] == pytest.approx((2 / 3 + 1 / 2) / 3)
    metric.reset_state()
    assert metric.matrix().sum() == 0


def test_only_ignored_pixels_give_no_miou():
    """Nothing to score: mIoU is NaN (JSON null in metrics.json), as in pipelines.evaluate, never a 0.0 that
    reads as a model that got everything wrong."""
    metric = metrics.ConfusionMatrixMetric(3)
    metric.update_state(tf.fill([2, 3, 3], 255), tf.zeros([2, 3, 3, 3]))
    result = {k: float(v) for k, v in metric.result().items()}
    assert np.isnan(result["miou"]) and result["pixel_accuracy"] == 0.0 and result["dice"] == 0.0
    assert np.isnan(metrics.mean_iou(metric.matrix())) and metrics.pixel_accuracy(metric.matrix()) == 0.0
    assert metrics.summarize(metric.matrix(), ["a", "b", "c"])["miou"] is None


@pytest.mark.parametrize(
    "matrix",
    [
        CM,
        np.array([[2, 0, 0], [0, 1, 0], [0, 0, 0]]),  # class c absent from both sides
        np.zeros((3, 3), np.int64),  # nothing labelled, nothing predicted
        np.random.default_rng(0).integers(0, 50, (19, 19)) * (np.random.default_rng(1).random((19, 19)) < 0.3),
    ],
)
def test_trainer_and_evaluate_score_iou_by_one_rule(matrix):
    """trainer.metrics and pipelines.evaluate give the same per-class IoU (NaN in the same places) and mIoU."""
    from pipelines.evaluate import transforms as evaluate

    # evaluate's matrix has one more column, predictions outside the classes: none here.
    ours = evaluate.scores(np.concatenate([matrix, np.zeros((len(matrix), 1), np.int64)], axis=1))
    np.testing.assert_array_equal(metrics.per_class_iou(matrix), ours["iou"])
    assert metrics.mean_iou(matrix) == ours["mean_iou"] or (
        np.isnan(metrics.mean_iou(matrix)) and np.isnan(ours["mean_iou"])
    )
