"""Segmentation losses as small pure functions of ``labels`` int ``[B, H, W]`` (ignore label = no contribution)
and ``logits`` float ``[B, H, W, C]``, each returning a scalar float32.

Keras wiring is ``SegmentationLoss`` at the bottom; ``compile(loss=...)`` receives one of those.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras as keras

LOSSES = ("ce", "dice", "ce_dice")


def _valid_mask(labels: tf.Tensor, num_classes: int, ignore_label: int) -> tf.Tensor:
    """float32 ``[B, H, W]``: 1 where the label is a real class (not ``ignore_label``, not out of range)."""
    labels = tf.cast(labels, tf.int32)
    valid = tf.logical_and(tf.not_equal(labels, ignore_label), tf.logical_and(labels >= 0, labels < num_classes))
    return tf.cast(valid, tf.float32)


def cross_entropy(
    labels: tf.Tensor, logits: tf.Tensor, class_weights: Optional[Sequence[float]] = None, ignore_label: int = 255
) -> tf.Tensor:
    """Sparse categorical cross-entropy from logits, averaged over labelled pixels.

    With ``class_weights`` (length C) each pixel counts ``w[label]`` times: sum(w_y * ce) / sum(w_y), the
    usual weighted mean. A batch with no labelled pixel gives 0 (not NaN).
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = logits.shape[-1]
    valid = _valid_mask(labels, num_classes, ignore_label)
    safe = tf.where(valid > 0, tf.cast(labels, tf.int32), 0)  # any in-range id; masked out below
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    weight = valid
    if class_weights is not None:
        weight = weight * tf.gather(tf.constant(class_weights, tf.float32), safe)
    return tf.math.divide_no_nan(tf.reduce_sum(ce * weight), tf.reduce_sum(weight))


def soft_dice(
    labels: tf.Tensor,
    logits: tf.Tensor,
    class_weights: Optional[Sequence[float]] = None,
    ignore_label: int = 255,
    smooth: float = 1.0,
) -> tf.Tensor:
    """Soft multi-class Dice loss: 1 - mean_c (2 Σ p·g + s) / (Σ p + Σ g + s) over labelled pixels.

    p = softmax probabilities, g = one-hot labels, sums over the batch; classes are averaged with
    ``class_weights`` when given (weighted mean), uniformly otherwise. A class absent from both prediction and
    labels scores 1 thanks to ``smooth``, so an all-ignored batch gives 0.
    """
    logits = tf.cast(logits, tf.float32)
    num_classes = logits.shape[-1]
    valid = _valid_mask(labels, num_classes, ignore_label)[..., tf.newaxis]
    probs = tf.nn.softmax(logits) * valid
    onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes) * valid  # ignore (255) is out of range → 0s
    axes = tf.range(tf.rank(probs) - 1)
    intersection = tf.reduce_sum(probs * onehot, axis=axes)
    denominator = tf.reduce_sum(probs, axis=axes) + tf.reduce_sum(onehot, axis=axes)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    if class_weights is None:
        return 1.0 - tf.reduce_mean(dice)
    w = tf.constant(class_weights, tf.float32)
    return 1.0 - tf.math.divide_no_nan(tf.reduce_sum(w * dice), tf.reduce_sum(w))


def segmentation_loss(
    name: str,
    labels: tf.Tensor,
    logits: tf.Tensor,
    class_weights: Optional[Sequence[float]] = None,
    ignore_label: int = 255,
) -> tf.Tensor:
    """``ce``, ``dice`` or ``ce_dice`` (their sum) as a scalar."""
    if name == "ce":
        return cross_entropy(labels, logits, class_weights, ignore_label)
    if name == "dice":
        return soft_dice(labels, logits, class_weights, ignore_label)
    if name == "ce_dice":
        return cross_entropy(labels, logits, class_weights, ignore_label) + soft_dice(
            labels, logits, class_weights, ignore_label
        )
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


class SegmentationLoss(keras.losses.Loss):
    """Keras wrapper: ``y_true`` int ``[B, H, W]``, ``y_pred`` logits ``[B, H, W, C]`` → scalar.

    The functions above already average over labelled pixels, so Keras' reduction sees one value.
    """

    def __init__(
        self,
        kind: str = "ce",
        class_weights: Optional[Sequence[float]] = None,
        ignore_label: int = 255,
        name: Optional[str] = None,
    ):
        super().__init__(name=name or f"{kind}_loss")
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        self.kind = kind
        self.class_weights = list(class_weights) if class_weights is not None else None
        self.ignore_label = ignore_label

    def call(self, y_true, y_pred):
        return segmentation_loss(self.kind, y_true, y_pred, self.class_weights, self.ignore_label)

    def get_config(self):
        return {
            "kind": self.kind,
            "class_weights": self.class_weights,
            "ignore_label": self.ignore_label,
            "name": self.name,
        }
