"""Losses against hand-computed numbers; the ignore label contributes nothing."""

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import losses


def _t(x, dtype=tf.float32):
    return tf.constant(x, dtype)


def test_cross_entropy_matches_hand_computation():
    # pixel 1: logits [ln 3, 0] → p(class 0) = 3/4; pixel 2: uniform → p = 1/2; pixel 3 ignored.
    logits = _t([[[[math.log(3.0), 0.0], [0.0, 0.0], [50.0, -50.0]]]])
    labels = _t([[[0, 1, 255]]], tf.int32)
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert float(losses.cross_entropy(labels, logits)) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_class_weights_are_a_weighted_mean():
    logits = _t([[[[math.log(3.0), 0.0], [0.0, 0.0]]]])
    labels = _t([[[0, 1]]], tf.int32)
    expected = (1.0 * -math.log(0.75) + 3.0 * -math.log(0.5)) / 4.0
    assert float(losses.cross_entropy(labels, logits, class_weights=[1.0, 3.0])) == pytest.approx(expected, rel=1e-6)


def test_soft_dice_matches_hand_computation():
    # Uniform probabilities over 2 classes, one pixel of each class: per class (2*0.5 + 1) / (1 + 1 + 1) = 2/3.
    logits = _t([[[[0.0, 0.0], [0.0, 0.0], [9.0, -9.0]]]])
    labels = _t([[[0, 1, 255]]], tf.int32)
    assert float(losses.soft_dice(labels, logits)) == pytest.approx(1 - 2 / 3, rel=1e-6)
    # A confident correct prediction scores (almost) zero loss.
    logits = _t([[[[30.0, -30.0], [-30.0, 30.0]]]])
    assert float(losses.soft_dice(_t([[[0, 1]]], tf.int32), logits)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", losses.LOSSES)
def test_all_ignored_batch_gives_zero_and_finite_gradients(kind):
    logits = tf.Variable(tf.random.normal([2, 4, 4, 3], seed=1))
    labels = tf.fill([2, 4, 4], 255)
    with tf.GradientTape() as tape:
        loss = losses.segmentation_loss(kind, labels, logits)
    grad = tape.gradient(loss, logits)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(grad.numpy())) and not np.any(grad.numpy())


@pytest.mark.parametrize("kind", losses.LOSSES)
def test_ignored_pixels_do_not_change_the_loss(kind):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 3, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=(1, 3, 3))
    masked = labels.copy()
    masked[0, 2, :] = 255
    garbage = logits.copy()
    garbage[0, 2, :] = 100.0  # whatever the network says where the label is ignored
    cropped = losses.segmentation_loss(kind, _t(labels[:, :2], tf.int32), _t(logits[:, :2]))
    with_ignored = losses.segmentation_loss(kind, _t(masked, tf.int32), _t(garbage))
    assert float(with_ignored) == pytest.approx(float(cropped), rel=1e-5)


def test_ce_dice_is_the_sum_and_keras_wrapper_agrees():
    logits = tf.random.normal([2, 4, 4, 3], seed=3)
    labels = tf.random.uniform([2, 4, 4], 0, 3, dtype=tf.int32, seed=4)
    total = losses.segmentation_loss("ce_dice", labels, logits)
    assert float(total) == pytest.approx(float(losses.cross_entropy(labels, logits) + losses.soft_dice(labels, logits)))
    assert float(losses.SegmentationLoss("ce_dice")(labels, logits)) == pytest.approx(float(total), rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.SegmentationLoss("focal")
