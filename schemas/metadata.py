"""``DST/metadata.json``: what a preprocessed dataset holds, read by the trainer and the serving model."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from schemas import strict_json

METADATA_FILE = "metadata.json"
TRANSFORM_DIR = "transform_fn"  # tensorflow-transform output directory under DST
DEAD_LETTER_DIR = "dead_letter"


@dataclasses.dataclass
class DatasetStats:
    """Training-split statistics computed by tensorflow-transform.

    channel_mean/channel_std: per RGB channel, in 0..255 pixel units. class_pixel_counts: labelled pixels per
    train id. class_weights: median-frequency balancing weights (median(freq) / freq_c), 0 for absent classes.
    """

    channel_mean: list[float]
    channel_std: list[float]
    class_pixel_counts: list[int]
    class_frequency: list[float]
    class_weights: list[float]


@dataclasses.dataclass
class DatasetMetadata:
    """The contents of ``DST/metadata.json``; the fields below without a comment are the job's flags.

    Publication rule: preprocess deletes metadata.json before it changes anything in DST and writes it last, once
    every shard, the stale-shard deletion, ``transform_fn/`` and ``dead_letter/`` are in place. A DST without
    metadata.json is being written, or its last run was interrupted or failed: readers must refuse it.

    ``shards``: every shard file that belongs to this metadata, ``{file name: {"records": n, "bytes": size}}``.
    The file name is relative to DST (``train-00000-of-00004.tfrecord.gz``); ``records`` is how many records
    the file holds (0 for a shard no record hashed to: it is still written, an empty GZIP TFRecord file);
    ``bytes`` is the file's size as stored (listed from DST after writing). Every shard of the plan is named
    (``num_shards[split]`` files per split) and the records per split add up to ``counts``. A reader accepts DST
    only when the ``<split>-SSSSS-of-NNNNN.tfrecord.gz`` files directly in DST are exactly these names at exactly
    these sizes.

    ``stats``: the train split's statistics, or None when there were no labelled train records (a dataset of
    only ``val``/``test``: evaluation or inference data). ``stats_absent_reason`` then says why, and DST holds
    no ``transform_fn/`` (nor ``transformed_metadata/``): such a DST cannot be trained on. ``stats_absent_reason``
    is None whenever ``stats`` is set.
    """

    dataset: str
    label_mode: str
    num_classes: int
    class_names: list[str]
    ignore_label: int
    image_size: list[int]  # [height, width] of every record
    resize_mode: str
    image_format: str
    counts: dict[str, int]  # records per split (including offline-augmented copies)
    source_counts: dict[str, int]  # source examples per split
    dead_letter_count: int
    inputs_seen: int  # = sum(source_counts) + dead_letter_count
    augment_copies: int = 0
    seed: int = 0
    num_shards: dict[str, int] = dataclasses.field(default_factory=dict)
    # Every shard file of this DST: {file name: {"records": n, "bytes": size as stored}} (see the class docstring).
    shards: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    stats: Optional[DatasetStats] = None
    stats_absent_reason: Optional[str] = None  # why ``stats`` is None (no train records); None when it is set
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The rest of the label table (``schemas.labels.label_table``: palette, native values, instance classes), so
    # that infer, evaluate and the report need no dataset code for it; None in a metadata.json written before.
    label_table: Optional[dict[str, Any]] = None

    def to_json(self) -> str:
        return strict_json.dumps(dataclasses.asdict(self), what=METADATA_FILE) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "DatasetMetadata":
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        } - raw.keys()
        if missing:
            raise ValueError(f"metadata.json lacks {sorted(missing)}: was it written by segflow's preprocess?")
        stats = raw.get("stats")
        kwargs = {k: v for k, v in raw.items() if k in known}
        kwargs["stats"] = DatasetStats(**stats) if stats else None
        return cls(**kwargs)
