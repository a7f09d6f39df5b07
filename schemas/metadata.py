"""``DST/metadata.json``: what a preprocessed dataset holds, read by the trainer and the serving model."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

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
    # Every shard file this metadata.json belongs with, by file name: {"records": n, "bytes": size on storage}.
    # Written last by preprocess, so readers can tell a complete DST from a half-rewritten one.
    shards: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    stats: Optional[DatasetStats] = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "DatasetMetadata":
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING} - raw.keys()
        if missing:
            raise ValueError(f"metadata.json lacks {sorted(missing)}: was it written by segflow's preprocess?")
        stats = raw.get("stats")
        kwargs = {k: v for k, v in raw.items() if k in known}
        kwargs["stats"] = DatasetStats(**stats) if stats else None
        return cls(**kwargs)
