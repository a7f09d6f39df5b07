"""Pipeline-level checks of preprocess on the session fixtures (Pet and Cityscapes)."""
from __future__ import annotations

import json

import tensorflow as tf

from schemas import features
from schemas.metadata import DatasetMetadata


def _metadata(dst) -> DatasetMetadata:
    return DatasetMetadata.from_json((dst / "metadata.json").read_text())


def _records(dst, split):
    files = sorted(str(p) for p in dst.glob(f"{split}-*.tfrecord.gz"))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_pet_fixture_counts_add_up(pet_records_dir):
    meta = _metadata(pet_records_dir)
    assert meta.dataset == "pet" and meta.num_classes == 3 and meta.image_size == [32, 32]
    assert meta.inputs_seen == sum(meta.source_counts.values()) + meta.dead_letter_count == 24
    for split in features.SPLITS:
        assert len(_records(pet_records_dir, split)) == meta.counts[split]
    assert (pet_records_dir / "transform_fn").is_dir()
    assert meta.stats is not None and len(meta.stats.channel_mean) == 3


def test_cityscapes_fixture(cityscapes_records_dir):
    meta = _metadata(cityscapes_records_dir)
    assert meta.counts == {"train": 4, "val": 2, "test": 1}
    assert meta.num_classes == 19
    test_record = tf.io.parse_single_example(_records(cityscapes_records_dir, "test")[0], features.FEATURE_SPEC)
    assert test_record[features.MASK_ENCODED].numpy() == b""
