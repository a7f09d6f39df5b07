"""Test-time flip averaging (``--test_time_flip``): the exported model predicts each image and its mirror image
and averages their class probabilities.

It is built into the exported Keras model, not into one serving path, so the SavedModel's signatures, the TFLite
files and their parity checks all serve the same averaged prediction. Its output stays logits: the log of the
mean probabilities, whose softmax is that mean again, so every consumer of logits (``predict_resized``'s softmax,
an argmax, the TFLite files) needs no change. It costs two network passes per image.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

# Probabilities below this are clipped before the log: a float32 softmax can round a class to exactly 0.
_SMALLEST_PROBABILITY = 1e-30


class MirrorWidth(layers.Layer):
    """Mirrors ``[B, H, W, C]`` left to right (its own inverse)."""

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return tf.reverse(images, axis=[2])


class MeanProbabilityLogits(layers.Layer):
    """Two logits tensors → the log of the mean of their softmax probabilities (float32)."""

    def call(self, first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
        mean = 0.5 * (tf.nn.softmax(tf.cast(first, tf.float32)) + tf.nn.softmax(tf.cast(second, tf.float32)))
        return tf.math.log(tf.maximum(mean, _SMALLEST_PROBABILITY))


def flip_averaged(model: keras.Model) -> keras.Model:
    """``model`` (images → logits ``[B, H, W, C]``) wrapped to average each image's prediction with its mirror
    image's (mirrored back); the same input, the same weights (shared, not copied)."""
    inputs = keras.Input(shape=model.input_shape[1:], dtype=model.inputs[0].dtype, name="flip_averaged_input")
    straight = model(inputs)
    mirrored = MirrorWidth(name="unmirror")(model(MirrorWidth(name="mirror")(inputs)))
    logits = MeanProbabilityLogits(name="flip_averaged_logits")(straight, mirrored)
    return keras.Model(inputs, logits, name=f"{model.name}_flip_averaged")
