"""Feature keys of a segflow ``tf.train.Example`` and functions that build and parse one.

Keys follow the TF Model Garden / DeepLab convention so their readers decode our records unchanged.
"""

from __future__ import annotations

from typing import Mapping, Optional

import tensorflow as tf

from schemas.records import SPLITS  # noqa: F401  (re-exported: the split names are a records rule)

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
MASK_ENCODED = "image/segmentation/class/encoded"
MASK_FORMAT = "image/segmentation/class/format"
INSTANCE_ENCODED = "image/segmentation/instance/encoded"
INSTANCE_FORMAT = "image/segmentation/instance/format"
CLASS_LABEL = "image/class/label"
CLASS_SPECIES = "image/class/species"
# Not part of the Model Garden convention: which offline-augmented copy a record is (0 = the original).
AUGMENT_COPY = "image/augmentation/copy"


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def build_example(
    *,
    image_encoded: bytes,
    image_format: str,
    height: int,
    width: int,
    source_id: str,
    mask_png: Optional[bytes] = None,
    instance_png: Optional[bytes] = None,
    class_label: Optional[int] = None,
    species: Optional[int] = None,
    augment_copy: int = 0,
) -> tf.train.Example:
    """Builds one record.

    Args:
      image_encoded: PNG or JPEG bytes of an RGB image of ``height`` x ``width``.
      image_format: ``"png"`` or ``"jpeg"``.
      source_id: the dataset's id of the example (``Abyssinian_1``, ``frankfurt_000000_000294``).
      mask_png: single-channel 8-bit PNG of train ids (255 = ignore), same size as the image; ``None`` for
        image-only records (Cityscapes ``test``).
      instance_png: 16-bit PNG of Cityscapes instance ids, same size as the image.
      class_label: 0-based breed (Pet), when list files give it.
      species: 0 = cat, 1 = dog (Pet), when list files give it.
      augment_copy: 0 for the original example, k >= 1 for its k-th offline-augmented copy.
    """
    feature = {
        IMAGE_ENCODED: _bytes(image_encoded),
        IMAGE_FORMAT: _bytes(image_format.encode()),
        IMAGE_HEIGHT: _int(height),
        IMAGE_WIDTH: _int(width),
        IMAGE_FILENAME: _bytes(source_id.encode()),
        AUGMENT_COPY: _int(augment_copy),
    }
    if mask_png is not None:
        feature[MASK_ENCODED] = _bytes(mask_png)
        feature[MASK_FORMAT] = _bytes(b"png")
    if instance_png is not None:
        feature[INSTANCE_ENCODED] = _bytes(instance_png)
        feature[INSTANCE_FORMAT] = _bytes(b"png")
    if class_label is not None:
        feature[CLASS_LABEL] = _int(class_label)
    if species is not None:
        feature[CLASS_SPECIES] = _int(species)
    return tf.train.Example(features=tf.train.Features(feature=feature))


# Parsing spec: optional keys default to empty so image-only records parse with the same spec.
FEATURE_SPEC: Mapping[str, tf.io.FixedLenFeature] = {
    IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=b"png"),
    IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    IMAGE_FILENAME: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    MASK_ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    MASK_FORMAT: tf.io.FixedLenFeature([], tf.string, default_value=b"png"),
    INSTANCE_ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    CLASS_LABEL: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    CLASS_SPECIES: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    AUGMENT_COPY: tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized record (scalar string tensor) into a dict of scalar tensors."""
    return tf.io.parse_single_example(serialized, FEATURE_SPEC)


def decode_image(parsed: Mapping[str, tf.Tensor], image_format: str | None = None) -> tf.Tensor:
    """Decodes ``image/encoded`` to uint8 ``[H, W, 3]``.

    ``image_format``: ``"jpeg"`` or ``"png"`` when every record of the dataset is known to use it
    (``metadata.json``'s ``image_format``): the codec's own op, without ``decode_image``'s sniffing and
    dispatch (measurable in an input pipeline that decodes thousands of records a second). ``None``: by content.
    """
    encoded = parsed[IMAGE_ENCODED]
    if image_format == "jpeg":
        image = tf.io.decode_jpeg(encoded, channels=3)
    elif image_format == "png":
        image = tf.io.decode_png(encoded, channels=3)
    else:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    height = tf.cast(parsed[IMAGE_HEIGHT], tf.int32)
    width = tf.cast(parsed[IMAGE_WIDTH], tf.int32)
    return tf.reshape(image, [height, width, 3])


def decode_mask(parsed: Mapping[str, tf.Tensor], ignore_label: int = 255) -> tf.Tensor:
    """Decodes the class mask to uint8 ``[H, W]``; a record without one gets all ``ignore_label``."""
    height = tf.cast(parsed[IMAGE_HEIGHT], tf.int32)
    width = tf.cast(parsed[IMAGE_WIDTH], tf.int32)
    encoded = parsed[MASK_ENCODED]

    def _decode() -> tf.Tensor:
        return tf.reshape(tf.io.decode_png(encoded, channels=1), [height, width])

    def _ignore() -> tf.Tensor:
        return tf.fill([height, width], tf.constant(ignore_label, tf.uint8))

    return tf.cond(tf.strings.length(encoded) > 0, _decode, _ignore)
