"""Image geometry shared by preprocess (making records), the trainer's serving graph and inference.

One implementation of "bring an image to the model's size and back", in TensorFlow ops so the exact same code
runs eagerly inside Beam workers and traced inside the exported SavedModel: no train/serve skew from two
resize kernels.

Resize modes:
  ``stretch``: scale height and width independently to the target size.
  ``pad``: keep the aspect ratio, scale to fit inside the target, centre, pad images with 0 and masks with the
    ignore label (so padding contributes to no loss and no metric).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf

RESIZE_MODES = ("stretch", "pad")


def _check_mode(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")


def content_box(height: tf.Tensor, width: tf.Tensor, size: Sequence[int], mode: str
                ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Where an ``height`` x ``width`` image's content lies on the ``size`` canvas: (top, left, h, w) int32."""
    _check_mode(mode)
    target_h, target_w = int(size[0]), int(size[1])
    if mode == "stretch":
        zero = tf.constant(0, tf.int32)
        return zero, zero, tf.constant(target_h, tf.int32), tf.constant(target_w, tf.int32)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    scale = tf.minimum(target_h / h, target_w / w)
    new_h = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, target_h)
    new_w = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, target_w)
    return (target_h - new_h) // 2, (target_w - new_w) // 2, new_h, new_w


def resize_image(image: tf.Tensor, size: Sequence[int], mode: str = "stretch") -> tf.Tensor:
    """RGB image ``[H, W, 3]`` (any numeric dtype, 0..255) → uint8 ``[size[0], size[1], 3]``.

    Antialiased bilinear (a triangle filter that widens when shrinking, like PIL's BILINEAR), rounded to
    uint8 so records and the serving graph see identical pixels.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    top, left, h, w = content_box(shape[0], shape[1], size, mode)
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([h, w]), method="bilinear", antialias=True)
    resized = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    if mode == "pad":
        resized = tf.image.pad_to_bounding_box(resized, top, left, int(size[0]), int(size[1]))
    return tf.ensure_shape(resized, [int(size[0]), int(size[1]), 3])


def resize_mask(mask: tf.Tensor, size: Sequence[int], mode: str = "stretch", ignore_label: int = 255) -> tf.Tensor:
    """Label map ``[H, W]`` (uint8/uint16/int) → same dtype ``[size[0], size[1]]``, nearest neighbour only.

    Nearest neighbour never invents a value that is not in the input; padding (mode ``pad``) is
    ``ignore_label``.
    """
    mask = tf.convert_to_tensor(mask)
    shape = tf.shape(mask)
    top, left, h, w = content_box(shape[0], shape[1], size, mode)
    resized = tf.image.resize(mask[..., tf.newaxis], tf.stack([h, w]), method="nearest")
    resized = tf.cast(resized, mask.dtype)
    if mode == "pad":
        # pad_to_bounding_box pads with 0: shift by one so padding becomes ignore_label after shifting back.
        shifted = tf.cast(resized, tf.int32) - ignore_label
        shifted = tf.image.pad_to_bounding_box(shifted, top, left, int(size[0]), int(size[1]))
        resized = tf.cast(shifted + ignore_label, mask.dtype)
    return tf.ensure_shape(resized[..., 0], [int(size[0]), int(size[1])])


def restore_size(values: tf.Tensor, height: tf.Tensor, width: tf.Tensor, size: Sequence[int],
                 mode: str = "stretch") -> tf.Tensor:
    """Model-size per-pixel values ``[size[0], size[1], C]`` (probabilities or logits) → ``[height, width, C]``.

    Crops the content box (mode ``pad``) and resizes bilinearly. Resize scores, never ids: the argmax is taken
    afterwards at the original resolution.
    """
    top, left, h, w = content_box(height, width, size, mode)
    content = values[top:top + h, left:left + w, :]
    return tf.image.resize(content, tf.stack([tf.cast(height, tf.int32), tf.cast(width, tf.int32)]),
                           method="bilinear")


def decode_image_bytes(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes (scalar string) → uint8 ``[H, W, 3]``; by content, not by name.

    Grayscale is expanded and alpha dropped; an animated GIF gives its first frame.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])
