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

from pipelines.shared.augmentation import AUGMENTATION
from pipelines.shared.tf_paths import has_tf_glob_chars, join as join_path, tf_readable_local_dir
from schemas import errors, features, metadata as metadata_lib, transform as transform_lib
from schemas.class_balance import class_balance
from schemas.records import SPLITS, parse_shard_name

AUTOTUNE = tf.data.AUTOTUNE
_RERUN = "rerun python -m pipelines.preprocess into it (or into a fresh --output_dir)"


class DataError(errors.DataError, RuntimeError):
    """The data directory cannot be trained on; the message says why and what to do (exit status 1)."""


@dataclasses.dataclass
class DatasetInfo:
    """A validated preprocess output directory."""

    data_dir: str
    metadata: metadata_lib.DatasetMetadata
    shards: dict[str, list[str]]
    tft_output: Optional[object]  # tensorflow_transform.TFTransformOutput; None from read_dataset
    # Where TensorFlow reads transform_fn/ from: data_dir, or a plain-named stand-in for it (see readable_dir).
    transform_root: str = ""

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
        """Records of ``split``, from metadata.json's shard manifest (checked against the files on load)."""
        return sum(
            int(self.metadata.shards[os.path.basename(p.replace("\\", "/"))]["records"])
            for p in self.shards.get(split, [])
        )

    def transform_layer(self):
        """The TransformFeaturesLayer applying DST/transform_fn (one per DatasetInfo; trackable, so it is
        exported inside a SavedModel)."""
        return self.tft_output.transform_features_layer()


# TensorFlow finds SavedModel variables and checkpoint files through a glob (GetMatchingPaths), in which these are
# special: under a folder named ``d[1]`` it reads ``d1``'s files, or finds none.
def readable_dir(data_dir: str) -> str:
    """``data_dir`` itself, or, when its path holds glob characters, a plain-named stand-in that TensorFlow reads
    ``transform_fn/`` through literally: a symbolic link to a local folder, a local copy of a remote one's
    ``transform_fn/`` and ``transformed_metadata/``. The stand-in lives until the process exits."""
    if not has_tf_glob_chars(data_dir):
        return data_dir
    if "://" not in data_dir:
        return tf_readable_local_dir(data_dir, prefix="segflow-dst-")
    import atexit
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="segflow-dst-")
    atexit.register(shutil.rmtree, root, True)
    alias = os.path.join(root, "dst")
    for sub in (metadata_lib.TRANSFORM_DIR, "transformed_metadata"):
        base = join_path(data_dir, sub)
        for folder, _, files in tf.io.gfile.walk(base):
            target = os.path.join(alias, sub, folder[len(base) :].strip("/"))
            os.makedirs(target, exist_ok=True)
            for name in files:
                tf.io.gfile.copy(join_path(folder, name), os.path.join(target, name), overwrite=True)
    return alias


def list_shards(data_dir: str) -> dict[str, int]:
    """``{shard file name: size in bytes}`` of the shard files directly in ``data_dir``, listed literally.

    ``tf.io.gfile.glob`` would read ``out[1]`` as a character class (and find ``out1``'s shards), so the folder
    is listed and the names matched against the shard-name pattern.
    """
    try:
        names = tf.io.gfile.listdir(data_dir)
    except tf.errors.OpError as e:
        raise DataError(f"cannot list --data_dir {data_dir} ({type(e).__name__}): check the path and permissions")
    found = {}
    for name in sorted(n.rstrip("/") for n in names):
        if parse_shard_name(name):
            found[name] = int(tf.io.gfile.stat(join_path(data_dir, name)).length)
    return found


def check_manifest(data_dir: str, meta: metadata_lib.DatasetMetadata) -> dict[str, list[str]]:
    """The shard files in ``data_dir`` must be exactly those metadata.json names, at the sizes it gives.

    Preprocess deletes metadata.json before it changes anything in DST and writes it last, so a DST left by an
    interrupted or failed rerun (old metadata beside a mixture of old and new shards) fails here. Returns the
    sorted shard paths per split; raises ``DataError`` naming the first file that does not match.
    """
    manifest = meta.shards or {}
    if not manifest:
        raise DataError(
            f"{metadata_lib.METADATA_FILE} in {data_dir} lists no shard files (written by an older segflow): {_RERUN}"
        )
    if not isinstance(manifest, dict):
        raise DataError(f'{metadata_lib.METADATA_FILE} in {data_dir} has a malformed "shards" entry: {_RERUN}')
    for name, entry in sorted(manifest.items()):
        if (
            not parse_shard_name(name)
            or not isinstance(entry, dict)
            or not all(isinstance(entry.get(k), int) and entry[k] >= 0 for k in ("records", "bytes"))
        ):
            raise DataError(
                f"{metadata_lib.METADATA_FILE} in {data_dir} has a malformed shard entry {name!r}: {_RERUN}"
            )
    on_disk = list_shards(data_dir)
    for name in sorted(set(manifest) | set(on_disk)):
        if name not in on_disk:
            problem = "is named in metadata.json but missing"
        elif name not in manifest:
            problem = "is not named in metadata.json"
        elif on_disk[name] != int(manifest[name]["bytes"]):
            problem = f"has {on_disk[name]} bytes, metadata.json says {int(manifest[name]['bytes'])}"
        else:
            continue
        raise DataError(
            f"{data_dir} does not match its metadata.json: {name} {problem} (an interrupted or "
            f"failed preprocess run?): {_RERUN}"
        )
    shards: dict[str, list[str]] = {split: [] for split in SPLITS}
    for name in sorted(manifest):
        shards[parse_shard_name(name).split].append(join_path(data_dir, name))
    for split, paths in shards.items():
        totals = {parse_shard_name(os.path.basename(p)).count for p in paths}
        records = sum(int(manifest[os.path.basename(p)]["records"]) for p in paths)
        if paths and (len(totals) != 1 or len(paths) != totals.pop()):
            raise DataError(
                f"the {split} shards named in {data_dir}/{metadata_lib.METADATA_FILE} are incomplete "
                f"or mixed ({len(paths)} files): {_RERUN}"
            )
        if records != int(meta.counts.get(split, 0)):
            raise DataError(
                f"{data_dir}/{metadata_lib.METADATA_FILE} counts {meta.counts.get(split, 0)} {split} "
                f"records but its shards hold {records}: {_RERUN}"
            )
    return shards


