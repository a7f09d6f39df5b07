"""Discovery of preprocess inputs: folder flags are literal, every file under the dataset folders is read or
dead-lettered (odd names, links, subfolders), and an ``--output_dir`` overlapping the ``--input_dir`` is refused.

Most checks run discovery alone (``Discover`` of the Pet / Cityscapes dataset modules, on the real DirectRunner,
checked with ``assert_that``); two run the whole job in-process to see the counts add up, one runs the command for
its exit status and its one line.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Callable, Optional

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not a pytest class
from apache_beam.testing.util import assert_that, equal_to

from pipelines import datasets
from pipelines.common.deadletter import read_dead_letters
from pipelines.datasets.base import DEAD_LETTER_TAG, SplitFractions
from pipelines.datasets.discovery import Discover
from pipelines.tools import synthetic

BEAM_FLAGS = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]
NOT_UTF8 = b"Bengal_\xff9"  # a file-name stem that is not UTF-8 (Latin-1 "ÿ" written by an old tool)
SHOWN = "Bengal_\\xff9"  # ... and how dead letters show it


# ------------------------------------------------------------------------------------------------ helpers
def _pet_example(
    src: pathlib.Path, example_id: str, *, image: bool = True, trimap: bool = True, seed: int = 0
) -> list[str]:
    """Writes one small Pet example; returns the paths written."""
    rgb, mask = synthetic.pet_example(np.random.default_rng([seed, len(example_id), ord(example_id[-1])]), 24, 32)
    written = []
    if image:
        written.append(str(src / "images" / f"{example_id}.jpg"))
        synthetic.write_file(written[-1], synthetic.encode_jpeg(rgb))
    if trimap:
        written.append(str(src / "annotations" / "trimaps" / f"{example_id}.png"))
        synthetic.write_file(written[-1], synthetic.encode_png(mask))
    return written


def _write_bytes_name(folder: pathlib.Path, name: bytes, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(os.fsencode(str(folder)) + b"/" + name, "wb") as handle:
        handle.write(data)


def _dead_letters_are(expected: dict[str, str]) -> Callable[[list], None]:
    """A matcher: the dead letters name exactly ``expected``'s paths, once each, with the reason substrings."""

    def check(actual: list) -> None:
        paths = sorted(d.path for d in actual)
        assert len(set(paths)) == len(paths), f"a path dead-lettered twice: {paths}"
        assert paths == sorted(expected), f"dead letters {paths}, expected {sorted(expected)}"
        for d in actual:
            assert expected[d.path].lower() in d.error.lower(), (d.path, d.error, expected[d.path])

    return check


def _check_discovery(transform: beam.PTransform, examples: list[tuple], dead: dict[str, str]) -> None:
    """Runs ``transform`` alone; its examples must be ``examples`` as (id, image, mask, instances) tuples and
    its dead letters exactly ``dead`` ({path: reason substring})."""
    with BeamTestPipeline(options=PipelineOptions(BEAM_FLAGS)) as p:
        found = p | transform
        assert_that(
            found["examples"] | beam.Map(lambda e: (e.example_id, e.image_path, e.mask_path, e.instance_path)),
            equal_to(examples),
            label="Examples",
        )
        assert_that(found[DEAD_LETTER_TAG], _dead_letters_are(dead), label="DeadLetters")


def _pet_parts(src: pathlib.Path, example_id: str) -> tuple:
    return (
        example_id,
        str(src / "images" / f"{example_id}.jpg"),
        str(src / "annotations" / "trimaps" / f"{example_id}.png"),
        None,
    )


def _discover_pet(src: "pathlib.Path | str") -> Discover:
    return Discover(datasets.get("pet"), str(src), SplitFractions(0.1, 0.2))


def _discover_cityscapes(src: "pathlib.Path | str") -> Discover:
    return Discover(datasets.get("cityscapes"), str(src), SplitFractions(0.1, 0.2))


def _metadata(dst: pathlib.Path) -> dict:
    return json.loads((dst / "metadata.json").read_text())


def _record_ids(dst: pathlib.Path) -> list[str]:
    import tensorflow as tf

    ids = []
    for shard in sorted(dst.glob("*.tfrecord.gz")):
        for raw in tf.data.TFRecordDataset(str(shard), compression_type="GZIP"):
            example = tf.train.Example.FromString(raw.numpy())
            ids.append(example.features.feature["image/filename"].bytes_list.value[0].decode("utf-8"))
    return sorted(ids)


