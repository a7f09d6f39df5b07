"""The ``tf.data`` input pipeline: segflow records → (raw uint8 images, uint8 label ids) batches.

Shards (local or gs://) → parallel interleave → [per-worker shard] → shuffle/repeat → parse with
``schemas.features`` → decode → [seeded online augmentation] → batch → prefetch, with AUTOTUNE throughout.
The tensorflow-transform graph from ``DST/transform_fn`` (per-channel normalisation from the training split's
own statistics) is *not* applied here: it is the first layer of the trained model
(``trainer.normalization``), so it runs where the model runs and serving applies the very same graph.
Images stay uint8 end to end (4x less to copy than float32). Dataset facts come from ``DST/metadata.json``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Optional

import numpy as np
import tensorflow as tf

from schemas import features, metadata as metadata_lib, transform as transform_lib

AUTOTUNE = tf.data.AUTOTUNE
SHARD_PATTERN = "{split}-*-of-*.tfrecord.gz"
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.tfrecord\.gz$")


class DataError(RuntimeError):
    """The data directory cannot be trained on; the message says why and what to do."""


@dataclasses.dataclass
class DatasetInfo:
    """A validated preprocess output directory."""

    data_dir: str
    metadata: metadata_lib.DatasetMetadata
    shards: dict[str, list[str]]
    tft_output: object  # tensorflow_transform.TFTransformOutput

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.metadata.image_size[0]), int(self.metadata.image_size[1])

    @property
    def num_classes(self) -> int:
        return int(self.metadata.num_classes)

    @property
    def ignore_label(self) -> int:
        return int(self.metadata.ignore_label)

    def count(self, split: str) -> int:
        return int(self.metadata.counts.get(split, 0)) if self.shards.get(split) else 0

    def transform_layer(self):
        """The TransformFeaturesLayer applying DST/transform_fn (one per DatasetInfo; trackable, so it is
        exported inside a SavedModel)."""
        return self.tft_output.transform_features_layer()


def _join(*parts: str) -> str:
    return os.path.join(*parts) if not parts[0].startswith("gs://") else "/".join(p.strip("/") for p in parts)


def list_shards(data_dir: str, split: str) -> list[str]:
    """Sorted shard paths of ``split``; a partial set (a missing ``-SSSSS-of-NNNNN``) is an error."""
    paths = sorted(tf.io.gfile.glob(_join(data_dir, SHARD_PATTERN.format(split=split))))
    totals = {int(m.group(2)) for m in map(_SHARD_RE.search, paths) if m}
    if paths and (len(totals) != 1 or len(paths) != totals.pop()):
        raise DataError(f"{split} shards in {data_dir} are incomplete or mixed ({len(paths)} files): "
                        f"rerun preprocess into a fresh --output_dir")
    return paths


def load_dataset_info(data_dir: str) -> DatasetInfo:
    """Reads and cross-checks metadata.json, the shards and transform_fn; raises ``DataError`` with a fix."""
    data_dir = data_dir.rstrip("/")
    hint = "point --data_dir at the --output_dir of python -m pipelines.preprocess"
    if not tf.io.gfile.exists(data_dir):
        raise DataError(f"--data_dir {data_dir} does not exist: {hint}")
    meta_path = _join(data_dir, metadata_lib.METADATA_FILE)
    if not tf.io.gfile.exists(meta_path):
        raise DataError(f"no {metadata_lib.METADATA_FILE} in {data_dir}: {hint}")
    try:
        with tf.io.gfile.GFile(meta_path, "r") as f:
            meta = metadata_lib.DatasetMetadata.from_json(f.read())
    except (ValueError, TypeError) as e:
        raise DataError(f"{meta_path} is unreadable ({str(e).splitlines()[0]}): rerun preprocess")
    shards = {split: list_shards(data_dir, split) for split in features.SPLITS}
    if not shards["train"] or not meta.counts.get("train"):
        raise DataError(f"no train records in {data_dir} (train-*-of-*.tfrecord.gz): {hint}")
    # WriteTransformFn(DST) writes DST/transform_fn/ (the graph) and DST/transformed_metadata/.
    transform_dir = _join(data_dir, metadata_lib.TRANSFORM_DIR)
    if not tf.io.gfile.exists(_join(transform_dir, "saved_model.pb")):
        raise DataError(f"no tensorflow-transform output in {transform_dir}: rerun preprocess")
    import tensorflow_transform as tft  # heavy; only once the directory looks right

    tft_output = tft.TFTransformOutput(data_dir)
    info = DatasetInfo(data_dir, meta, shards, tft_output)
    _check_transform(info)
    return info


def _check_transform(info: DatasetInfo) -> None:
    """The transform must have been analysed for these records' image size and class count."""
    try:
        spec = info.tft_output.transformed_feature_spec()
    except Exception as e:  # a corrupt or foreign directory
        raise DataError(f"cannot read transform_fn in {info.data_dir} ({type(e).__name__}): rerun preprocess")
    h, w = info.image_size
    image = spec.get(transform_lib.OUT_IMAGE)
    counts = spec.get(transform_lib.STAT_CLASS_PIXEL_COUNTS)
    image_shape = list(getattr(image, "shape", []))
    n = list(getattr(counts, "shape", []))
    if image_shape != [h, w, 3] or n != [info.num_classes]:
        raise DataError(
            f"transform_fn in {info.data_dir} does not match its metadata.json (transform: image "
            f"{image_shape[:2]}, {n[0] if n else '?'} classes; metadata: image [{h}, {w}], {info.num_classes} "
            f"classes): rerun preprocess into a fresh --output_dir")