def read_dataset(data_dir: str) -> DatasetInfo:
    """Reads metadata.json and checks the shards against it (file operations only, no TensorFlow ops, so
    ``trainer.task`` runs it before setting up a distribution strategy); raises ``DataError`` with a fix.

    The result has no ``tft_output`` yet: ``load_dataset_info`` adds it.
    """
    data_dir = data_dir.rstrip("/")
    hint = "point --data_dir at the --output_dir of python -m pipelines.preprocess"
    if not tf.io.gfile.exists(data_dir):
        raise DataError(f"--data_dir {data_dir} does not exist: {hint}")
    meta_path = join_path(data_dir, metadata_lib.METADATA_FILE)
    if not tf.io.gfile.exists(meta_path):
        raise DataError(
            f"no {metadata_lib.METADATA_FILE} in {data_dir} (not a preprocess output, or one that a "
            f"preprocess run is still writing or was interrupted in): {hint}"
        )
    try:
        with tf.io.gfile.GFile(meta_path, "r") as f:
            meta = metadata_lib.DatasetMetadata.from_json(f.read())
    except (ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{meta_path} is unreadable ({str(e).splitlines()[0]}): rerun preprocess")
    shards = check_manifest(data_dir, meta)
    reason = getattr(meta, "stats_absent_reason", None)  # preprocess's word on why there are no statistics
    if not shards["train"] or not meta.counts.get("train") or (meta.stats is None and reason):
        held = ", ".join(f"{s} {int(meta.counts.get(s, 0))}" for s in SPLITS)
        if meta.counts.get("train"):  # train records, none of them labelled: preprocess's reason says so
            what = f"no statistics from its train records ({reason})"
        else:
            what = "no train records, so no normalisation statistics either"
        raise DataError(
            f"{data_dir} has {what} (records: {held}): it can be used as evaluation or inference "
            f"data but not trained on; preprocess a dataset with train examples for --data_dir"
        )
    return DatasetInfo(data_dir, meta, shards, None)


def load_dataset_info(data_dir: str) -> DatasetInfo:
    """Reads and cross-checks metadata.json, the shards and transform_fn; raises ``DataError`` with a fix."""
    info = read_dataset(data_dir)
    # WriteTransformFn(DST) writes DST/transform_fn/ (the graph) and DST/transformed_metadata/.
    transform_dir = join_path(info.data_dir, metadata_lib.TRANSFORM_DIR)
    if not tf.io.gfile.exists(join_path(transform_dir, "saved_model.pb")):
        raise DataError(f"no tensorflow-transform output in {transform_dir}: rerun preprocess")
    import tensorflow_transform as tft  # heavy; only once the directory looks right

    info.transform_root = readable_dir(info.data_dir)
    info.tft_output = tft.TFTransformOutput(info.transform_root)
    _check_transform(info)
    return info


def _count_record(count: tf.Tensor, _record: tf.Tensor) -> tf.Tensor:
    return count + 1


def op_error_line(error: Exception) -> str:
    """A TensorFlow op error's message as one short line, without the ``{{function_node ...}}`` prefix and the
    ``[Op:...]`` suffix (e.g. ``inflate() failed with error -3: invalid distance too far back``)."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", str(error)).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", first).strip() or type(error).__name__


def find_corrupt_shard(info: DatasetInfo, splits: Optional[list[str]] = None) -> Optional[tuple[str, str]]:
    """Reads every shard of ``splits`` (default: all) to the end; returns (path, why) of the first that cannot
    be read whole or holds another number of records than metadata.json says, or None when all read cleanly.

    For a shard whose bytes were damaged without changing its size (the manifest check catches the rest):
    TensorFlow's ``DataLossError`` names no file.
    """
    for split in splits or list(SPLITS):
        for path in info.shards.get(split, []):
            expected = int(info.metadata.shards[os.path.basename(path.replace("\\", "/"))]["records"])
            ds = tf.data.TFRecordDataset(path, compression_type="GZIP", buffer_size=1 << 20)
            try:
                n = int(ds.reduce(tf.constant(0, tf.int64), _count_record))
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
                return path, op_error_line(e)
            if n != expected:
                return path, f"{n} records, metadata.json says {expected}"
    return None


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
            f"classes): rerun preprocess into a fresh --output_dir"
        )


def class_pixel_counts(info: DatasetInfo) -> np.ndarray:
    """Labelled training pixels per class, as analysed by tensorflow-transform (int64 ``[C]``)."""
    h, w = info.image_size
    out = info.transform_layer()({transform_lib.RAW_IMAGE: tf.zeros([1, h, w, 3], tf.float32)})
    return out[transform_lib.STAT_CLASS_PIXEL_COUNTS][0].numpy()


def median_frequency_weights(counts: np.ndarray) -> list[float]:
    """Median-frequency class weights of per-class pixel counts (``schemas.class_balance``: the rule preprocess
    records in metadata.json)."""
    return class_balance(counts).weights


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
