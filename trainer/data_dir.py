"""What a DST folder holds and whether the trainer can trust it: the checks on ``--data_dir``.

``read_dataset`` reads ``DST/metadata.json`` and checks the shard files against its manifest (names, sizes,
record counts; file operations only, no TensorFlow ops); ``load_dataset_info`` adds the tensorflow-transform output
and checks it against the metadata; ``find_corrupt_shard`` names the shard whose bytes were damaged in place. Each
refusal is a ``DataError`` whose message says what to do. The class weights come from the same facts. Reading the
records as batches is ``trainer.data``'s.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

import numpy as np
import tensorflow as tf

from pipelines.shared.tf_paths import has_tf_glob_chars, join as join_path, tf_readable_local_dir
from schemas import errors, metadata as metadata_lib, transform as transform_lib
from schemas.class_balance import class_balance
from schemas.records import SPLITS, parse_shard_name

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
