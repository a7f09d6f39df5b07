"""The tensorflow-transform ``preprocessing_fn`` shared by preprocess (analysis), trainer and serving.

Raw features fed to the transform (after a record is decoded, or a serving image decoded and resized):
  ``image``: float32 ``[batch, H, W, 3]``, RGB in 0..255.
  ``label``: int64 ``[batch, H, W]``, train ids, 255 = ignore (optional at serving time).
Transformed features:
  ``image``: float32 ``[batch, H, W, 3]``, normalised per channel with the training split's mean and std.
  ``label``: int64 ``[batch, H, W]``, unchanged.
  ``stats/*``: the analysed constants broadcast per example, so they can be read back from the saved graph.

Because preprocess writes this graph to ``DST/transform_fn`` and both the trainer's input pipeline and the
exported SavedModel apply that very graph, training and serving normalise identically (no skew).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

RAW_IMAGE = "image"
RAW_LABEL = "label"
OUT_IMAGE = "image"
OUT_LABEL = "label"
STAT_CHANNEL_MEAN = "stats/channel_mean"
STAT_CHANNEL_STD = "stats/channel_std"
STAT_CLASS_PIXEL_COUNTS = "stats/class_pixel_counts"

# A channel with (almost) no variance must not blow the normalised values up.
MIN_STD = 1.0


def raw_feature_spec(height: int, width: int) -> dict[str, tf.io.FixedLenFeature]:
    """The raw feature spec tensorflow-transform analyses (fixed image size after preprocess)."""
    return {
        RAW_IMAGE: tf.io.FixedLenFeature([height, width, 3], tf.float32),
        RAW_LABEL: tf.io.FixedLenFeature([height, width], tf.int64),
    }


def make_preprocessing_fn(num_classes: int, ignore_label: int = 255) -> Callable[[dict], dict]:
    """Returns the ``preprocessing_fn`` for a dataset with ``num_classes`` train ids."""
    import tensorflow_transform as tft  # heavy import, only where the transform is built

    def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        image = tf.cast(inputs[RAW_IMAGE], tf.float32)
        label = tf.cast(inputs[RAW_LABEL], tf.int64)
        batch = tf.shape(image)[0]

        # Per-channel moments from exact integer sums. Raw pixels are whole numbers 0..255, and tft sums int64
        # exactly and in any order, so the constants (and the saved graph) are identical on every run however
        # the examples were batched; tft.mean/tft.var accumulate floats, whose last bits follow the batching.
        pixels = tf.cast(tf.round(tf.reshape(image, [-1, 3])), tf.int64)
        count = tf.cast(tft.sum(tf.ones_like(pixels[:, 0])), tf.float64)
        sums = tf.cast(tft.sum(pixels, reduce_instance_dims=False), tf.float64)
        squares = tf.cast(tft.sum(pixels * pixels, reduce_instance_dims=False), tf.float64)
        mean64 = sums / tf.maximum(count, 1.0)
        var64 = tf.maximum(squares / tf.maximum(count, 1.0) - mean64 * mean64, 0.0)
        mean = tf.cast(mean64, tf.float32)
        std = tf.maximum(tf.cast(tf.sqrt(var64), tf.float32), MIN_STD)

        # Per-class pixel counts: a bincount per batch, summed across batches (cheap, whatever H x W is).
        flat = tf.reshape(label, [-1])
        valid = tf.logical_and(tf.not_equal(flat, ignore_label), tf.less(flat, num_classes))
        counts = tf.math.bincount(
            tf.cast(tf.boolean_mask(flat, valid), tf.int32),
            minlength=num_classes,
            maxlength=num_classes,
            dtype=tf.int64,
        )
        class_counts = tft.sum(tf.expand_dims(counts, 0), reduce_instance_dims=False)

        return {
            OUT_IMAGE: (image - mean) / std,
            OUT_LABEL: label,
            STAT_CHANNEL_MEAN: tf.tile(tf.expand_dims(mean, 0), [batch, 1]),
            STAT_CHANNEL_STD: tf.tile(tf.expand_dims(std, 0), [batch, 1]),
            STAT_CLASS_PIXEL_COUNTS: tf.tile(tf.expand_dims(class_counts, 0), [batch, 1]),
        }

    return preprocessing_fn
