"""The ``tf.data`` input pipeline: segflow records → (raw uint8 images, uint8 label ids) batches.

Shards (local or gs://) → parallel interleave → [per-worker shard] → shuffle/repeat → parse with
``schemas.features`` → decode → [seeded online augmentation] → batch → prefetch, with AUTOTUNE throughout.
The tensorflow-transform graph from ``DST/transform_fn`` (per-channel normalisation from the training split's
own statistics) is *not* applied here: it is the first layer of the trained model
(``trainer.normalization``), so it runs where the model runs and serving applies the very same graph.
Images stay uint8 end to end (4x less to copy than float32). Dataset facts come from ``DST/metadata.json``,
read and checked by ``trainer.data_dir``.
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

from pipelines.shared.augmentation import AUGMENTATION
from schemas import features
from trainer.data_dir import DataError, DatasetInfo, read_dataset

AUTOTUNE = tf.data.AUTOTUNE


def decode_record(
    serialized: tf.Tensor, size: tuple[int, int], ignore_label: int, image_format: Optional[str] = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """One serialized record → (uint8 image ``[H, W, 3]``, uint8 label ``[H, W]``) at the records' size.

    ``image_format``: the dataset's record encoding (metadata.json), or None to decode by content.
    """
    parsed = features.parse_example(serialized)
    image = tf.ensure_shape(features.decode_image(parsed, image_format), [size[0], size[1], 3])
    label = tf.ensure_shape(features.decode_mask(parsed, ignore_label), [size[0], size[1]])
    return image, label


def augment(
    image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, ignore_label: int = 255
) -> tuple[tf.Tensor, tf.Tensor]:
    """Seeded online augmentation: horizontal flip and scale-and-crop (image and label alike), colour jitter
    (image only), with the ranges of ``pipelines.shared.augmentation.AUGMENTATION`` (the offline copies' too; the
    geometry differs: here the record is zoomed in and cropped back to its size). ``seed``: int64 ``[2]``; same
    seed → same output. Returns uint8 image and label."""
    params = AUGMENTATION
    h, w = int(image.shape[0]), int(image.shape[1])
    s_flip, s_scale, s_crop, s_colour = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    image = tf.cast(image, tf.float32)
    flip = tf.random.stateless_uniform([], s_flip) < params.flip_probability
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)

    scale = tf.random.stateless_uniform([], s_scale, params.online_min_zoom, params.online_max_zoom)
    new_h = tf.cast(tf.round(h * scale), tf.int32)
    new_w = tf.cast(tf.round(w * scale), tf.int32)
    big_image = tf.image.resize(image, [new_h, new_w], method="bilinear")
    big_label = tf.image.resize(label[..., tf.newaxis], [new_h, new_w], method="nearest")[..., 0]
    offsets = tf.random.stateless_uniform([2], s_crop, 0, 2**30, dtype=tf.int32)
    top, left = offsets[0] % (new_h - h + 1), offsets[1] % (new_w - w + 1)
    image = tf.ensure_shape(big_image[top : top + h, left : left + w], [h, w, 3])
    label = tf.ensure_shape(big_label[top : top + h, left : left + w], [h, w])

    s_b, s_c, s_s = tf.unstack(tf.random.experimental.stateless_split(s_colour, 3))
    image = tf.image.stateless_random_brightness(image, params.max_brightness_delta, s_b)
    image = tf.image.stateless_random_contrast(image, params.min_contrast, params.max_contrast, s_c)
    image = tf.image.stateless_random_saturation(image, params.min_saturation, params.max_saturation, s_s)
    # Back to uint8 (rounded): the pipeline delivers one dtype, augmented or not; the model casts.
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8), tf.cast(label, tf.uint8)


def read_records(
    data_dir: str,
    split: str = "train",
    batch_size: int = 8,
    *,
    training: bool = False,
    augment: bool = False,
    seed: int = 0,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """A preprocess output's ``split`` as batches of (uint8 images ``[b, H, W, 3]``, uint8 labels ``[b, H, W]``,
    255 = ignore), for ``keras.Model.fit``/``evaluate``. The folder is checked against its metadata.json first
    (``DataError`` with a fix otherwise). ``training``: shuffled, augmented when ``augment``, full batches;
    otherwise one ordered pass. Both repeat: pass ``steps_per_epoch`` / ``steps``."""
    info = read_dataset(data_dir)
    return make_dataset(
        info, split, batch_size, training=training, seed=seed, augment_images=augment, deterministic=deterministic
    )


def eval_steps(info: DatasetInfo, split: str, global_batch: int, limit: Optional[int] = None) -> int:
    """Steps that cover ``split`` once at ``global_batch`` (the last batch may be partial or padded)."""
    steps = max(1, math.ceil(info.count(split) / global_batch))
    return min(steps, limit) if limit else steps


def make_dataset(
    info: DatasetInfo,
    split: str,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment_images: bool = False,
    deterministic: bool = False,
    shuffle_buffer: int = 512,
    start_step: int = 0,
    input_context: Optional[tf.distribute.InputContext] = None,
    steps: Optional[int] = None,
) -> tf.data.Dataset:
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
    codec = info.metadata.image_format if info.metadata.image_format in ("jpeg", "png") else None
    n_pipes = input_context.num_input_pipelines if input_context else 1
    pipe_id = input_context.input_pipeline_id if input_context else 0
    ordered = deterministic or not training
    records = _read_records(paths, training=training, seed=seed, n_pipes=n_pipes, pipe_id=pipe_id, ordered=ordered)
    if training:
        ds = _training_batches(
            records,
            info,
            batch_size,
            codec,
            seed=seed,
            augment_images=augment_images,
            shuffle_buffer=shuffle_buffer,
            start_step=start_step,
            ordered=ordered,
        )
    else:
        ds = _evaluation_batches(records, info, batch_size, codec, pad_to_steps=steps if n_pipes > 1 else None)
    return _with_pipeline_options(ds, ordered)


def _read_records(
    paths: list[str], *, training: bool, seed: int, n_pipes: int, pipe_id: int, ordered: bool
) -> tf.data.Dataset:
    """Serialized records of this input pipeline's share: whole shard files when there are enough of them (and
    training), every n-th record otherwise; training shuffles the file order."""
    files = tf.data.Dataset.from_tensor_slices(paths)
    shard_records = n_pipes > 1 and (len(paths) < n_pipes or not training)
    if n_pipes > 1 and not shard_records:
        files = files.shard(n_pipes, pipe_id)
    if training:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # GZIP inflation is sequential per file: read several shards at once.
    records = files.interleave(
        lambda p: tf.data.TFRecordDataset(p, compression_type="GZIP", buffer_size=1 << 20),
        cycle_length=min(len(paths), 8),
        num_parallel_calls=AUTOTUNE,
        deterministic=ordered,
    )
    if shard_records:
        records = records.shard(n_pipes, pipe_id)
    return records


def _training_batches(
    records: tf.data.Dataset,
    info: DatasetInfo,
    batch_size: int,
    codec: Optional[str],
    *,
    seed: int,
    augment_images: bool,
    shuffle_buffer: int,
    start_step: int,
    ordered: bool,
) -> tf.data.Dataset:
    """Shuffled, endlessly repeated, decoded, optionally augmented full batches, ``start_step`` batches in."""
    size, ignore = info.image_size, info.ignore_label
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
    return ds.batch(batch_size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=ordered)


def _evaluation_batches(
    records: tf.data.Dataset, info: DatasetInfo, batch_size: int, codec: Optional[str], *, pad_to_steps: Optional[int]
) -> tf.data.Dataset:
    """One ordered pass of decoded batches, repeated (Keras reuses the validation iterator every epoch); with
    ``pad_to_steps``, padded with all-ignore examples to that many full batches."""
    size, ignore = info.image_size, info.ignore_label
    ds = records.map(lambda r: decode_record(r, size, ignore, codec), num_parallel_calls=AUTOTUNE, deterministic=True)
    if pad_to_steps:
        pad = tf.data.Dataset.from_tensors(
            (tf.zeros([size[0], size[1], 3], tf.uint8), tf.fill([size[0], size[1]], tf.constant(ignore, tf.uint8)))
        )
        ds = ds.concatenate(pad.repeat()).take(pad_to_steps * batch_size)
    return ds.batch(batch_size, num_parallel_calls=AUTOTUNE, deterministic=True).repeat()


def _with_pipeline_options(ds: tf.data.Dataset, ordered: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = ordered
    # Sharding is done per input pipeline (``_read_records``); tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(AUTOTUNE)


def distributed_dataset(strategy: tf.distribute.Strategy, info: DatasetInfo, split: str, global_batch: int, **kw):
    """``make_dataset`` once per input pipeline of ``strategy``, each batched per replica."""

    def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(info, split, ctx.get_per_replica_batch_size(global_batch), input_context=ctx, **kw)

    if strategy.num_replicas_in_sync == 1 and not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return make_dataset(info, split, global_batch, **kw)
    return strategy.distribute_datasets_from_function(fn)