def _run(src: pathlib.Path, dst: pathlib.Path, dataset: str, image_size: tuple[int, int]) -> dict:
    from pipelines.preprocess import PreprocessConfig, run

    run(PreprocessConfig(dataset, str(src), str(dst), image_size=image_size), BEAM_FLAGS)
    return _metadata(dst)


# ------------------------------------------------------------------- item 2: --input_dir is a literal path
def test_input_dir_with_glob_characters_is_that_folder(tmp_path):
    """``in[1]`` is a folder name: discovery reads it, not ``in1`` (which the character class matched)."""
    decoy, src = tmp_path / "in1", tmp_path / "in[1]"
    for example_id in ("Abyssinian_1", "beagle_2", "boxer_3"):
        _pet_example(decoy, example_id)
    for example_id in ("pug_4", "samoyed_5"):
        _pet_example(src, example_id, seed=1)
    _check_discovery(_discover_pet(src), [_pet_parts(src, "pug_4"), _pet_parts(src, "samoyed_5")], {})

    cs_decoy, cs_src = tmp_path / "cs1", tmp_path / "cs[1]"
    synthetic.write_cityscapes_dataset(str(cs_decoy), frames_per_split={"train": 1}, size=(16, 32))
    ids = synthetic.write_cityscapes_dataset(str(cs_src), frames_per_split={"val": 1}, size=(16, 32), seed=1)
    frame = ids["val"][0]
    city = frame.split("_")[0]
    gt = cs_src / "gtFine" / "val" / city
    _check_discovery(
        _discover_cityscapes(cs_src),
        [
            (
                frame,
                str(cs_src / "leftImg8bit" / "val" / city / f"{frame}_leftImg8bit.png"),
                str(gt / f"{frame}_gtFine_labelIds.png"),
                str(gt / f"{frame}_gtFine_instanceIds.png"),
            )
        ],
        {},
    )


def test_check_input_lists_the_literal_folder(tmp_path):
    """The fail-fast check looks in the folder named, not in whatever its name matches as a glob."""
    from pipelines.preprocess.job import check_input, parse_args
    from schemas.errors import DataError

    _pet_example(tmp_path / "in1", "Abyssinian_1")
    (tmp_path / "in[1]" / "images").mkdir(parents=True)  # the folder asked for is empty
    synthetic.write_cityscapes_dataset(str(tmp_path / "cs1"), frames_per_split={"train": 1}, size=(16, 32))
    (tmp_path / "cs[1]" / "leftImg8bit").mkdir(parents=True)
    for dataset, src in (("pet", "in[1]"), ("cityscapes", "cs[1]")):
        config, _ = parse_args(
            [
                "--dataset",
                dataset,
                "--input_dir",
                str(tmp_path / src),
                "--output_dir",
                str(tmp_path / "out"),
                "--image_size",
                "16",
            ]
        )
        with pytest.raises(DataError, match="no input files under .*check --input_dir"):
            check_input(config)


