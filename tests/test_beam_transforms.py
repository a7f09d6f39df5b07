"""The preprocess job's composite transforms, each alone on the real DirectRunner (``TestPipeline``), asserted on their
PCollections with ``assert_that``: discovery (``Discover`` of the Pet and Cityscapes datasets: which examples, with
which split and labels, and which dead letters), record assembly (``MakeRecords``: which records under which key,
what goes to the statistics, what is dead-lettered) and shards (``WriteShards``: what it reports and what the files
hold). Inputs are small generated datasets (``pipelines.tools.synthetic``) written under ``tmp_path``.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not a pytest class
from apache_beam.testing.util import assert_that, equal_to

from pipelines import datasets
from pipelines.datasets.base import DEAD_LETTER_TAG, Example, SplitFractions
from pipelines.datasets.discovery import Discover
from pipelines.preprocess import shards
from pipelines.preprocess.records import ANALYZE_TAG, MakeRecords, RecordOptions
from pipelines.tools import synthetic

BEAM_FLAGS = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


def _pipeline() -> beam.Pipeline:
    return BeamTestPipeline(options=PipelineOptions(BEAM_FLAGS))


def _dead_letters_are(root: pathlib.Path, expected: dict[str, tuple[str, str]]):
    """A matcher: the dead letters are exactly ``expected`` ({path relative to ``root``: (stage, reason
    substring)}), one each."""
    prefix = str(root) + "/"

    def check(actual: list) -> None:
        got = sorted(d.path[len(prefix) :] if d.path.startswith(prefix) else d.path for d in actual)
        assert got == sorted(expected), f"dead letters {got}, expected {sorted(expected)}"
        for d in actual:
            stage, reason = expected[d.path[len(prefix) :]]
            assert (d.stage, True) == (stage, reason.lower() in d.error.lower()), (d.path, d.stage, d.error)

    return check


# ------------------------------------------------------------------------------------------------ discovery
def _pet_example_row(example: Example) -> tuple:
    return (
        example.example_id,
        example.split,
        example.image_path,
        example.mask_path,
        example.instance_path,
        example.class_label,
        example.species,
        example.listed,
    )


@pytest.mark.parametrize("val_fraction, trainval_split", [(0.0, "train"), (1.0, "val")])
def test_discover_pet_routes_every_file_of_the_real_archive_layout(tmp_path, val_fraction, trainval_split):
    """The quirks dataset (list files with ``#`` headers, an unlisted image, strays, unpaired files): every id
    becomes one ``Example`` with its split and list-file labels, or a dead letter; nothing else."""
    src = tmp_path / "pet"
    routing = synthetic.write_pet_quirks_dataset(str(src), size=(24, 32))
    # Truncated images and wrong-size masks are found when decoded (MakeRecords), not by discovery.
    decoded_later = {"images/Ragdoll_7.jpg": "Ragdoll_7", "images/keeshond_7.jpg": "keeshond_7"}
    ids = sorted(set(routing["records"]) | set(decoded_later.values()))
    expected = []
    for example_id in ids:
        split = routing["records"].get(example_id) or trainval_split  # None: trainval or in no list file
        class_label, species = routing["listed"].get(example_id, (None, None))
        expected.append(
            (
                example_id,
                split,
                str(src / "images" / f"{example_id}.jpg"),
                str(src / "annotations" / "trimaps" / f"{example_id}.png"),
                None,
                class_label,
                species,
                example_id in routing["listed"],
            )
        )
    assert ("Sphynx_7", trainval_split) in {(row[0], row[1]) for row in expected}  # the unlisted image is kept
    stages = {
        "images/Abyssinian_1.mat": "discover",
        "images/._Abyssinian_1.jpg": "discover",
        "annotations/trimaps/._Abyssinian_1.png": "discover",
        "annotations/trimaps/Russian_Blue_7.png": "pair",
        "images/havanese_7.jpg": "pair",
    }
    dead = {
        path: (stages[path], reason) for path, reason in routing["dead_letters"].items() if path not in decoded_later
    }
    assert set(dead) == set(stages)

    with _pipeline() as p:
        found = p | Discover(datasets.get("pet"), str(src), SplitFractions(val_fraction, 0.2))
        assert_that(found["examples"] | beam.Map(_pet_example_row), equal_to(expected), label="Examples")
        assert_that(found[DEAD_LETTER_TAG], _dead_letters_are(src, dead), label="DeadLetters")


def test_discover_pet_without_list_files_hashes_ids_into_three_splits(tmp_path):
    """No ``trainval.txt``/``test.txt``: the split comes from the id alone (``--test_fraction``,
    ``--val_fraction``), every example is 'listed' (nothing to be missing from) and has no breed label."""
    src = tmp_path / "pet"
    ids = synthetic.write_pet_dataset(str(src), 24, size=(16, 16), list_files=False, vary_size=False)
    # The documented rule: hash fraction below --test_fraction → test, below test + val fraction → val.
    splits = {i: "test" if f < 0.3 else "val" if f < 0.6 else "train" for i in ids for f in [_fraction(i)]}
    assert set(splits.values()) == {"train", "val", "test"}  # the ids chosen really exercise all three

    with _pipeline() as p:
        found = p | Discover(datasets.get("pet"), str(src), SplitFractions(0.3, 0.3))
        assert_that(
            found["examples"] | beam.Map(lambda e: (e.example_id, e.split, e.class_label, e.listed)),
            equal_to([(i, splits[i], None, True) for i in ids]),
            label="Examples",
        )
        assert_that(found[DEAD_LETTER_TAG], equal_to([]), label="DeadLetters")


def _fraction(example_id: str) -> float:
    from pipelines.common.hashing import stable_fraction

    return stable_fraction("split", example_id)


def test_discover_cityscapes_pairs_by_id_and_takes_the_split_from_the_folder(tmp_path):
    """Frames pair with their labelIds/instanceIds by id; ``test`` is image-only (placeholder labels); colour
    renderings are not inputs; a stray file, an annotation without its image and a frame without instanceIds
    are dead letters."""
    src = tmp_path / "cityscapes"
    frames = synthetic.write_cityscapes_dataset(
        str(src), frames_per_split={"train": 2, "val": 1, "test": 1}, size=(16, 32)
    )
    no_instances = frames["train"][1]
    os.remove(src / "gtFine" / "train" / no_instances.split("_")[0] / f"{no_instances}_gtFine_instanceIds.png")
    synthetic.write_file(str(src / "leftImg8bit" / "train" / "aachen" / "notes.txt"), b"not a frame")
    orphan = "gtFine/val/frankfurt/frankfurt_000009_000001_gtFine_labelIds.png"
    synthetic.write_file(str(src / orphan), synthetic.encode_png(np.zeros((16, 32), np.uint8)))

    def paths(split: str, frame: str) -> tuple:
        city = frame.split("_")[0]
        image = str(src / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png")
        if split == "test":
            return frame, split, image, None, None
        gt = src / "gtFine" / split / city
        return (
            frame,
            split,
            image,
            str(gt / f"{frame}_gtFine_labelIds.png"),
            str(gt / f"{frame}_gtFine_instanceIds.png"),
        )

    expected = [paths(split, frame) for split, ids in frames.items() for frame in ids if frame != no_instances]
    city = no_instances.split("_")[0]
    dead = {
        "leftImg8bit/train/aachen/notes.txt": ("discover", "unexpected file in leftImg8bit/"),
        orphan: ("pair", "annotation without image"),
        f"leftImg8bit/train/{city}/{no_instances}_leftImg8bit.png": ("pair", "image without gtFine instanceIds"),
        f"gtFine/train/{city}/{no_instances}_gtFine_labelIds.png": ("pair", "labelIds without gtFine instanceIds"),
    }
    with _pipeline() as p:
        found = p | Discover(datasets.get("cityscapes"), str(src), SplitFractions(0.0, 0.0))
        assert_that(
            found["examples"] | beam.Map(lambda e: (e.example_id, e.split, e.image_path, e.mask_path, e.instance_path)),
            equal_to(expected),
            label="Examples",
        )
        assert_that(found[DEAD_LETTER_TAG], _dead_letters_are(src, dead), label="DeadLetters")


# ------------------------------------------------------------------------------------------------ record assembly
def _pet_files(
    src: pathlib.Path, example_id: str, seed: int, *, truncate: bool = False, mask_hw: tuple[int, int] = (24, 32)
) -> tuple[str, str]:
    image, trimap = synthetic.pet_example(np.random.default_rng(seed), 24, 32)
    image_bytes = synthetic.encode_jpeg(image)
    image_path, mask_path = str(src / f"{example_id}.jpg"), str(src / f"{example_id}.png")
    synthetic.write_file(image_path, image_bytes[: len(image_bytes) // 2] if truncate else image_bytes)
    synthetic.write_file(mask_path, synthetic.encode_png(trimap[: mask_hw[0], : mask_hw[1]]))
    return image_path, mask_path


def _record_fields(record: shards.Record) -> tuple:
    """(split, key, source id, height, width, augmentation copy, has mask, has instances) of a ``Record``."""
    import tensorflow as tf

    from schemas import features

    feature = tf.train.Example.FromString(record.serialized).features.feature
    return (
        record.split,
        record.key,
        feature[features.IMAGE_FILENAME].bytes_list.value[0].decode(),
        feature[features.IMAGE_HEIGHT].int64_list.value[0],
        feature[features.IMAGE_WIDTH].int64_list.value[0],
        feature[features.AUGMENT_COPY].int64_list.value[0],
        features.MASK_ENCODED in feature,
        features.INSTANCE_ENCODED in feature,
    )


def test_make_records_keys_copies_statistics_and_dead_letters(tmp_path):
    """Train examples get ``1 + augment_copies`` records keyed ``<id>#<copy>``, val/test one; only train originals
    go to the statistics (as a histogram of the record's pixels); an undecodable image and a mask of another size
    are dead letters naming the image, and the other examples still make their records."""
    src = tmp_path / "src"
    examples = [
        Example("cat_1", "train", *_pet_files(src, "cat_1", 1), species=0),
        Example("dog_2", "val", *_pet_files(src, "dog_2", 2), species=1),
        Example("dog_3", "test", *_pet_files(src, "dog_3", 3), species=1),
        Example("cat_4", "train", *_pet_files(src, "cat_4", 4, truncate=True)),
        Example("dog_5", "train", *_pet_files(src, "dog_5", 5, mask_hw=(20, 32))),
    ]
    options = RecordOptions(dataset="pet", image_size=(8, 12), augment_copies=2)
    expected = [("train", f"cat_1#{copy:04d}", "cat_1", 8, 12, copy, True, False) for copy in range(3)] + [
        ("val", "dog_2#0000", "dog_2", 8, 12, 0, True, False),
        ("test", "dog_3#0000", "dog_3", 8, 12, 0, True, False),
    ]
    dead = {"cat_4.jpg": ("decode", "image:"), "dog_5.jpg": ("decode", "mask")}

    with _pipeline() as p:
        made = (
            p
            | beam.Create(examples)
            | beam.ParDo(MakeRecords(options)).with_outputs(ANALYZE_TAG, DEAD_LETTER_TAG, main="records")
        )
        assert_that(made.records | "Fields" >> beam.Map(_record_fields), equal_to(expected), label="Records")
        # One statistics input, for cat_1's original: the 8x12 record's 96 pixels in each histogram.
        assert_that(
            made[ANALYZE_TAG]
            | beam.Map(lambda a: (a.examples, int(a.image_histogram.sum()), int(a.label_histogram.sum()))),
            equal_to([(1, 3 * 96, 96)]),
            label="Analysis",
        )
        assert_that(made[DEAD_LETTER_TAG], _dead_letters_are(src, dead), label="DeadLetters")


def test_make_records_cityscapes_test_frames_are_image_only(tmp_path):
    """A Cityscapes ``test`` example (no label paths) becomes a record without segmentation keys; a train frame
    carries its class and instance masks."""
    src = tmp_path / "cityscapes"
    frames = synthetic.write_cityscapes_dataset(str(src), frames_per_split={"train": 1, "test": 1}, size=(16, 32))
    train, test = frames["train"][0], frames["test"][0]
    gt = src / "gtFine" / "train" / train.split("_")[0]
    examples = [
        Example(
            train,
            "train",
            str(src / "leftImg8bit" / "train" / train.split("_")[0] / f"{train}_leftImg8bit.png"),
            str(gt / f"{train}_gtFine_labelIds.png"),
            str(gt / f"{train}_gtFine_instanceIds.png"),
        ),
        Example(test, "test", str(src / "leftImg8bit" / "test" / test.split("_")[0] / f"{test}_leftImg8bit.png")),
    ]
    options = RecordOptions(dataset="cityscapes", image_size=(8, 16))

    with _pipeline() as p:
        made = (
            p
            | beam.Create(examples)
            | beam.ParDo(MakeRecords(options)).with_outputs(ANALYZE_TAG, DEAD_LETTER_TAG, main="records")
        )
        assert_that(
            made.records | "Fields" >> beam.Map(_record_fields),
            equal_to(
                [
                    ("train", f"{train}#0000", train, 8, 16, 0, True, True),
                    ("test", f"{test}#0000", test, 8, 16, 0, False, False),
                ]
            ),
            label="Records",
        )
        assert_that(made[DEAD_LETTER_TAG], equal_to([]), label="DeadLetters")


# ------------------------------------------------------------------------------------------------ shards
def _read_tfrecords(path: pathlib.Path) -> list[bytes]:
    """The records of a GZIP TFRecord file, by its framing (length, CRC, data, CRC); no TensorFlow needed."""
    data, records, at = gzip.decompress(path.read_bytes()), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        records.append(data[at + 12 : at + 12 + length])
        at += 12 + length + 4
    return records


@pytest.mark.parametrize("spill", [False, True], ids=["grouped", "spilled"])
def test_write_shards_reports_and_writes_every_record_once_in_key_order(tmp_path, spill):
    """Each record lands in the shard its key hashes to, shards hold their records sorted by key, every shard of
    the plan exists (an empty one too), and no other file is touched (an earlier plan's shard goes at
    publication, by the owner record);
    the transform reports the plan and the records of each shard, and ``per_shard`` the originals."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00005.tfrecord.gz").write_bytes(b"stale")
    (out / "notes.txt").write_bytes(b"not a shard")
    records = [
        shards.Record(split, shards.record_key(f"{split}_{i:02d}", copy), f"{split}/{i}/{copy}".encode())
        for split, n, copies in (("train", 20, 2), ("val", 5, 1))
        for i in range(n)
        for copy in range(copies)
    ]
    plan = {"train": 3, "val": 8}  # 5 val records in 8 shards: some shards are empty
    expected_files: dict[str, list[bytes]] = {
        shards.SHARD_NAME.format(split=s, index=i, count=c): [] for s, c in plan.items() for i in range(c)
    }
    for record in sorted(records, key=lambda r: r.key):
        index = shards.shard_of(record.key, plan[record.split])
        expected_files[shards.SHARD_NAME.format(split=record.split, index=index, count=plan[record.split])].append(
            record.serialized
        )
    assert any(not contents for contents in expected_files.values())
    per_shard = [
        (name, len(contents), sum(1 for c in contents if c.endswith(b"/0")))
        for name, contents in expected_files.items()
        if contents
    ]

    with _pipeline() as p:
        write = shards.WriteShards(
            str(out), p | "Plan" >> beam.Create([plan]), str(tmp_path / "spill") if spill else None
        )
        written = p | beam.Create(records) | write
        assert_that(
            written,
            equal_to(
                [shards.ShardsWritten(plan, {name: len(contents) for name, contents in sorted(expected_files.items())})]
            ),
            label="Written",
        )
        assert_that(write.per_shard, equal_to(per_shard), label="PerShard")

    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*expected_files, "notes.txt", "train-00000-of-00005.tfrecord.gz"]
    )
    assert {name: _read_tfrecords(out / name) for name in expected_files} == expected_files
    assert sorted(r for name in expected_files for r in _read_tfrecords(out / name)) == sorted(
        r.serialized for r in records
    )
    assert not (tmp_path / "spill").exists()