def class_pixel_counts(info: DatasetInfo) -> np.ndarray:
    """Labelled training pixels per class, as analysed by tensorflow-transform (int64 ``[C]``)."""
    h, w = info.image_size
    out = info.transform_layer()({transform_lib.RAW_IMAGE: tf.zeros([1, h, w, 3], tf.float32)})
    return out[transform_lib.STAT_CLASS_PIXEL_COUNTS][0].numpy()


def median_frequency_weights(counts: np.ndarray) -> list[float]:
    """w_c = median(freq of present classes) / freq_c (Eigen & Fergus); 0 for classes with no pixels."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return [1.0] * len(counts)
    freq = counts / counts.sum()
    median = np.median(freq[present])
    return [float(median / f) if f > 0 else 0.0 for f in freq]


def decode_record(serialized: tf.Tensor, size: tuple[int, int], ignore_label: int,
                  image_format: Optional[str] = None) -> tuple[tf.Tensor, tf.Tensor]:
    """One serialized record → (uint8 image ``[H, W, 3]``, uint8 label ``[H, W]``) at the records' size.

    ``image_format``: the dataset's record encoding (metadata.json), or None to decode by content.
    """
    parsed = features.parse_example(serialized)
    image = tf.ensure_shape(features.decode_image(parsed, image_format), [size[0], size[1], 3])
    label = tf.ensure_shape(features.decode_mask(parsed, ignore_label), [size[0], size[1]])
    return image, label


def augment(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, ignore_label: int = 255
            ) -> tuple[tf.Tensor, tf.Tensor]:
    """Seeded online augmentation: horizontal flip and scale-and-crop (image and label alike), colour jitter
    (image only). ``seed``: int64 ``[2]``; same seed → same output. Returns uint8 image and label."""
    h, w = int(image.shape[0]), int(image.shape[1])
    s_flip, s_scale, s_crop, s_colour = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    image = tf.cast(image, tf.float32)
    flip = tf.random.stateless_uniform([], s_flip) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)

    scale = tf.random.stateless_uniform([], s_scale, 1.0, 1.3)
    new_h = tf.cast(tf.round(h * scale), tf.int32)
    new_w = tf.cast(tf.round(w * scale), tf.int32)
    big_image = tf.image.resize(image, [new_h, new_w], method="bilinear")
    big_label = tf.image.resize(label[..., tf.newaxis], [new_h, new_w], method="nearest")[..., 0]
    offsets = tf.random.stateless_uniform([2], s_crop, 0, 2 ** 30, dtype=tf.int32)
    top, left = offsets[0] % (new_h - h + 1), offsets[1] % (new_w - w + 1)
    image = tf.ensure_shape(big_image[top:top + h, left:left + w], [h, w, 3])
    label = tf.ensure_shape(big_label[top:top + h, left:left + w], [h, w])

    s_b, s_c, s_s = tf.unstack(tf.random.experimental.stateless_split(s_colour, 3))
    image = tf.image.stateless_random_brightness(image, 20.0, s_b)
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, s_c)
    image = tf.image.stateless_random_saturation(image, 0.8, 1.2, s_s)
    # Back to uint8 (rounded): the pipeline delivers one dtype, augmented or not; the model casts.
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8), tf.cast(label, tf.uint8)


def eval_steps(info: DatasetInfo, split: str, global_batch: int, limit: Optional[int] = None) -> int:
    """Steps that cover ``split`` once at ``global_batch`` (the last batch may be partial or padded)."""
    steps = max(1, math.ceil(info.count(split) / global_batch))
    return min(steps, limit) if limit else steps


def make_dataset(info: DatasetInfo, split: str, batch_size: int, *, training: bool, seed: int = 0,
                 augment_images: bool = False, deterministic: bool = False, shuffle_buffer: int = 512,
                 start_step: int = 0, input_context: Optional[tf.distribute.InputContext] = None,
                 steps: Optional[int] = None) -> tf.data.Dataset:
    """Batches of (uint8 images ``[b, H, W, 3]`` 0..255, uint8 labels ``[b, H, W]``) for one pipeline.

    Images are raw: the model normalises them (``trainer.normalization``). Labels are train ids, 255 = ignore.

    Args:
      batch_size: this pipeline's (per-replica) batch.
      training: shuffle, repeat forever and drop partial batches; otherwise one ordered pass (repeated, so a
        Keras validation iterator can be reused each epoch: take ``steps`` per pass).
      deterministic: fixed element order in every parallel stage (training; evaluation is always ordered).
        Off, parallel stages hand over whichever element is ready first (faster under load).
      start_step: batches already trained (resume): skipped as serialized records, before any decoding, so the
        resumed run sees exactly the stream the killed one would have seen (with ``deterministic``).
      input_context: per-worker sharding (shard files when there are enough, records otherwise).
      steps: evaluation steps per pass; with several pipelines each pads its shard with all-ignore examples to
        ``steps`` full batches so every worker runs the same number of collective steps.
    """
    paths = info.shards.get(split) or []
    if not paths:
        raise DataError(f"no {split} records in {info.data_dir}")
    size, ignore = info.image_size, info.ignore_label
    codec = info.metadata.image_format if info.metadata.image_format in ("jpeg", "png") else None
    n_pipes = input_context.num_input_pipelines if input_context else 1
    pipe_id = input_context.input_pipeline_id if input_context else 0
    ordered = deterministic or not training

    files = tf.data.Dataset.from_tensor_slices(paths)
    shard_records = n_pipes > 1 and (len(paths) < n_pipes or not training)
    if n_pipes > 1 and not shard_records:
        files = files.shard(n_pipes, pipe_id)
    if training:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # GZIP inflation is sequential per file: read several shards at once.
    records = files.interleave(
        lambda p: tf.data.TFRecordDataset(p, compression_type="GZIP", buffer_size=1 << 20),
        cycle_length=min(len(paths), 8), num_parallel_calls=AUTOTUNE, deterministic=ordered)
    if shard_records:
        records = records.shard(n_pipes, pipe_id)

    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        # The index seeds each example's augmentation, so resuming (skip) keeps every later draw identical.
        records = records.enumerate().skip(start_step * batch_size)
        base_seed = tf.constant([seed, 1], tf.int64)

        def load_train(index, serialized):
            image, label = decode_record(serialized, size, ignore, codec)
            if augment_images:
                return augment(image, label, tf.random.experimental.stateless_fold_in(base_seed, index), ignore)
            return image, label

        ds = records.map(load_train, num_parallel_calls=AUTOTUNE, deterministic=ordered)
        ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    else:
        ds = records.map(lambda r: decode_record(r, size, ignore, codec), num_parallel_calls=AUTOTUNE,
                         deterministic=True)
        if n_pipes > 1 and steps:
            pad = tf.data.Dataset.from_tensors((tf.zeros([size[0], size[1], 3], tf.uint8),
                                                tf.fill([size[0], size[1]], tf.constant(ignore, tf.uint8))))
            ds = ds.concatenate(pad.repeat()).take(steps * batch_size)
        ds = ds.batch(batch_size, num_parallel_calls=AUTOTUNE, deterministic=True).repeat()

    options = tf.data.Options()
    options.deterministic = ordered
    # Sharding is done above, per input pipeline; tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(AUTOTUNE)


def distributed_dataset(strategy: tf.distribute.Strategy, info: DatasetInfo, split: str, global_batch: int, **kw):
    """``make_dataset`` once per input pipeline of ``strategy``, each batched per replica."""
    def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(info, split, ctx.get_per_replica_batch_size(global_batch), input_context=ctx, **kw)

    if strategy.num_replicas_in_sync == 1 and not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return make_dataset(info, split, global_batch, **kw)
    return strategy.distribute_datasets_from_function(fn)