# ----------------------------------------------------- item 8: a file name that is not UTF-8 is a dead letter
def test_non_utf8_file_name_is_a_dead_letter_and_the_rest_is_read(tmp_path):
    src = tmp_path / "src"
    for example_id in ("Abyssinian_1", "beagle_2"):
        _pet_example(src, example_id)
    _write_bytes_name(src / "images", NOT_UTF8 + b".jpg", synthetic.encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    _write_bytes_name(
        src / "annotations" / "trimaps", NOT_UTF8 + b".png", synthetic.encode_png(np.ones((8, 8), np.uint8))
    )
    _check_discovery(
        _discover_pet(src),
        [_pet_parts(src, "Abyssinian_1"), _pet_parts(src, "beagle_2")],
        {
            f"{src}/images/{SHOWN}.jpg": "not valid UTF-8",
            f"{src}/annotations/trimaps/{SHOWN}.png": "not valid UTF-8",
        },
    )

    cs = tmp_path / "cs"
    ids = synthetic.write_cityscapes_dataset(str(cs), frames_per_split={"train": 1}, size=(16, 32))
    city = ids["train"][0].split("_")[0]
    _write_bytes_name(cs / "leftImg8bit" / "train" / city, b"notes-\xe9t\xe9.txt", b"hello")
    frame = ids["train"][0]
    gt = cs / "gtFine" / "train" / city
    _check_discovery(
        _discover_cityscapes(cs),
        [
            (
                frame,
                str(cs / "leftImg8bit" / "train" / city / f"{frame}_leftImg8bit.png"),
                str(gt / f"{frame}_gtFine_labelIds.png"),
                str(gt / f"{frame}_gtFine_instanceIds.png"),
            )
        ],
        {f"{cs}/leftImg8bit/train/{city}/notes-\\xe9t\\xe9.txt": "not valid UTF-8"},
    )


# ------------------------------------------- item 9: backslashes are name characters; subfolders are reported
def test_backslash_names_are_read_and_pet_subfolders_are_dead_letters(tmp_path):
    src = tmp_path / "src"
    _pet_example(src, "Abyssinian_1")
    _pet_example(src, "Abyssinian\\2")  # on Linux, just a name
    nested = src / "images" / "more"
    synthetic.write_file(str(nested / "beagle_3.jpg"), synthetic.encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    synthetic.write_file(
        str(src / "annotations" / "trimaps" / "old" / "x\\y.png"), synthetic.encode_png(np.ones((8, 8), np.uint8))
    )
    _check_discovery(
        _discover_pet(src),
        [_pet_parts(src, "Abyssinian_1"), _pet_parts(src, "Abyssinian\\2")],
        {
            str(nested / "beagle_3.jpg"): "subfolder of images/",
            str(src / "annotations" / "trimaps" / "old" / "x\\y.png"): "subfolder of annotations/trimaps/",
        },
    )


def test_backslash_in_a_cityscapes_city_is_read(tmp_path):
    src = tmp_path / "cs"
    ids = synthetic.write_cityscapes_dataset(
        str(src), frames_per_split={"train": 2}, size=(16, 32), cities={"train": ("ulm", "old\\town")}
    )
    examples = []
    for frame in ids["train"]:
        city = frame.rsplit("_", 2)[0]
        gt = src / "gtFine" / "train" / city
        examples.append(
            (
                frame,
                str(src / "leftImg8bit" / "train" / city / f"{frame}_leftImg8bit.png"),
                str(gt / f"{frame}_gtFine_labelIds.png"),
                str(gt / f"{frame}_gtFine_instanceIds.png"),
            )
        )
    assert any("\\" in e[0] for e in examples)
    _check_discovery(_discover_cityscapes(src), examples, {})


# --------------------------------------------------------------------------- item 10: symbolic links
def test_pet_links_followed_and_broken_ones_named(tmp_path):
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    _pet_example(src, "Abyssinian_1")
    # A link to a real file outside the dataset is read like the file.
    (real,) = _pet_example(elsewhere, "boxer_3", trimap=False)
    _pet_example(src, "boxer_3", image=False)
    (src / "images" / "boxer_3.jpg").symlink_to(real)
    # A dangling link: named as such, and its trimap's dead letter says why the trimap is alone.
    _pet_example(src, "beagle_2", image=False)
    (src / "images" / "beagle_2.jpg").symlink_to(tmp_path / "deleted.jpg")
    # A link to itself, and a link to the folder it is in: loops, named, not followed forever.
    _pet_example(src, "pug_4", image=False)
    (src / "images" / "pug_4.jpg").symlink_to("pug_4.jpg")
    (src / "images" / "again").symlink_to(".")
    # A list file that is a dangling link is named too, not taken for "no test.txt".
    (src / "annotations" / "test.txt").symlink_to(tmp_path / "lost.txt")
    trimaps = src / "annotations" / "trimaps"
    _check_discovery(
        _discover_pet(src),
        [
            _pet_parts(src, "Abyssinian_1"),
            _pet_parts(src, "boxer_3"),
        ],
        {
            str(src / "images" / "beagle_2.jpg"): "broken symbolic link",
            str(trimaps / "beagle_2.png"): f"{src / 'images' / 'beagle_2.jpg'}: broken symbolic link",
            str(src / "images" / "pug_4.jpg"): "symbolic link loop",
            str(trimaps / "pug_4.png"): "symbolic link loop",
            str(src / "images" / "again"): "symbolic link loop",
            str(src / "annotations" / "test.txt"): "broken symbolic link",
        },
    )


def test_pet_folder_that_is_a_broken_link_is_named(tmp_path):
    src = tmp_path / "src"
    _pet_example(src, "Abyssinian_1")
    shutil.rmtree(src / "annotations" / "trimaps")
    (src / "annotations" / "trimaps").symlink_to(tmp_path / "unmounted-disk")
    _check_discovery(
        _discover_pet(src),
        [],
        {
            str(src / "annotations" / "trimaps"): "broken symbolic link",
            str(src / "images" / "Abyssinian_1.jpg"): "image without trimap",
        },
    )


def _cityscapes_with_links(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict, dict]:
    """Cityscapes, train 3 frames, two of them in a city whose folders are links to another disk; val 1 frame
    whose labelIds is a dangling link. Returns (src, frame ids, expected dead letters)."""
    src, disk = tmp_path / "cs", tmp_path / "other-disk"
    ids = synthetic.write_cityscapes_dataset(
        str(src),
        frames_per_split={"train": 3, "val": 1},
        size=(16, 32),
        cities={"train": ("aachen", "bremen", "bremen"), "val": ("lindau",)},
    )
    for top in ("leftImg8bit", "gtFine"):
        moved = disk / top / "bremen"
        moved.parent.mkdir(parents=True)
        shutil.move(str(src / top / "train" / "bremen"), str(moved))
        (src / top / "train" / "bremen").symlink_to(moved, target_is_directory=True)
    (val_frame,) = ids["val"]
    label = src / "gtFine" / "val" / "lindau" / f"{val_frame}_gtFine_labelIds.png"
    label.unlink()
    label.symlink_to(tmp_path / "gone.png")
    dead = {
        str(label): "broken symbolic link",
        str(
            src / "leftImg8bit" / "val" / "lindau" / f"{val_frame}_leftImg8bit.png"
        ): f"image without gtFine labelIds ({label}: broken symbolic link",
        str(
            src / "gtFine" / "val" / "lindau" / f"{val_frame}_gtFine_instanceIds.png"
        ): "instanceIds without gtFine labelIds",
    }
    return src, ids, dead


def test_cityscapes_linked_city_read_and_broken_label_named(tmp_path):
    src, ids, dead = _cityscapes_with_links(tmp_path)
    examples = []
    for frame in ids["train"]:
        city = frame.split("_")[0]
        gt = src / "gtFine" / "train" / city
        examples.append(
            (
                frame,
                str(src / "leftImg8bit" / "train" / city / f"{frame}_leftImg8bit.png"),
                str(gt / f"{frame}_gtFine_labelIds.png"),
                str(gt / f"{frame}_gtFine_instanceIds.png"),
            )
        )
    _check_discovery(_discover_cityscapes(src), examples, dead)


# ---------------------------------------------------------------------- whole job: the counts add up
def _pet_every_odd_file(src: pathlib.Path, elsewhere: pathlib.Path) -> tuple[set[str], set[str]]:
    """A Pet dataset with every discovery quirk; returns (ids that become records, every file path created,
    shown as dead letters show it)."""
    files: list[str] = []
    for example_id in ("Abyssinian_1", "beagle_2", "boxer_3", "pug_4", "samoyed_5", "Siamese_6"):
        files += _pet_example(src, example_id)
    files += _pet_example(src, "Abyssinian\\7")
    (real,) = _pet_example(elsewhere, "Birman_8", trimap=False)
    files += _pet_example(src, "Birman_8", image=False)
    (src / "images" / "Birman_8.jpg").symlink_to(real)
    files.append(str(src / "images" / "Birman_8.jpg"))
    files += _pet_example(src, "havanese_9", image=False)
    (src / "images" / "havanese_9.jpg").symlink_to(src / "images" / "missing.jpg")
    files.append(str(src / "images" / "havanese_9.jpg"))
    (src / "images" / "again").symlink_to(".")
    files.append(str(src / "images" / "again"))
    _write_bytes_name(src / "images", NOT_UTF8 + b".jpg", synthetic.encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    files.append(f"{src}/images/{SHOWN}.jpg")
    synthetic.write_file(
        str(src / "images" / "more" / "keeshond_10.jpg"), synthetic.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    )
    files.append(str(src / "images" / "more" / "keeshond_10.jpg"))
    records = {"Abyssinian_1", "beagle_2", "boxer_3", "pug_4", "samoyed_5", "Siamese_6", "Abyssinian\\7", "Birman_8"}
    return records, set(files)


@pytest.mark.slow
def test_pet_job_accounts_for_every_file(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    records, files = _pet_every_odd_file(src, tmp_path / "elsewhere")
    meta = _run(src, dst, "pet", (16, 16))
    got = _record_ids(dst)
    assert got == sorted(records)
    dead = [d["path"] for d in read_dead_letters(str(dst))]
    assert len(dead) == len(set(dead)) == meta["dead_letter_count"]
    read = {
        p
        for i in records
        for p in (str(src / "images" / f"{i}.jpg"), str(src / "annotations" / "trimaps" / f"{i}.png"))
    }
    assert read.isdisjoint(dead) and read | set(dead) == files  # every file exactly once
    assert meta["inputs_seen"] == sum(meta["source_counts"].values()) + meta["dead_letter_count"]
    assert sum(meta["source_counts"].values()) == len(records)


@pytest.mark.slow
def test_cityscapes_job_reads_linked_city(tmp_path):
    src, ids, dead = _cityscapes_with_links(tmp_path)
    dst = tmp_path / "dst"
    meta = _run(src, dst, "cityscapes", (16, 32))
    assert meta["source_counts"]["train"] == 3  # the two frames in the linked city are not skipped
    assert _record_ids(dst) == sorted(ids["train"])
    assert sorted(d["path"] for d in read_dead_letters(str(dst))) == sorted(dead)
    assert meta["inputs_seen"] == sum(meta["source_counts"].values()) + meta["dead_letter_count"] == 3 + 3


# ------------------------------------------------------------ item 11: --output_dir overlapping --input_dir
def _refusal(src: str, dst: str) -> Optional[str]:
    from pipelines.preprocess.job import UsageError, parse_args

    try:
        parse_args(["--dataset", "pet", "--input_dir", src, "--output_dir", dst, "--image_size", "16"])
    except UsageError as e:
        return str(e)
    return None


def test_output_dir_overlapping_input_dir_is_refused(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (tmp_path / "link-to-images").symlink_to(src / "images")
    for dst in (
        src / "images",
        f"{src}/.",
        f"{src}/images/..",
        str(src) + "/",
        tmp_path / "link-to-images",
        src / "images" / "not-yet" / "out",
    ):
        message = _refusal(str(src), str(dst))
        assert message and "--input_dir" in message and "\n" not in message, dst
    for dst, inner in ((tmp_path, src), ("gs://b/data", "gs://b/data/pet")):
        message = _refusal(str(inner), str(dst))
        assert message and "inside --output_dir" in message, dst
    assert _refusal("gs://b/pet", "gs://b/pet/records") and _refusal("gs://b/pet", "gs://b/pet/")
    # Siblings, and names that only share a prefix, are fine.
    assert _refusal(str(src), str(tmp_path / "src-records")) is None
    assert _refusal("gs://b/pet", "gs://b/pet-records") is None


@pytest.mark.slow
def test_cli_refuses_output_inside_input_in_one_line(tmp_path):
    src = tmp_path / "src"
    _pet_example(src, "Abyssinian_1")
    _pet_example(src, "beagle_2")
    before = sorted(p.relative_to(src).as_posix() for p in src.rglob("*"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.preprocess",
            "--dataset",
            "pet",
            "--input_dir",
            str(src),
            "--output_dir",
            f"{src}/.",
            "--image_size",
            "16",
            *BEAM_FLAGS,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("pipelines.preprocess: error:")]
    assert len(lines) == 1 and lines[0].startswith("pipelines.preprocess: error: --output_dir"), result.stderr[-2000:]
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*")) == before  # nothing written


# ------------------------------------------------------------------------------------- the same on gs://
def test_gcs_discovery_is_literal_and_sees_every_object(gcs, tmp_path):
    """On an object store: the prefix is escaped (``in[1]`` is not ``in1``), a backslash is a name character,
    and an object below the Pet folders' own level is a dead letter."""
    from pipelines.preprocess.job import check_input, parse_args

    local = tmp_path / "local"
    _pet_example(local / "decoy", "Abyssinian_1")
    _pet_example(local / "src", "beagle_2")
    _pet_example(local / "src", "Abyssinian\\3")
    synthetic.write_file(str(local / "src" / "images" / "more" / "pug_4.jpg"), b"nested")
    root = gcs.prefix("discovery")
    gcs.upload_dir(local / "decoy", f"{root}/in1")
    src = gcs.upload_dir(local / "src", f"{root}/in[1]")
    parts = [
        (i, f"{src}/images/{i}.jpg", f"{src}/annotations/trimaps/{i}.png", None) for i in ("Abyssinian\\3", "beagle_2")
    ]
    _check_discovery(_discover_pet(src), parts, {f"{src}/images/more/pug_4.jpg": "subfolder of images/"})
    config, _ = parse_args(
        ["--dataset", "pet", "--input_dir", src, "--output_dir", f"{root}/out", "--image_size", "16"]
    )
    check_input(config)
